"""The Redis scripts answer with the figures they saw, atomically — what a replica remembers
(counters/replica_memory.py) and what authorize decides on again after "no_room"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from spendgate.counters import Figures, RedisCounters, ReplicaMemory, SeenFigures
from support.redis_stats import commands_during
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


async def test_figures_late_in_their_life_are_read_again_by_one_request_while_the_others_decide_on_them(
    redis: Harness, redis_url: str, daily: Daily
) -> None:
    """Remembered figures all expired at once, and every request in flight then read the counters. Now,
    past REREAD_AFTER of their life, the first request to find them so reads; the others use them."""
    held, other = daily("u1"), never_resets("k1")
    ledgers = [held, other]
    clock = [1_000.0]
    memory = ReplicaMemory(redis.counters, keep_seconds=60, clock=lambda: clock[0])
    assert await memory.prior_and_read("r0", ledgers, max_age=1.0) == (None, {held.id: Figures(0, 0), other.id: Figures(0, 0)})
    await authorize(memory, "r0", [(held, None)], 5)  # remembers `held` from the commit, `other` from the read
    answers: list[tuple[object, dict[str, Figures]]] = []

    async def ask(*request_ids: str) -> None:
        answers[:] = await asyncio.gather(*(memory.prior_and_read(r, ledgers, max_age=1.0) for r in request_ids))

    clock[0] += 0.5  # young: every request decides on what it remembers
    assert await commands_during(redis_url, lambda: ask("r1", "r2"), ("get", "hmget")) == {}
    clock[0] += 0.35  # late in their life: one request reads (a GET of its decision, an HMGET per ledger)
    assert await commands_during(redis_url, lambda: ask("r3", "r4", "r5"), ("get", "hmget")) == {"get": 1, "hmget": 2}
    assert [isinstance(figures, SeenFigures) for _prior, figures in answers] == [False, True, True]
    assert [figures for _prior, figures in answers] == [{held.id: Figures(0, 5), other.id: Figures(0, 0)}] * 3
    await authorize(memory, "r3", [(held, None)], 5)  # its commit remembers what its read found

    clock[0] += 0.5  # what r3 read is young again
    assert await commands_during(redis_url, lambda: ask("r6"), ("get", "hmget")) == {}
    clock[0] += 0.35  # a request reads, and never commits (it failed): the figures still expire on time
    assert await commands_during(redis_url, lambda: ask("r7", "r8"), ("get", "hmget")) == {"get": 1, "hmget": 2}
    clock[0] += 0.2
    assert await commands_during(redis_url, lambda: ask("r9", "r10"), ("get", "hmget")) == {"get": 2, "hmget": 4}


@pytest.mark.parametrize("protocol", [2, 3])
async def test_a_read_finds_the_prior_decision_and_rebuilds_a_missing_ledger_in_either_protocol(
    redis: Harness, redis_url: str, daily: Daily, protocol: int
) -> None:
    """A user's SPENDGATE_REDIS_URL may ask for RESP3 (`?protocol=3`): a missing decision or ledger hash
    reads as missing in either protocol."""
    seen, unseen = daily("u1"), never_resets(f"k-{protocol}")
    await authorize(redis.replica, "first", [(seen, None)], 5)
    reader = RedisCounters(aioredis.from_url(redis_url, protocol=protocol), redis.store.snapshots)
    try:
        prior, figures = await reader.prior_and_read("new", [seen, unseen])
        assert prior is None and figures == {seen.id: Figures(0, 5), unseen.id: Figures(0, 0)}
        prior, figures = await reader.prior_and_read("first", [seen])
        assert prior is not None and prior.request_id == "first" and prior.amount == 5 and figures == {}
    finally:
        await reader.close()
