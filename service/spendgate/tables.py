"""The ledger store's tables (SQLModel). Alembic migrations in `migrations/` create them.

Money columns are BIGINT nano-USD. Entities are soft-deleted only for keys (a deleted key
is revoked at once, its spend history stays); other entities are removed, their ledgers stay.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, Column, DateTime, Dialect, Index, String, TypeDecorator
from sqlmodel import Field, SQLModel

__all__ = [
    "Org",
    "Team",
    "User",
    "TeamMember",
    "ApiKey",
    "EndUser",
    "Tag",
    "Budget",
    "Ledger",
    "SpendEvent",
    "Reservation",
    "utcnow",
    "UtcDateTime",
]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UtcDateTime(TypeDecorator[datetime]):
    """Timestamps stored with time zone and always read back as aware UTC (SQLite keeps naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _ts(nullable: bool = False) -> Column:
    return Column(UtcDateTime(), nullable=nullable)


def _money(nullable: bool = False) -> Column:
    return Column(BigInteger, nullable=nullable)


class Org(SQLModel, table=True):
    __tablename__ = "orgs"
    id: str = Field(primary_key=True, max_length=200)
    name: str = Field(max_length=500)
    blocked: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Team(SQLModel, table=True):
    __tablename__ = "teams"
    id: str = Field(primary_key=True, max_length=200)
    name: str = Field(max_length=500)
    org_id: str | None = Field(default=None, foreign_key="orgs.id", index=True)
    blocked: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class User(SQLModel, table=True):
    __tablename__ = "users"
    id: str = Field(primary_key=True, max_length=200)
    email: str | None = Field(default=None, max_length=500)
    org_id: str | None = Field(default=None, foreign_key="orgs.id", index=True)
    blocked: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class TeamMember(SQLModel, table=True):
    __tablename__ = "team_members"
    team_id: str = Field(primary_key=True, foreign_key="teams.id")
    user_id: str = Field(primary_key=True, foreign_key="users.id", index=True)
    blocked: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class ApiKey(SQLModel, table=True):
    __tablename__ = "keys"
    id: str = Field(primary_key=True, max_length=200)
    #: sha256 hex of the secret; the secret itself is never stored.
    key_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    #: First characters of the secret, safe to show ("sk-sg-Ab12…").
    key_prefix: str = Field(max_length=20)
    name: str | None = Field(default=None, max_length=500)
    user_id: str | None = Field(default=None, foreign_key="users.id", index=True)
    team_id: str | None = Field(default=None, foreign_key="teams.id", index=True)
    models: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    blocked: bool = False
    deleted_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class EndUser(SQLModel, table=True):
    __tablename__ = "end_users"
    id: str = Field(primary_key=True, max_length=200)
    blocked: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Tag(SQLModel, table=True):
    __tablename__ = "tags"
    id: str = Field(primary_key=True, max_length=200)
    blocked: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Budget(SQLModel, table=True):
    """One budget window of one entity. key×model budgets are entity_type 'key_model', id '<key>/<model>'."""

    __tablename__ = "budgets"
    __table_args__ = (Index("ix_budgets_entity", "entity_type", "entity_id"),)
    id: int | None = Field(default=None, primary_key=True)
    entity_type: str = Field(max_length=20)
    entity_id: str = Field(max_length=500)
    max_budget: int = Field(sa_column=_money())
    soft_budget: int | None = Field(default=None, sa_column=_money(nullable=True))
    duration: str | None = Field(default=None, max_length=20)
    reset: str = Field(default="rolling", max_length=10)
    #: When this window's periods start (rolling budgets); kept when only the amounts change.
    set_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Ledger(SQLModel, table=True):
    """Spend of one entity in one budget window and period: the authoritative figure."""

    __tablename__ = "ledgers"
    __table_args__ = (Index("ix_ledgers_entity", "entity_type", "entity_id"),)
    ledger_id: str = Field(primary_key=True, max_length=700)
    entity_type: str = Field(max_length=20)
    entity_id: str = Field(max_length=500)
    window: str | None = Field(default=None, max_length=20)
    period_start: datetime = Field(sa_column=_ts())
    period_end: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    spent: int = Field(default=0, sa_column=_money())
    #: Held by unrecorded reservations — used by the SQL counters adapter only.
    reserved: int = Field(default=0, sa_column=_money())
    #: Bumped by every transaction that changes `spent` (a batch of records bumps it once);
    #: lets a cache keep only the newest snapshot.
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class SpendEvent(SQLModel, table=True):
    """One recorded request. The primary key makes record exactly-once across replicas."""

    __tablename__ = "spend_events"
    request_id: str = Field(primary_key=True, max_length=500)
    cost: int = Field(sa_column=_money())
    outcome: str = Field(max_length=10)
    key_id: str | None = Field(default=None, max_length=200, index=True)
    model: str | None = Field(default=None, max_length=200)
    #: The ledgers charged: `LedgerRef.to_json()` plus `ledger_id` each.
    charges: list[dict] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    policy_revision: str | None = Field(default=None, max_length=80)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Reservation(SQLModel, table=True):
    """An authorize decision and its hold (SQL counters adapter); kept ≥ 24 h for idempotency."""

    __tablename__ = "reservations"
    __table_args__ = (Index("ix_reservations_open_expiry", "released", "expires_at"),)
    request_id: str = Field(primary_key=True, max_length=500)
    amount: int = Field(sa_column=_money())
    charges: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    decision: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    expires_at: datetime = Field(sa_column=_ts())
    released: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())

