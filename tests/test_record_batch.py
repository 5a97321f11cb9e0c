"""Group commit of records on PostgreSQL (service/spendgate/record_batch.py), on a real database.

What it must keep: each record charged exactly once and exactly its cost, an answer only after
commit, one bad record failing alone, a caller that goes away not undoing its neighbours, and
two stores (two replicas) writing overlapping ledgers concurrently without deadlock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from spendgate.db import create_engine, session_factory
from spendgate.errors import Unavailable
from spendgate.ledger_store import LedgerStore, RecordedSpend
from spendgate.ledgers import LedgerRef, charges_json
from spendgate.periods import EPOCH
from spendgate.settings import Settings
from spendgate.tables import SpendEvent
from support.services import PG_ADMIN_URL

ORG = LedgerRef("org", "acme", None, EPOCH, None)
TEAM = LedgerRef("team", "search", None, EPOCH, None)


def key(name: str) -> LedgerRef:
    return LedgerRef("key", name, None, EPOCH, None)


def event(request_id: str, cost: int, ledgers: Sequence[LedgerRef], outcome: str = "success") -> SpendEvent:
    return SpendEvent(request_id=request_id, cost=cost, outcome=outcome, charges=charges_json(ledgers))


@pytest.fixture
async def engines(clean_pg: str) -> AsyncIterator[list[AsyncEngine]]:
    made = [create_engine(Settings(database_url=clean_pg)) for _ in range(2)]
    yield made
    for engine in made:
        await engine.dispose()


async def record(store: LedgerStore, request_id: str, cost: int, ledgers: Sequence[LedgerRef]) -> RecordedSpend:
    return await store.record(event=event(request_id, cost, ledgers), ledgers=ledgers)


async def ledger_rows(engine: AsyncEngine) -> dict[str, tuple[int, int]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT ledger_id, spent, version FROM ledgers"))).all()
    return {row[0]: (int(row[1]), int(row[2])) for row in rows}


async def event_costs(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT request_id, cost FROM spend_events"))).all()
    return {row[0]: int(row[1]) for row in rows}


async def _writes_waiting_on(engine: AsyncEngine, table: str) -> int:
    """Transactions of this database waiting for a lock on `table`."""
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                        "WHERE c.relname = :table AND NOT l.granted "
                        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                    ),
                    {"table": table},
                )
            ).scalar_one()
        )


async def _until_writes_wait(engine: AsyncEngine, count: int) -> None:
    """Return once `count` writes wait on the held spend_events lock (a condition, not a guess)."""
    for _ in range(3000):
        if await _writes_waiting_on(engine, "spend_events") >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} writes never queued on the held lock")


async def test_a_burst_arriving_during_a_write_is_one_transaction_and_each_is_charged_once(
    engines: list[AsyncEngine],
) -> None:
    """The group-commit promise: what queues while a ledger write is in flight goes in ONE next
    transaction. The first write is held open (its INSERT waits on a table lock taken by another
    connection) while 39 more records arrive; released, the 40 records are exactly 2 transactions."""
    store = LedgerStore(session_factory(engines[0]))
    costs = {f"burst-{i:02}": 1_000 + i for i in range(40)}
    plans = [(rid, cost, [ORG, TEAM, key(f"k{i % 4}")]) for i, (rid, cost) in enumerate(costs.items())]
    async with engines[1].begin() as holder:
        await holder.execute(text("LOCK TABLE spend_events IN EXCLUSIVE MODE"))
        first = asyncio.create_task(record(store, *plans[0]))
        await _until_writes_wait(engines[1], 1)
        rest = asyncio.ensure_future(asyncio.gather(*(record(store, *plan) for plan in plans[1:])))
        await _until_writes_wait(engines[1], 2)  # the second flusher took the burst and waits too
    results = [await first, *await rest]

    assert all(not r.duplicate for r in results)
    assert await event_costs(engines[0]) == costs
    ledgers = await ledger_rows(engines[0])
    assert ledgers[ORG.id][0] == ledgers[TEAM.id][0] == sum(costs.values())
    for k in range(4):
        assert ledgers[key(f"k{k}").id][0] == sum(c for i, c in enumerate(costs.values()) if i % 4 == k)
    # The ledger's version counts the transactions that wrote it: the held one and the burst's.
    assert ledgers[ORG.id][1] == ledgers[TEAM.id][1] == ledgers[key("k0").id][1] == 2
    assert [ledgers[key(f"k{k}").id][1] for k in (1, 2, 3)] == [1, 1, 1]  # only the burst wrote them
    # The 39 answers all show the one committed state of their shared transaction.
    burst = {(s.spent, s.version) for r in results[1:] for s in r.snapshots if s.ledger_id == ORG.id}
    assert len(burst) == 1
    # Every answer shows a committed figure that includes its own cost.
    for result in results:
        snap = {s.ledger_id: s.spent for s in result.snapshots}
        assert snap[ORG.id] >= result.event.cost
        assert [s.ledger_id for s in result.snapshots] == sorted(s.ledger_id for s in result.snapshots)


async def test_the_same_request_id_twice_in_one_burst_charges_once(engines: list[AsyncEngine]) -> None:
    store = LedgerStore(session_factory(engines[0]))
    results = await asyncio.gather(
        record(store, "twice", 500, [ORG]),
        record(store, "other", 7, [ORG]),
        record(store, "twice", 500, [ORG]),
    )

    twice = [r for r in results if r.event.request_id == "twice"]
    assert sorted(r.duplicate for r in twice) == [False, True]
    assert (await ledger_rows(engines[0]))[ORG.id][0] == 507
    assert await event_costs(engines[0]) == {"twice": 500, "other": 7}


async def test_a_record_the_database_refuses_fails_alone(engines: list[AsyncEngine]) -> None:
    store = LedgerStore(session_factory(engines[0]))
    too_long = "x" * 501  # spend_events.request_id is VARCHAR(500): the whole batch's INSERT fails
    results = await asyncio.gather(
        record(store, "good-1", 10, [ORG]),
        record(store, too_long, 20, [ORG]),
        record(store, "good-2", 30, [ORG]),
        return_exceptions=True,
    )

    assert isinstance(results[1], Exception)
    assert [r.duplicate for r in results if isinstance(r, RecordedSpend)] == [False, False]
    assert await event_costs(engines[0]) == {"good-1": 10, "good-2": 30}
    assert (await ledger_rows(engines[0]))[ORG.id][0] == 40


async def test_a_caller_that_goes_away_does_not_undo_the_batch(engines: list[AsyncEngine]) -> None:
    store = LedgerStore(session_factory(engines[0]))
    leaving = asyncio.create_task(record(store, "leaves", 11, [ORG]))
    staying = asyncio.create_task(record(store, "stays", 22, [ORG]))
    await asyncio.sleep(0)  # both are queued and their batch has started
    leaving.cancel()

    assert not (await staying).duplicate
    with pytest.raises(asyncio.CancelledError):
        await leaving
    # The caller that left got no answer, but its record was written once: a retry finds it.
    assert await event_costs(engines[0]) == {"leaves": 11, "stays": 22}
    retry = await record(store, "leaves", 11, [ORG])
    assert retry.duplicate and (await ledger_rows(engines[0]))[ORG.id][0] == 33


async def test_two_replicas_writing_overlapping_ledgers_never_deadlock(engines: list[AsyncEngine]) -> None:
    stores = [LedgerStore(session_factory(engine)) for engine in engines]
    pool = [ORG, TEAM] + [key(f"k{i}") for i in range(6)]
    rng = random.Random(7)
    plans = [(f"r{i}", rng.randint(1, 10_000), rng.sample(pool, rng.randint(1, len(pool)))) for i in range(300)]
    # Every request is sent to both replicas (a gateway retrying on another one), in shuffled order.
    sends = [(store, plan) for plan in plans for store in stores]
    rng.shuffle(sends)

    results = await asyncio.gather(*(record(store, rid, cost, ledgers) for store, (rid, cost, ledgers) in sends))

    assert sum(not r.duplicate for r in results) == len(plans)
    assert await event_costs(engines[0]) == {rid: cost for rid, cost, _ in plans}
    ledgers = await ledger_rows(engines[0])
    for ref in pool:
        assert ledgers[ref.id][0] == sum(cost for _, cost, charged in plans if ref in charged), ref.id


async def _terminate_backends(engine: AsyncEngine) -> int:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            engine.url.database,
        )
    finally:
        await conn.close()
    return sum(1 for row in rows if row["ok"])


async def test_a_killed_connection_is_a_503_and_never_handed_out_again(engines: list[AsyncEngine]) -> None:
    store = LedgerStore(session_factory(engines[0]), batch_concurrency=1)
    await asyncio.gather(*(record(store, f"warm-{i}", 1, [ORG]) for i in range(4)))  # pooled connections exist
    assert await _terminate_backends(engines[0]) > 0

    outcomes: list[str] = []
    for i in range(6):  # each pooled connection fails at most once, then is replaced
        try:
            await record(store, f"after-{i}", 10, [ORG])
            outcomes.append("ok")
        except Unavailable:
            outcomes.append("503")

    assert "503" in outcomes and outcomes[-3:] == ["ok", "ok", "ok"], outcomes
    assert set(outcomes) <= {"ok", "503"}
    costs = await event_costs(engines[0])
    assert {rid for rid in costs if rid.startswith("after-")} == {f"after-{i}" for i, o in enumerate(outcomes) if o == "ok"}
    assert (await ledger_rows(engines[0]))[ORG.id][0] == 4 + 10 * outcomes.count("ok")


async def test_records_sent_one_after_another_never_wait_for_a_flusher_that_is_finishing(
    engines: list[AsyncEngine],
) -> None:
    # Each answer wakes its caller before the flusher that gave it has ended; the next record
    # must start a flusher of its own rather than queue behind one that is about to stop.
    store = LedgerStore(session_factory(engines[0]), batch_concurrency=1)
    for i in range(20):
        await asyncio.wait_for(record(store, f"seq-{i}", 1, [ORG]), timeout=30)
    assert (await ledger_rows(engines[0]))[ORG.id] == (20, 20)
