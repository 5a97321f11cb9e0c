"""The headroom tier (spendgate/headroom.py, migration 0007) and the near-limit ranking built on it:
the SQL the record path writes equals the Python definition on both engines; a lower tier always
means more of the limit used; the ranking read through the lowest tiers is the exact ranking of
every current ledger; the migration fills in the tier of current ledgers, and reconcile repairs
the tiers other writers leave; a charge that does not move the tier is a HOT update."""

from __future__ import annotations

import importlib
import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

import asyncpg
import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from spendgate.console import overview as overview_module
from spendgate.console.overview import _candidates, _tier_threshold
from spendgate.db import session_factory
from spendgate.headroom import TIERS, headroom_tier, headroom_tier_sql
from spendgate.ledger_store import _PG_ADD_SPEND, LedgerStore
from spendgate.ledgers import LedgerRef, charges_json
from spendgate.migrate import upgrade
from spendgate.periods import EPOCH
from spendgate.reconcile.headroom_tiers import refresh_headroom_tiers
from spendgate.reconcile.periodic import reconcile_once
from spendgate.tables import SpendEvent
from support.app import RunningApp
from support.scenario import authorize, create, record
from support.services import create_database, drop_database

BIGINT_MAX = 2**63 - 1


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("clean_pg" if request.param == "postgres" else "sqlite_url"))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated, empty database on each engine."""
    made = create_async_engine(database_url)
    await upgrade(made)  # the PostgreSQL one is migrated already: nothing to do
    yield made
    await made.dispose()


def _samples() -> list[tuple[int, int | None]]:
    """Edges (no limit, no spend, at and over the limit, the bigint ends, digit boundaries) and
    spend/limit pairs across every magnitude."""
    rng = random.Random(20261128)
    pairs: list[tuple[int, int | None]] = [
        (1, None), (0, 10), (5, 0), (5, -1), (-3, 10), (10, 10), (11, 10), (BIGINT_MAX, 1), (1, BIGINT_MAX),
        (BIGINT_MAX, BIGINT_MAX), (BIGINT_MAX - 1, BIGINT_MAX),
    ]
    pairs += [(1, limit) for limit in (9, 10, 19, 20, 99, 100, 999, 1000, 10**18)]
    for _ in range(2000):
        limit = rng.randint(1, 10 ** rng.randint(1, 18))
        pairs.append((rng.randint(1, 10 ** rng.randint(1, 18)), limit))
    return pairs


@pytest.mark.asyncio
async def test_the_sql_tier_equals_the_python_tier_on_both_engines(engine: AsyncEngine) -> None:
    pairs = _samples()
    expression = headroom_tier_sql("CAST(:s AS BIGINT)", "CAST(:l AS BIGINT)")
    async with engine.connect() as conn:
        found = [(await conn.execute(text(f"SELECT {expression}"), {"s": s, "l": l})).scalar() for s, l in pairs]
    assert found == [headroom_tier(s, l) for s, l in pairs]
    assert {tier for tier in found if tier is not None} <= set(TIERS) and list(TIERS) == sorted(TIERS)


@given(
    st.integers(1, BIGINT_MAX), st.integers(1, BIGINT_MAX), st.integers(1, BIGINT_MAX), st.integers(1, BIGINT_MAX)
)
def test_a_lower_tier_means_strictly_more_of_the_limit_used(s1: int, l1: int, s2: int, l2: int) -> None:
    t1, t2 = headroom_tier(s1, l1), headroom_tier(s2, l2)
    assert t1 is not None and t2 is not None
    assert t1 in TIERS and t2 in TIERS, "the ranking lists TIERS to the index: a tier outside it is never read"
    if t1 < t2:
        assert Fraction(s1, l1) > Fraction(s2, l2)
    if s1 > l1:
        assert t1 == 10, "over the limit is the lowest tier"


# --- the ranking ---------------------------------------------------------------------------------


def _ledgers(now: datetime) -> list[tuple[LedgerRef, int, int | None]]:
    """(ledger, spent, limit) for ~400 entities: current day ledgers, never-ending ones, and past
    days' ledgers nearer their limits than any current one (the index must skip those). Spends
    and limits repeat so that many ledgers share a tier, ties at the threshold included."""
    rng = random.Random(7)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    rows: list[tuple[LedgerRef, int, int | None]] = []
    for i in range(300):
        ref = LedgerRef("key", f"k{i:03d}", "1d", today, today + timedelta(days=1))
        rows.append((ref, rng.choice([1, 2, 3, 5, 7, 40, 300]) * rng.choice([1, 10, 100]), rng.choice([10**4, 10**5])))
    for i in range(60):
        ref = LedgerRef("team", f"t{i:02d}", None, EPOCH, None)
        rows.append((ref, rng.choice([5, 50, 500, 4000]), rng.choice([10**4, None])))
    for i in range(150):
        ref = LedgerRef("key", f"k{i:03d}", "1d", today - timedelta(days=1), today)
        rows.append((ref, 9_000, 10**4))
    return rows


async def _exact_ranking(rows: list[tuple[LedgerRef, int, int | None]], now: datetime) -> list[tuple[str, str]]:
    """What the ranking must be: every current ledger with spend under a limit, by the share the
    SQL orders by (a double, as in `_shares`), ties by entity — the first `_RANKED` of them."""
    current = [
        (ref, spent, limit) for ref, spent, limit in rows
        if limit and (ref.period_end is None or ref.period_start <= now < ref.period_end)
    ]
    ordered = sorted(current, key=lambda row: (-(float(row[1]) / float(row[2] or 1)), row[0].entity_type,
                                               row[0].entity_id))
    return list(dict.fromkeys((ref.entity_type, ref.entity_id) for ref, _, _ in ordered[: overview_module._RANKED]))


async def _record_all(engine: AsyncEngine, rows: list[tuple[LedgerRef, int, int | None]]) -> None:
    """Each ledger charged by the record path, in two records (the tier after the second charge)."""
    store = LedgerStore(session_factory(engine))
    try:
        for n, (ref, spent, limit) in enumerate(rows):
            for part, cost in enumerate((spent // 2, spent - spent // 2)):
                event = SpendEvent(request_id=f"r{n}-{part}", cost=cost, outcome="success", charges=charges_json([ref]))
                await store.record(event=event, ledgers=[ref], limits={ref.id: limit} if limit else {})
    finally:
        await store.close()  # SQLite: the store's own writer


@pytest.mark.asyncio
async def test_the_ranking_through_the_lowest_tiers_is_the_exact_ranking(engine: AsyncEngine) -> None:
    now = datetime.now(timezone.utc)
    rows = _ledgers(now)
    await _record_all(engine, rows)
    async with session_factory(engine)() as session:
        threshold = await _tier_threshold(session, now)
        ranked = await _candidates(session, now)
        async with engine.connect() as conn:
            tiers = sorted(t for (t,) in (await conn.execute(text(
                "SELECT headroom_tier FROM ledgers WHERE headroom_tier IS NOT NULL AND (period_end IS NULL OR "
                "period_end > :now)"), {"now": now})).all())

    assert threshold is not None and tiers.count(threshold) > 1, "the data puts a tie on the threshold"
    assert tiers.index(threshold) < overview_module._RANKED - 1 < len(tiers) - 1 - tiers[::-1].index(threshold)
    assert ranked == await _exact_ranking(rows, now)


@pytest.mark.asyncio
async def test_with_few_tiered_ledgers_every_current_one_is_ranked(engine: AsyncEngine) -> None:
    now = datetime.now(timezone.utc)
    rows = _ledgers(now)[290:320]
    await _record_all(engine, rows)
    async with session_factory(engine)() as session:
        assert await _tier_threshold(session, now) is None
        assert await _candidates(session, now) == await _exact_ranking(rows, now)


@pytest.mark.asyncio
async def test_a_threshold_that_moved_before_the_ranking_falls_back_to_every_current_ledger(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The threshold and the ranking are two statements: a charge between them can leave fewer
    than `_RANKED` ledgers at or below the threshold read. Here the threshold is read as the
    lowest tier (as if every other ledger had left it): the ranking is still the exact one."""
    now = datetime.now(timezone.utc)
    rows = _ledgers(now)
    await _record_all(engine, rows)
    monkeypatch.setattr(overview_module, "_tier_threshold", _lowest_tier)
    async with session_factory(engine)() as session:
        assert await _candidates(session, now) == await _exact_ranking(rows, now)


