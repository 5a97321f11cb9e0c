"""The SQLite adapter beyond the contract (tests/test_counters_contract.py runs that): rows the other
readers can read, group commit, a write that fails alone, a lock held elsewhere, and the choice of
adapter by URL scheme."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from functools import partial
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlmodel import select

from spendgate.counters import (
    Counters,
    Figures,
    Hold,
    RedisCounters,
    SqlCounters,
    SqliteCounters,
    StoredDecision,
    counters_for,
)
from spendgate.counters.sqlite_worker import SqliteWorker, connect_sqlite
from spendgate.db import create_engine, session_factory
from spendgate.errors import Unavailable
from spendgate.ledger_store import LedgerStore
from spendgate.ledgers import LedgerRef
from spendgate.migrate import upgrade
from spendgate.periods import EPOCH
from spendgate.settings import Settings
from spendgate.tables import Reservation
from support.app import AppFactory

DAY = LedgerRef("user", "u1", "1d", datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 1, 2, tzinfo=timezone.utc))
FOREVER = LedgerRef("key", "k1", None, EPOCH, None)
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


def _decision(request_id: str, amount: int = 5) -> StoredDecision:
    body = {"request_id": request_id, "decision": "allow", "reasons": [], "note": "café ✓", "charges": [{"a": None}]}
    return StoredDecision(request_id, body, (DAY, FOREVER), amount)


async def _commit(counters: Counters, request_id: str, *, amount: int = 5, limit: int | None = 100) -> str:
    outcome = await counters.commit_decision(
        decision=_decision(request_id, amount), holds=[Hold(DAY, limit), Hold(FOREVER, None)], ttl_seconds=600,
        now=datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=timezone.utc),
    )
    return outcome.status


async def _migrated(path: Path) -> str:
    url = f"sqlite+aiosqlite:///{path}"
    engine = create_engine(Settings(database_url=url))
    await upgrade(engine)
    await engine.dispose()
    return url


async def _traced_counters(path: Path) -> tuple[SqliteCounters, list[str]]:
    """Counters on a migrated file whose worker connection appends every statement it runs to the list."""
    url = await _migrated(path)
    statements: list[str] = []

    def traced() -> sqlite3.Connection:
        db = connect_sqlite(str(path))
        db.set_trace_callback(statements.append)
        return db

    counters = SqliteCounters.for_url(url)
    counters._worker = SqliteWorker(traced)
    return counters, statements


@pytest.fixture
async def sqlite_counters(sqlite_url: str) -> AsyncIterator[SqliteCounters]:
    engine = create_engine(Settings(database_url=sqlite_url))
    await upgrade(engine)
    await engine.dispose()
    counters = SqliteCounters.for_url(sqlite_url)
    yield counters
    await counters.close()


def _rows(path: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return list(db.execute(query))


async def test_the_rows_it_writes_are_the_rows_sqlalchemy_writes(tmp_path: Path) -> None:
    ours_url, theirs_url = await _migrated(tmp_path / "ours.db"), await _migrated(tmp_path / "theirs.db")
    ours = SqliteCounters.for_url(ours_url)
    engine = create_engine(Settings(database_url=theirs_url))
    theirs = SqlCounters(session_factory(engine))
    try:
        for counters in (ours, theirs):
            assert await _commit(counters, "r1") == "committed"
            assert await _commit(counters, "r2", limit=1) == "no_room"
            await counters.settle(request_id="r1", snapshots=[])
    finally:
        await ours.close()
        await engine.dispose()

    reservation = "SELECT request_id, amount, charges, decision, expires_at, released, created_at FROM reservations"
    ledger = "SELECT * FROM ledgers ORDER BY ledger_id"
    mine, sqlalchemy = _rows(tmp_path / "ours.db", reservation), _rows(tmp_path / "theirs.db", reservation)
    assert [row[:-1] for row in mine] == [row[:-1] for row in sqlalchemy]  # created_at: the moment of writing
    assert all(STAMP.match(str(row[-1])) for row in mine)
    mine, sqlalchemy = _rows(tmp_path / "ours.db", ledger), _rows(tmp_path / "theirs.db", ledger)
    assert [row[:9] + row[10:] for row in mine] == [row[:9] + row[10:] for row in sqlalchemy]  # but updated_at
    assert all(STAMP.match(str(row[9])) for row in mine)


async def test_what_sqlalchemy_reads_of_its_rows_is_what_was_stored(sqlite_url: str, sqlite_counters: SqliteCounters) -> None:
    await _commit(sqlite_counters, "r1")

    engine = create_engine(Settings(database_url=sqlite_url))
    try:
        async with session_factory(engine)() as session:
            row = (await session.exec(select(Reservation))).one()
        assert await SqlCounters(session_factory(engine)).prior_decision("r1") == _decision("r1")
    finally:
        await engine.dispose()
    assert row.expires_at == datetime(2026, 1, 1, 12, 10, 0, 123456, tzinfo=timezone.utc)
    assert row.charges == [FOREVER.id, DAY.id] and row.released is False


async def test_writes_that_queue_while_a_transaction_runs_commit_together(sqlite_counters: SqliteCounters) -> None:
    statuses = await asyncio.gather(*(_commit(sqlite_counters, f"r{index}", amount=1) for index in range(20)))

    assert statuses == ["committed"] * 20
    # The first write found the thread idle and went alone; the 19 queued behind it went as one.
    assert sqlite_counters.worker.commits == 2
    assert (await sqlite_counters.read([DAY]))[DAY.id].reserved == 20


async def test_a_write_that_raises_rolls_back_alone_and_its_batch_commits(sqlite_counters: SqliteCounters) -> None:
    worker = sqlite_counters.worker

    def insert(name: str, fail: bool = False) -> Awaitable[str]:
        def run(db: sqlite3.Connection) -> str:
            db.execute("INSERT INTO reservations VALUES (?, 0, '[]', '{}', '2026-01-01 00:00:00.000000', 1, "
                       "'2026-01-01 00:00:00.000000')", (name,))
            if fail:
                raise LookupError(name)
            return name
        return worker.write(run)

    results = await asyncio.gather(
        insert("first"), insert("second"), insert("bad", fail=True), insert("last"), return_exceptions=True
    )

    assert results[:2] == ["first", "second"] and isinstance(results[2], LookupError) and results[3] == "last"
    assert worker.commits == 2  # "first" alone, then the three queued behind it in one transaction
    stored = await worker.read(lambda db: [row[0] for row in db.execute("SELECT request_id FROM reservations")])
    assert sorted(stored) == ["first", "last", "second"]


async def test_a_batch_of_writes_that_all_succeed_runs_few_statements(tmp_path: Path) -> None:
    # Each statement hands the GIL back to the event loop and waits for it: the common batch is kept to
    # BEGIN, one savepoint, the writes' own statements and COMMIT (sqlite_worker.py).
    counters, statements = await _traced_counters(tmp_path / "spendgate.db")
    try:
        # The first write goes alone, the nine queued behind it as one batch.
        assert await asyncio.gather(*(_commit(counters, f"r{index}", amount=1) for index in range(10))) == (
            ["committed"] * 10
        )
    finally:
        await counters.close()

    savepoints = [s for s in statements if s.startswith("SAVEPOINT")]
    assert counters.worker.commits == 2 and savepoints == ["SAVEPOINT batch"] * 2, statements
    # The lock is asked for with a short timeout, set once: no reads in between wanted the long one back.
    assert [s for s in statements if s.startswith("PRAGMA busy_timeout =")] == ["PRAGMA busy_timeout = 20"]
    assert _rows(tmp_path / "spendgate.db", "SELECT count(*) FROM reservations") == [(10,)]


async def test_the_read_before_a_decision_is_one_statement_and_a_replay_gets_its_decision_alone(
    tmp_path: Path,
) -> None:
    counters, statements = await _traced_counters(tmp_path / "spendgate.db")
    try:
        assert await _commit(counters, "earlier", amount=7) == "committed"
        statements.clear()
        prior, figures = await counters.prior_and_read("new", [DAY, FOREVER])
        assert prior is None and figures == {DAY.id: Figures(0, 7), FOREVER.id: Figures(0, 7)}
        queries = [s for s in statements if not s.startswith("PRAGMA")]  # the read wants its patience back
        assert len(queries) == 1, statements  # the stored decision and the figures together

        prior, figures = await counters.prior_and_read("earlier", [DAY, FOREVER])
        assert prior is not None and prior.body == _decision("earlier", 7).body and figures == {}
        unseen = LedgerRef("team", "t-none", None, EPOCH, None)
        assert await counters.prior_and_read("new", [unseen]) == (None, {unseen.id: Figures(0, 0)})
    finally:
        await counters.close()


async def test_a_write_lock_held_elsewhere_blocks_its_thread_never_the_event_loop(
    sqlite_url: str, sqlite_counters: SqliteCounters, tmp_path: Path,
) -> None:
    await sqlite_counters.ping()
    other = sqlite3.connect(tmp_path / "spendgate.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer holds the file's one write lock
    try:
        commit = asyncio.create_task(_commit(sqlite_counters, "r1"))
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not commit.done()  # the loop ran on while the commit waited for the lock
    finally:
        other.execute("COMMIT")
        other.close()
    assert await commit == "committed"


async def test_reads_queued_behind_a_write_waiting_for_the_lock_are_answered_meanwhile(
    sqlite_counters: SqliteCounters, tmp_path: Path,
) -> None:
    """The engine's own connection holds the write lock and awaits a read here (an admin change
    showing the ledgers it touched) while a write here waits for that lock: the read is answered
    before the lock is let go — it does not wait out the 30 s busy timeout behind the write."""
    await sqlite_counters.ping()
    holder = sqlite3.connect(tmp_path / "spendgate.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        commit = asyncio.create_task(_commit(sqlite_counters, "r1"))
        await asyncio.sleep(0.05)  # the write is with the thread, asking for the lock
        figures = await asyncio.wait_for(sqlite_counters.read([DAY]), timeout=5)
        assert figures[DAY.id].reserved == 0 and not commit.done()
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert await commit == "committed"
    assert (await sqlite_counters.read([DAY]))[DAY.id].reserved == 5


async def _worker_and_lock_holder(path: Path, **options: Any) -> tuple[SqliteWorker, sqlite3.Connection]:
    """A worker on a migrated file, and another connection holding that file's write lock."""
    await _migrated(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return SqliteWorker(partial(connect_sqlite, str(path)), **options), holder


async def test_reads_get_in_ahead_of_more_refused_writes_than_a_batch_holds(tmp_path: Path) -> None:
    """Writes refused the lock go back to the queue behind the reads that queued meanwhile: with a
    batch of one job and two writes waiting, a read is still answered while the lock is held."""
    worker, holder = await _worker_and_lock_holder(tmp_path / "spendgate.db", max_batch=1)
    try:
        writes = [asyncio.create_task(worker.write(lambda db: db.execute("DELETE FROM reservations").rowcount))
                  for _ in range(2)]
        await asyncio.sleep(0.05)
        count = await asyncio.wait_for(worker.read(lambda db: db.execute("SELECT count(*) FROM ledgers").fetchone()[0]),
                                       timeout=5)
        assert count == 0 and not any(write.done() for write in writes)
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert await asyncio.gather(*writes) == [0, 0]
    await worker.close()


async def test_without_wal_a_commit_waits_for_a_reader_with_the_connections_patience(tmp_path: Path) -> None:
    """Where a file cannot be put in WAL mode, COMMIT needs every reader gone: it waits with the connection's
    own busy timeout, not the 20 ms the write lock is asked for with (sqlite_worker._transaction)."""
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE t (x INTEGER)")
    statements: list[str] = []

    def rollback_journal() -> sqlite3.Connection:  # connect_sqlite without its WAL pragma
        db = sqlite3.connect(str(path), isolation_level=None)
        db.execute("PRAGMA busy_timeout=30000")
        db.set_trace_callback(statements.append)
        return db

    worker = SqliteWorker(rollback_journal)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # a shared lock on the file until the reader's COMMIT
    try:
        write = asyncio.create_task(worker.write(lambda db: db.execute("INSERT INTO t VALUES (1)").rowcount))

        async def commit_started() -> None:
            while "COMMIT" not in statements:
                await asyncio.sleep(0.005)

        await asyncio.wait_for(commit_started(), timeout=10)
        await asyncio.sleep(0.2)  # ten times the lock poll: a COMMIT that waited only that long has failed by now
        assert not write.done(), write
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert await asyncio.wait_for(write, timeout=10) == 1
    await worker.close()


async def test_a_write_refused_the_lock_past_its_wait_is_unavailable(tmp_path: Path) -> None:
    worker, holder = await _worker_and_lock_holder(tmp_path / "spendgate.db", lock_wait_seconds=0.3)
    try:
        with pytest.raises(Unavailable, match="database is locked"):
            await asyncio.wait_for(worker.write(lambda db: db.execute("DELETE FROM reservations")), timeout=5)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        await worker.close()


async def test_a_database_it_cannot_open_is_reported_as_unavailable(tmp_path: Path) -> None:
    counters = SqliteCounters(str(tmp_path / "missing" / "spendgate.db"))
    try:
        for call in (counters.ping, lambda: counters.prior_decision("r1"), lambda: _commit(counters, "r1")):
            with pytest.raises(Unavailable) as caught:
                await call()
            assert caught.value.dependency == "database"
    finally:
        await counters.close()


def test_an_in_memory_database_is_refused() -> None:
    for url in ("sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"):
        with pytest.raises(ValueError, match="in-memory"):
            SqliteCounters.for_url(url)


async def test_the_adapter_is_chosen_by_url_scheme(sqlite_url: str, clean_pg: str) -> None:
    client = aioredis.from_url("redis://127.0.0.1:1/0")
    engine = create_engine(Settings(database_url=clean_pg))
    store = LedgerStore(session_factory(engine))

    def chosen(**urls: str) -> Counters:
        settings = Settings(**urls)
        return counters_for(settings, sessions=session_factory(engine), redis=client if settings.redis_url else None,
                            snapshots=store.snapshots)

    try:
        assert isinstance(chosen(database_url=clean_pg, redis_url="redis://127.0.0.1:1/0"), RedisCounters)
        assert isinstance(chosen(database_url=sqlite_url, redis_url="redis://127.0.0.1:1/0"), RedisCounters)
        on_sqlite = chosen(database_url=sqlite_url)
        assert isinstance(on_sqlite, SqliteCounters)
        await on_sqlite.close()
        assert isinstance(chosen(database_url=clean_pg), SqlCounters)
    finally:
        await client.aclose()
        await engine.dispose()


async def test_the_embedded_default_runs_on_the_sqlite_adapter(
    app_factory: AppFactory, sqlite_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="spendgate")

    app = await app_factory(database_url=sqlite_url)

    assert "database=sqlite counters=SqliteCounters " in caplog.text
    await app.runtime.counters.ping()


def _sweep_steps(path: Path, *, open_reservations: int = 0, kept_decisions: int = 0) -> int:
    """SQLite VM instructions (in thousands) of one expiry sweep at noon, with none due and none to forget.

    Open reservations hold until the next day; kept decisions were settled an hour ago (their hold
    expiring at noon), inside the 24 h the sweep keeps them."""
    from spendgate.counters.sqlite_counters import _expire

    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM reservations")
        insert = (
            "INSERT INTO reservations (request_id, amount, charges, decision, expires_at, released, created_at)"
            " VALUES (?, 5, '[]', '{}', ?, ?, ?)"
        )
        db.executemany(
            insert,
            [(f"open-{i}", "2026-01-02 00:00:00.000000", 0, "2026-01-01 11:00:00.000000") for i in range(open_reservations)],
        )
        db.executemany(
            insert,
            [(f"kept-{i}", "2026-01-01 12:00:00.000000", 1, "2026-01-01 11:00:00.000000") for i in range(kept_decisions)],
        )
        db.commit()
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0

        db.set_progress_handler(count, 1000)
        released = _expire(db, datetime(2026, 1, 1, 12, tzinfo=timezone.utc), 500)
        db.set_progress_handler(None, 0)
        assert released == 0
        left = db.execute("SELECT count(*) FROM reservations").fetchone()[0]
        assert left == open_reservations + kept_decisions  # nothing was due, nothing forgotten
        return steps


async def test_an_expiry_sweep_does_not_walk_every_open_reservation(tmp_path: Path) -> None:
    """The sweep runs every second in the one writer's transaction: its work must follow what is due,
    not what is open (it walked every open reservation once, ~28 ms at 40,000: the embedded default's p99)."""
    path = tmp_path / "sweep.db"
    await _migrated(path)
    few, many = _sweep_steps(path, open_reservations=200), _sweep_steps(path, open_reservations=20_000)
    assert many <= few + 2, f"{many}k VM steps with 20,000 open reservations against {few}k with 200"


async def test_an_expiry_sweep_does_not_walk_every_kept_decision(tmp_path: Path) -> None:
    """Settled decisions are kept a day for idempotency: a day of traffic. Finding the ones past that
    day must not read all of them each second (it did: the forget step filtered on created_at, which
    no index leads with)."""
    path = tmp_path / "sweep.db"
    await _migrated(path)
    few, many = _sweep_steps(path, kept_decisions=200), _sweep_steps(path, kept_decisions=20_000)
    assert many <= few + 2, f"{many}k VM steps with 20,000 kept decisions against {few}k with 200"
