"""The authoritative ledger store (Postgres / SQLite): spend events, ledger totals, rollups.

Recording a request writes its spend event, the ledger increments and the report rollups in
one transaction; the spend event's primary key makes it happen once. Records that arrive
together are group-committed: by `record_batch.RecordBatcher` on PostgreSQL, by the file's one
writer (the SQLite counters' thread, `sqlite_statements.py`) on SQLite.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

from sqlalchemy import Table, literal_column, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .counters.sqlite_worker import SqliteWorker, connect_sqlite
from .db import SessionFactory, execute_core, sqlite_file, wrap_database_errors
from .errors import Unavailable
from .headroom import headroom_tier, headroom_tier_sql
from .ledgers import LedgerRef, LedgerSnapshot, charged_refs
from .pg_direct import direct_transaction
from .record_batch import BatchItem, InTransaction, RecordBatcher, WrittenBatch
from .reports.rollups import SpendRollupWriter
from .sqlite_statements import SqliteStatement
from .tables import Ledger, SpendEvent, utcnow

__all__ = ["LedgerStore", "RecordedSpend"]


class RecordedSpend(NamedTuple):
    """What a record wrote (or found already written, when `duplicate`)."""

    event: SpendEvent
    duplicate: bool
    snapshots: tuple[LedgerSnapshot, ...]


class LedgerStore:
    """Reads and writes of the ledger tables. Every write is one transaction."""

    def __init__(
        self,
        sessions: SessionFactory,
        *,
        batch_max: int = 64,
        batch_concurrency: int = 2,
        in_transaction: Sequence[InTransaction] = (),
    ) -> None:
        self._sessions = sessions
        #: Written in every record transaction after the events and ledgers (`record_batch.py`);
        #: the report rollups always, then these (append to add one at start-up).
        self.in_transaction: list[InTransaction] = [SpendRollupWriter(), *in_transaction]
        engine = sessions.kw.get("bind")
        if not isinstance(engine, AsyncEngine):
            raise TypeError("LedgerStore needs a session factory bound to an AsyncEngine")
        self._engine = engine
        #: PostgreSQL records are group-committed here (record_batch.py); SQLite's by the file's one
        #: writer, which they share with the counters when those are SQLite's (`write_through`).
        self._batcher = (
            RecordBatcher(self._write_batch, max_batch=batch_max, concurrency=batch_concurrency)
            if engine.dialect.name == "postgresql"
            else None
        )
        #: SQLite: a writer of this store's own (opens its connection on the first record), until the
        #: counters' is shared with it; made here so that a database it cannot write fails at start-up.
        self._sqlite_writer: SqliteWorker | None = None
        self._owns_writer = False
        if self._batcher is None:
            name, uri = sqlite_file(engine.url.render_as_string(hide_password=False))
            self._sqlite_writer = SqliteWorker(partial(connect_sqlite, name, uri=uri))
            self._owns_writer = True
        self._recorded = False

    def write_through(self, writer: SqliteWorker) -> None:
        """SQLite, before the first record: write records through `writer`, the counters' own — one writer
        for the file (`sqlite_statements.py` says why). The store's own writer, never used, is dropped."""
        if self._recorded:
            raise RuntimeError("write_through after a record: the store's own writer is in use")
        self._sqlite_writer, self._owns_writer = writer, False

    @property
    def sqlite_writer(self) -> SqliteWorker | None:
        """SQLite: the file's one writer, which records go through (and the recent-decisions store too)."""
        return self._sqlite_writer

    async def close(self) -> None:
        """Close the SQLite writer this store made for itself, if it made one (the counters close theirs)."""
        writer, owned = self._sqlite_writer, self._owns_writer
        self._sqlite_writer, self._owns_writer = None, False
        if owned and writer is not None:
            await writer.close()

    async def snapshots(self, ledger_ids: Sequence[str]) -> dict[str, LedgerSnapshot]:
        """Current `spent`/`version` of the given ledgers; absent ledgers are simply missing."""
        if not ledger_ids:
            return {}
        async with wrap_database_errors(), self._sessions() as session:
            columns = Ledger.__table__.c  # type: ignore[attr-defined]
            rows = await execute_core(
                session, select(columns.ledger_id, columns.spent, columns.version).where(columns.ledger_id.in_(ledger_ids))
            )
            return {row[0]: LedgerSnapshot(row[0], int(row[1]), int(row[2])) for row in rows.all()}

    async def find_event(self, request_id: str) -> SpendEvent | None:
        async with wrap_database_errors(), self._sessions() as session:
            return await session.get(SpendEvent, request_id)

    async def record(
        self, *, event: SpendEvent, ledgers: Sequence[LedgerRef], limits: Mapping[str, int | None] | None = None
    ) -> RecordedSpend:
        """Insert the spend event and add its cost to every ledger — once, in one transaction.

        A second call for the same request id writes nothing and returns the first event
        with `duplicate=True` (the caller compares cost and outcome). The ledger upsert is one
        statement whose rows come in ledger-id order, so concurrent records lock rows in the
        same order and never deadlock. The write shares a transaction with the writes that queued
        beside it — on PostgreSQL other records (`record_batch.py`), on SQLite whatever the file's
        one writer has queued (`sqlite_statements.py`); it still returns only once committed.
        `limits` (ledger id → the hard limit the decision was taken with; absent: none) is
        stored on each charged ledger as `limit_at_charge`, for the console's ranking only.
        """
        ordered = tuple(sorted({ref.id: ref for ref in ledgers}.values(), key=lambda ref: ref.id))
        limits = limits or {}
        if self._batcher is not None:
            written = await self._batcher.submit(event, ordered, limits)
            if written is not None:
                return RecordedSpend(event, False, written)
        else:
            if self._sqlite_writer is None:
                raise Unavailable("database", "the ledger store is closed")
            self._recorded = True
            written = await self._sqlite_writer.write(partial(
                self._record_sqlite,
                event=event,
                event_row=_SQLITE_INSERT_EVENT.parameters(event.model_dump()),
                ledger_rows=_sqlite_ledger_rows(ordered, event.cost, limits),
                ordered=ordered,
            ))
            if written is not None:
                return RecordedSpend(event, False, written)
        existing = await self.find_event(event.request_id)
        if existing is None:  # pragma: no cover - the conflicting row cannot vanish: events are never deleted
            raise RuntimeError(f"spend event {event.request_id!r} conflicted but cannot be read")
        current = await self.snapshots([ref.id for ref in charged_refs(existing)])
        return RecordedSpend(existing, True, tuple(current.values()))

    async def _write_batch(self, items: Sequence[BatchItem]) -> dict[str, tuple[LedgerSnapshot, ...] | None]:
        """PostgreSQL: insert the batch's events and add their costs to the ledgers, in one
        transaction of two statements (on asyncpg directly: `pg_direct.py` says why). Events go
        in request-id order and ledger rows in ledger-id order, so concurrent batches (any
        replica) lock in the same order."""
        events = sorted((item.event for item in items), key=lambda event: event.request_id)
        async with direct_transaction(self._engine) as connection:
            rows = await connection.fetch(
                _PG_INSERT_EVENTS,
                *_columns(events, "request_id", "cost", "outcome", "key_id", "model"),
                [json.dumps(event.charges) for event in events],
                *_columns(events, "policy_revision", "created_at"),
            )
            inserted = {row[0] for row in rows}
            deltas: dict[str, int] = defaultdict(int)
            refs: dict[str, LedgerRef] = {}
            limits: dict[str, int | None] = {}  # a ledger charged twice in the batch: the later record's
            for item in items:
                if item.event.request_id in inserted:
                    for ref in item.ledgers:
                        deltas[ref.id] += item.event.cost
                        refs[ref.id] = ref
                        limits[ref.id] = item.limits.get(ref.id)
            ordered = sorted(refs.values(), key=lambda ref: ref.id)
            updated = await connection.fetch(
                _PG_ADD_SPEND,
                *_columns(ordered, "id", "entity_type", "entity_id", "window", "period_start", "period_end"),
                [deltas[ref.id] for ref in ordered],
                [limits[ref.id] for ref in ordered],
                utcnow(),
            ) if ordered else []
            by_id = {row[0]: LedgerSnapshot(row[0], int(row[1]), int(row[2])) for row in updated}
            if inserted:
                batch = WrittenBatch(tuple(event for event in events if event.request_id in inserted), by_id)
                for writer in self.in_transaction:
                    await writer.postgres(connection, batch)
        return {
            item.event.request_id: tuple(by_id[ref.id] for ref in item.ledgers)
            if item.event.request_id in inserted else None
            for item in items
        }

    def _record_sqlite(
        self, db: sqlite3.Connection, *, event: SpendEvent, event_row: tuple[Any, ...],
        ledger_rows: list[tuple[Any, ...]], ordered: Sequence[LedgerRef],
    ) -> tuple[LedgerSnapshot, ...] | None:
        """SQLite, on the writer's thread, in its transaction: the event, one upsert per ledger (in
        ledger-id order), then the `in_transaction` writers. None when the event was recorded before."""
        if not db.execute(_SQLITE_INSERT_EVENT.sql, event_row).fetchall():
            return None
        found: dict[str, LedgerSnapshot] = {}
        for row in ledger_rows:
            for ledger_id, spent, version in db.execute(_SQLITE_ADD_SPEND.sql, row).fetchall():
                found[ledger_id] = LedgerSnapshot(ledger_id, int(spent), int(version))
        batch = WrittenBatch((event,), found)
        for writer in self.in_transaction:
            writer.sqlite(db, batch)
        return tuple(found[ref.id] for ref in ordered)


