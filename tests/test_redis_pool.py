"""The service's Redis pool (counters/redis_pool.py): when every connection is in use, a call waits
for one instead of failing — records are never shed, so a burst of them must not turn a healthy
Redis into 503s — and a pool that stays full fails with a redis ConnectionError, not a hang."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import MaxConnectionsError

from spendgate.counters.redis_pool import WaitingConnectionPool, redis_client
from support.app import AppFactory
from support.scenario import authorize, create, ledger


def _in_use(pool: Any) -> int:
    return len(pool._in_use_connections)


async def test_calls_beyond_the_pool_size_wait_for_a_connection_and_all_succeed(redis_url: str) -> None:
    client = redis_client(redis_url, max_connections=3)
    pool = client.connection_pool
    most_in_use = 0

    async def one(i: int) -> Any:
        nonlocal most_in_use
        # EVAL holding its connection until Redis answers; the loop below keeps all 40 in flight at once.
        reply = await client.eval("return ARGV[1]", 0, str(i))
        most_in_use = max(most_in_use, _in_use(pool))
        return reply

    try:
        replies = await asyncio.gather(*(one(i) for i in range(40)))
        assert replies == [str(i).encode() for i in range(40)]
        assert most_in_use <= 3
        assert len(pool._available_connections) + _in_use(pool) <= 3
        assert not pool._waiters, "no waiter is left behind"
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
