"""SQL counters adapter: reservations on the ledger table itself (SQLite or PostgreSQL).

For PostgreSQL deployments without Redis (the embedded SQLite default runs `SqliteCounters`
on the same tables: counters/sqlite_counters.py; this adapter still works on SQLite). `spent` is the
ledger store's own column, so there is no cache to rebuild and settling needs no snapshot:
`reserved` sits next to it and the `reservations` table keeps each decision and its hold.

Every write is one transaction whose first statement writes (SQLite then takes its write
lock at once and waits its busy timeout instead of failing a lock upgrade). Admission is a
conditional `UPDATE … WHERE <room>`: the database re-checks the condition on the locked row,
so concurrent replicas can never overshoot a limit. Ledger rows are locked in ledger-id
order — as `LedgerStore.record` does — so transactions never deadlock. A released
reservation is marked, never deleted, by a guarded update (`WHERE released = false`),
which makes every release happen exactly once.

On SQLite (`one_writer=True`) this process's writes also queue on one asyncio lock. SQLite has a
single writer per file; without the lock, concurrent transactions meet its busy handler, which
polls with sleeps of up to 100 ms — at 16 connections that was p50 99 ms, p99 3.9 s for 74
authorizes/s (bench/floor.py, `spendgate sqlite` row). The database still arbitrates between
processes; the lock only turns the sleeping into a queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    any_,
    case,
    delete,
    false,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..db import SessionFactory, dialect_name, execute_core, wrap_database_errors
from ..errors import Unavailable
from ..ledgers import LedgerRef, LedgerSnapshot
from ..tables import Ledger, Reservation, utcnow
from .base import DECISION_KEEP_SECONDS, CommitOutcome, Figures, Hold, StoredDecision
from .holds import decision_json, refuse_invalid_commit, stored_decision, unique_holds

__all__ = ["SqlCounters"]

_ledgers: Table = Ledger.__table__  # type: ignore[attr-defined]
_reservations: Table = Reservation.__table__  # type: ignore[attr-defined]


def _insert(session: Any, table: Table) -> Any:
    dialect = dialect_name(session)
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table)


def _room(limit: int, amount: int) -> ColumnElement[bool]:
    """The admission rule on a ledger row: spent + reserved + amount <= limit (amount 0: < limit)."""
    held = _ledgers.c.spent + _ledgers.c.reserved
    return held + amount <= limit if amount > 0 else held < limit


# The sweep runs every second, so its work must follow what is due, not what the table keeps (every
# open reservation and a day of settled decisions). Each statement is one write (the rule above), whose
# subquery reads a range of ix_reservations_open_expiry (released, expires_at) and whose outer rows are
# looked up by primary key. With `request_id IN (SELECT …) AND released = false`, PostgreSQL hash-joined
# every open reservation (7.5 ms a sweep at 20,000) and SQLite walked them through the expiry index; the
# old forget step filtered on `created_at`, which no index leads with: a scan of every kept decision
# (45.8 ms at 220,000). tests/test_sql_counters_sweep.py counts the rows each statement reads.


def _by_id_in(subquery: Any, dialect: str) -> ColumnElement[bool]:
    """request_id among the subquery's ids, written so each database looks them up by primary key."""
    if dialect == "postgresql":  # = ANY(ARRAY(…)): an InitPlan, then an index lookup per id
        return _reservations.c.request_id == any_(func.array(subquery.scalar_subquery()))
    return _reservations.c.request_id.in_(subquery.scalar_subquery())


def _open_guard(dialect: str) -> ColumnElement[bool]:
    """released = false: the guard that makes every release happen once. On SQLite `+released` is not
    an index term, so the planner keeps to the primary key rather than walking the expiry index."""
    return literal_column("+released") == 0 if dialect == "sqlite" else _reservations.c.released == false()


def _release_due(now: datetime, limit: int, dialect: str) -> Any:
    """Release up to `limit` open reservations whose hold has expired, oldest first; answers each one's
    amount and charges. On PostgreSQL a row another replica's sweep holds is skipped, not waited for."""
    due = (
        select(_reservations.c.request_id)
        .where(_reservations.c.released == false(), _reservations.c.expires_at <= now)
        .order_by(_reservations.c.expires_at)
        .limit(limit)
    )
    if dialect == "postgresql":
        due = due.with_for_update(skip_locked=True)
    return (
        update(_reservations)
        .where(_by_id_in(due, dialect), _open_guard(dialect))
        .values(released=True)
        .returning(_reservations.c.amount, _reservations.c.charges)
    )


def _forget(cutoff: datetime, limit: int, dialect: str) -> Any:
    """Delete up to `limit` settled decisions whose hold expired before `cutoff`.

    A hold expires at or after its decision was made, so each decision is still kept at least as long
    as the idempotency window after it was made."""
    old = (
        select(_reservations.c.request_id)
        .where(_reservations.c.released == true(), _reservations.c.expires_at < cutoff)
        .limit(limit)
    )
    return delete(_reservations).where(_by_id_in(old, dialect))