def _sqlite_ledger_rows(
    ordered: Sequence[LedgerRef], cost: int, limits: Mapping[str, int | None]
) -> list[tuple[Any, ...]]:
    """`_SQLITE_ADD_SPEND`'s parameters for each ledger, in the given (ledger-id) order."""
    now = utcnow()
    return [
        _SQLITE_ADD_SPEND.parameters({
            "ledger_id": ref.id, "entity_type": ref.entity_type, "entity_id": ref.entity_id, "window": ref.window,
            "period_start": ref.period_start, "period_end": ref.period_end, "spent": cost, "reserved": 0,
            "version": 1, "updated_at": now, "limit_at_charge": limits.get(ref.id),
            "headroom_tier": headroom_tier(cost, limits.get(ref.id)),
        })
        for ref in ordered
    ]


#: Adds each ledger's delta ($7) and sets its limit at charge ($8) and headroom tier — inserting
#: ledgers never charged before — in ledger-id order. The limit is usually unchanged and the tier
#: rarely changes (spendgate/headroom.py): an indexed column written with its old value keeps the
#: update HOT (ix_ledgers_never_ending_limited's predicate and ix_ledgers_headroom name them).
_PG_ADD_SPEND = f"""
    INSERT INTO ledgers (ledger_id, entity_type, entity_id, "window", period_start, period_end,
                         spent, reserved, version, updated_at, limit_at_charge, headroom_tier)
    SELECT l.ledger_id, l.entity_type, l.entity_id, l."window", l.period_start, l.period_end, l.cost, 0, 1, $9,
           l.limit_at_charge, {headroom_tier_sql("l.cost", "l.limit_at_charge")}
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::bigint[],
                $8::bigint[])
         WITH ORDINALITY AS l(ledger_id, entity_type, entity_id, "window", period_start, period_end, cost,
                              limit_at_charge, position)
    ORDER BY l.position
    ON CONFLICT (ledger_id) DO UPDATE SET spent = ledgers.spent + excluded.spent,
        version = ledgers.version + 1, updated_at = excluded.updated_at, limit_at_charge = excluded.limit_at_charge,
        headroom_tier = {headroom_tier_sql("ledgers.spent + excluded.spent", "excluded.limit_at_charge")}
    RETURNING ledger_id, spent, version
"""

