"""The ledger store's tables (SQLModel). Alembic migrations in `migrations/` create them.

Money columns are BIGINT nano-USD. Entities are soft-deleted only for keys (a deleted key
is revoked at once, its spend history stays); other entities are removed, their ledgers stay.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, Column, DateTime, Dialect, Index, Integer, String, TypeDecorator, text
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
    "AuditEvent",
    "SpendRollup",
    "AlertEvent",
    "DecisionRecord",
    "DecisionRecordEntity",
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
    __table_args__ = (
        Index("ix_ledgers_entity", "entity_type", "entity_id"),
        # Current periods (console overview); period_end is never updated, so spend stays a HOT update.
        Index("ix_ledgers_period_end", "period_end"),
        # Never-ending ledgers charged under a limit (the overview's ranking): a few lifetime budgets
        # among many budget-less end-user ledgers. A record rewrites limit_at_charge with the same
        # value, which keeps its update HOT; only a changed limit makes one non-HOT.
        Index(
            "ix_ledgers_never_ending_limited", "entity_type",
            postgresql_where=text("period_end IS NULL AND limit_at_charge IS NOT NULL"),
            sqlite_where=text("period_end IS NULL AND limit_at_charge IS NOT NULL"),
        ),
        # The overview's ranking reads the lowest headroom tiers of current ledgers from here
        # (spendgate/headroom.py); a record's update changes the tier rarely, so it stays HOT.
        Index(
            "ix_ledgers_headroom", "headroom_tier", "period_end", "period_start",
            postgresql_where=text("headroom_tier IS NOT NULL"), sqlite_where=text("headroom_tier IS NOT NULL"),
        ),
    )
    ledger_id: str = Field(primary_key=True, max_length=700)
    entity_type: str = Field(max_length=20)
    entity_id: str = Field(max_length=500)
    window: str | None = Field(default=None, max_length=20)
    period_start: datetime = Field(sa_column=_ts())
    period_end: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    spent: int = Field(default=0, sa_column=_money())
    #: Held by unrecorded reservations — used by the SQL counters adapter only.
    reserved: int = Field(default=0, sa_column=_money())
    #: The hard limit in force at the ledger's last charge (None: no limit, or never charged since
    #: migration 0006) — for ranking only (console overview); shown figures are read from budgets.
    limit_at_charge: int | None = Field(default=None, sa_column=_money(nullable=True))
    #: floor(limit_at_charge / spent) to one significant digit, lower = nearer the limit
    #: (spendgate/headroom.py) — written with `limit_at_charge`, for the ranking only.
    headroom_tier: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
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



class SpendRollup(SQLModel, table=True):
    """Spend charged to one entity in one UTC hour, per model, key and outcome — what reports sum.

    Written in the record's own transaction (`reports/rollups.py`). Entity `*`/`*` counts every
    recorded request once; `model`/`key_id` are '' when the request had none."""

    __tablename__ = "spend_rollups"
    #: Sums of every request over an hour range (console overview): index-only on PostgreSQL.
    __table_args__ = (
        Index(
            "ix_spend_rollups_all_hour", "hour",
            postgresql_include=["key_id", "spend", "requests", "failures"],
            postgresql_where=text("entity_type = '*'"), sqlite_where=text("entity_type = '*'"),
        ),
    )
    entity_type: str = Field(primary_key=True, max_length=20)
    entity_id: str = Field(primary_key=True, max_length=500)
    hour: datetime = Field(sa_column=Column(UtcDateTime(), primary_key=True))
    model: str = Field(primary_key=True, max_length=200)
    key_id: str = Field(primary_key=True, max_length=200)
    outcome: str = Field(primary_key=True, max_length=10)
    spend: int = Field(sa_column=_money())
    requests: int = Field(sa_column=Column(BigInteger, nullable=False))
    failures: int = Field(sa_column=Column(BigInteger, nullable=False))


class AlertEvent(SQLModel, table=True):
    """One alert (the outbox of webhook deliveries). `dedupe_key` makes it happen at most once per
    ledger period, kind and threshold, whichever replica decides it (spendgate.alerts)."""

    __tablename__ = "alert_events"
    __table_args__ = (
        Index("ix_alert_events_due", "status", "next_attempt_at"),
        Index("ix_alert_events_entity", "entity_type", "entity_id", "created_at"),
    )
    id: str = Field(primary_key=True, max_length=40)
    dedupe_key: str = Field(sa_column=Column(String(800), nullable=False, unique=True))
    event: str = Field(max_length=40)
    entity_type: str = Field(max_length=20)
    entity_id: str = Field(max_length=500)
    ledger_id: str = Field(max_length=700)
    window: str | None = Field(default=None, max_length=20)
    spent: int = Field(sa_column=_money())
    limit: int | None = Field(default=None, sa_column=_money(nullable=True))
    soft_budget: int | None = Field(default=None, sa_column=_money(nullable=True))
    threshold: int | None = None
    resets_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    #: Event-specific extras sent with it (enforcement_bypassed: the request and the denial).
    details: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    #: pending → delivered | failed.
    status: str = Field(default="pending", max_length=10)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=500)
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    #: A worker's lease on the event while it delivers it; an expired lease lets another take over.
    locked_until: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    claim: str | None = Field(default=None, max_length=40)
    #: Webhook URLs that already answered 2xx (a retry goes only to the others).
    delivered_to: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    delivered_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class DecisionRecord(SQLModel, table=True):
    """A recent denial or alerting decision (spendgate.decision_store): bounded by size and age."""

    __tablename__ = "decision_records"
    __table_args__ = (Index("ix_decision_records_at", "at", "decision_id"),)
    decision_id: str = Field(primary_key=True, max_length=40)
    request_id: str = Field(max_length=500)
    at: datetime = Field(sa_column=_ts())
    decision: str = Field(max_length=10)
    reasons: list[dict] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    charges: list[dict] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    alerts: list[dict] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    policy_revision: str | None = Field(default=None, max_length=80)


class DecisionRecordEntity(SQLModel, table=True):
    """Which entities a stored decision names (its charges and reasons): the per-entity index."""

    __tablename__ = "decision_record_entities"
    __table_args__ = (Index("ix_decision_record_entities_entity", "entity_type", "entity_id", "at", "decision_id"),)
    decision_id: str = Field(primary_key=True, max_length=40)
    entity_type: str = Field(primary_key=True, max_length=20)
    entity_id: str = Field(primary_key=True, max_length=500)
    at: datetime = Field(sa_column=_ts())


class AuditEvent(SQLModel, table=True):
    """One admin change, written in the change's own transaction (`admin/audit.py`).

    `before`/`after` hold the entity's settable fields and budget as the API shows them (money as
    decimal strings); never a key secret or hash. Newest first is `id` descending."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_entity", "entity_type", "entity_id", "id"),
        Index("ix_audit_events_at", "at"),
    )
    id: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    )
    at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    #: The token class that made the change ('admin').
    actor: str = Field(max_length=40)
    action: str = Field(max_length=20)
    entity_type: str = Field(max_length=20)
    entity_id: str = Field(max_length=500)
    before: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    after: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))


# Keyset-paged admin lists (`admin/lists.py`): a filter column then the id, so a filtered page is
# one index range however many rows the table holds; key-model budgets found by id prefix.
Index("ix_teams_org_id_id", Team.__table__.c.org_id, Team.__table__.c.id)  # type: ignore[attr-defined]
Index("ix_users_org_id_id", User.__table__.c.org_id, User.__table__.c.id)  # type: ignore[attr-defined]
Index("ix_keys_team_id_id", ApiKey.__table__.c.team_id, ApiKey.__table__.c.id)  # type: ignore[attr-defined]
Index("ix_keys_user_id_id", ApiKey.__table__.c.user_id, ApiKey.__table__.c.id)  # type: ignore[attr-defined]
Index(
    "ix_budgets_entity_prefix",
    Budget.__table__.c.entity_type,  # type: ignore[attr-defined]
    Budget.__table__.c.entity_id,  # type: ignore[attr-defined]
    postgresql_ops={"entity_id": "text_pattern_ops"},
)
