"""What the adapters share: which holds a decision takes (all of them), the admission rule on a
ledger's figures (authorize's too), a stored decision read back from its row (the SQL-table
adapters, `SqlCounters` and `SqliteCounters`), and a stored decision as JSON bytes (what Redis keeps
under its request id, and what a replica remembers: encoded once, by whichever comes first)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import exact_json
from ..ledgers import LedgerRef
from .base import Figures, Hold, StoredDecision

__all__ = [
    "refuse_invalid_commit", "unique_holds", "has_room", "stored_decision", "decision_json", "encode_decision",
    "decode_decision",
]


def refuse_invalid_commit(
    decision: StoredDecision, holds: Sequence[Hold], unless_changed: Mapping[str, Figures] | None
) -> None:
    """What every adapter refuses before it writes anything (ValueError: a caller's bug)."""
    if decision.amount < 0:
        raise ValueError(f"a reservation amount cannot be negative, got {decision.amount}")
    if unless_changed is not None and holds:
        raise ValueError("only a denial (no holds) is stored on condition that its figures are unchanged")


def unique_holds(holds: Sequence[Hold]) -> list[Hold]:
    """One hold per ledger (the tightest limit wins), in ledger-id order: the lock order."""
    merged: dict[str, Hold] = {}
    for hold in holds:
        seen = merged.get(hold.ledger.id)
        if seen is None or (hold.limit is not None and (seen.limit is None or hold.limit < seen.limit)):
            merged[hold.ledger.id] = hold
    return [merged[key] for key in sorted(merged)]


def has_room(*, spent: int, reserved: int, limit: int, amount: int) -> bool:
    """The admission rule on a ledger: spent + reserved + amount <= limit (amount 0: < limit)."""
    held = spent + reserved
    return held + amount <= limit if amount > 0 else held < limit


def decision_json(decision: StoredDecision) -> dict[str, Any]:
    """The `reservations.decision` column's value: the body and the ledgers it charges."""
    return {"body": decision.body, "ledgers": [ref.to_json() for ref in decision.ledgers]}


def stored_decision(request_id: str, amount: int, decision: dict[str, Any]) -> StoredDecision:
    """A decision as its `reservations` row keeps it (`decision` as `decision_json` made it)."""
    return StoredDecision(
        request_id=request_id,
        body=decision["body"],
        ledgers=tuple(LedgerRef.from_json(item) for item in decision["ledgers"]),
        amount=int(amount),
    )


def encode_decision(decision: StoredDecision) -> bytes:
    """The whole stored decision as JSON bytes (integers of any size exact): `decision_json` with its
    request id and amount, which a table keeps in columns; `decode_decision` reads it."""
    return exact_json.dumps({"request_id": decision.request_id, "amount": decision.amount, **decision_json(decision)})


def decode_decision(raw: bytes | str) -> StoredDecision:
    data = exact_json.loads(raw)
    return stored_decision(data["request_id"], data["amount"], data)