def _unreserve(ledger_id: str, amount: int) -> Any:
    """Take `amount` off a ledger's reserved figure, never below zero."""
    return (
        update(_ledgers)
        .where(_ledgers.c.ledger_id == ledger_id)
        .values(reserved=case((_ledgers.c.reserved > amount, _ledgers.c.reserved - amount), else_=0))
    )


class SqlCounters:
    """The counters port on the ledger database; `close()` leaves the engine to its owner."""

    def __init__(self, sessions: SessionFactory, *, one_writer: bool = False) -> None:
        self._sessions = sessions
        self._writer = asyncio.Lock() if one_writer else None

    def _writing(self) -> AbstractAsyncContextManager[Any]:
        return self._writer if self._writer is not None else nullcontext()

    async def read(self, ledgers: Sequence[LedgerRef], *, max_age: float = 0.0) -> dict[str, Figures]:
        async with wrap_database_errors(), self._sessions() as session:
            return await self._figures(session, ledgers)

    async def prior_decision(self, request_id: str) -> StoredDecision | None:
        async with wrap_database_errors(), self._sessions() as session:
            return await self._prior(session, request_id)

    async def prior_and_read(
        self, request_id: str, ledgers: Sequence[LedgerRef], *, max_age: float = 0.0
    ) -> tuple[StoredDecision | None, dict[str, Figures]]:
        async with wrap_database_errors(), self._sessions() as session:  # one connection for both reads
            prior = await self._prior(session, request_id)
            return (prior, {}) if prior is not None else (None, await self._figures(session, ledgers))

    @staticmethod
    async def _figures(session: Any, ledgers: Sequence[LedgerRef]) -> dict[str, Figures]:
        return await SqlCounters._figures_of(session, sorted({ref.id for ref in ledgers}))

    @staticmethod
    async def _figures_of(session: Any, ids: Sequence[str]) -> dict[str, Figures]:
        if not ids:
            return {}
        rows = await execute_core(
            session,
            select(_ledgers.c.ledger_id, _ledgers.c.spent, _ledgers.c.reserved).where(_ledgers.c.ledger_id.in_(ids)),
        )
        found = {row[0]: Figures(int(row[1]), int(row[2])) for row in rows}
        return {ledger_id: found.get(ledger_id, Figures(0, 0)) for ledger_id in ids}

    @staticmethod
    async def _prior(session: Any, request_id: str) -> StoredDecision | None:
        row = (
            await execute_core(
                session,
                select(_reservations.c.amount, _reservations.c.decision).where(_reservations.c.request_id == request_id),
            )
        ).first()
        return None if row is None else stored_decision(request_id, row[0], row[1])

    async def commit_decision(
        self,
        *,
        decision: StoredDecision,
        holds: Sequence[Hold],
        ttl_seconds: int,
        now: datetime,
        unless_changed: Mapping[str, Figures] | None = None,
    ) -> CommitOutcome:
        refuse_invalid_commit(decision, holds, unless_changed)
        unique = unique_holds(holds)
        amount = decision.amount
        async with self._writing(), wrap_database_errors(), self._sessions() as session:
            transaction = await session.begin()
            try:
                inserted = await session.exec(
                    _insert(session, _reservations)
                    .values(
                        request_id=decision.request_id,
                        amount=amount,
                        charges=[hold.ledger.id for hold in unique],
                        decision=decision_json(decision),
                        expires_at=now + timedelta(seconds=ttl_seconds),
                        released=not unique,
                        created_at=utcnow(),
                    )
                    .on_conflict_do_nothing(index_elements=["request_id"])
                    .returning(_reservations.c.request_id)
                )
                if inserted.first() is None:
                    await transaction.rollback()
                    prior = await self.prior_decision(decision.request_id)
                    if prior is None:  # the first writer's row vanished between the two statements
                        raise Unavailable("database", "a concurrent authorize of this request id is in flight")
                    return CommitOutcome("duplicate", prior)
                if unless_changed is not None:
                    current = await self._figures_of(session, sorted(unless_changed))
                    if current != unless_changed:
                        await transaction.rollback()
                        return CommitOutcome("changed", None, figures=current)
                full = await self._reserve(session, unique, amount)
                if full:
                    await transaction.rollback()
                    return CommitOutcome("no_room", None, tuple(full))
                await transaction.commit()
            except BaseException:
                if transaction.is_active:
                    await transaction.rollback()
                raise
        return CommitOutcome("committed", decision)

    async def settle(self, *, request_id: str, snapshots: Sequence[LedgerSnapshot]) -> dict[str, Figures]:
        # `spent` was written by the ledger store into these very rows: only the hold is left.
        async with self._writing(), wrap_database_errors(), self._sessions() as session, session.begin():
            row = (
                await session.exec(
                    update(_reservations)
                    .where(_reservations.c.request_id == request_id, _reservations.c.released == false())
                    .values(released=True)
                    .returning(_reservations.c.amount, _reservations.c.charges)
                )
            ).first()
            if row is not None:
                for ledger_id in sorted(set(row[1])):
                    await session.exec(_unreserve(ledger_id, int(row[0])))
        return {}  # figures are read from the rows themselves when needed

    async def expire(self, *, now: datetime, limit: int = 500) -> int:
        async with self._writing(), wrap_database_errors(), self._sessions() as session, session.begin():
            rows = (await session.exec(_release_due(now, limit, dialect_name(session)))).all()
            totals: dict[str, int] = {}
            for amount, charges in rows:
                for ledger_id in set(charges):
                    totals[ledger_id] = totals.get(ledger_id, 0) + int(amount)
            for ledger_id in sorted(totals):
                await session.exec(_unreserve(ledger_id, totals[ledger_id]))
        await self._forget_old_decisions(now=now, limit=limit)
        return len(rows)

    async def _forget_old_decisions(self, *, now: datetime, limit: int) -> None:
        """Drop settled decisions once their idempotency window (24 h) is over, a batch at a time."""
        async with self._writing(), wrap_database_errors(), self._sessions() as session, session.begin():
            await session.exec(_forget(now - timedelta(seconds=DECISION_KEEP_SECONDS), limit, dialect_name(session)))

    async def ping(self) -> None:
        async with wrap_database_errors(), self._sessions() as session:
            await execute_core(session, text("SELECT 1"))

    async def close(self) -> None:
        """Nothing to close: the engine belongs to the application's lifespan."""

    # --- reserving --------------------------------------------------------------------

    @staticmethod
    async def _reserve(session: Any, holds: Sequence[Hold], amount: int) -> list[str]:
        if holds and dialect_name(session) == "sqlite":
            return await SqlCounters._reserve_at_once(session, holds, amount)
        return await SqlCounters._reserve_in_order(session, holds, amount)

    @staticmethod
    async def _reserve_at_once(session: Any, holds: Sequence[Hold], amount: int) -> list[str]:
        """SQLite: two statements for all the ledgers (create the missing rows, then one guarded
        update returning the rows it reserved on). SQLite locks the whole file, so there is no
        row-lock order to keep; every statement is a thread hop in aiosqlite while the one writer
        waits, which made the per-ledger loop (13 statements for 6 ledgers) the bottleneck."""
        stamp = utcnow()
        await session.exec(
            _insert(session, _ledgers)
            .values([
                {
                    "ledger_id": hold.ledger.id, "entity_type": hold.ledger.entity_type,
                    "entity_id": hold.ledger.entity_id, "window": hold.ledger.window,
                    "period_start": hold.ledger.period_start, "period_end": hold.ledger.period_end,
                    "spent": 0, "reserved": 0, "version": 0, "updated_at": stamp,
                }
                for hold in holds
            ])
            .on_conflict_do_nothing(index_elements=["ledger_id"])
        )
        admits = [
            _ledgers.c.ledger_id == hold.ledger.id
            if hold.limit is None
            else and_(_ledgers.c.ledger_id == hold.ledger.id, _room(hold.limit, amount))
            for hold in holds
        ]
        reserved = await session.exec(
            update(_ledgers)
            .where(or_(*admits))
            .values(reserved=_ledgers.c.reserved + amount)
            .returning(_ledgers.c.ledger_id)
        )
        done = {row[0] for row in reserved}
        return [hold.ledger.id for hold in holds if hold.ledger.id not in done]

    @staticmethod
    async def _reserve_in_order(session: Any, holds: Sequence[Hold], amount: int) -> list[str]:
        """Reserve on each ledger in id order (creating its row first); the ids without room.

        Creating and updating one ledger before touching the next keeps every row lock —
        including the one on a freshly inserted row — in ledger-id order.
        """
        stamp = utcnow()
        full: list[str] = []
        for hold in holds:
            ref = hold.ledger
            await session.exec(
                _insert(session, _ledgers)
                .values(
                    ledger_id=ref.id,
                    entity_type=ref.entity_type,
                    entity_id=ref.entity_id,
                    window=ref.window,
                    period_start=ref.period_start,
                    period_end=ref.period_end,
                    spent=0,
                    reserved=0,
                    version=0,
                    updated_at=stamp,
                )
                .on_conflict_do_nothing(index_elements=["ledger_id"])
            )
            statement = update(_ledgers).where(_ledgers.c.ledger_id == ref.id)
            if hold.limit is not None:
                statement = statement.where(_room(hold.limit, amount))
            result = await session.exec(statement.values(reserved=_ledgers.c.reserved + amount))
            if result.rowcount == 0:
                full.append(ref.id)
        return full
