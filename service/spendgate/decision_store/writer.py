"""The background writer: what authorize hands over without waiting — decision rows for the
recent-decisions store and `budget_exceeded` alert events — written in batches off the
decision path.

Authorize writes no database transaction (a denial touches only the counters), so these rows
cannot share one with their cause. Authorize puts them on an in-process queue (never awaits;
a full queue drops the item and counts it) and this task writes what has queued in one
transaction. After the first item of a batch it lingers `linger_seconds` (20 ms) for more: without
that, denials arriving one at a time were a transaction each (a storm of them from one gateway
connection cost the embedded default's single SQLite writer most of its time). A row lost with its
process is acceptable by design: the decision store is a recent-history aid, and a lost
`budget_exceeded` event is created again by the next refusal on that ledger (the insert is
idempotent on the outbox's unique key). Events already written are remembered (a bounded set), so a
storm of refusals does not rewrite the same event.

A batch's rows and events go in one transaction: by default a session's on the engine; on the
embedded default, a write job of the SQLite counters' own thread (`sqlite_writes.py`: the file has
one write lock, which the two connections fought over). Pruning follows a batch, in a transaction
of its own, after a tenth of the row cap or a minute since the last prune.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import NamedTuple, Protocol

from prometheus_client import Counter

from ..alerts.events import AlertDraft
from ..alerts.outbox import insert_core
from ..db import SessionFactory, wrap_database_errors
from ..errors import SpendgateError
from .store import StoredRow, prune, write_rows

__all__ = ["BackgroundWriter", "BatchSink", "SessionSink", "LINGER_SECONDS"]

log = logging.getLogger("spendgate.background")

#: Items waiting at most; beyond that authorize drops (and counts) rather than grow without bound.
_QUEUE_MAX = 10_000
_BATCH_MAX = 500
#: How long a batch waits for more after its first item (as the decision log's writer does).
LINGER_SECONDS = 0.02
_SEEN_MAX = 4096
#: Also prune at least this often while rows arrive, so the age cap holds under light traffic.
_PRUNE_EVERY_SECONDS = 60.0


class _Item(NamedTuple):
    row: StoredRow | None
    drafts: tuple[AlertDraft, ...]


class BatchSink(Protocol):
    """Where the writer's batches go: the engine's sessions, or the embedded database's one writer."""

    async def write(self, rows: Sequence[StoredRow], drafts: Sequence[AlertDraft]) -> None:
        """A batch's decision rows and alert events, in one transaction."""

    async def prune(self, *, max_rows: int, max_age_seconds: float, now: datetime) -> int:
        """`store.prune` in a transaction of its own; how many rows went."""


class SessionSink:
    """Batches through the engine's sessions (PostgreSQL; SQLite without its counters' writer)."""

    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    async def write(self, rows: Sequence[StoredRow], drafts: Sequence[AlertDraft]) -> None:
        async with wrap_database_errors(), self._sessions() as session, session.begin():
            await write_rows(session, rows)
            await insert_core(session, drafts)

    async def prune(self, *, max_rows: int, max_age_seconds: float, now: datetime) -> int:
        async with wrap_database_errors(), self._sessions() as session, session.begin():
            return await prune(session, max_rows=max_rows, max_age_seconds=max_age_seconds, now=now)


class BackgroundWriter:
    def __init__(
        self, sessions: SessionFactory, *, max_rows: int, max_age_seconds: float, clock: Callable[[], datetime],
        dropped: Counter | None = None, linger_seconds: float = LINGER_SECONDS, sink: BatchSink | None = None,
    ) -> None:
        self._sink: BatchSink = sink or SessionSink(sessions)
        self._linger = linger_seconds
        self._max_rows = max_rows
        self._max_age = max_age_seconds
        self._clock = clock
        self._dropped = dropped
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(_QUEUE_MAX)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._since_prune = 0
        self._last_prune = time.monotonic()

    def offer(self, row: StoredRow | None, drafts: Sequence[AlertDraft] = ()) -> None:
        """Queue a decision row and/or alert events; returns at once (the decision path calls it)."""
        fresh = tuple(d for d in drafts if d.dedupe_key not in self._seen)
        if row is None and not fresh:
            return
        try:
            self._queue.put_nowait(_Item(row, fresh))
        except asyncio.QueueFull:
            if self._dropped is not None:
                self._dropped.inc()

    async def drain(self) -> None:
        """Wait until everything offered so far is written (shutdown and tests)."""
        await self._queue.join()

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._linger > 0 and self._queue.qsize() < _BATCH_MAX - 1:
                await asyncio.sleep(self._linger)  # let a batch gather (nothing waits on it)
            while len(batch) < _BATCH_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            except SpendgateError as exc:
                log.warning("%d recent decisions / alert events not written: %s", len(batch), exc.message)
            except Exception:  # noqa: BLE001 — the writer must outlive any one failure
                log.exception("%d recent decisions / alert events not written", len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: Sequence[_Item]) -> None:
        rows = [item.row for item in batch if item.row is not None]
        drafts = {d.dedupe_key: d for item in batch for d in item.drafts if d.dedupe_key not in self._seen}
        await self._sink.write(rows, list(drafts.values()))
        for key in drafts:  # only once committed: a failed write is retried by the next refusal
            self._seen[key] = None
            if len(self._seen) > _SEEN_MAX:
                self._seen.popitem(last=False)
        self._since_prune += len(rows)
        if rows and (
            self._since_prune >= max(1, self._max_rows // 10)
            or time.monotonic() - self._last_prune > _PRUNE_EVERY_SECONDS
        ):
            self._since_prune, self._last_prune = 0, time.monotonic()  # a failed prune is tried again later
            try:
                await self._sink.prune(max_rows=self._max_rows, max_age_seconds=self._max_age, now=self._clock())
            except SpendgateError as exc:
                log.warning("recent decisions not pruned: %s", exc.message)
            except Exception:  # noqa: BLE001 — the rows are written; the next prune catches up
                log.exception("recent decisions not pruned")
