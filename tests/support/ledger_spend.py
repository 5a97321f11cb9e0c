"""Put real spend on a ledger the way `record` does: ledger store write, then counters settle."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from spendgate.ledgers import LedgerRef, charges_json
from spendgate.money import to_nanos
from spendgate.runtime import Runtime
from spendgate.tables import SpendEvent

__all__ = ["ledger_ref", "spend"]


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def ledger_ref(entity_type: str, entity_id: str, shown: dict[str, Any]) -> LedgerRef:
    """The ledger an admin response shows (one item of its `ledgers`)."""
    start = _time(shown["period_start"])
    assert start is not None
    return LedgerRef(entity_type, entity_id, shown["window"], start, _time(shown["resets_at"]))


async def spend(runtime: Runtime, ref: LedgerRef, cost: str) -> None:
    """Record `cost` USD on `ref` as a finished request would, and settle the counters."""
    request_id = f"test-{uuid.uuid4().hex}"
    event = SpendEvent(request_id=request_id, cost=to_nanos(cost), outcome="success", charges=charges_json([ref]))
    recorded = await runtime.ledgers.record(event=event, ledgers=[ref])
    await runtime.counters.settle(request_id=request_id, snapshots=recorded.snapshots)
