"""The alert outbox's part of a record transaction (`record_batch.InTransaction`).

Crossings and enforcement bypasses are caused by spend, so they are decided from what the
record transaction itself committed and inserted in that transaction: they exist exactly when
the spend does. Nothing is written unless an event is due (no statement on most batches). On
PostgreSQL the insert runs in a savepoint: an alert the database refuses is logged and the
record still commits — money first.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from ..pg_direct import is_connection_loss
from .events import AlertDraft, record_drafts
from .outbox import insert_postgres, insert_sqlite

if TYPE_CHECKING:
    from ..record_batch import WrittenBatch

__all__ = ["AlertOutboxWriter"]

log = logging.getLogger("spendgate.alerts")


class AlertOutboxWriter:
    """Inserts the events a record batch causes into `alert_events`, in that batch's transaction."""

    def __init__(self, *, thresholds: Sequence[int], clock: Callable[[], datetime]) -> None:
        self._thresholds = tuple(thresholds)
        self._clock = clock

    def _drafts(self, batch: WrittenBatch) -> list[AlertDraft]:
        return record_drafts(
            batch.events, {ledger_id: snap.spent for ledger_id, snap in batch.snapshots.items()}, self._thresholds,
            self._clock(),
        )

    async def postgres(self, connection: Any, batch: WrittenBatch) -> None:
        drafts = self._drafts(batch)
        if not drafts:
            return
        try:
            async with connection.transaction():  # a savepoint inside the batch's transaction
                await insert_postgres(connection, drafts)
        except asyncpg.PostgresError as exc:
            if is_connection_loss(exc):
                raise
            log.warning("%d alert events not stored (%s); the records are", len(drafts), type(exc).__name__)

    def sqlite(self, db: sqlite3.Connection, batch: WrittenBatch) -> None:
        insert_sqlite(db, self._drafts(batch))
