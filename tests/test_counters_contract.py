"""The counters contract: every adapter (Redis, SQL on PostgreSQL, SQL on SQLite, the SQLite
adapter) behaves alike.

Each contract test runs once per adapter, against real servers and files. Two adapter instances with their
own connections stand in for two replicas. The Redis-only tests at the end cover what only a
cache has to survive: being flushed, stale snapshots, a counter vanishing under a hold, and
the server going away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from spendgate.counters import (
    CommitOutcome,
    Counters,
    Figures,
    Hold,
    RedisCounters,
    ReplicaMemory,
    SqlCounters,
    SeenFigures,
    SqliteCounters,
    StoredDecision,
)
from spendgate.db import create_engine, session_factory
from spendgate.errors import Unavailable
from spendgate.ledger_store import LedgerStore
from spendgate.ledgers import LedgerRef, LedgerSnapshot, charges_json
from spendgate.migrate import upgrade
from spendgate.periods import EPOCH, Duration, period_at
from spendgate.settings import Settings
from spendgate.tables import SpendEvent, utcnow
from support.services import RedisServer

#: `sqlite` is the embedded default's adapter; `sql_sqlite` is SqlCounters on the same kind of file.
ADAPTERS = ["redis", "sql_postgres", "sql_sqlite", "sqlite"]
TTL = 600


@dataclass
class Harness:
    """Two replicas' counters over one backing store, and the ledger store they cache."""

    counters: Counters
    replica: Counters
    store: LedgerStore
    engines: list[AsyncEngine] = field(default_factory=list)
    clients: list[aioredis.Redis] = field(default_factory=list)


def never_resets(name: str) -> LedgerRef:
    return LedgerRef("key", name, None, EPOCH, None)


#: `daily(name)`: a user's ledger in a calendar-day budget, for today (see the `daily` fixture).
Daily = Callable[[str], LedgerRef]


@pytest.fixture
def daily() -> Daily:
    """Ledgers of the UTC day this test started in, by the service's clock: fixed per test (never at
    import, so a run that crosses midnight still holds its ledgers in the current period)."""
    today = period_at(duration=Duration.parse("1d"), reset="calendar", anchor=EPOCH, at=utcnow())
    return lambda name: LedgerRef("user", name, "1d", today.start, today.end)


def decision(request_id: str, ledgers: Sequence[LedgerRef], amount: int, verdict: str = "allow") -> StoredDecision:
    body = {"request_id": request_id, "decision": verdict, "reasons": []}
    return StoredDecision(request_id, body, tuple(ledgers), amount)


async def authorize(
    counters: Counters,
    request_id: str,
    holds: Sequence[tuple[LedgerRef, int | None]],
    amount: int,
    *,
    now: datetime | None = None,
    ttl: int = TTL,
) -> CommitOutcome:
    return await counters.commit_decision(
        decision=decision(request_id, [ref for ref, _ in holds], amount),
        holds=[Hold(ref, limit) for ref, limit in holds],
        ttl_seconds=ttl,
        now=now or datetime.now(timezone.utc),
    )


async def record(store: LedgerStore, request_id: str, ledgers: Sequence[LedgerRef], cost: int) -> list[LedgerSnapshot]:
    event = SpendEvent(request_id=request_id, cost=cost, outcome="success", charges=charges_json(ledgers))
    return list((await store.record(event=event, ledgers=ledgers)).snapshots)


def sql_engine(url: str) -> AsyncEngine:
    return create_engine(Settings(database_url=url))


async def redis_harness(url: str, pg: str) -> Harness:
    engine = sql_engine(pg)
    store = LedgerStore(session_factory(engine))
    clients = [aioredis.from_url(url), aioredis.from_url(url)]
    counters, replica = (RedisCounters(client, store.snapshots) for client in clients)
    return Harness(counters, replica, store, engines=[engine], clients=clients)


