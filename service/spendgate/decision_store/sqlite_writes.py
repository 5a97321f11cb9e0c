"""The background writer's batches on the embedded database's one writer: the SQLite counters' thread.

The counters take the file's one write lock in their own thread for every decision. The background
writer's transaction, on the engine's connection, took it as well and held it across its awaits, so
in a storm of refusals — each one a row here — the counters' writes waited for it (bench/README.md,
seventeenth round). A batch, and a prune, is now one more write job of that thread, committed with
the counters' writes (`sqlite_statements.py`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import bindparam, delete

from ..alerts.events import AlertDraft
from ..alerts.outbox import insert_sqlite
from ..counters.sqlite_worker import SqliteWorker
from ..sqlite_statements import SqliteStatement
from .store import ENTITIES, RECORDS, StoredRow, entity_rows, pruning

__all__ = ["SqliteBatchWriter"]

_RECORDS = SqliteStatement(RECORDS.insert(), [c.name for c in RECORDS.c])
_ENTITIES = SqliteStatement(ENTITIES.insert(), [c.name for c in ENTITIES.c])


def _write(db: sqlite3.Connection, records: list[tuple[Any, ...]], entities: list[tuple[Any, ...]],
           drafts: Sequence[AlertDraft]) -> None:
    if records:
        db.executemany(_RECORDS.sql, records)
    if entities:
        db.executemany(_ENTITIES.sql, entities)
    insert_sqlite(db, drafts)


_FORGET_ENTITIES = SqliteStatement(
    delete(ENTITIES).where(ENTITIES.c.decision_id == bindparam("decision_id")), ["decision_id"]
)


def _prune(db: sqlite3.Connection, *, sql: str, parameters: tuple[Any, ...]) -> int:
    gone = db.execute(sql, parameters).fetchall()
    db.executemany(_FORGET_ENTITIES.sql, gone)
    return len(gone)


class SqliteBatchWriter:
    """The background writer's sink on SQLite: each batch, and each prune, a write job of the counters'
    worker."""

    def __init__(self, worker: SqliteWorker) -> None:
        self._worker = worker

    async def write(self, rows: Sequence[StoredRow], drafts: Sequence[AlertDraft]) -> None:
        """Committed (with whatever the counters wrote in the same batch) when this returns."""
        records = _RECORDS.many([row._asdict() for row in rows])
        entities = _ENTITIES.many(entity_rows(rows))
        await self._worker.write(partial(_write, records=records, entities=entities, drafts=drafts))

    async def prune(self, *, max_rows: int, max_age_seconds: float, now: datetime) -> int:
        statement = SqliteStatement(pruning(max_rows=max_rows, max_age_seconds=max_age_seconds, now=now))
        return await self._worker.write(partial(_prune, sql=statement.sql, parameters=statement.parameters()))
