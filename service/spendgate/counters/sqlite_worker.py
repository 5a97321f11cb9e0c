"""One SQLite connection owned by one thread, with group commit: a generic batcher of jobs.

A job is a plain function of a `sqlite3.Connection` that runs its statements synchronously. Each
call is one hop to the thread, and the event loop never waits on SQLite: a busy wait for the
file's write lock (another process, or the engine's own connection in this one) blocks only that
thread. Why not SQLAlchemy over aiosqlite: there every statement is compiled and is a hop of its
own while the one-writer lock is held across all those awaits — 6.7 ms of CPU per authorize and
~140 authorizes/s at any concurrency (bench/README.md, "Against the floor").

Group commit, in the shape of `record_batch.py`: the jobs that queue while a batch runs go into
the next batch together; nothing waits on a timer, so at low load a batch is one job and latency
is one hop. In a batch the reads run first (autocommit: they see committed rows only), then all
the writes in ONE `BEGIN IMMEDIATE` transaction — a write that raises rolls back alone and its
caller hears the exception; its neighbours commit. A write's answer resolves only after the
commit: acknowledged still means durable.

A write rarely raises, so a batch first runs its writes one after the other inside one savepoint;
only if one raises is what they wrote undone (back to that savepoint, the lock kept) and the batch
run again with a savepoint around each write. Why: every statement hands the GIL back and waits to
take it again from the event loop. This, one statement for a commit's reads (sqlite_counters.py)
and the busy timeout set only when it changes took a batch of 8 writes from 52 statements to 27
(what that bought, +1 to +8 % authorizes a second by run: bench/README.md, fourteenth round). A
write is a function of the database alone, so running it again after the undo gives what it
would have given.

A transaction that fails as a whole (the lock not granted within the busy timeout, an I/O error)
fails every write of the batch, and SQLite's "unreachable" errors become 503
`Unavailable("database")`.

The thread never sits on the write lock for long: it asks for it with a short busy timeout
(`_LOCK_POLL_MS`) and, refused, hands the batch's writes back to the front of the queue, so the
reads queued meanwhile run before the next try. Without that, a coroutine holding a write
transaction on the engine's own connection while it awaits a read here (an admin change shows
the ledgers it touched) would wait behind a write that waits for it: stuck for the whole busy
timeout. A write still refused after `lock_wait_seconds` fails as a 503.

A caller that goes away (client disconnect) cancels only its own wait: a job already in a batch
runs with it; one still queued is dropped.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

from ..db import SQLITE_PRAGMAS
from ..errors import Unavailable

__all__ = ["SqliteWorker", "connect_sqlite"]

T = TypeVar("T")

#: How long one try for the write lock waits inside SQLite before the queued reads get their turn.
_LOCK_POLL_MS = 20

#: SQLite errors that mean "the database cannot be used now", not "this job is wrong".
_UNREACHABLE: tuple[type[BaseException], ...] = (sqlite3.OperationalError, sqlite3.InterfaceError, OSError)


def connect_sqlite(name: str, *, uri: bool = False) -> sqlite3.Connection:
    """A connection with the engine's pragmas, in autocommit mode: transactions are explicit."""
    connection = sqlite3.connect(name, uri=uri, isolation_level=None, check_same_thread=True, cached_statements=256)
    for pragma in SQLITE_PRAGMAS:
        connection.execute(pragma)
    return connection


class _Job(NamedTuple):
    run: Callable[[sqlite3.Connection], Any]
    writes: bool
    answer: asyncio.Future[Any]
    #: time.monotonic() after which a write still refused the lock fails.
    deadline: float


class _LockRefused(NamedTuple):
    """A write batch's outcome when another connection holds the write lock: try again."""

    error: sqlite3.OperationalError


#: A job's outcome: (True, its value) or (False, the exception it raised).
_Outcome = tuple[bool, Any]