async def _lowest_tier(session: Any, now: datetime) -> int:
    return TIERS[0]


# --- the migration -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_migration_fills_in_the_tier_of_current_ledgers_charged_under_a_limit(
    engine: AsyncEngine,
) -> None:
    """Ledgers as a replica before 0007 left them (no tier); 0007's backfill (run again on the
    migrated schema) tiers the current ones with a limit and spend, and no other."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    today = now.replace(hour=0, minute=0, second=0)
    sqlite = engine.dialect.name == "sqlite"

    def stamp(value: datetime | None) -> Any:
        return value.replace(tzinfo=None).isoformat(sep=" ") if sqlite and value else value

    rows = [  # ledger id, start, end, spent, limit
        ("current", today, today + timedelta(days=1), 30, 100),
        ("lifetime", EPOCH, None, 7, 10_000),
        ("past", today - timedelta(days=1), today, 30, 100),
        ("idle", today, today + timedelta(days=1), 0, 100),
        ("unlimited", EPOCH, None, 5, None),
    ]
    async with engine.begin() as conn:
        for ledger_id, start, end, spent, limit in rows:
            await conn.execute(text(
                'INSERT INTO ledgers (ledger_id, entity_type, entity_id, "window", period_start, period_end, '
                "spent, reserved, version, updated_at, limit_at_charge) "
                "VALUES (:l, 'key', :l, NULL, :s, :e, :spent, 0, 1, :at, :limit)"
            ), {"l": ledger_id, "s": stamp(start), "e": stamp(end), "spent": spent, "at": stamp(now), "limit": limit})

    await _run_backfill(engine)

    async with engine.connect() as conn:
        found = dict((await conn.execute(text("SELECT ledger_id, headroom_tier FROM ledgers"))).all())
    assert found == {
        "current": headroom_tier(30, 100), "lifetime": headroom_tier(7, 10_000),
        "past": None, "idle": None, "unlimited": None,
    }
    assert found["current"] == 13 and found["lifetime"] == 41


async def _run_backfill(engine: AsyncEngine) -> None:
    """0007's `_backfill` through alembic's operations, as `upgrade` runs it."""
    migration = importlib.import_module("spendgate.migrations.versions.0007_ledger_headroom_tier")

    def run(sync: Any) -> None:
        with Operations.context(MigrationContext.configure(sync)):
            migration._backfill(datetime.now(timezone.utc))

    async with engine.begin() as conn:
        await conn.run_sync(run)


# --- the record path's ledger update stays HOT -----------------------------------------------------


@pytest.mark.asyncio
async def test_a_charge_is_a_hot_update_unless_it_moves_the_tier() -> None:
    """300 charges of $0.01 to one ledger under a $10 limit, each its own transaction, through the
    record path's statement: every update is HOT (no new index entries) except those that moved
    the tier — and those are few. PostgreSQL's own counters tell, read by the same backend after
    it flushed them, in a database of this test's own (the counters outlive TRUNCATE)."""
    limit, cost, charges = 10 * 10**9, 10**7, 300
    ref = LedgerRef("key", "k1", None, EPOCH, None)
    url = await create_database("spendgate_hot")
    try:
        engine = create_async_engine(url)
        await upgrade(engine)
        await engine.dispose()
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            for _ in range(charges):
                await conn.execute(
                    _PG_ADD_SPEND, [ref.id], [ref.entity_type], [ref.entity_id], [ref.window], [ref.period_start],
                    [ref.period_end], [cost], [limit], datetime.now(timezone.utc),
                )
            await conn.execute("SELECT pg_stat_force_next_flush()")
            updates, hot = await conn.fetchrow(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'ledgers'"
            )
        finally:
            await conn.close()
    finally:
        await drop_database(url)

    tiers = [headroom_tier(cost * n, limit) for n in range(1, charges + 1)]
    moves = sum(1 for before, after in zip(tiers, tiers[1:]) if before != after)
    assert updates == charges - 1, "the first charge inserts the ledger"
    assert updates - hot == moves
    assert moves <= 30, f"the tier moved on {moves} of {charges - 1} charges"


