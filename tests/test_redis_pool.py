"""The service's Redis pool (counters/redis_pool.py): when every connection is in use, a call waits
for one instead of failing — records are never shed, so a burst of them must not turn a healthy
Redis into 503s — and a pool that stays full fails with a redis ConnectionError, not a hang."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import MaxConnectionsError

from spendgate.counters.redis_pool import WaitingConnectionPool, redis_client
from support.app import AppFactory
from support.scenario import authorize, create, ledger


async def test_calls_beyond_the_pool_size_wait_for_a_connection_and_all_succeed(redis_url: str) -> None:
    client = redis_client(redis_url, max_connections=3)
    pool = client.connection_pool
    try:
        # 40 commands in flight at once, each holding a connection until Redis answers.
        replies = await asyncio.gather(*(client.eval("return ARGV[1]", 0, str(i)) for i in range(40)))
        assert replies == [str(i).encode() for i in range(40)]
        assert not pool._waiters and pool._promised == 0, "no waiter or promise is left behind"
    finally:
        await client.aclose()


async def test_redis_py_own_pool_would_have_refused_them(redis_url: str) -> None:
    """The failure the waiting pool removes, shown on redis-py's pool of the same size."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url, max_connections=3)
    try:
        results = await asyncio.gather(*(client.eval("return 1", 0) for _ in range(40)), return_exceptions=True)
        assert any(isinstance(result, MaxConnectionsError) for result in results)
    finally:
        await client.aclose()


async def test_a_pool_that_stays_full_fails_after_its_wait_with_a_connection_error(redis_url: str) -> None:
    pool = WaitingConnectionPool.from_url(redis_url, max_connections=2, wait_seconds=0.2)
    held = [await pool.get_connection(), await pool.get_connection()]
    try:
        with pytest.raises(MaxConnectionsError, match="all 2 Redis connections stayed in use for 0.2 s"):
            await pool.get_connection()
        assert not pool._waiters
        await pool.release(held.pop())
        connection = await pool.get_connection()  # a released connection is handed on
        held.append(connection)
    finally:
        for connection in held:
            await pool.release(connection)
        await pool.disconnect()


async def test_a_waiting_caller_is_handed_the_next_released_connection(redis_url: str) -> None:
    pool = WaitingConnectionPool.from_url(redis_url, max_connections=1, wait_seconds=5)
    first = await pool.get_connection()
    waiting = asyncio.ensure_future(pool.get_connection())
    await asyncio.sleep(0)  # the waiter is queued
    while not pool._waiters:
        await asyncio.sleep(0)
    assert not waiting.done()
    await pool.release(first)
    second = await asyncio.wait_for(waiting, 5)
    assert second is first  # the one connection, reused
    await pool.release(second)
    await pool.disconnect()


async def test_a_waiter_is_served_before_a_caller_that_releases_and_asks_again(redis_url: str) -> None:
    """A busy caller releasing its connection and asking again at once must queue behind the waiter:
    else it keeps the connection to itself and the waiter times out while connections keep coming free."""
    pool = WaitingConnectionPool.from_url(redis_url, max_connections=1, wait_seconds=30)
    cycles = 0
    served_after: list[int] = []

    async def busy() -> None:
        nonlocal cycles
        while not served_after:
            connection = await pool.get_connection()
            await asyncio.sleep(0)
            await pool.release(connection)
            cycles += 1

    async def waiter() -> None:
        connection = await pool.get_connection()
        served_after.append(cycles)
        await pool.release(connection)

    hog = asyncio.ensure_future(busy())
    while cycles == 0:
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(waiter(), hog), 30)
    assert served_after[0] <= 3, f"the waiter was served only after {served_after[0]} release cycles"
    await pool.disconnect()


async def test_a_woken_waiter_that_is_cancelled_passes_its_turn_to_the_next(redis_url: str) -> None:
    pool = WaitingConnectionPool.from_url(redis_url, max_connections=1, wait_seconds=5)
    held = await pool.get_connection()
    first = asyncio.ensure_future(pool.get_connection())
    second = asyncio.ensure_future(pool.get_connection())
    while len(pool._waiters) < 2:
        await asyncio.sleep(0)
    await pool.release(held)  # promised to `first` ...
    first.cancel()  # ... which is cancelled before it takes it
    connection = await asyncio.wait_for(second, 5)
    assert first.cancelled() and connection is held
    assert pool._promised == 0 and not pool._waiters
    await pool.release(connection)
    await pool.disconnect()


async def test_a_burst_of_decisions_larger_than_the_redis_pool_is_answered_and_recorded_in_full(
    app_factory: AppFactory, clean_pg: str, redis_url: str
) -> None:
    app = await app_factory(database_url=clean_pg, redis_url=redis_url, redis_max_connections=2)
    pool = app.runtime.redis.connection_pool  # type: ignore[union-attr]
    assert isinstance(pool, WaitingConnectionPool) and pool.max_connections == 2
    key = await create(app.admin, "keys", {"id": "k1", "budget": {"max_budget": "100", "duration": "1d"}})
    ids = [f"burst-{i}" for i in range(30)]
    allowed = await asyncio.gather(*(
        authorize(app.gateway, request_id=i, api_key=key["key"], estimated_cost="0.01") for i in ids
    ))
    assert [a["decision"] for a in allowed] == ["allow"] * 30
    records = await asyncio.gather(*(
        app.gateway.post("/v1/record", json={"request_id": i, "cost": "0.01", "outcome": "success"}) for i in ids
    ))
    assert [r.status_code for r in records] == [200] * 30, [r.text for r in records if r.status_code != 200]
    assert (await ledger(app.admin, "keys/k1", "1d"))["spent"] == "0.300000"
