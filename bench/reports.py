"""Is a spend report fast and flat as spend events grow? 100k vs 1M events, one team, 30 days.

Creates a PostgreSQL database (`spendgate_bench_<random>`), runs the service's migrations and
seeds, with bulk SQL, `--events` spend events over the last 30 days: 4 teams of one org, 5 keys per
team, 5 models, 10 % failures; each event charges its team (a 1d calendar window), its org and its
key. The rollups are then built in SQL from those events in the shape the record path writes
(`spendgate.reports.rollups`: per entity once, plus `*`/`*`, per UTC hour, model, key, outcome).

Seed checks, before anything is timed:
* the SQL rollup of a sample of seeded events equals `rollup_deltas()` of the same events (the
  Python the record transaction runs), row for row;
* `--real` events recorded through the real record path (`LedgerStore.record`, group commit) into
  a scratch database leave exactly the rollups the SQL derivation computes from their events.

Then the report the console asks for — team `search`, 30 days, `group_by=day,model` — is run
`--runs` times through `spend_report` (the route's query and folding, on a pooled session) and
p50/p99 printed. It then adds events up to the next size and measures again.

    .venv/bin/python bench/reports.py                      # 100k then 1M events, 200 runs each
    .venv/bin/python bench/reports.py --sizes 10000 --runs 50
    .venv/bin/python bench/reports.py --record-cost 400    # what the rollups add to a record
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from _common import fmt_ms, machine_summary, pct, services
from sqlalchemy.ext.asyncio import create_async_engine

from spendgate.db import session_factory
from spendgate.ledger_store import LedgerStore
from spendgate.ledgers import LedgerRef, charges_json
from spendgate.migrate import upgrade
from spendgate.periods import Duration, period_at
from spendgate.reports import rollup_deltas
from spendgate.reports.query import parse_query, spend_report
from spendgate.tables import SpendEvent

TEAMS = ("search", "ads", "mail", "maps")
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet", "claude-haiku", "llama-70b")
KEYS_PER_TEAM = 5
DAYS = 30

#: Events first..last (1-based), spread evenly over [start, start + 30 days); JSON charges built in
#: SQL in the text `charges_json` writes (checked below against the Python).
_SEED_EVENTS = """
INSERT INTO spend_events (request_id, cost, outcome, key_id, model, charges, policy_revision, created_at)
SELECT 'e' || i, cost, outcome, key_id, model,
       json_build_array(
         json_build_object('ledger_id', 'key:' || key_id || ':-:0', 'entity_type', 'key', 'entity_id', key_id,
                           'window', NULL, 'period_start', '1970-01-01T00:00:00+00:00', 'period_end', NULL),
         json_build_object('ledger_id', 'org:acme:-:0', 'entity_type', 'org', 'entity_id', 'acme',
                           'window', NULL, 'period_start', '1970-01-01T00:00:00+00:00', 'period_end', NULL),
         json_build_object('ledger_id', 'team:' || team || ':1d:' || extract(epoch FROM day)::bigint,
                           'entity_type', 'team', 'entity_id', team, 'window', '1d',
                           'period_start', to_char(day, 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
                           'period_end', to_char(day + interval '1 day', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'))),
       'bench', at
FROM (
  SELECT i, (i * 7919) % 20000000 AS cost, CASE WHEN i % 10 = 0 THEN 'failure' ELSE 'success' END AS outcome,
         ($3::text[])[1 + (i / 7) % 4] || '-k' || (i % 5) AS key_id, ($3::text[])[1 + (i / 7) % 4] AS team,
         ($4::text[])[1 + (i / 3) % 5] AS model, at, date_trunc('day', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day
  FROM (SELECT i, $5::timestamptz + (i % $6::bigint) * ($7::double precision / $6::bigint) * interval '1 second' AS at
        FROM generate_series($1::bigint, $2::bigint) AS i) AS s
) AS e
"""

#: The rollup shape of `rollups.py`, in SQL: per event, each charged entity once plus `*`.
_DERIVE = """
SELECT x.entity_type, x.entity_id, date_trunc('hour', e.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
       coalesce(e.model, '') AS model, coalesce(e.key_id, '') AS key_id, e.outcome,
       sum(e.cost) AS spend, count(*) AS requests, count(*) FILTER (WHERE e.outcome = 'failure') AS failures
FROM spend_events AS e
CROSS JOIN LATERAL (
  SELECT DISTINCT c->>'entity_type' AS entity_type, c->>'entity_id' AS entity_id FROM json_array_elements(e.charges) c
  UNION SELECT '*', '*'
) AS x
WHERE {where}
GROUP BY 1, 2, 3, 4, 5, 6
"""

_ADD = """
INSERT INTO spend_rollups (entity_type, entity_id, hour, model, key_id, outcome, spend, requests, failures)
{select}
ON CONFLICT (entity_type, entity_id, hour, model, key_id, outcome) DO UPDATE
  SET spend = spend_rollups.spend + excluded.spend, requests = spend_rollups.requests + excluded.requests,
      failures = spend_rollups.failures + excluded.failures
"""


def _raw(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _seed(conn: Any, first: int, last: int, start: datetime, total: int) -> None:
    """Events first..last; `total` fixes their spacing so every size covers the same 30 days."""
    span = DAYS * 86400
    await conn.execute(_SEED_EVENTS, first, last, list(TEAMS), list(MODELS), start, total, float(span))
    where = "e.request_id IN (SELECT 'e' || g FROM generate_series($1::bigint, $2::bigint) g)"
    await conn.execute(_ADD.format(select=_DERIVE.format(where=where)), first, last)
    await conn.execute("VACUUM ANALYZE spend_events")
    await conn.execute("VACUUM ANALYZE spend_rollups")


def _key(row: Any) -> tuple[Any, ...]:
    return (row[0], row[1], row[2].astimezone(timezone.utc), row[3], row[4], row[5])


def _event(row: Any) -> SpendEvent:
    import json

    charges = row["charges"]
    return SpendEvent(request_id=row["request_id"], cost=row["cost"], outcome=row["outcome"], key_id=row["key_id"],
                      model=row["model"], charges=json.loads(charges) if isinstance(charges, str) else charges,
                      policy_revision=row["policy_revision"], created_at=row["created_at"])


async def _check_sample(conn: Any, sample_size: int, size: int) -> int:
    """SQL rollup of a sample == the record path's Python (`rollup_deltas`) for the same events."""
    ids = [f"e{i}" for i in random.Random(7).sample(range(1, size + 1), sample_size)]
    rows = await conn.fetch("SELECT * FROM spend_events WHERE request_id = ANY($1::text[])", ids)
    python = {tuple(d.key): (d.spend, d.requests, d.failures) for d in rollup_deltas(_event(r) for r in rows)}
    sql = {_key(r): (int(r[6]), int(r[7]), int(r[8]))
           for r in await conn.fetch(_DERIVE.format(where="e.request_id = ANY($1::text[])"), ids)}
    assert python == sql, "the SQL seed's rollups differ from the record path's"
    return len(sql)


async def _check_real_records(count: int) -> int:
    """Record `count` events through `LedgerStore.record`; the SQL derivation must match its rollups."""
    url = await services.create_database("spendgate_bench")
    engine = create_async_engine(url)
    try:
        await upgrade(engine)
        store = LedgerStore(session_factory(engine))
        now = datetime.now(timezone.utc)
        day = period_at(duration=Duration.parse("1d"), reset="calendar", anchor=now, at=now)
        rng = random.Random(3)

        async def one(i: int) -> None:
            team = rng.choice(TEAMS)
            key = f"{team}-k{i % KEYS_PER_TEAM}"
            epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
            refs = [LedgerRef("team", team, "1d", day.start, day.end), LedgerRef("org", "acme", None, epoch, None),
                    LedgerRef("key", key, None, epoch, None)]
            event = SpendEvent(request_id=f"real{i}", cost=rng.randrange(20_000_000), outcome=rng.choice(["success", "failure"]),
                               key_id=key, model=rng.choice(MODELS), charges=charges_json(refs), created_at=now)
            await store.record(event=event, ledgers=refs)

        await asyncio.gather(*(one(i) for i in range(count)))  # concurrent: batches of several records
        conn = await __import__("asyncpg").connect(_raw(url))
        try:
            written = {_key(r): (int(r[6]), int(r[7]), int(r[8]))
                       for r in await conn.fetch("SELECT * FROM spend_rollups")}
            derived = {_key(r): (int(r[6]), int(r[7]), int(r[8]))
                       for r in await conn.fetch(_DERIVE.format(where="true"))}
        finally:
            await conn.close()
        assert written == derived, "the record path's rollups differ from the SQL derivation"
        return len(written)
    finally:
        await engine.dispose()
        await services.drop_database(url)


async def _record_cost(count: int) -> None:
    """Sequential records (single-record batches, 3 ledgers) with and without the rollup writer."""
    url = await services.create_database("spendgate_bench")
    engine = create_async_engine(url, pool_size=4)
    try:
        await upgrade(engine)
        epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
        refs = [LedgerRef(kind, kind[0], None, epoch, None) for kind in ("team", "org", "key")]
        for label, rollups in [("warm-up", True), ("without", False), ("with", True), ("without", False), ("with", True)]:
            store = LedgerStore(session_factory(engine))
            if not rollups:
                store.in_transaction.clear()
            began, began_cpu = time.perf_counter(), time.process_time()
            for i in range(count):
                event = SpendEvent(request_id=f"{label}-{rollups}-{i}-{began}", cost=1000, outcome="success", key_id="k",
                                   model="m", charges=charges_json(refs), created_at=datetime.now(timezone.utc))
                await store.record(event=event, ledgers=refs)
            if label != "warm-up":
                print(f"record {label} rollups: {(time.perf_counter() - began) / count * 1000:.2f} ms wall, "
                      f"{(time.process_time() - began_cpu) / count * 1000:.2f} ms client CPU per record")
    finally:
        await engine.dispose()
        await services.drop_database(url)


async def _measure(url: str, runs: int, now: datetime) -> tuple[list[float], list[float], Any]:
    engine = create_async_engine(url, pool_size=2)
    sessions = session_factory(engine)
    query = parse_query({"entity": "team:search", "group_by": "day,model"}, now=now)
    times: list[float] = []
    cpu: list[float] = []
    report = None
    try:
        for _ in range(runs + 5):
            began, began_cpu = time.perf_counter(), time.process_time()
            async with sessions() as session:
                report = await spend_report(session, query)
            times.append(time.perf_counter() - began)
            cpu.append(time.process_time() - began_cpu)
    finally:
        await engine.dispose()
    return sorted(times[5:]), sorted(cpu[5:]), report  # the first few warm the pool and the caches


async def _server_ms(conn: Any, now: datetime) -> float:
    """PostgreSQL's own execution time of the report's statement (EXPLAIN ANALYZE)."""
    query = parse_query({"entity": "team:search", "group_by": "day,model"}, now=now)
    plan = await conn.fetch(
        "EXPLAIN (ANALYZE, FORMAT JSON) SELECT model, date_trunc('day', timezone('UTC', hour)), sum(spend), "
        "sum(requests), sum(failures) FROM spend_rollups WHERE hour >= $1 AND hour < $2 AND entity_type = 'team' "
        "AND entity_id = 'search' GROUP BY 1, 2", query.start, query.end)
    import json

    return float(json.loads(plan[0][0])[0]["Execution Time"])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--real", type=int, default=300)
    parser.add_argument("--record-cost", type=int, default=0, metavar="N",
                        help="only measure what the rollups add to N sequential records, then stop")
    args = parser.parse_args()
    print(machine_summary())
    if args.record_cost:
        await _record_cost(args.record_cost)
        return
    print(f"seed check: record path vs SQL derivation on {args.real} real records: "
          f"{await _check_real_records(args.real)} rollup rows identical")
    url = await services.create_database("spendgate_bench")
    engine = create_async_engine(url)
    await upgrade(engine)
    await engine.dispose()
    now = datetime.now(timezone.utc)
    start = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1) - timedelta(days=DAYS)
    conn = await __import__("asyncpg").connect(_raw(url))
    seeded = 0
    try:
        for size in sorted(args.sizes):
            began = time.perf_counter()
            # Each size is seeded as a whole with its own spacing: events 1..size of a size-event set.
            await conn.execute("TRUNCATE spend_events, spend_rollups")
            await _seed(conn, 1, size, start, size)
            seeded = size
            seed_s = time.perf_counter() - began
            rows = await _check_sample(conn, min(args.sample, size), size)
            print(f"seed check: {min(args.sample, size)} sampled events -> {rows} rollup rows, SQL == rollup_deltas()")
            rollups = await conn.fetchval("SELECT count(*) FROM spend_rollups")
            team_rows = await conn.fetchval(
                "SELECT count(*) FROM spend_rollups WHERE entity_type = 'team' AND entity_id = 'search'")
            times, cpu, report = await _measure(url, args.runs, now)
            server = await _server_ms(conn, now)
            print(f"{seeded:>9,} events ({seed_s:.0f} s to seed), {rollups:,} rollup rows ({team_rows:,} of team search): "
                  f"report 30 d by day,model ({len(report.rows)} rows, total {report.total.requests:,} requests) "
                  f"p50 {fmt_ms(pct(times, 50))} ms, p99 {fmt_ms(pct(times, 99))} ms over {args.runs} runs; "
                  f"client CPU p50 {fmt_ms(pct(cpu, 50))} ms; PostgreSQL execution {server:.1f} ms")
    finally:
        await conn.close()
        await services.drop_database(url)


if __name__ == "__main__":
    asyncio.run(main())