# --- repair of tiers other writers left ------------------------------------------------------------


@pytest.mark.asyncio
async def test_reconcile_re_derives_tiers_a_replica_before_0007_left_behind(any_app: RunningApp) -> None:
    """A replica on the previous version charges without moving the tier (here: `spent` raised by
    hand, as its statement would), which would hide a ledger at its limit from the ranking; the
    periodic reconcile sets it right on both engines, and the next run finds nothing."""
    key = await create(any_app.admin, "keys", {"name": "k", "budget": {"max_budget": "10"}})
    await authorize(any_app.gateway, api_key=key["key"], request_id="r1", model="gpt-4o", estimated_cost="0.01")
    await record(any_app.gateway, request_id="r1", cost="0.01", outcome="success")
    engine = any_app.runtime.engine

    async def tiers() -> dict[str, int | None]:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT entity_id, headroom_tier FROM ledgers WHERE entity_type = 'key'"))).all()
        return dict(rows)

    assert await tiers() == {key["id"]: headroom_tier(10**7, 10 * 10**9)}
    async with engine.begin() as conn:  # the old replica's charge: to the limit, tier untouched
        await conn.execute(text("UPDATE ledgers SET spent = :s WHERE entity_type = 'key'"), {"s": 10 * 10**9})

    await reconcile_once(any_app.runtime)

    assert await tiers() == {key["id"]: headroom_tier(10 * 10**9, 10 * 10**9)} == {key["id"]: 11}
    assert await refresh_headroom_tiers(any_app.runtime.sessions, any_app.runtime.clock()) == 0
