"""Reconcile the SQL counters: each ledger's `reserved` column against its open reservations.

`spent` is the ledger's own column here, so it cannot drift; `reserved` can (a release that
never ran, a hand edit). A first pass compares without locking; each suspect batch is then
checked again — and with `fix` repaired — in one transaction that first locks the ledger rows
(in ledger-id order, as every writer does; SQLite: takes its write lock) and only then sums
the open reservations. A concurrent authorize that already inserted its reservation but not
yet reserved on the locked row waits for the lock and adds its amount after the repair, and
the repair does not count it (it is not committed yet), so the sum stays exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, false, func, select, update

from ..db import SessionFactory, dialect_name, execute_core, wrap_database_errors
from ..tables import Ledger, Reservation
from .report import LedgerDrift, ReconcileReport

__all__ = ["SqlReconciler"]

_ledgers: Table = Ledger.__table__  # type: ignore[attr-defined]
_reservations: Table = Reservation.__table__  # type: ignore[attr-defined]
_PAGE = 500


def _held(rows: Sequence[Any], wanted: set[str] | None = None) -> dict[str, int]:
    """Sum of the open reservations' amounts per ledger they hold on (each ledger once per reservation)."""
    held: dict[str, int] = {}
    for amount, charges in rows:
        for ledger_id in set(charges):
            if wanted is None or ledger_id in wanted:
                held[ledger_id] = held.get(ledger_id, 0) + int(amount)
    return held


class SqlReconciler:
    """Compares (and with `fix`, repairs) `ledgers.reserved` with the open reservations."""

    def __init__(self, sessions: SessionFactory, *, batch: int = 100) -> None:
        self._sessions = sessions
        self._batch = batch

    async def run(self, *, fix: bool, fix_ahead: bool = False) -> ReconcileReport:
        """`fix_ahead` is accepted for symmetry with Redis; a SQL ledger is its own counter."""
        del fix_ahead
        async with wrap_database_errors(), self._sessions() as session:
            open_rows = (
                await execute_core(
                    session,
                    select(_reservations.c.amount, _reservations.c.charges).where(_reservations.c.released == false()),
                )
            ).all()
            held = _held(open_rows)
            reserved = {
                row[0]: int(row[1])
                for row in (
                    await execute_core(
                        session, select(_ledgers.c.ledger_id, _ledgers.c.reserved).where(_ledgers.c.reserved != 0)
                    )
                ).all()
            }
            checked = int((await execute_core(session, select(func.count()).select_from(_ledgers))).one()[0])
        suspects = sorted(lid for lid in set(reserved) | set(held) if reserved.get(lid, 0) != held.get(lid, 0))
        drifts: list[LedgerDrift] = []
        for i in range(0, len(suspects), self._batch):
            drifts += await self._confirm(suspects[i : i + self._batch], fix=fix)
        return ReconcileReport("sql", checked, len(open_rows), tuple(drifts), fix)

    async def _confirm(self, chunk: Sequence[str], *, fix: bool) -> list[LedgerDrift]:
        drifts: list[LedgerDrift] = []
        async with wrap_database_errors(), self._sessions() as session:
            transaction = await session.begin()
            try:
                rows = await self._lock(session, chunk)
                open_rows = (
                    await execute_core(
                        session,
                        select(_reservations.c.amount, _reservations.c.charges).where(_reservations.c.released == false()),
                    )
                ).all()
                held = _held(open_rows, set(chunk))
                for ledger_id, spent, version, reserved in rows:
                    expected = held.get(ledger_id, 0)
                    if int(reserved) == expected:
                        continue
                    if fix:
                        await session.exec(
                            update(_ledgers).where(_ledgers.c.ledger_id == ledger_id).values(reserved=expected)
                        )
                    drifts.append(
                        LedgerDrift(
                            ledger_id, ("reserved",), int(spent), int(spent), int(version), int(version),
                            int(reserved), expected, 0, fix,
                        )
                    )
                if fix:
                    await transaction.commit()
                else:
                    await transaction.rollback()
            except BaseException:
                if transaction.is_active:
                    await transaction.rollback()
                raise
        return drifts

    @staticmethod
    async def _lock(session: Any, chunk: Sequence[str]) -> list[Any]:
        """Lock the chunk's ledger rows in id order — code point order, as records sort them — and read them."""
        ids = sorted(chunk)
        postgres = dialect_name(session) == "postgresql"
        query = (
            select(_ledgers.c.ledger_id, _ledgers.c.spent, _ledgers.c.version, _ledgers.c.reserved)
            .where(_ledgers.c.ledger_id.in_(ids))
            .order_by(_ledgers.c.ledger_id.collate("C") if postgres else _ledgers.c.ledger_id)
        )
        if postgres:
            return list((await execute_core(session, query.with_for_update())).all())
        # SQLite: a write as the first statement takes the database's write lock at once.
        await session.exec(
            update(_ledgers).where(_ledgers.c.ledger_id.in_(ids)).values(reserved=_ledgers.c.reserved)
        )
        return list((await execute_core(session, query)).all())
