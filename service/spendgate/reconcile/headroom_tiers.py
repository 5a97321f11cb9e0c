"""Re-derive `ledgers.headroom_tier` where it disagrees with the row's `spent` and `limit_at_charge`.

The record path writes the tier with every charge (ledger_store.py), so this finds nothing on a
service whose replicas all run migration 0007's code. It repairs what other writers leave: a
replica still on an earlier version during a rolling upgrade charges ledgers without moving
their tier, and a tier too high hides a ledger from the console's "near a limit" — for good when
that ledger is at its limit and so never charged again. Runs with every periodic reconcile; reads
the current ledgers once (the `period_end` range and the never-ending limited ones).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import literal_column, select, update

from ..db import SessionFactory, dialect_name, execute_core, wrap_database_errors
from ..headroom import headroom_tier_sql
from ..tables import Ledger

__all__ = ["refresh_headroom_tiers"]

_L = Ledger.__table__  # type: ignore[attr-defined]
_TIER: Any = literal_column(headroom_tier_sql("ledgers.spent", "ledgers.limit_at_charge"))
#: Ledgers per repair transaction.
_CHUNK = 1000


async def refresh_headroom_tiers(sessions: SessionFactory, now: datetime) -> int:
    """Repair the tier of every current ledger charged under a limit whose tier is wrong; returns
    how many. Each chunk locks its rows in ledger-id code-point order, as records do."""
    wrong = (_L.c.limit_at_charge > 0, _L.c.spent > 0, _L.c.headroom_tier.is_distinct_from(_TIER))
    windowed = select(_L.c.ledger_id).where(_L.c.period_end > now, _L.c.period_start <= now, *wrong)
    never = select(_L.c.ledger_id).where(_L.c.period_end.is_(None), _L.c.limit_at_charge.is_not(None), *wrong)
    async with wrap_database_errors():
        async with sessions() as session:
            stale = sorted((await execute_core(session, windowed.union_all(never))).scalars())
        for start in range(0, len(stale), _CHUNK):
            async with sessions() as session, session.begin():
                order = _L.c.ledger_id.collate("C") if dialect_name(session) == "postgresql" else _L.c.ledger_id
                locked = (
                    select(_L.c.ledger_id)
                    .where(_L.c.ledger_id.in_(stale[start : start + _CHUNK]))
                    .order_by(order)
                    .with_for_update()
                    .cte("locked")
                )
                repair = update(_L).where(_L.c.ledger_id.in_(select(locked.c.ledger_id))).values(headroom_tier=_TIER)
                await execute_core(session, repair.add_cte(locked))
    return len(stale)
