"""`spendgate reconcile`: finds counter drift injected by hand, repairs it atomically, and never
loses a concurrent record's spend; the service runs it periodically and exports what it found."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from collections.abc import Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from support.app import RunningApp
from spendgate.metrics import RECONCILE_PROBLEMS
from spendgate.reconcile import RedisReconciler, reconciler_for
from spendgate.reconcile.periodic import reconcile_once
from support.app import AppFactory
from support.scenario import authorize, create, create_key, record

pytestmark = pytest.mark.asyncio

USD = 1_000_000_000
KEY, USER, TAG = "key:k1:-:0", "user:ada:-:0", "tag:search:-:0"


async def spendgate_reconcile(*args: str, database_url: str, redis_url: str | None = None) -> tuple[int, str]:
    """Run the real command in its own process; (exit status, stdout)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SPENDGATE_")}
    env["SPENDGATE_DATABASE_URL"] = database_url
    if redis_url:
        env["SPENDGATE_REDIS_URL"] = redis_url
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spendgate", "reconcile", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    assert process.returncode in (0, 1), err.decode()
    return process.returncode, out.decode()


async def _one_recorded_one_open(app: RunningApp) -> str:
    """Key k1 of user ada (budget 10): r1 recorded at 1.00, r2 authorized at 0.50 and still open.
    Both touch the ledgers of the key, the user and the tag 'search'."""
    await create(app.admin, "users", {"id": "ada", "budget": {"max_budget": "10"}})
    secret = await create_key(app.admin, id="k1", user_id="ada")
    await authorize(app.gateway, request_id="r1", api_key=secret, tags=["search"], estimated_cost="1.00")
    await record(app.gateway, request_id="r1", cost="1.00", outcome="success")
    body = await authorize(app.gateway, request_id="r2", api_key=secret, tags=["search"], estimated_cost="0.50")
    assert body["decision"] == "allow", body
    return secret


def _redis(app: RunningApp) -> aioredis.Redis:
    assert app.runtime.redis is not None
    return app.runtime.redis


async def _hash(app: RunningApp, ledger_id: str) -> dict[str, str]:
    raw = await _redis(app).hgetall(f"sg:l:{ledger_id}")
    return {k.decode(): v.decode() for k, v in raw.items()}


async def _ledger_rows(app: RunningApp) -> dict[str, tuple[int, int, int]]:
    async with app.runtime.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT ledger_id, spent, reserved, version FROM ledgers"))).all()
    return {row[0]: (int(row[1]), int(row[2]), int(row[3])) for row in rows}


