"""The background writer's batches on the embedded database's one writer: the SQLite counters' thread.

A SQLite file has one write lock. The counters take it in their own thread for every decision
(counters/sqlite_worker.py). The background writer's transaction, on the engine's connection, took
it as well and held it across its awaits, so in a storm of refusals — each one a row here — the
counters' writes waited for it, and SQLite's busy handler slept between their tries: 30 % fewer
refusals a second and almost twice the p99 (bench/README.md, seventeenth round). Handed to that
thread as one more write job, a batch commits with the counters' writes, and nothing waits for the
lock.

The statements are SQLAlchemy's own, compiled once for the engine's dialect, and every value goes
through its column type's bind processor (UTC timestamps as SQLAlchemy stores them, JSON by the
engine's serializer): the rows are the ones the session path writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.dml import Insert

from ..alerts.events import AlertDraft
from ..alerts.outbox import ALERTS, row_values
from ..counters.sqlite_worker import SqliteWorker
from .store import ENTITIES, RECORDS, StoredRow, entity_rows

__all__ = ["CompiledInsert", "SqliteBatchWriter"]


class CompiledInsert:
    """A Core INSERT of `columns`, compiled for `dialect`, with each column's bind processor."""

    def __init__(self, statement: Insert, columns: Sequence[str], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(columns))
        if compiled.positiontup is None:
            raise ValueError(f"{dialect.name} does not take positional parameters")
        self.sql = str(compiled)
        table = statement.table
        self._binds: list[tuple[str, Callable[[Any], Any] | None]] = [
            (name, table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in compiled.positiontup
        ]

    def parameters(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        """Each row's values in placeholder order, as its column types bind them."""
        return [
            tuple(row[name] if bind is None else bind(row[name]) for name, bind in self._binds)
            for row in rows
        ]


def _run(db: sqlite3.Connection, statements: Sequence[tuple[str, list[tuple[Any, ...]]]]) -> None:
    for sql, parameters in statements:
        if parameters:
            db.executemany(sql, parameters)


class SqliteBatchWriter:
    """Writes a batch of decision rows and alert events as one write job of the counters' worker."""

    def __init__(self, worker: SqliteWorker, dialect: Dialect) -> None:
        self._worker = worker
        self._records = CompiledInsert(RECORDS.insert(), [c.name for c in RECORDS.c], dialect)
        self._entities = CompiledInsert(ENTITIES.insert(), [c.name for c in ENTITIES.c], dialect)
        self._alerts = CompiledInsert(
            sqlite_insert(ALERTS).on_conflict_do_nothing(index_elements=["dedupe_key"]),
            [c.name for c in ALERTS.c], dialect,
        )

    async def write(self, rows: Sequence[StoredRow], drafts: Sequence[AlertDraft]) -> None:
        """Committed (with whatever the counters wrote in the same batch) when this returns."""
        statements = [
            (self._records.sql, self._records.parameters([row._asdict() for row in rows])),
            (self._entities.sql, self._entities.parameters(entity_rows(rows))),
            (self._alerts.sql, self._alerts.parameters(
                [row_values(d) for d in sorted(drafts, key=lambda d: d.dedupe_key)]
            )),
        ]
        await self._worker.write(partial(_run, statements=statements))
