"""A Redis command whose caller is cancelled ends cancelled, and so a stopping service stops.

redis-py bounds each write with `asyncio.wait_for`, which on Python 3.11 returns normally when the
caller is cancelled just as the write finishes: the caller carries on as if never cancelled. The
reservation sweeper did, and the service's shutdown, which cancels it and waits for it, waited for
ever (CI, in a test whose app stopped while its sweeper talked to Redis). The service's connections
bound writes with `asyncio.timeout` instead (counters/redis_connection.py); a shutdown also cancels
again a task that carried on (stopping.py)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from pydantic import SecretStr

from spendgate.api.app import create_app
from spendgate.counters.redis_pool import redis_client
from spendgate.settings import Settings
from support.app import ADMIN_TOKEN, GATEWAY_TOKEN

#: Cancelling after 0…11 turns of the loop lands on every step of a command: before it is sent,
#: while it is written, while its reply is awaited, and as it completes.
TURNS = 12


async def test_every_cancelled_command_ends_cancelled(redis_url: str) -> None:
    client = redis_client(redis_url, max_connections=4)
    outcomes = {"cancelled": 0, "carried_on": 0, "finished_first": 0}
    try:
        for attempt in range(600):
            task = asyncio.ensure_future(client.eval("return 1", 0))
            for _ in range(attempt % TURNS):
                await asyncio.sleep(0)
            asked = task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if not asked:
                outcomes["finished_first"] += 1
            elif task.cancelled():
                outcomes["cancelled"] += 1
            else:
                outcomes["carried_on"] += 1  # cancel() was accepted, yet the command returned its reply
        assert await client.eval("return 1", 0) == 1  # the pool still serves after all those cancellations
    finally:
        await client.aclose()
    assert outcomes["carried_on"] == 0, outcomes
    assert outcomes["cancelled"] >= 300, outcomes  # the cancellations did land mid-command


async def test_a_service_stops_while_its_sweeper_talks_to_redis(
    clean_pg: str, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The sweeper runs back to back, so each stop cancels it in the middle of a Redis command.
    settings = Settings(
        database_url=clean_pg, redis_url=redis_url, admin_token=SecretStr(ADMIN_TOKEN),
        gateway_token=SecretStr(GATEWAY_TOKEN),
        policy_reload_seconds=0, expiry_interval_seconds=0.0001,
    )
    for attempt in range(25):
        app = create_app(settings)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        for _ in range(attempt % 7 + 1):
            await app.state.runtime.counters.ping()  # let the sweeper go round a few times
        stopping = asyncio.ensure_future(lifespan.__aexit__(None, None, None))
        done, _ = await asyncio.wait([stopping], timeout=30)
        if not done:  # free the test's loop before failing: cancel the stuck stop and its tasks
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
        assert done, f"stop number {attempt + 1} was still waiting after 30 s (a task lost its cancellation)"
        stopping.result()
    # The shutdown cancels a task again if it is still running 5 s on (stopping.py); none had to be.
    assert not [r.message for r in caplog.records if "after it was cancelled; cancelling it again" in r.message]
