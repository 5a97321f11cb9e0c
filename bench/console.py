"""How long does the console's overview page take on the server with 100k keys and 1M spend events?

Seeds a fresh database (`spendgate_bench_<random>`) with `data_growth.seed` — the service's own
migrations, then bulk SQL: orgs, teams, users, `--keys` keys each with a daily and a monthly
budget, end users, tags, `--events` spend events over `--days` days and the ledgers they imply —
and adds the spend rollups those events imply (one SQL pass grouping the events per hour, model,
key and outcome, for the all-requests row and every charged entity, as the record path writes
them). Then it serves the app in this process (lifespan entered; Redis counters in a redis-server
of its own; embedded policy), signs in to the console, and times `GET /console` over
httpx.ASGITransport `--rounds` times after `--warmup` requests — wall time per request, the
server's whole work: every query, the counters read and the template; nothing is reused between
loads (console/overview.py) — and shows the process's very first request too. Then `overview()`
and its parts alone: the month and today totals, today's top keys, the near-limit list.
Target: p50 ≤ 300 ms. Nothing asserts a timing.

    .venv/bin/python bench/console.py                      # 100k keys, 1M events (~9 min to seed)
    .venv/bin/python bench/console.py --keys 10000 --events 100000
    .venv/bin/python bench/console.py --keep          # then: --database postgresql+asyncpg://…/spendgate_bench_…
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
from pydantic import SecretStr

from _common import fmt_ms, machine_summary, pct, services
from data_growth import Shape, plain_url, seed
from spendgate.api import create_app
from spendgate.console import overview as overview_module
from spendgate.console.overview import near_limit, overview
from spendgate.policy import load_policy_set
from spendgate.settings import Settings

ADMIN = "bench-admin-token-0123456789"
GATEWAY = "bench-gateway-token-0123456789"

#: The spend rollups the seeded events imply: what `reports.rollups.rollup_deltas` writes per record.
_ROLLUPS_SQL = """
INSERT INTO spend_rollups (entity_type, entity_id, hour, model, key_id, outcome, spend, requests, failures)
SELECT c.entity_type, c.entity_id, date_trunc('hour', e.created_at), coalesce(e.model, ''), coalesce(e.key_id, ''),
       e.outcome, sum(e.cost), count(*), count(*) FILTER (WHERE e.outcome = 'failure')
FROM spend_events e
CROSS JOIN LATERAL (
    SELECT '*' AS entity_type, '*' AS entity_id
    UNION
    SELECT x->>'entity_type', x->>'entity_id' FROM json_array_elements(e.charges::json) AS x
) AS c
GROUP BY 1, 2, 3, 4, 5, 6
"""


async def _add_rollups(database_url: str) -> tuple[float, int]:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        await conn.execute("SET TIME ZONE 'UTC'; SET work_mem = '512MB'")
        started = time.monotonic()
        await conn.execute(_ROLLUPS_SQL)
        await conn.execute("VACUUM ANALYZE spend_rollups")
        rows = int(await conn.fetchval("SELECT count(*) FROM spend_rollups"))
        return time.monotonic() - started, rows
    finally:
        await conn.close()


async def _sizes(database_url: str) -> dict[str, str]:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        sizes = {table: str(await conn.fetchval(f"SELECT count(*) FROM {table}"))
                 for table in ("keys", "budgets", "ledgers", "spend_events", "spend_rollups")}
        sizes["db size"] = str(await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))"))
        return sizes
    finally:
        await conn.close()


async def amain(args: argparse.Namespace) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    settings_dir = Settings().policy_dir
    revision = load_policy_set(settings_dir).revision
    redis = services.RedisServer()
    redis.start()
    url = args.database or await services.create_database("spendgate_bench")
    try:
        if not args.database:
            started = time.monotonic()
            timings = await seed(url, Shape(args.keys, args.events, args.days), revision, now, args.seed)
            rollup_seconds, _ = await _add_rollups(url)
            print(f"seeded {url.rsplit('/', 1)[1]} in {time.monotonic() - started:.1f} s: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()) + f", rollups {rollup_seconds:.1f}",
                  file=sys.stderr, flush=True)
        sizes = await _sizes(url)
        settings = Settings(
            database_url=url, redis_url=redis.url, admin_token=SecretStr(ADMIN), gateway_token=SecretStr(GATEWAY),
            db_pool_size=2, reconcile_interval_seconds=0, policy_reload_seconds=0,
        )
        app = create_app(settings)
        walls: list[float] = []
        firsts: list[float] = []
        others: dict[str, list[float]] = {}
        parts: dict[str, list[float]] = {}
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=60)
            )
            signed = await client.post("/console/login", data={"token": ADMIN})
            assert signed.status_code == 303, signed.text
            for round_ in range(args.warmup + args.rounds):
                started = time.perf_counter()
                page = await client.get("/console")
                elapsed = time.perf_counter() - started
                assert page.status_code == 200, page.text[:500]
                if round_ < 1:
                    firsts.append(elapsed)
                if round_ >= args.warmup:
                    walls.append(elapsed)
            for path in ("/console/browse/key", "/console/browse/key?q=key-4242", "/console/browse/team?q=team-1"):
                for _ in range(args.rounds):
                    started = time.perf_counter()
                    page = await client.get(path)
                    assert page.status_code == 200, page.text[:500]
                    others.setdefault(f"GET {path}", []).append(time.perf_counter() - started)
            runtime = app.state.runtime
            now = runtime.clock()
            day = now.replace(hour=0, minute=0, second=0, microsecond=0)
            end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            alone: dict[str, Callable[[Any], Awaitable[Any]]] = {
                "overview()": lambda session: overview(session=session, runtime=runtime),
                "month and today totals": lambda session: overview_module._totals(session, day.replace(day=1), day, end),
                "today's top keys": lambda session: overview_module._top_keys(session, day, end),
                "near_limit()": lambda session: near_limit(session=session, runtime=runtime, now=now),
            }
            for _ in range(args.rounds):
                for name, part in alone.items():
                    async with runtime.sessions() as session:
                        started = time.perf_counter()
                        await part(session)
                        parts.setdefault(name, []).append(time.perf_counter() - started)
    finally:
        if not (args.keep or args.database):
            await services.drop_database(url)
        redis.kill()
    walls.sort()
    print(f"\n## console overview — {args.keys:,} keys, {args.events:,} spend events over {args.days} days")
    print(machine_summary())
    print("rows: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    print(f"GET /console (signed in), {len(walls)} requests after {args.warmup} warm-up: "
          f"p50 {fmt_ms(pct(walls, 50))} ms, p95 {fmt_ms(pct(walls, 95))} ms, max {fmt_ms(walls[-1])} ms "
          f"(target p50 <= 300 ms: {'met' if pct(walls, 50) <= 0.3 else 'NOT met'})")
    print(f"GET /console, the process's first request: {fmt_ms(firsts[0])} ms")
    for name, values in {**others, **parts}.items():
        print(f"  {name}: median {fmt_ms(statistics.median(values))} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the seeded database (its URL is printed)")
    parser.add_argument("--database", help="measure an already seeded database (a URL --keep printed) instead")
    asyncio.run(amain(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
