"""Typed results of the decision routes, parsed from the API's JSON (API.md, "Decision routes").

Money is `Decimal` both ways: sent as a decimal string, read from the decimal strings the
server returns — never a binary float, which cannot hold 0.1 exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

__all__ = [
    "Money",
    "to_wire",
    "Principal",
    "Entity",
    "Reason",
    "Charge",
    "Alert",
    "Reservation",
    "Authorization",
    "RecordedCharge",
    "RecordResult",
]

#: What the client accepts as an amount of USD: exact types only.
Money = Decimal | int | str


def to_wire(value: Money, *, field: str) -> str:
    """An amount as the decimal string sent to Spendgate; floats are refused (not exact)."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, str)):
        raise TypeError(f"{field} must be a Decimal, int or decimal string (USD), not {type(value).__name__}")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{field}: {value!r} is not a decimal amount in USD, e.g. \"0.02\"") from None
    return format(amount, "f")


def _money(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise ValueError(f"expected a decimal string, got {value!r}")
    return Decimal(value)


def _money_or_none(value: Any) -> Decimal | None:
    return None if value is None else _money(value)


def _time_or_none(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True)
class Principal:
    """The caller as a gateway that authenticates its own keys knows it (ids, no secret): sent
    instead of `api_key`; Spendgate creates the entities it has never seen (docs/api.md)."""

    key: str
    user: str | None = None
    team: str | None = None
    org: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"key": self.key, "user": self.user, "team": self.team, "org": self.org}


@dataclass(frozen=True)
class Entity:
    type: str
    id: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Entity:
        return cls(type=str(data["type"]), id=str(data["id"]))


@dataclass(frozen=True)
class Reason:
    """Why authorize refused: a stable `code`, the entity it is about and a human `message`."""

    code: str
    message: str
    entity: Entity | None = None
    spent: Decimal | None = None
    limit: Decimal | None = None
    resets_at: datetime | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reason:
        entity = data.get("entity")
        return cls(
            code=str(data["code"]),
            message=str(data.get("message") or data["code"]),
            entity=Entity.from_json(entity) if entity else None,
            spent=_money_or_none(data.get("spent")),
            limit=_money_or_none(data.get("limit")),
            resets_at=_time_or_none(data.get("resets_at")),
        )


@dataclass(frozen=True)
class Charge:
    """A ledger the request touches, with its figures before this request's reservation."""

    entity: Entity
    window: str | None
    spent: Decimal
    reserved: Decimal
    limit: Decimal | None
    remaining: Decimal | None
    period_start: datetime | None
    resets_at: datetime | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Charge:
        return cls(
            entity=Entity.from_json(data["entity"]),
            window=data.get("window"),
            spent=_money(data["spent"]),
            reserved=_money(data["reserved"]),
            limit=_money_or_none(data.get("limit")),
            remaining=_money_or_none(data.get("remaining")),
            period_start=_time_or_none(data.get("period_start")),
            resets_at=_time_or_none(data.get("resets_at")),
        )


@dataclass(frozen=True)
class Alert:
    """A touched ledger at or past its soft budget."""

    code: str
    entity: Entity
    spent: Decimal | None
    soft_budget: Decimal | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Alert:
        return cls(
            code=str(data["code"]),
            entity=Entity.from_json(data["entity"]),
            spent=_money_or_none(data.get("spent")),
            soft_budget=_money_or_none(data.get("soft_budget")),
        )


@dataclass(frozen=True)
class Reservation:
    amount: Decimal
    expires_at: datetime | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reservation:
        return cls(amount=_money(data["amount"]), expires_at=_time_or_none(data.get("expires_at")))


@dataclass(frozen=True)
class Authorization:
    """The answer of `POST /v1/authorize`."""

    request_id: str
    decision: Literal["allow", "deny"]
    reasons: tuple[Reason, ...]
    charges: tuple[Charge, ...]
    alerts: tuple[Alert, ...]
    reservation: Reservation | None
    policy_revision: str | None

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Authorization:
        decision = data["decision"]
        if decision not in ("allow", "deny"):
            raise ValueError(f"unknown decision {decision!r}")
        reservation = data.get("reservation")
        revision = data.get("policy_revision")
        return cls(
            request_id=str(data["request_id"]),
            decision=decision,
            reasons=tuple(Reason.from_json(item) for item in data.get("reasons") or ()),
            charges=tuple(Charge.from_json(item) for item in data.get("charges") or ()),
            alerts=tuple(Alert.from_json(item) for item in data.get("alerts") or ()),
            reservation=Reservation.from_json(reservation) if reservation else None,
            policy_revision=None if revision is None else str(revision),
        )


@dataclass(frozen=True)
class RecordedCharge:
    """A ledger a record charged: the `amount` added and the ledger's `spent` after it."""

    entity: Entity
    window: str | None
    amount: Decimal
    spent: Decimal | None
    period_start: datetime | None
    resets_at: datetime | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecordedCharge:
        return cls(
            entity=Entity.from_json(data["entity"]),
            window=data.get("window"),
            amount=_money(data["amount"]),
            spent=_money_or_none(data.get("spent")),
            period_start=_time_or_none(data.get("period_start")),
            resets_at=_time_or_none(data.get("resets_at")),
        )


@dataclass(frozen=True)
class RecordResult:
    """The answer of `POST /v1/record`. `duplicate` is true when this request id had already been
    recorded with the same cost and outcome: nothing was charged again."""

    request_id: str
    recorded: bool
    duplicate: bool
    charges: tuple[RecordedCharge, ...]
    after_denial: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecordResult:
        return cls(
            request_id=str(data["request_id"]),
            recorded=bool(data["recorded"]),
            duplicate=bool(data["duplicate"]),
            charges=tuple(RecordedCharge.from_json(item) for item in data.get("charges") or ()),
            after_denial=bool(data.get("after_denial", False)),
        )