class SqliteWorker:
    """Runs jobs on one thread's own connection, the writes of each batch in one transaction."""

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], *, max_batch: int = 64, lock_wait_seconds: float = 30.0
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._connect = connect
        self._max_batch = max_batch
        self._lock_wait = lock_wait_seconds
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spendgate-sqlite")
        #: Only ever touched on the worker thread: the connection; its own busy timeout (ms), which
        #: reads keep while a write asks for the lock `_LOCK_POLL_MS` at a time; the one set now.
        self._db: sqlite3.Connection | None = None
        self._patience = 0
        self._busy_timeout = 0
        #: Whether the file is in WAL mode (SQLITE_PRAGMAS asks for it; a filesystem may refuse it).
        self._wal = True
        self._queue: list[_Job] = []
        self._busy = False
        self._closed = False
        self._idle: asyncio.Future[None] | None = None
        #: Write transactions committed (a batch of writes is one).
        self.commits = 0

    async def read(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """`run(connection)` outside any transaction (it sees committed rows only)."""
        result: T = await self._submit(run, writes=False)
        return result

    async def write(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """`run(connection)` in the next write transaction; answered once that has committed."""
        result: T = await self._submit(run, writes=True)
        return result

    async def close(self) -> None:
        """Finish what is queued, then close the connection and end the thread."""
        self._closed = True
        loop = asyncio.get_running_loop()
        while self._busy:
            self._idle = loop.create_future()
            await self._idle
        await loop.run_in_executor(self._executor, self._close_connection)
        self._executor.shutdown(wait=False)

    # --- the event loop's side ----------------------------------------------------------

    def _submit(self, run: Callable[[sqlite3.Connection], Any], *, writes: bool) -> asyncio.Future[Any]:
        if self._closed:
            raise Unavailable("database", "the SQLite counters are closed")
        loop = asyncio.get_running_loop()
        job = _Job(run, writes, loop.create_future(), time.monotonic() + self._lock_wait)
        self._queue.append(job)
        if not self._busy:
            self._dispatch(loop)
        return job.answer

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand the next batch to the thread, or go idle. Called with no batch in flight."""
        batch: list[_Job] = []
        while not batch and self._queue:  # skipping the jobs whose callers went away
            batch = [job for job in self._queue[: self._max_batch] if not job.answer.done()]
            del self._queue[: self._max_batch]
        if not batch:
            self._busy = False
            if self._idle is not None and not self._idle.done():
                self._idle.set_result(None)
            return
        self._busy = True
        self._executor.submit(self._run, loop, batch)

    def _finish(self, loop: asyncio.AbstractEventLoop, batch: list[_Job], outcomes: list[_Outcome]) -> None:
        retry: list[_Job] = []
        for job, (ok, value) in zip(batch, outcomes, strict=True):
            if job.answer.done():
                continue
            if isinstance(value, _LockRefused):
                if time.monotonic() < job.deadline:
                    retry.append(job)
                else:
                    job.answer.set_exception(_unavailable(value.error))
            elif ok:
                job.answer.set_result(value)
            else:
                job.answer.set_exception(_unavailable(value) if isinstance(value, _UNREACHABLE) else value)
        if retry:  # the reads that queued meanwhile first (a batch is at most max_batch jobs), then these
            queued = self._queue
            self._queue = [job for job in queued if not job.writes] + retry + [job for job in queued if job.writes]
        self._dispatch(loop)

    # --- the worker thread's side -------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Job]) -> None:
        try:
            outcomes = self._run_batch(batch)
        except BaseException as exc:  # noqa: BLE001 — every waiter must hear about it, and the queue go on
            outcomes = [(False, exc)] * len(batch)
            self._drop_connection()  # in an unknown state (a transaction left open?): the next batch reconnects
        try:
            loop.call_soon_threadsafe(self._finish, loop, batch, outcomes)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _run_batch(self, batch: list[_Job]) -> list[_Outcome]:
        if self._db is None:
            self._db = self._connect()
            self._patience = self._busy_timeout = int(self._db.execute("PRAGMA busy_timeout").fetchone()[0])
            self._wal = str(self._db.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
        db = self._db
        outcomes: list[_Outcome] = [(False, None)] * len(batch)
        writes: list[int] = []
        for index, job in enumerate(batch):
            if job.writes:
                writes.append(index)
            else:
                self._wait_for_locks(db, self._patience)
                outcomes[index] = _attempt(job.run, db)
        if writes:
            for index, outcome in zip(writes, self._transaction(db, [batch[i].run for i in writes]), strict=True):
                outcomes[index] = outcome
        return outcomes

    def _transaction(self, db: sqlite3.Connection, runs: list[Callable[[sqlite3.Connection], Any]]) -> list[_Outcome]:
        """All the writes in one transaction (each in a savepoint of its own once one of them raised); if the
        transaction fails, every one fails. The write lock refused (another connection writes): every one
        is to be tried again."""
        # Each statement gives up the GIL and waits to take it back from the event loop (up to the
        # switch interval): a batch's statements are kept few. Holding the write lock of a WAL file,
        # nothing in the transaction waits for a lock: the short timeout stays until a read needs more.
        self._wait_for_locks(db, _LOCK_POLL_MS)
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:  # extended codes too: BUSY_SNAPSHOT, …
                return [(False, _LockRefused(exc))] * len(runs)
            return [(False, exc)] * len(runs)
        if not self._wal:  # without WAL the COMMIT waits for readers to finish: with its patience
            self._wait_for_locks(db, self._patience)
        try:
            outcomes = _all_or_none(runs, db)
            if outcomes is None:  # one of them raised: all undone (the lock kept); again, each in a savepoint
                outcomes = [_in_savepoint(run, db) for run in runs]
            db.execute("COMMIT")  # the batch's savepoint with it
        except BaseException as exc:  # noqa: BLE001 — reported to every writer of the batch
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the connection is broken: the next batch finds out
            return [(False, exc)] * len(runs)
        self.commits += 1
        return outcomes

    def _wait_for_locks(self, db: sqlite3.Connection, milliseconds: int) -> None:
        """The connection's busy timeout, set only when it changes (a statement is a wait for the GIL)."""
        if self._busy_timeout != milliseconds:
            db.execute(f"PRAGMA busy_timeout = {milliseconds}")
            self._busy_timeout = milliseconds

    def _close_connection(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _drop_connection(self) -> None:
        try:
            self._close_connection()
        except sqlite3.Error:
            self._db = None


def _attempt(run: Callable[[sqlite3.Connection], Any], db: sqlite3.Connection) -> _Outcome:
    try:
        return True, run(db)
    except Exception as exc:  # noqa: BLE001 — reported to that job's caller
        return False, exc


def _all_or_none(runs: list[Callable[[sqlite3.Connection], Any]], db: sqlite3.Connection) -> list[_Outcome] | None:
    """Each write's value; None if one raised, with what they all wrote undone (the transaction still open)."""
    db.execute("SAVEPOINT batch")
    outcomes: list[_Outcome] = []
    for run in runs:
        try:
            outcomes.append((True, run(db)))
        except Exception:  # noqa: BLE001 — its neighbours are run again, each in a savepoint
            db.execute("ROLLBACK TO batch")  # raises if SQLite already rolled the transaction back: all fail
            return None
        if not db.in_transaction:  # SQLite rolled it back and the write swallowed the error: all fail
            raise sqlite3.OperationalError("the batch's transaction was rolled back by SQLite")
    return outcomes


def _in_savepoint(run: Callable[[sqlite3.Connection], Any], db: sqlite3.Connection) -> _Outcome:
    db.execute("SAVEPOINT job")
    try:
        value = run(db)
    except Exception as exc:  # noqa: BLE001 — this job's writes roll back, its neighbours' stay
        db.execute("ROLLBACK TO job")  # raises if SQLite already rolled the transaction back: all fail
        db.execute("RELEASE job")
        return False, exc
    db.execute("RELEASE job")
    return True, value


def _unavailable(exc: BaseException) -> Unavailable:
    unavailable = Unavailable("database", f"{type(exc).__name__}: {exc}")
    unavailable.__cause__ = exc
    return unavailable
