"""Spend rollups: what a batch of recorded requests adds to `spend_rollups`, and writing it.

Each recorded request adds, for every entity it charged (once per entity, however many budget
windows of that entity it charged) and for the pseudo-entity `*`/`*` (every request, once), its
cost, one request and — when it failed — one failure, to the row of its UTC hour, model, key and
outcome. The rows are written in the record's own transaction (`ledger_store.py` runs
`SpendRollupWriter` there), so a report can never disagree with a ledger.

Which hour: the record's `created_at`, moved into the periods of the ledgers it charged. All of
a request's ledgers were chosen at one instant (its authorize), so their periods overlap; a
record that arrives after its period closed (authorized at 12:59:59, recorded at 13:00:01) is
still reported in the period its ledger charged — the sum over a ledger's period is that
ledger's `spent` whenever the period's boundaries are whole UTC hours.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from sqlalchemy import Table
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..sqlite_statements import SqliteStatement
from ..tables import SpendRollup

if TYPE_CHECKING:
    from ..record_batch import WrittenBatch

__all__ = ["ALL", "RollupKey", "RollupDelta", "SpendRollupWriter", "rollup_deltas", "rollup_hour"]

#: The pseudo-entity every recorded request is counted under once: unfiltered reports read it.
ALL = ("*", "*")
_TINY = timedelta(microseconds=1)


class Recorded(Protocol):
    """What a rollup needs of a spend event (a `SpendEvent`, or a row read by the backfill)."""

    @property
    def cost(self) -> int: ...
    @property
    def outcome(self) -> str: ...
    @property
    def key_id(self) -> str | None: ...
    @property
    def model(self) -> str | None: ...
    @property
    def charges(self) -> list[dict[str, Any]]: ...
    @property
    def created_at(self) -> datetime: ...


class RollupKey(NamedTuple):
    entity_type: str
    entity_id: str
    hour: datetime
    model: str
    key_id: str
    outcome: str


class RollupDelta(NamedTuple):
    key: RollupKey
    spend: int
    requests: int
    failures: int


def _instant(value: Any) -> datetime | None:
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def rollup_hour(event: Recorded) -> datetime:
    """The UTC hour a request is reported in: its record time, moved into its charged periods."""
    at = _instant(event.created_at)
    assert at is not None
    for charge in event.charges:
        start, end = _instant(charge.get("period_start")), _instant(charge.get("period_end"))
        if start is not None and at < start:
            at = start
        if end is not None and at >= end:
            at = end - _TINY
    return at.replace(minute=0, second=0, microsecond=0)


def rollup_deltas(events: Iterable[Recorded]) -> list[RollupDelta]:
    """The rows `events` add to, summed per row and sorted by key (the lock order)."""
    sums: dict[RollupKey, list[int]] = defaultdict(lambda: [0, 0, 0])
    for event in events:
        hour = rollup_hour(event)
        entities = dict.fromkeys([ALL, *((c["entity_type"], c["entity_id"]) for c in event.charges)])
        failed = 1 if event.outcome == "failure" else 0
        for entity_type, entity_id in entities:
            row = sums[RollupKey(entity_type, entity_id, hour, event.model or "", event.key_id or "", event.outcome)]
            row[0] += event.cost
            row[1] += 1
            row[2] += failed
    return [RollupDelta(key, *sums[key]) for key in sorted(sums)]


class SpendRollupWriter:
    """Adds a batch's rollups inside the batch's transaction (a `record_batch.InTransaction`)."""

    async def postgres(self, connection: Any, batch: WrittenBatch) -> None:
        deltas = rollup_deltas(batch.events)
        if deltas:
            await connection.execute(
                _PG_ADD_ROLLUPS,
                *([delta.key[i] for delta in deltas] for i in range(len(RollupKey._fields))),
                [delta.spend for delta in deltas],
                [delta.requests for delta in deltas],
                [delta.failures for delta in deltas],
            )

    def sqlite(self, db: sqlite3.Connection, batch: WrittenBatch) -> None:
        deltas = rollup_deltas(batch.events)
        if deltas:
            db.executemany(_SQLITE_ADD_ROLLUP.sql, _SQLITE_ADD_ROLLUP.many(
                [{**delta.key._asdict(), "spend": delta.spend, "requests": delta.requests, "failures": delta.failures}
                 for delta in deltas]
            ))


_ROLLUPS: Table = SpendRollup.__table__  # type: ignore[attr-defined]


def _sqlite_add_rollup() -> SqliteStatement:
    """SQLite: adds one row's deltas, inserting it if never written before (run per row, in key order)."""
    insert = sqlite_insert(_ROLLUPS)
    upsert = insert.on_conflict_do_update(
        index_elements=list(RollupKey._fields),
        set_={
            "spend": _ROLLUPS.c.spend + insert.excluded.spend,
            "requests": _ROLLUPS.c.requests + insert.excluded.requests,
            "failures": _ROLLUPS.c.failures + insert.excluded.failures,
        },
    )
    return SqliteStatement(upsert, [*RollupKey._fields, "spend", "requests", "failures"])


_SQLITE_ADD_ROLLUP = _sqlite_add_rollup()

#: Adds each row's deltas, inserting rows never written before, in key order (no deadlocks).
_PG_ADD_ROLLUPS = """
    INSERT INTO spend_rollups (entity_type, entity_id, hour, model, key_id, outcome, spend, requests, failures)
    SELECT r.entity_type, r.entity_id, r.hour, r.model, r.key_id, r.outcome, r.spend, r.requests, r.failures
    FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
                $7::bigint[], $8::bigint[], $9::bigint[])
         WITH ORDINALITY AS r(entity_type, entity_id, hour, model, key_id, outcome, spend, requests, failures,
                              position)
    ORDER BY r.position
    ON CONFLICT (entity_type, entity_id, hour, model, key_id, outcome) DO UPDATE
        SET spend = spend_rollups.spend + excluded.spend,
            requests = spend_rollups.requests + excluded.requests,
            failures = spend_rollups.failures + excluded.failures
"""
