"""Admin list pages at 1k vs 100k keys: per-page latency of the first page and of a deep page.

    .venv/bin/python bench/lists.py [--scales 1000,100000] [--repeats 200] [--limit 50]

For each scale: a fresh PostgreSQL database (migrated by the service's migrations) and a
redis-server, bulk-seeded in SQL (100 teams, 1,000 users, N keys — each key with a daily budget,
every fourth with a per-model budget too, every tenth blocked); then the app in-process over ASGI
(httpx), timing `GET /v1/admin/keys?limit=…` for the first page, a page half-way in
(through a cursor), and a deep page of one team's keys (`team_id=`). Also prints how many SQL
statements each page ran (counted on the engine) and PostgreSQL's plan for the deep page.
Prints figures, asserts none.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from pydantic import SecretStr
from sqlalchemy import event

from _common import fmt_ms, machine_summary, pct, services

from spendgate.admin.cursor import encode_cursor, scope_of
from spendgate.admin.lists import ListFilters
from spendgate.api import create_app
from spendgate.migrate import upgrade
from spendgate.settings import Settings

TOKEN = "bench-admin-token-0123456789"
TEAMS, USERS = 100, 1000

_SEED = [
    "INSERT INTO orgs (id, name, blocked, created_at) VALUES ('org-0', 'Org', false, now())",
    f"""INSERT INTO teams (id, name, org_id, blocked, created_at)
        SELECT 'team-' || lpad(t::text, 3, '0'), 'Team ' || t, 'org-0', false, now() FROM generate_series(0, {TEAMS - 1}) t""",
    f"""INSERT INTO users (id, email, org_id, blocked, created_at)
        SELECT 'user-' || lpad(u::text, 4, '0'), NULL, 'org-0', false, now() FROM generate_series(0, {USERS - 1}) u""",
    f"""INSERT INTO keys (id, key_hash, key_prefix, name, user_id, team_id, models, expires_at, blocked, deleted_at, created_at)
        SELECT 'key-' || lpad(k::text, 7, '0'), md5(k::text) || md5('s' || k::text), 'sk-sg-bench', NULL,
               'user-' || lpad((k % {USERS})::text, 4, '0'), 'team-' || lpad((k % {TEAMS})::text, 3, '0'),
               '[]'::json, NULL, k % 10 = 0, NULL, now()
        FROM generate_series(0, $1 - 1) k""",
    """INSERT INTO budgets (entity_type, entity_id, max_budget, soft_budget, duration, reset, set_at)
        SELECT 'key', 'key-' || lpad(k::text, 7, '0'), 10000000000, NULL, '1d', 'calendar', now()
        FROM generate_series(0, $1 - 1) k""",
    """INSERT INTO budgets (entity_type, entity_id, max_budget, soft_budget, duration, reset, set_at)
        SELECT 'key_model', 'key-' || lpad(k::text, 7, '0') || '/gpt-4o', 5000000000, NULL, '1d', 'calendar', now()
        FROM generate_series(0, $1 - 1, 4) k""",
    "ANALYZE",
]


async def _seed(url: str, keys: int) -> float:
    started = time.monotonic()
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        for statement in _SEED:
            if "$1" in statement:
                await conn.execute(statement, keys)
            else:
                await conn.execute(statement)
    finally:
        await conn.close()
    return time.monotonic() - started


async def _time_page(admin: httpx.AsyncClient, params: dict[str, Any], repeats: int, counter: list[int]) -> dict[str, Any]:
    latencies: list[float] = []
    statements: set[int] = set()
    items = 0
    for _ in range(repeats):
        counter[0] = 0
        started = time.perf_counter()
        answer = await admin.get("/v1/admin/keys", params=params)
        latencies.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text
        statements.add(counter[0])
        items = len(answer.json()["items"])
    latencies.sort()
    return {
        "p50": statistics.median(latencies),
        "p95": pct(latencies, 95),
        "items": items,
        "statements": sorted(statements),
    }


def _deep_cursor(keys: int, filters: ListFilters, fraction: float = 0.5) -> tuple[str, str]:
    """A cursor half-way through (the service's own format: the last id and the filters' scope)."""
    if filters.team_id is None:
        after = f"key-{int(keys * fraction):07d}"
    else:
        team = int(filters.team_id.split("-")[1])
        members = list(range(team, keys, TEAMS))
        after = f"key-{members[int(len(members) * fraction)]:07d}"
    return encode_cursor(after, scope_of("keys", {**filters._asdict(), "team": None})), after


async def _explain(url: str, after: str, limit: int) -> str:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch(
            """EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
            SELECT page.id, b.id FROM (SELECT * FROM keys WHERE id > $1 AND deleted_at IS NULL ORDER BY id LIMIT $2) page
            LEFT JOIN budgets b ON (b.entity_type = 'key' AND b.entity_id = page.id)
              OR (b.entity_type = 'key_model' AND b.entity_id ~>=~ (page.id || '/') AND b.entity_id ~<~ (page.id || '0'))
            ORDER BY page.id, b.id""",
            after,
            limit + 1,
        )
    finally:
        await conn.close()
    return "\n".join("    " + row[0] for row in rows)


async def _scale(keys: int, repeats: int, limit: int, workdir: Path) -> None:
    url = await services.create_database("spendgate_bench")
    redis = services.RedisServer(workdir=workdir)
    redis.start()
    try:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(url)
        await upgrade(engine)
        await engine.dispose()
        seeded = await _seed(url, keys)
        settings = Settings(
            database_url=url, redis_url=redis.url, admin_token=SecretStr(TOKEN), policy_reload_seconds=0
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            counter = [0]

            def _count(*_args: Any) -> None:
                counter[0] += 1

            event.listen(app.state.runtime.engine.sync_engine, "before_cursor_execute", _count)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://bench",
                headers={"authorization": f"Bearer {TOKEN}"},
            ) as admin:
                await admin.get("/v1/admin/keys", params={"limit": limit})  # warm up pool and caches
                deep, after = _deep_cursor(keys, ListFilters())
                team = ListFilters(team_id="team-007")
                team_deep, _ = _deep_cursor(keys, team)
                rows = {
                    "first page": await _time_page(admin, {"limit": limit}, repeats, counter),
                    f"deep page (after {after})": await _time_page(
                        admin, {"limit": limit, "cursor": deep}, repeats, counter
                    ),
                    "team-007, deep page": await _time_page(
                        admin, {"limit": limit, "team_id": "team-007", "cursor": team_deep}, repeats, counter
                    ),
                    "blocked=true, first page": await _time_page(
                        admin, {"limit": limit, "blocked": "true"}, repeats, counter
                    ),
                }
            print(f"\n{keys:,} keys (seeded in {seeded:.1f} s), limit={limit}, {repeats} requests per row")
            print(f"  {'page':<34} {'p50':>9} {'p95':>9} {'items':>6}  SQL statements per page")
            for name, row in rows.items():
                statements = ", ".join(str(n) for n in row["statements"])
                print(f"  {name:<34} {fmt_ms(row['p50']):>9} {fmt_ms(row['p95']):>9} {row['items']:>6}  {statements}")
            print("  plan of the deep page's statement (simplified to the join):")
            print(await _explain(url, after, limit))
    finally:
        redis.stop()
        await services.drop_database(url)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="1000,100000", help="numbers of keys, comma-separated")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--limit", type=int, default=50)
    args = parser.parse_args()
    print(machine_summary())
    with tempfile.TemporaryDirectory() as workdir:
        for keys in (int(n) for n in args.scales.split(",")):
            await _scale(keys, args.repeats, args.limit, Path(workdir))


if __name__ == "__main__":
    asyncio.run(main())