async def sql_harness(url: str, *, migrate: bool) -> Harness:
    engines = [sql_engine(url), sql_engine(url)]
    if migrate:
        await upgrade(engines[0])
    sessions = session_factory(engines[0])
    return Harness(SqlCounters(sessions), SqlCounters(session_factory(engines[1])), LedgerStore(sessions), engines)


async def sqlite_harness(url: str) -> Harness:
    """Two `SqliteCounters` on one migrated file: two connections and threads, as two processes would be."""
    engine = sql_engine(url)
    await upgrade(engine)
    counters = SqliteCounters.for_url(url)
    store = LedgerStore(session_factory(engine))
    store.write_through(counters.worker)  # as the service runs: one writer for the file (sqlite_statements.py)
    return Harness(counters, SqliteCounters.for_url(url), store, [engine])


async def dispose(harness: Harness) -> None:
    await harness.store.close()
    for counters in (harness.counters, harness.replica):
        await counters.close()
    for engine in harness.engines:
        await engine.dispose()


@pytest.fixture(params=ADAPTERS)
def backend(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    """Which adapter, its database URL and (for Redis) the server's URL — fixtures resolved lazily."""
    if request.param == "redis":
        return request.param, request.getfixturevalue("clean_pg"), request.getfixturevalue("redis_url")
    if request.param == "sql_postgres":
        return request.param, request.getfixturevalue("clean_pg"), ""
    return request.param, request.getfixturevalue("sqlite_url"), ""  # sql_sqlite, sqlite


@pytest.fixture
async def harness(backend: tuple[str, str, str]) -> AsyncIterator[Harness]:
    kind, database_url, redis_url = backend
    if kind == "redis":
        built = await redis_harness(redis_url, database_url)
    elif kind == "sqlite":
        built = await sqlite_harness(database_url)
    else:
        built = await sql_harness(database_url, migrate=kind == "sql_sqlite")
    yield built
    await dispose(built)


@pytest.fixture
async def on_redis(redis_url: str, clean_pg: str) -> AsyncIterator[Harness]:
    built = await redis_harness(redis_url, clean_pg)
    yield built
    await dispose(built)


# --- the contract ---------------------------------------------------------------------------


async def test_ledgers_never_charged_read_as_nothing_spent_and_nothing_reserved(harness: Harness, daily: Daily) -> None:
    figures = await harness.counters.read([never_resets("k1"), daily("u1")])

    assert figures == {never_resets("k1").id: Figures(0, 0), daily("u1").id: Figures(0, 0)}


async def test_an_allow_reserves_its_amount_on_every_held_ledger(harness: Harness, daily: Daily) -> None:
    ledgers = [never_resets("k1"), daily("u1"), daily("team-a")]

    outcome = await authorize(harness.counters, "r1", [(ledgers[0], 100), (ledgers[1], None), (ledgers[2], 50)], 7)

    assert outcome == CommitOutcome("committed", decision("r1", ledgers, 7))
    assert await harness.replica.read(ledgers) == {ref.id: Figures(0, 7) for ref in ledgers}


async def test_one_ledger_without_room_refuses_the_reservation_on_every_ledger(harness: Harness, daily: Daily) -> None:
    roomy, tight, unlimited = never_resets("k1"), daily("u1"), daily("org")
    await authorize(harness.counters, "r1", [(tight, 10)], 8)

    outcome = await authorize(harness.counters, "r2", [(roomy, 100), (tight, 10), (unlimited, None)], 3)

    assert outcome == CommitOutcome("no_room", None, (tight.id,))
    assert await harness.counters.read([roomy, tight, unlimited]) == {
        roomy.id: Figures(0, 0),
        tight.id: Figures(0, 8),
        unlimited.id: Figures(0, 0),
    }
    assert await harness.counters.prior_decision("r2") is None


async def test_an_amount_that_exactly_fills_the_limit_is_admitted(harness: Harness, daily: Daily) -> None:
    ledger = daily("u1")
    await authorize(harness.counters, "r1", [(ledger, 10)], 6)

    assert (await authorize(harness.counters, "r2", [(ledger, 10)], 4)).status == "committed"
    assert (await authorize(harness.counters, "r3", [(ledger, 10)], 1)).status == "no_room"


async def test_a_zero_estimate_is_admitted_below_the_limit_and_refused_at_it(harness: Harness, daily: Daily) -> None:
    ledger = daily("u1")
    await authorize(harness.counters, "r1", [(ledger, 10)], 9)

    assert (await authorize(harness.counters, "r2", [(ledger, 10)], 0)).status == "committed"
    await authorize(harness.counters, "r3", [(ledger, 10)], 1)
    assert (await authorize(harness.counters, "r4", [(ledger, 10)], 0)).status == "no_room"
    assert await harness.counters.read([ledger]) == {ledger.id: Figures(0, 10)}


async def test_a_ledger_without_a_limit_always_has_room(harness: Harness) -> None:
    ledger = never_resets("k1")
    huge = 10**18

    for index in range(3):
        assert (await authorize(harness.counters, f"r{index}", [(ledger, None)], huge)).status == "committed"
    assert await harness.counters.read([ledger]) == {ledger.id: Figures(0, 3 * huge)}


async def test_amounts_beyond_two_to_the_53_are_compared_exactly(harness: Harness) -> None:
    ledger, limit = never_resets("big"), 2**53

    assert (await authorize(harness.counters, "r1", [(ledger, limit)], 2**53)).status == "committed"
    assert (await authorize(harness.counters, "r2", [(ledger, limit)], 1)).status == "no_room"
    near_int64 = never_resets("bigger")
    assert (await authorize(harness.counters, "r3", [(near_int64, 9 * 10**18 + 1)], 9 * 10**18)).status == "committed"
    assert (await authorize(harness.counters, "r4", [(near_int64, 9 * 10**18 + 1)], 1)).status == "committed"
    assert (await authorize(harness.counters, "r5", [(near_int64, 9 * 10**18 + 1)], 1)).status == "no_room"
    assert await harness.counters.read([near_int64]) == {near_int64.id: Figures(0, 9 * 10**18 + 1)}


async def test_a_negative_amount_is_refused_before_anything_is_written(harness: Harness, daily: Daily) -> None:
    ledger = daily("u1")

    with pytest.raises(ValueError, match="negative"):
        await authorize(harness.counters, "r1", [(ledger, 10)], -1)
    assert await harness.counters.prior_decision("r1") is None


async def test_repeating_an_authorize_returns_the_first_decision_and_reserves_nothing_more(
    harness: Harness, daily: Daily,
) -> None:
    ledger = daily("u1")
    first = await authorize(harness.counters, "r1", [(ledger, 100)], 5)

    again = await authorize(harness.replica, "r1", [(ledger, 100)], 9)

    assert again == CommitOutcome("duplicate", first.stored)
    assert await harness.replica.prior_decision("r1") == first.stored
    assert await harness.counters.read([ledger]) == {ledger.id: Figures(0, 5)}


async def test_a_decision_body_with_an_integer_past_64_bits_comes_back_exactly(harness: Harness, daily: Daily) -> None:
    """Money is text in a body, but a policy's reason may carry any number: stored and answered again
    as it was answered first, by the store and by a replica's memory (orjson alone refuses to write
    it, and reads it back as a float)."""
    ledger = daily("u1")
    now = datetime.now(timezone.utc)

    def body(request_id: str) -> dict[str, object]:
        return {"request_id": request_id, "decision": "deny",
                "reasons": [{"code": "custom", "detail": 2**70 + 1, "below": -(2**65) - 3, "text": "1" * 25}]}

    stored = StoredDecision("big", body("big"), (ledger,), 0)
    assert (await harness.counters.commit_decision(decision=stored, holds=[], ttl_seconds=TTL, now=now)).status == "committed"
    assert (await harness.replica.prior_decision("big")).body == body("big")  # type: ignore[union-attr]

    memory = ReplicaMemory(harness.counters, keep_seconds=60)
    remembered = StoredDecision("big-2", body("big-2"), (ledger,), 0)
    assert (await memory.commit_decision(decision=remembered, holds=[], ttl_seconds=TTL, now=now)).status == "committed"
    recalled = await memory.prior_decision("big-2")
    assert recalled is not None and recalled.body == body("big-2") and recalled.ledgers == (ledger,)


async def test_prior_and_read_gives_the_figures_before_a_decision_and_the_decision_after(
    harness: Harness, daily: Daily,
) -> None:
    ledgers = [never_resets("k1"), daily("u1")]
    await authorize(harness.counters, "earlier", [(ledgers[0], 100)], 7)

    assert await harness.replica.prior_and_read("r1", ledgers) == (
        None, {ledgers[0].id: Figures(0, 7), ledgers[1].id: Figures(0, 0)}
    )
    first = await authorize(harness.counters, "r1", [(ref, 100) for ref in ledgers], 5)
    prior, _figures = await harness.replica.prior_and_read("r1", ledgers)
    assert prior == first.stored


async def test_a_denial_is_stored_and_returned_as_the_duplicate(harness: Harness, daily: Daily) -> None:
    ledger = daily("u1")
    denial = decision("r1", [], 5, verdict="deny")

    now = datetime.now(timezone.utc)
    stored = await harness.counters.commit_decision(decision=denial, holds=[], ttl_seconds=TTL, now=now)
    again = await authorize(harness.replica, "r1", [(ledger, 100)], 5)

    assert stored == CommitOutcome("committed", denial)
    assert again == CommitOutcome("duplicate", denial)
    assert await harness.counters.prior_decision("r1") == denial
    assert await harness.counters.read([ledger]) == {ledger.id: Figures(0, 0)}


async def test_a_denial_on_figures_still_current_is_stored(harness: Harness, daily: Daily) -> None:
    ledgers = [never_resets("k1"), daily("u1")]
    await authorize(harness.counters, "earlier", [(ledgers[0], 100)], 7)
    remembered = await harness.replica.read(ledgers)  # what a replica decides on was read (or committed)
    assert remembered == {ledgers[0].id: Figures(0, 7), ledgers[1].id: Figures(0, 0)}
    denial = decision("r1", [], 0, verdict="deny")

    outcome = await harness.counters.commit_decision(
        decision=denial, holds=[], ttl_seconds=TTL, now=datetime.now(timezone.utc), unless_changed=remembered,
    )

    assert outcome == CommitOutcome("committed", denial)
    assert await harness.counters.prior_decision("r1") == denial


async def test_a_denial_on_figures_that_changed_is_not_stored_and_the_current_ones_come_back(
    harness: Harness, daily: Daily,
) -> None:
    ledgers = [never_resets("k1"), daily("u1")]
    remembered = await harness.replica.read(ledgers)
    await authorize(harness.counters, "meanwhile", [(ledgers[0], 100)], 7)

    outcome = await harness.counters.commit_decision(
        decision=decision("r1", [], 0, verdict="deny"), holds=[], ttl_seconds=TTL,
        now=datetime.now(timezone.utc), unless_changed=remembered,
    )

    assert outcome.status == "changed" and outcome.stored is None
    assert dict(outcome.figures) == {ledgers[0].id: Figures(0, 7), ledgers[1].id: Figures(0, 0)}
    assert await harness.counters.prior_decision("r1") is None  # nothing written: decided again, then stored


async def test_a_denial_on_figures_whose_spent_alone_changed_is_not_stored(harness: Harness, daily: Daily) -> None:
    ledger = daily("u1")
    await authorize(harness.counters, "earlier", [(ledger, 100)], 5)
    remembered = await harness.replica.read([ledger])
    assert remembered == {ledger.id: Figures(0, 5)}
    # "earlier" is recorded at exactly its estimate: reserved goes back to 0, spent to 5 ...
    await harness.counters.settle(request_id="earlier", snapshots=await record(harness.store, "earlier", [ledger], 5))
    # ... and a new reservation of 5 puts reserved where it was: only spent differs from what was remembered.
    await authorize(harness.counters, "later", [(ledger, 100)], 5)
    assert await harness.replica.read([ledger]) == {ledger.id: Figures(5, 5)}

    outcome = await harness.counters.commit_decision(
        decision=decision("r1", [], 0, verdict="deny"), holds=[], ttl_seconds=TTL,
        now=datetime.now(timezone.utc), unless_changed=remembered,
    )

    assert outcome.status == "changed" and dict(outcome.figures) == {ledger.id: Figures(5, 5)}
    assert await harness.counters.prior_decision("r1") is None


async def test_a_stored_decision_answers_a_conditional_denial_as_the_duplicate(harness: Harness, daily: Daily) -> None:
    ledger = daily("u1")
    first = await authorize(harness.counters, "r1", [(ledger, 100)], 5)

    outcome = await harness.counters.commit_decision(  # figures that changed since: "duplicate" still wins
        decision=decision("r1", [], 0, verdict="deny"), holds=[], ttl_seconds=TTL,
        now=datetime.now(timezone.utc), unless_changed={ledger.id: Figures(0, 0)},
    )

    assert outcome == CommitOutcome("duplicate", first.stored)


async def test_only_a_denial_is_stored_on_condition_that_its_figures_are_unchanged(
    harness: Harness, daily: Daily,
) -> None:
    ledger = daily("u1")
    with pytest.raises(ValueError, match="only a denial"):
        await harness.counters.commit_decision(
            decision=decision("r1", [ledger], 5), holds=[Hold(ledger, 100)], ttl_seconds=TTL,
            now=datetime.now(timezone.utc), unless_changed={ledger.id: Figures(0, 0)},
        )
    assert await harness.counters.prior_decision("r1") is None


async def test_settle_releases_the_hold_once_and_shows_the_recorded_spend(harness: Harness, daily: Daily) -> None:
    ledgers = [never_resets("k1"), daily("u1")]
    await authorize(harness.counters, "r1", [(ref, 100) for ref in ledgers], 5)
    await authorize(harness.counters, "r2", [(ref, 100) for ref in ledgers], 4)

    snapshots = await record(harness.store, "r1", ledgers, 3)
    await harness.counters.settle(request_id="r1", snapshots=snapshots)
    await harness.replica.settle(request_id="r1", snapshots=snapshots)

    assert await harness.replica.read(ledgers) == {ref.id: Figures(3, 4) for ref in ledgers}


async def test_a_reservation_released_by_expiry_is_not_released_again_by_its_record(
    harness: Harness, daily: Daily,
) -> None:
    ledger = daily("u1")
    start = datetime.now(timezone.utc)
    await authorize(harness.counters, "late", [(ledger, 100)], 5, now=start, ttl=60)
    await authorize(harness.counters, "open", [(ledger, 100)], 4, now=start, ttl=600)
    assert await harness.counters.expire(now=start + timedelta(seconds=61)) == 1

    await harness.counters.settle(request_id="late", snapshots=await record(harness.store, "late", [ledger], 2))

    assert await harness.counters.read([ledger]) == {ledger.id: Figures(2, 4)}


async def test_expire_releases_only_reservations_whose_time_ran_out(harness: Harness) -> None:
    ledger = never_resets("k1")
    start = datetime.now(timezone.utc)
    await authorize(harness.counters, "short", [(ledger, None)], 5, now=start, ttl=60)
    await authorize(harness.counters, "long", [(ledger, None)], 7, now=start, ttl=600)

    assert await harness.counters.expire(now=start + timedelta(seconds=30)) == 0
    assert await harness.counters.expire(now=start + timedelta(seconds=60)) == 1
    assert await harness.counters.read([ledger]) == {ledger.id: Figures(0, 7)}
    assert await harness.counters.expire(now=start + timedelta(seconds=120)) == 0
    assert await harness.counters.prior_decision("short") is not None


async def test_racing_expire_calls_release_each_reservation_exactly_once(harness: Harness, daily: Daily) -> None:
    ledger = daily("u1")
    start = datetime.now(timezone.utc)
    for index in range(20):
        await authorize(harness.counters, f"r{index}", [(ledger, None)], 3, now=start, ttl=60)
    await authorize(harness.counters, "kept", [(ledger, None)], 2, now=start, ttl=600)

    later = start + timedelta(seconds=120)
    counts = await asyncio.gather(
        harness.counters.expire(now=later), harness.replica.expire(now=later), harness.counters.expire(now=later)
    )

    assert sum(counts) == 20
    assert await harness.counters.read([ledger]) == {ledger.id: Figures(0, 2)}


async def test_concurrent_replicas_never_admit_past_a_hard_limit(harness: Harness, daily: Daily) -> None:
    shared, other = daily("team-a"), never_resets("k1")
    replicas = [harness.counters, harness.replica]

    outcomes = await asyncio.gather(
        *(authorize(replicas[index % 2], f"r{index}", [(other, None), (shared, 10)], 3) for index in range(50))
    )

    assert [outcome.status for outcome in outcomes].count("committed") == 3
    assert {outcome.status for outcome in outcomes} == {"committed", "no_room"}
    assert await harness.counters.read([shared, other]) == {shared.id: Figures(0, 9), other.id: Figures(0, 9)}


async def test_concurrent_repeats_of_one_authorize_reserve_once(harness: Harness, daily: Daily) -> None:
    ledger = daily("u1")
    replicas = [harness.counters, harness.replica]

    outcomes = await asyncio.gather(
        *(authorize(replicas[index % 2], "same", [(ledger, 100)], 5) for index in range(20))
    )

    assert [outcome.status for outcome in outcomes].count("committed") == 1
    assert all(outcome.stored == decision("same", [ledger], 5) for outcome in outcomes)
    assert await harness.counters.read([ledger]) == {ledger.id: Figures(0, 5)}


async def test_authorizes_racing_records_on_the_same_ledgers_never_deadlock(harness: Harness) -> None:
    shared = never_resets("a-shared")
    await record(harness.store, "seed", [shared], 1)

    async def record_and_settle(index: int, ledgers: list[LedgerRef]) -> None:
        snapshots = await record(harness.store, f"rec-{index}", ledgers, 3)
        await harness.counters.settle(request_id=f"rec-{index}", snapshots=snapshots)

    async def both(index: int) -> None:
        fresh = never_resets(f"b-new-{index}")
        await asyncio.gather(
            authorize(harness.replica, f"auth-{index}", [(shared, None), (fresh, None)], 2),
            record_and_settle(index, [shared, fresh]),
        )

    await asyncio.gather(*(both(index) for index in range(20)))

    figures = await harness.counters.read([shared])
    assert figures == {shared.id: Figures(1 + 20 * 3, 20 * 2)}


# --- Redis only: a cache must survive losing itself -------------------------------------------


async def test_a_flushed_redis_rebuilds_spent_from_the_ledger_store(
    on_redis: Harness, redis_url: str, daily: Daily,
) -> None:
    ledger = daily("u1")
    await authorize(on_redis.counters, "r1", [(ledger, 10)], 8)
    await on_redis.counters.settle(request_id="r1", snapshots=await record(on_redis.store, "r1", [ledger], 7))

    await on_redis.clients[0].flushall()

    assert await on_redis.replica.read([ledger]) == {ledger.id: Figures(7, 0)}
    await on_redis.clients[0].flushall()
    assert await authorize(on_redis.counters, "r2", [(ledger, 10)], 4) == CommitOutcome("no_room", None, (ledger.id,))
    assert (await authorize(on_redis.counters, "r3", [(ledger, 10)], 3)).status == "committed"


async def test_a_conditional_denial_on_a_counter_redis_lost_reports_it_changed_without_it(
    on_redis: Harness, daily: Daily,
) -> None:
    """A hash that is gone is left out of the figures (the next read rebuilds it), never read as 0/0."""
    kept, lost = never_resets("k1"), daily("u1")
    await authorize(on_redis.counters, "earlier", [(kept, 100), (lost, 100)], 7)
    assert await on_redis.clients[0].delete(f"sg:l:{lost.id}") == 1

    outcome = await on_redis.counters.commit_decision(
        decision=decision("r1", [], 0, verdict="deny"), holds=[], ttl_seconds=TTL,
        now=datetime.now(timezone.utc), unless_changed={kept.id: Figures(0, 7), lost.id: Figures(0, 7)},
    )

    assert outcome.status == "changed" and dict(outcome.figures) == {kept.id: Figures(0, 7)}
    assert await on_redis.counters.prior_decision("r1") is None


async def test_a_replica_forgets_what_a_conditional_denial_found_gone_and_remembers_what_it_confirmed(
    on_redis: Harness, daily: Daily,
) -> None:
    kept, lost = never_resets("k1"), daily("u1")
    await authorize(on_redis.counters, "earlier", [(kept, 100), (lost, 100)], 7)
    at = 1_000.0
    memory = ReplicaMemory(on_redis.counters, keep_seconds=60, clock=lambda: at)
    remembered = await memory.read([kept, lost], max_age=1)  # read from Redis: remembered for 1 s
    assert not isinstance(remembered, SeenFigures)
    confirm = dict(remembered)

    at = 1_000.9  # late in their life: a conditional denial that succeeds confirms them as current
    outcome = await memory.commit_decision(
        decision=decision("r1", [], 0, verdict="deny"), holds=[], ttl_seconds=TTL,
        now=datetime.now(timezone.utc), unless_changed=confirm,
    )
    assert outcome.status == "committed"
    at = 1_001.5  # past the read's 1 s, within 1 s of the confirmation
    assert isinstance(await memory.read([kept, lost], max_age=1), SeenFigures)

    assert await on_redis.clients[0].delete(f"sg:l:{lost.id}") == 1
    outcome = await memory.commit_decision(
        decision=decision("r2", [], 0, verdict="deny"), holds=[], ttl_seconds=TTL,
        now=datetime.now(timezone.utc), unless_changed=confirm,
    )
    assert outcome.status == "changed"
    assert isinstance(await memory.read([kept], max_age=1), SeenFigures)  # found unchanged: still remembered
    again = await memory.read([kept, lost], max_age=1)  # the lost one was forgotten: read, and rebuilt
    assert not isinstance(again, SeenFigures) and again == {kept.id: Figures(0, 7), lost.id: Figures(0, 0)}


async def test_an_older_snapshot_never_overwrites_a_newer_one(on_redis: Harness) -> None:
    ledger = never_resets("k1")
    older = await record(on_redis.store, "r1", [ledger], 2)
    newer = await record(on_redis.store, "r2", [ledger], 3)

    await on_redis.counters.settle(request_id="r2", snapshots=newer)
    await on_redis.replica.settle(request_id="r1", snapshots=older)
    await on_redis.counters.settle(request_id="r2", snapshots=newer)

    assert await on_redis.counters.read([ledger]) == {ledger.id: Figures(5, 0)}


async def test_a_rebuild_never_replaces_a_newer_settled_spend(on_redis: Harness, daily: Daily) -> None:
    ledger = daily("u1")
    stale = LedgerSnapshot(ledger.id, 1, 1)

    async def stale_loader(ids: Sequence[str]) -> dict[str, LedgerSnapshot]:
        # A replica that read the ledger store before a record committed, and seeds late.
        await on_redis.counters.settle(request_id="r2", snapshots=[LedgerSnapshot(ledger.id, 4, 2)])
        return {ledger.id: stale}

    slow = RedisCounters(on_redis.clients[1], stale_loader)

    assert await slow.read([ledger]) == {ledger.id: Figures(4, 0)}


async def test_a_counter_deleted_under_an_open_hold_never_goes_negative(on_redis: Harness, daily: Daily) -> None:
    ledger = daily("u1")
    await authorize(on_redis.counters, "before", [(ledger, 100)], 5)
    await on_redis.clients[0].delete(f"sg:l:{ledger.id}")
    await authorize(on_redis.counters, "after", [(ledger, 100)], 2)

    await on_redis.counters.settle(request_id="before", snapshots=[])
    assert await on_redis.counters.read([ledger]) == {ledger.id: Figures(0, 2)}
    assert await on_redis.counters.expire(now=datetime.now(timezone.utc) + timedelta(hours=1)) == 1
    assert await on_redis.counters.read([ledger]) == {ledger.id: Figures(0, 0)}


async def test_windowed_counters_expire_after_their_period_and_others_never(on_redis: Harness, daily: Daily) -> None:
    windowed, forever = daily("u1"), never_resets("k1")
    await authorize(on_redis.counters, "r1", [(windowed, None), (forever, None)], 1)

    ttl = await on_redis.clients[0].ttl(f"sg:l:{windowed.id}")
    assert timedelta(days=2) < timedelta(seconds=ttl) <= timedelta(days=3)
    assert await on_redis.clients[0].ttl(f"sg:l:{forever.id}") == -1


async def test_an_unreachable_redis_is_reported_as_unavailable(
    on_redis: Harness, redis_server: RedisServer, daily: Daily,
) -> None:
    ledger = daily("u1")
    redis_server.kill()
    try:
        calls = [
            lambda: on_redis.counters.ping(),
            lambda: on_redis.counters.read([ledger]),
            lambda: on_redis.counters.prior_decision("r1"),
            lambda: authorize(on_redis.counters, "r1", [(ledger, 10)], 1),
            lambda: on_redis.counters.settle(request_id="r1", snapshots=[LedgerSnapshot(ledger.id, 1, 1)]),
            lambda: on_redis.counters.expire(now=datetime.now(timezone.utc)),
        ]
        for call in calls:
            with pytest.raises(Unavailable) as caught:
                await call()
            assert caught.value.dependency == "redis"
    finally:
        redis_server.start()
    await on_redis.counters.ping()


@pytest.mark.parametrize("backend", ["sql_postgres", "sql_sqlite", "sqlite"], indirect=True)
async def test_sql_counters_forget_settled_decisions_after_the_idempotency_window(harness: Harness) -> None:
    ledger = never_resets("k1")
    start = datetime.now(timezone.utc)
    await authorize(harness.counters, "old", [(ledger, None)], 5, now=start, ttl=60)
    await authorize(harness.counters, "open", [(ledger, None)], 2, now=start, ttl=10 * 24 * 3600)

    await harness.counters.expire(now=start + timedelta(hours=1))
    assert await harness.counters.prior_decision("old") is not None  # released, still remembered
    await harness.counters.expire(now=start + timedelta(hours=23, minutes=59))
    assert await harness.counters.prior_decision("old") is not None  # a day after it was made, not before
    # 25 h after it was made, 25 h less a minute after its hold expired: past the 24 h window either way
    await harness.counters.expire(now=start + timedelta(hours=25))

    assert await harness.counters.prior_decision("old") is None
    assert await harness.counters.prior_decision("open") is not None  # never forgets an open hold
    assert await harness.counters.read([ledger]) == {ledger.id: Figures(0, 2)}