async def _inject_redis_drift(app: RunningApp) -> None:
    """A wrong spent on the key's counter, a leaked 0.25 reserved (no hold) on the user's, and the
    tag's counter deleted while r2's hold is still open on it."""
    client = _redis(app)
    await client.hset(f"sg:l:{KEY}", "spent", str(5 * USD))
    await client.hincrby(f"sg:l:{USER}", "reserved", USD // 4)
    await client.delete(f"sg:l:{TAG}")


def _by_ledger(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["ledger_id"]: row for row in report["drifts"]}


# --- Redis counters ----------------------------------------------------------------------------

async def test_reconcile_reports_each_injected_redis_drift_with_its_figures(pg_app: RunningApp, redis_url: str) -> None:
    await _one_recorded_one_open(pg_app)
    assert (await spendgate_reconcile(database_url=pg_app.settings.database_url, redis_url=redis_url))[0] == 0
    await _inject_redis_drift(pg_app)

    status, out = await spendgate_reconcile("--format", "json", database_url=pg_app.settings.database_url,
                                            redis_url=redis_url)

    assert status == 1
    report = json.loads(out)
    drifts = _by_ledger(report)
    assert set(drifts) == {KEY, USER, TAG}
    assert drifts[KEY] | {"fixed": None} == {
        "ledger_id": KEY, "problems": ["spent"], "counter_spent": "5.000000", "ledger_spent": "1.000000",
        "spent_drift": "4.000000", "counter_version": 1, "ledger_version": 1, "reserved": "0.500000",
        "held": "0.500000", "orphaned": "0.000000", "reserved_drift": "0.000000", "fixed": None,
    }
    assert drifts[USER]["problems"] == ["reserved"]
    assert (drifts[USER]["counter_spent"], drifts[USER]["ledger_spent"]) == ("1.000000", "1.000000")
    assert (drifts[USER]["reserved"], drifts[USER]["held"], drifts[USER]["reserved_drift"]) == (
        "0.750000", "0.500000", "0.250000")
    assert drifts[TAG]["problems"] == ["missing"]
    assert (drifts[TAG]["counter_spent"], drifts[TAG]["ledger_spent"], drifts[TAG]["reserved"]) == (
        None, "1.000000", None)
    assert (drifts[TAG]["held"], drifts[TAG]["orphaned"], drifts[TAG]["reserved_drift"]) == (
        "0.500000", "0.500000", "-0.500000")
    assert report["total"] == {"drifting": 3, "fixed": 0, "spent_drift": "4.000000", "reserved_drift": "0.750000"}
    assert report["counters"] == "redis" and report["open_holds"] == 1
    # Only reported: nothing was changed.
    assert (await _hash(pg_app, KEY))["spent"] == str(5 * USD)
    assert not await _redis(pg_app).exists(f"sg:l:{TAG}")


async def test_reconcile_fix_repairs_the_redis_drift_and_a_second_run_finds_nothing(
    pg_app: RunningApp, redis_url: str,
) -> None:
    await _one_recorded_one_open(pg_app)
    await _inject_redis_drift(pg_app)
    url = pg_app.settings.database_url

    status, out = await spendgate_reconcile("--fix", database_url=url, redis_url=redis_url)

    assert status == 0, out
    assert "3 drifting, 3 fixed" in out
    key, user, tag = (await _hash(pg_app, KEY)), (await _hash(pg_app, USER)), (await _hash(pg_app, TAG))
    rows = await _ledger_rows(pg_app)
    assert (int(key["spent"]), int(key["version"])) == (USD, rows[KEY][2])
    assert int(user["reserved"]) == USD // 2
    assert (int(tag["spent"]), int(tag["reserved"]), int(tag["version"])) == (USD, USD // 2, rows[TAG][2])
    assert await spendgate_reconcile(database_url=url, redis_url=redis_url) == (0, await _clean_line(pg_app))

    # The adopted hold of the rebuilt tag counter is released by its record like any other.
    await record(pg_app.gateway, request_id="r2", cost="0.40", outcome="success")
    tag = await _hash(pg_app, TAG)
    assert (int(tag["spent"]), int(tag["reserved"])) == (1_400_000_000, 0)
    assert (await reconciler_for(sessions=pg_app.runtime.sessions, redis=_redis(pg_app)).run(fix=False)).drifts == ()


async def _clean_line(app: RunningApp) -> str:
    report = await reconciler_for(sessions=app.runtime.sessions, redis=_redis(app)).run(fix=False)
    assert report.drifts == ()
    return (
        f"total: no drift; |spent drift| 0.000000 USD, |reserved drift| 0.000000 USD "
        f"({report.checked} ledgers checked on redis counters, {report.open_holds} open hold"
        f"{'' if report.open_holds == 1 else 's'})\n"
    )


async def test_reconcile_finds_a_counter_behind_and_one_ahead_of_the_ledger(pg_app: RunningApp) -> None:
    await _one_recorded_one_open(pg_app)
    client = _redis(pg_app)
    await client.hset(f"sg:l:{KEY}", mapping={"spent": "0", "version": "0"})  # a settle that never ran
    await client.hset(f"sg:l:{USER}", mapping={"spent": str(3 * USD), "version": "7"})  # a restored ledger
    reconciler = reconciler_for(sessions=pg_app.runtime.sessions, redis=client)

    found = {d.ledger_id: d for d in (await reconciler.run(fix=False)).drifts}

    assert found[KEY].problems == ("behind",) and found[KEY].spent_drift == -USD
    assert found[USER].problems == ("ahead",) and found[USER].spent_drift == 2 * USD
    # The service's own run repairs a counter behind, but leaves one ahead of the ledger to a human.
    periodic = {d.ledger_id: d for d in (await reconcile_once(pg_app.runtime)).drifts}
    assert periodic[KEY].fixed and not periodic[USER].fixed
    assert (await _hash(pg_app, USER))["spent"] == str(3 * USD)
    report = await reconciler.run(fix=True, fix_ahead=True)
    assert [(d.ledger_id, d.fixed) for d in report.drifts] == [(USER, True)]
    assert (await _hash(pg_app, USER))["spent"] == str(USD)
    assert (await reconciler.run(fix=False)).drifts == ()


async def test_fixing_under_live_traffic_never_loses_a_concurrent_records_spend(pg_app: RunningApp) -> None:
    await create(pg_app.admin, "users", {"id": "ada", "budget": {"max_budget": "1000"}})
    secret = await create_key(pg_app.admin, id="k1", user_id="ada")
    client = _redis(pg_app)
    reconciler = reconciler_for(sessions=pg_app.runtime.sessions, redis=client)
    rng = random.Random(5)
    costs = {f"c{i}": rng.randint(1, 9_999) * 1_000 for i in range(240)}
    done = asyncio.Event()

    async def gateway(ids: list[str]) -> None:
        for request_id in ids:
            await authorize(pg_app.gateway, request_id=request_id, api_key=secret, tags=["search"],
                            estimated_cost="0.01")
            await record(pg_app.gateway, request_id=request_id, cost=str(costs[request_id] / USD),
                         outcome="success")

    async def saboteur_and_fixer() -> int:
        runs = 0
        while True:
            finished = done.is_set()
            # Drift injected by hand mid-load, then repaired while records keep landing.
            await client.hset(f"sg:l:{USER}", "spent", "1")
            await client.hincrby(f"sg:l:{KEY}", "reserved", 123)
            await reconciler.run(fix=True, fix_ahead=True)
            runs += 1
            if finished:  # this last run started after the load: it must leave nothing behind
                return runs
            await asyncio.sleep(0)

    async def watcher() -> dict[str, list[int]]:
        """The counters' versions as the load goes: a repair must never put a counter back."""
        seen: dict[str, list[int]] = {KEY: [], USER: [], TAG: []}
        while not done.is_set():
            for ledger_id, versions in seen.items():
                versions.append(int(await client.hget(f"sg:l:{ledger_id}", "version") or 0))
            await asyncio.sleep(0)
        return seen

    ids = sorted(costs)
    fixer, watching = asyncio.create_task(saboteur_and_fixer()), asyncio.create_task(watcher())
    await asyncio.gather(*(gateway(ids[i::12]) for i in range(12)))
    done.set()
    assert await fixer >= 3
    for versions in (await watching).values():
        assert versions == sorted(versions) and versions[-1] > 0

    total = sum(costs.values())
    rows = await _ledger_rows(pg_app)
    for ledger_id in (KEY, USER, TAG):
        assert rows[ledger_id][0] == total  # the ledger holds every acknowledged record once
        counter = await _hash(pg_app, ledger_id)
        assert (int(counter["spent"]), int(counter["reserved"])) == (total, 0), ledger_id
        # The counter caught up with the ledger's last commit (versions count transactions,
        # and records that queued together share one).
        assert int(counter["version"]) == rows[ledger_id][2] and 0 < rows[ledger_id][2] <= len(costs)
    assert (await reconciler.run(fix=False)).drifts == ()


async def test_a_repair_never_puts_back_a_record_that_landed_while_it_ran(pg_app: RunningApp) -> None:
    """Deterministic version of the race: a record commits and settles, and another request
    reserves, between the repair's read of the ledger and its Lua script. The script must keep
    the newer spent (not the older snapshot) and count the new hold in `reserved`."""
    secret = await _one_recorded_one_open(pg_app)
    client = _redis(pg_app)
    await client.hset(f"sg:l:{USER}", "spent", str(5 * USD))
    await client.hincrby(f"sg:l:{USER}", "reserved", USD // 4)

    class RecordLandsMidRepair(RedisReconciler):
        reads = 0

        async def _rows(self, ids: Sequence[str]) -> Any:
            rows = await super()._rows(ids)
            self.reads += 1
            if self.reads == 2:  # the repair's snapshot (the first read is the survey)
                await authorize(pg_app.gateway, request_id="r3", api_key=secret, tags=["search"],
                                estimated_cost="2.00")
                await record(pg_app.gateway, request_id="r3", cost="2.00", outcome="success")
                await authorize(pg_app.gateway, request_id="r4", api_key=secret, estimated_cost="0.30")
            return rows

    reconciler = RecordLandsMidRepair(client, pg_app.runtime.sessions)
    await reconciler.run(fix=True, fix_ahead=True)

    assert reconciler.reads == 2
    rows = await _ledger_rows(pg_app)
    for ledger_id in (KEY, USER, TAG):
        counter = await _hash(pg_app, ledger_id)
        assert (int(counter["spent"]), int(counter["version"])) == (3 * USD, 2)
        assert (rows[ledger_id][0], rows[ledger_id][2]) == (3 * USD, 2)
    assert int((await _hash(pg_app, USER))["reserved"]) == 800_000_000  # r2's and r4's holds, still open
    assert (await reconciler_for(sessions=pg_app.runtime.sessions, redis=client).run(fix=False)).drifts == ()


# --- SQL counters (no Redis) -------------------------------------------------------------------

@pytest.fixture(params=["postgres", "sqlite"])
async def sql_app(
    request: pytest.FixtureRequest, app_factory: AppFactory, clean_pg: str, sqlite_url: str,
) -> RunningApp:
    return await app_factory(database_url=clean_pg if request.param == "postgres" else sqlite_url)


async def test_reconcile_checks_and_fixes_sql_reserved_against_open_reservations(sql_app: RunningApp) -> None:
    await _one_recorded_one_open(sql_app)
    async with sql_app.runtime.engine.begin() as conn:
        await conn.execute(text("UPDATE ledgers SET reserved = reserved + 250000000 WHERE ledger_id = :id"),
                           {"id": USER})  # leaked
        await conn.execute(text("UPDATE ledgers SET reserved = 0 WHERE ledger_id = :id"), {"id": TAG})  # lost
    url = sql_app.settings.database_url

    status, out = await spendgate_reconcile("--format", "json", database_url=url)

    assert status == 1
    report = json.loads(out)
    assert report["counters"] == "sql" and report["open_holds"] == 1
    drifts = _by_ledger(report)
    assert set(drifts) == {USER, TAG}
    assert (drifts[USER]["reserved"], drifts[USER]["held"], drifts[USER]["reserved_drift"]) == (
        "0.750000", "0.500000", "0.250000")
    assert (drifts[TAG]["reserved"], drifts[TAG]["held"], drifts[TAG]["reserved_drift"]) == (
        "0.000000", "0.500000", "-0.500000")
    assert drifts[TAG]["counter_spent"] == drifts[TAG]["ledger_spent"] == "1.000000"
    assert report["total"]["reserved_drift"] == "0.750000"

    status, out = await spendgate_reconcile("--fix", database_url=url)
    assert status == 0 and "2 drifting, 2 fixed" in out, out
    rows = await _ledger_rows(sql_app)
    assert rows[USER][1] == rows[TAG][1] == rows[KEY][1] == USD // 2
    assert (await spendgate_reconcile(database_url=url))[0] == 0
    await record(sql_app.gateway, request_id="r2", cost="0.40", outcome="success")
    assert {row[1] for row in (await _ledger_rows(sql_app)).values()} == {0}


# --- the service's periodic run ----------------------------------------------------------------

def _samples(metrics_text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
    }


async def _watched_after_drift(app_factory: AppFactory, pg: str, redis_url: str, **settings: Any) -> RunningApp:
    """A leaked 0.25 reserved on the user's counter, made through one replica; then a second replica
    that reconciles every 0.2 s. Its runs all see the same state (no run overlaps the setup, whose
    records may look like drift for an instant), so what they report is exactly that leak."""
    setup = await app_factory(database_url=pg, redis_url=redis_url)
    await _one_recorded_one_open(setup)
    await _redis(setup).hincrby(f"sg:l:{USER}", "reserved", USD // 4)
    return await app_factory(database_url=pg, redis_url=redis_url, reconcile_interval_seconds=0.2, **settings)


async def _scrape_until(app: RunningApp, name: str, labels: tuple[tuple[str, str], ...] = ()) -> dict[Any, float]:
    """Scrape /metrics until the counter `name` (with `labels`) has counted at least once."""
    for _ in range(400):
        samples = _samples((await app.anonymous.get("/metrics")).text)
        if samples.get((name, labels), 0) >= 1:
            return samples
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name}{dict(labels)} never counted: the periodic reconcile did not run")


async def test_the_service_reconciles_periodically_and_repairs_the_drift_it_found(
    app_factory: AppFactory, clean_pg: str, redis_url: str,
) -> None:
    app = await _watched_after_drift(app_factory, clean_pg, redis_url)

    samples = await _scrape_until(app, "spendgate_reconcile_repairs_total")

    assert samples[("spendgate_reconcile_repairs_total", ())] == 1
    assert samples[("spendgate_reconcile_runs_total", (("result", "drift"),))] == 1
    assert int((await _hash(app, USER))["reserved"]) == USD // 2


async def test_the_service_exposes_the_drift_its_last_run_found_and_none_once_it_is_gone(
    app_factory: AppFactory, clean_pg: str, redis_url: str,
) -> None:
    """Report-only (`reconcile_fix` off): every run finds the leak, so the gauges must show it —
    not the zeros they start at, which a run that never set them would leave."""
    app = await _watched_after_drift(app_factory, clean_pg, redis_url, reconcile_fix=False)

    found = await _scrape_until(app, "spendgate_reconcile_runs_total", (("result", "drift"),))
    drifting = {problem: found[("spendgate_reconcile_drifting_ledgers", (("problem", problem),))]
                for problem in RECONCILE_PROBLEMS}
    assert drifting == {problem: 1 if problem == "reserved" else 0 for problem in RECONCILE_PROBLEMS}
    assert found[("spendgate_reconcile_reserved_drift_usd", ())] == 0.25
    assert found[("spendgate_reconcile_spent_drift_usd", ())] == 0
    assert found.get(("spendgate_reconcile_runs_total", (("result", "clean"),)), 0) == 0
    assert found[("spendgate_reconcile_repairs_total", ())] == 0
    assert found[("spendgate_reconcile_last_run_timestamp_seconds", ())] > 0
    assert int((await _hash(app, USER))["reserved"]) == USD // 2 + USD // 4  # reported, not repaired

    await reconciler_for(sessions=app.runtime.sessions, redis=_redis(app)).run(fix=True)
    gone = await _scrape_until(app, "spendgate_reconcile_runs_total", (("result", "clean"),))

    # Runs are sequential: once one has found the counters clean, every later one does too.
    assert all(gone[("spendgate_reconcile_drifting_ledgers", (("problem", p),))] == 0 for p in RECONCILE_PROBLEMS)
    assert gone[("spendgate_reconcile_reserved_drift_usd", ())] == 0
