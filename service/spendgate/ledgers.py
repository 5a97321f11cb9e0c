"""Ledger identity: which ledger a charge lands on, and how a spend event names the ledgers it charged.

A ledger is the spend of one entity in one budget window and period. Its id is derived
from exactly those four facts, so the authorize and record paths — on any replica — name
the same ledger for the same charge. Pure values, no I/O: the store that writes ledgers is
`ledger_store.py`, the counters that hold reservations are `counters/`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .periods import EPOCH, Duration, period_at
from .vocabulary import ENTITY_TYPES

if TYPE_CHECKING:
    from .tables import SpendEvent

__all__ = [
    "ENTITY_TYPES",
    "LedgerRef",
    "LedgerSnapshot",
    "ledger_for_budget",
    "charges_json",
    "charged_refs",
]


@dataclass(frozen=True, slots=True)
class LedgerRef:
    """Which ledger: entity, budget window (None: never resets) and the period it covers."""

    entity_type: str
    entity_id: str
    window: str | None
    period_start: datetime
    period_end: datetime | None
    #: `<type>:<entity id>:<window or ->:<period start, epoch seconds>` — derived, computed once
    #: (it is looked up many times per decision).
    id: str = field(init=False, repr=False, compare=False)
    #: `to_json()`'s answer, made on its first call (a decision serialises its ledgers more than once).
    _json: dict[str, Any] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        ledger_id = f"{self.entity_type}:{self.entity_id}:{self.window or '-'}:{int(self.period_start.timestamp())}"
        object.__setattr__(self, "id", ledger_id)

    def to_json(self) -> dict[str, Any]:
        made = self._json
        if made is None:
            made = {
                "entity_type": self.entity_type,
                "entity_id": self.entity_id,
                "window": self.window,
                "period_start": self.period_start.isoformat(),
                "period_end": self.period_end.isoformat() if self.period_end else None,
            }
            object.__setattr__(self, "_json", made)
        return dict(made)  # a copy: the caller may add to it

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LedgerRef:
        end = data.get("period_end")
        return cls(
            entity_type=data["entity_type"],
            entity_id=data["entity_id"],
            window=data.get("window"),
            period_start=datetime.fromisoformat(data["period_start"]),
            period_end=datetime.fromisoformat(end) if end else None,
        )


def charges_json(ledgers: Sequence[LedgerRef]) -> list[dict[str, Any]]:
    """How a spend event stores the ledgers it charged (enough to name and report each)."""
    return [{"ledger_id": ref.id, **ref.to_json()} for ref in ledgers]


def charged_refs(event: SpendEvent) -> tuple[LedgerRef, ...]:
    return tuple(LedgerRef.from_json(item) for item in event.charges)


class LedgerSnapshot(NamedTuple):
    """The authoritative `spent` of a ledger and its version, as committed."""

    ledger_id: str
    spent: int
    version: int


class BudgetLike(Protocol):
    @property
    def duration(self) -> str | None: ...
    @property
    def reset(self) -> str: ...
    @property
    def set_at(self) -> datetime: ...


def ledger_for_budget(
    *, entity_type: str, entity_id: str, budget: BudgetLike | None, at: datetime
) -> LedgerRef:
    """The ledger a budget window charges at instant `at` (no budget: one ledger that never resets)."""
    if budget is None or budget.duration is None:
        return LedgerRef(entity_type, entity_id, None, EPOCH, None)
    period = period_at(
        duration=Duration.parse(budget.duration),
        reset="calendar" if budget.reset == "calendar" else "rolling",
        anchor=budget.set_at,
        at=at,
    )
    return LedgerRef(entity_type, entity_id, budget.duration, period.start, period.end)
