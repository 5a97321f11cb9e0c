"""Group commit for records: the records that arrive while a ledger write is in flight are
written together by the next one.

Why: every record adds to the same few shared rows (its org's and team's ledgers). One
transaction per record turns those rows into a lock convoy and costs two statements per
record; one transaction per batch takes each row lock once and amortises the statements.
Nothing waits on a timer: a batch is whatever queued while the previous write ran, so at low
load every batch is a single record and latency is unchanged.

Acknowledged still means durable: a caller's answer resolves only after its batch commits.
A batch that fails for a reason other than a lost connection (a deadlock, a value the
database refuses) is written again one record at a time, so one bad record never fails its
neighbours.

Extension point: `InTransaction` writers (rollups for reports, and anything else that must
commit with the record or not at all, such as an alert outbox) run inside the batch's
transaction after the events and ledgers, with the events that were new and the ledger
snapshots as that transaction left them. `LedgerStore(in_transaction=[...])` adds more.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeAlias

from .errors import Unavailable

from .ledgers import LedgerRef, LedgerSnapshot

if TYPE_CHECKING:
    from .tables import SpendEvent

__all__ = ["BatchItem", "BatchWriter", "InTransaction", "RecordBatcher", "WrittenBatch"]

log = logging.getLogger("spendgate.record")


class WrittenBatch(NamedTuple):
    """What one record transaction wrote, for the `InTransaction` writers."""

    #: The spend events this transaction inserted (duplicates left out), in request-id order.
    events: tuple[SpendEvent, ...]
    #: The ledgers they charged, keyed by ledger id, as this transaction left them.
    snapshots: dict[str, LedgerSnapshot]


class InTransaction(Protocol):
    """Writes more rows in a record transaction — committed with the record or not at all.

    Keep each to one or two statements with rows in a fixed order (concurrent batches must
    lock alike); an exception fails the batch (which is then written one record at a time)."""

    async def postgres(self, connection: Any, batch: WrittenBatch) -> None:
        """On the batch's asyncpg connection (PostgreSQL), inside its transaction."""

    def sqlite(self, db: sqlite3.Connection, batch: WrittenBatch) -> None:
        """On the embedded database's one writer (SQLite: its thread, `sqlite_statements.py`), inside
        the transaction of the batch of writes the record is in."""


@dataclass(slots=True)
class BatchItem:
    """One record waiting for its batch: the event, its ledgers (unique, in id order), its answer."""

    event: SpendEvent
    ledgers: tuple[LedgerRef, ...]
    #: The hard limit in force per ledger id when the record was decided (absent: none) — written
    #: to the ledger row for the console's ranking (`Ledger.limit_at_charge`).
    limits: Mapping[str, int | None] = field(default_factory=dict)
    #: Resolves to the committed snapshots of `ledgers`, or None when the event already existed.
    answer: asyncio.Future[tuple[LedgerSnapshot, ...] | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


#: Writes a batch in one transaction; returns, per request id, the snapshots of the ledgers it
#: charged — or None for an event that already existed (nothing was charged for it).
BatchWriter: TypeAlias = "Callable[[Sequence[BatchItem]], Awaitable[dict[str, tuple[LedgerSnapshot, ...] | None]]]"


class RecordBatcher:
    """Queues records and writes them in batches of at most `max_batch`, `concurrency` at a time."""

    def __init__(self, write: BatchWriter, *, max_batch: int = 64, concurrency: int = 2) -> None:
        if max_batch < 1 or concurrency < 1:
            raise ValueError("max_batch and concurrency must be at least 1")
        self._write = write
        self._max_batch = max_batch
        self._concurrency = concurrency
        self._queue: list[BatchItem] = []
        #: Flushers still able to take work: counted down in the same step in which a flusher sees
        #: an empty queue, so a record queued after that always starts a new one.
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(
        self, event: SpendEvent, ledgers: tuple[LedgerRef, ...], limits: Mapping[str, int | None] | None = None
    ) -> tuple[LedgerSnapshot, ...] | None:
        """Write one record with the next batch (`ledgers` unique, in id order); None when its
        request id was already recorded."""
        item = BatchItem(event, ledgers, limits or {})
        self._queue.append(item)
        if self._running < self._concurrency:
            self._running += 1
            task = asyncio.create_task(self._flush(), name="spendgate-record-batch")
            self._tasks.add(task)  # a reference, so the task is not garbage-collected mid-write
            task.add_done_callback(self._tasks.discard)
        # The write runs in a flusher task, not the caller's: a caller that goes away (client
        # disconnect) cancels only its own wait, never a transaction its neighbours share.
        return await item.answer

    def _take(self) -> list[BatchItem]:
        """The next batch: oldest first, one item per request id (a repeat waits for the next
        batch and then finds the first one committed)."""
        batch: list[BatchItem] = []
        ids: set[str] = set()
        rest: list[BatchItem] = []
        for item in self._queue:
            if len(batch) < self._max_batch and item.event.request_id not in ids:
                batch.append(item)
                ids.add(item.event.request_id)
            else:
                rest.append(item)
        self._queue = rest
        return batch

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                try:
                    await self._write_and_answer(batch)
                except BaseException as exc:  # noqa: BLE001 — every waiter must hear about it
                    for item in batch:
                        _fail(item, exc)
                    if not isinstance(exc, Exception):
                        raise
        finally:
            self._running -= 1  # no await since the empty-queue check: nothing can slip in between

    async def _write_and_answer(self, batch: list[BatchItem]) -> None:
        try:
            results = await self._write(batch)
        except Unavailable:
            raise  # the database is gone: one at a time would fail alike
        except Exception as exc:
            if len(batch) == 1:
                raise
            log.warning("a batch of %d records failed (%s); writing them one at a time", len(batch), type(exc).__name__)
            for item in batch:
                try:
                    _answer(item, (await self._write([item]))[item.event.request_id])
                except Exception as single:  # noqa: BLE001 — reported to that record's caller
                    _fail(item, single)
            return
        for item in batch:
            _answer(item, results[item.event.request_id])


def _answer(item: BatchItem, snapshots: tuple[LedgerSnapshot, ...] | None) -> None:
    if not item.answer.done():
        item.answer.set_result(snapshots)


def _fail(item: BatchItem, exc: BaseException) -> None:
    if not item.answer.done():
        item.answer.set_exception(exc)
