"""The Redis scripts answer with the figures they saw, atomically — what a replica remembers
(counters/replica_memory.py) and what authorize decides on again after "no_room"."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from spendgate.counters import Figures
from test_counters_contract import Daily, Harness, authorize, daily, dispose, never_resets, record, redis_harness

__all__ = ["daily"]  # the fixture, used here as it is there


@pytest.fixture
async def redis(redis_url: str, clean_pg: str) -> AsyncIterator[Harness]:
    harness = await redis_harness(redis_url, clean_pg)
    try:
        yield harness
    finally:
        await dispose(harness)


async def test_a_commit_answers_each_held_ledgers_figures_after_its_reservation(redis: Harness, daily: Daily) -> None:
    tight, open_ended = daily("u1"), never_resets("k1")
    await authorize(redis.replica, "other", [(tight, None)], 2**53 + 1)  # another replica's reservation, past 2**53

    outcome = await authorize(redis.counters, "r1", [(tight, 10**17), (open_ended, None)], 5)

    assert outcome.status == "committed"
    assert dict(outcome.figures) == {tight.id: Figures(0, 2**53 + 6), open_ended.id: Figures(0, 5)}
    assert await redis.replica.read([tight, open_ended]) == dict(outcome.figures)


async def test_no_room_answers_the_ledgers_without_room_and_every_held_ledgers_current_figures(
    redis: Harness, daily: Daily
) -> None:
    tight, roomy = daily("u1"), never_resets("k1")
    await authorize(redis.replica, "other", [(tight, None), (roomy, None)], 8)

    outcome = await authorize(redis.counters, "r1", [(tight, 10), (roomy, 100)], 3)

    assert (outcome.status, outcome.full) == ("no_room", (tight.id,))
    assert dict(outcome.figures) == {tight.id: Figures(0, 8), roomy.id: Figures(0, 8)}


async def test_a_settle_answers_the_figures_after_it(redis: Harness, daily: Daily) -> None:
    ledger = daily("u1")
    await authorize(redis.counters, "r1", [(ledger, 100)], 30)
    await authorize(redis.replica, "r2", [(ledger, 100)], 20)
    snapshots = await record(redis.store, "r1", [ledger], 12)

    figures = await redis.counters.settle(request_id="r1", snapshots=snapshots)

    assert figures == {ledger.id: Figures(12, 20)}  # r1's 30 released, its 12 spent, r2's 20 still held
    assert await redis.replica.read([ledger]) == figures