#: Inserts a batch's spend events in the given order; returns the ids that were new.
_PG_INSERT_EVENTS = """
    INSERT INTO spend_events (request_id, cost, outcome, key_id, model, charges, policy_revision, created_at)
    SELECT e.request_id, e.cost, e.outcome, e.key_id, e.model, e.charges::json, e.policy_revision, e.created_at
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                $8::timestamptz[])
         WITH ORDINALITY AS e(request_id, cost, outcome, key_id, model, charges, policy_revision, created_at, position)
    ORDER BY e.position
    ON CONFLICT (request_id) DO NOTHING
    RETURNING request_id
"""


_EVENTS: Table = SpendEvent.__table__  # type: ignore[attr-defined]
_LEDGERS: Table = Ledger.__table__  # type: ignore[attr-defined]


def _sqlite_add_spend() -> SqliteStatement:
    """SQLite: adds the cost to one ledger (inserting it if never charged), sets its limit at charge
    and headroom tier — `_PG_ADD_SPEND`'s work for one row; returns (ledger_id, spent, version)."""
    insert = sqlite_insert(_LEDGERS)
    upsert = insert.on_conflict_do_update(
        index_elements=["ledger_id"],
        set_={
            "spent": _LEDGERS.c.spent + insert.excluded.spent,
            "version": _LEDGERS.c.version + 1,
            "updated_at": insert.excluded.updated_at,
            "limit_at_charge": insert.excluded.limit_at_charge,
            # the tier of the ledger's spend after this charge, under the limit just written
            "headroom_tier": literal_column(
                headroom_tier_sql("ledgers.spent + excluded.spent", "excluded.limit_at_charge")
            ),
        },
    ).returning(_LEDGERS.c.ledger_id, _LEDGERS.c.spent, _LEDGERS.c.version)
    return SqliteStatement(upsert, [c.name for c in _LEDGERS.c])


_SQLITE_ADD_SPEND = _sqlite_add_spend()
#: SQLite: the spend event, unless one with its request id exists; returns its id when it was new.
_SQLITE_INSERT_EVENT = SqliteStatement(
    sqlite_insert(_EVENTS).on_conflict_do_nothing(index_elements=["request_id"]).returning(_EVENTS.c.request_id),
    [c.name for c in _EVENTS.c],
)


def _columns(rows: Sequence[Any], *names: str) -> list[list[Any]]:
    """One list per attribute: the unnest(...) parameters of a batch statement."""
    return [[getattr(row, name) for row in rows] for name in names]
