"""Does the cost of one decision stay flat as the data grows? 1k vs 100k keys, 0 vs 1M spend events.

For every combination of `--keys` and `--events` it creates a database (`spendgate_bench_<random>`),
runs the service's own migrations (`spendgate.migrate.upgrade`) and seeds it with bulk SQL — not
through the admin API — with exactly the rows the service would write:

* orgs (keys/1000), teams (keys/25), users (keys/4, each a member of one team of its org), keys
  (sha256 of a deterministic `sk-sg-…` secret, every other one a team key, each with a daily calendar
  and a monthly rolling budget, every fourth with a `gpt-4o` budget), end users (2 per key, one in five
  created with a daily budget) and 64 tags (half created with a monthly budget) — the shape of
  `decisions.py`'s seed, scaled. Entities were "created" 30–90 days ago: that is every rolling
  budget's anchor (`set_at`).
* spend events over the last `--days` days on random keys (random model, 80 % with an end user, 0–2
  tags, $0.002–0.020 estimates, 5 % failures at cost 0) whose `charges` JSON is built in SQL in the
  exact text the record path writes (`charges_json` of the ledgers the attribution policy charges,
  serialised by json.dumps), and the ledgers they imply (spent = sum of costs, version = number of
  records, limit_at_charge = the limit of the charged window's budget, as a record writes it) — then
  VACUUM ANALYZE.

A seed check recomputes, for a sample of seeded events, the charges with the service's own code
(`FactsCache` → `candidate_ledgers` → policy → `charges_json`, i.e. record's `_attribute`) and
compares the text byte for byte.

Then every dataset gets its own app in this process (lifespan entered; Redis counters in its own
database of one redis-server; embedded policy) and `--rounds` rounds send `--pairs` authorize+record
pairs to each dataset in turn (the order rotates every round), one request at a time over
httpx.ASGITransport, each pair on a key never used before in the run (so the facts cache and the
key's Redis ledgers miss, as for a request in a big key population). Per request it measures process
CPU time (`time.process_time`, insensitive to other jobs on the machine as long as this process is
not descheduled mid-request) and wall time, plus the CPU of the Postgres backends serving that
database, and the CPU inside `facts`, the counters' `read` and the ledger `record` transaction.

Finally it EXPLAINs (ANALYZE, BUFFERS) the facts query, the end-user/tag query, the counters' ledger
snapshot query and the record transaction's two statements on the largest dataset, as custom and as
generic plans (asyncpg prepares statements, so the server may use either), and prints the scan
nodes of every dataset's plans. Nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import random
import re
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
from pydantic import SecretStr

from _common import cpu_seconds, fmt_ms, machine_busy_seconds, machine_summary, pct, postgres_pids, services
from spendgate.api import create_app
from spendgate.decisions.models import RecordRequest
from spendgate.facts_sql import KEY_CHAIN_SQL as _KEY_CHAIN_SQL
from spendgate.facts_sql import NAMED_SQL as _NAMED_SQL
from spendgate.headroom import headroom_tier_sql
from spendgate.ledger_store import _PG_ADD_SPEND
from spendgate.ledgers import charges_json
from spendgate.policy import load_policy_set
from spendgate.settings import Settings

ADMIN = "bench-admin-token-0123456789"
GATEWAY = "bench-gateway-token-0123456789"
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4")
TAGS = 64


def secret_of(k: int) -> str:
    """The bench's deterministic secret of key k (the SQL seed computes the same)."""
    return ("sk-sg-" + hashlib.md5(f"sgbench:{k}".encode()).hexdigest()
            + hashlib.md5(f"sgbench2:{k}".encode()).hexdigest()[:11])


def label_of(keys: int, events: int) -> str:
    def short(n: int) -> str:
        return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else (
            f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n))
    return f"{short(keys)} keys / {short(events)} events"


# --- seeding --------------------------------------------------------------------------------------

# Helpers written as pg_temp.<name>(…) in the SQL below are macros, expanded here into plain
# expressions before the statement is sent: SQL functions with these bodies would not be inlined by
# the planner and cost ~1 ms per event; expressions cost microseconds. Nothing is created in the database.


def _iso(ts: str) -> str:
    # datetime.isoformat() of a whole-second UTC instant (DateStyle ISO; much faster than to_char)
    return f"(replace((({ts}) AT TIME ZONE 'UTC')::text, ' ', 'T') || '+00:00')"


def _ref(etype: str, eid: str, win: str, ps: str, pe: str) -> str:
    """LedgerRef.to_json() with ledger_id first, as charges_json() writes it (json.dumps separators)."""
    never = ps == "EPOCH"
    ledger_ts = "'0'" if never else f"extract(epoch FROM ({ps}))::bigint"
    start = "'1970-01-01T00:00:00+00:00'" if never else _iso(ps)
    end = "'null'" if pe == "NULL" else f"'\"' || {_iso(pe)} || '\"'"
    window = "'null'" if win == "NULL" else f"'\"' || {win} || '\"'"
    win_id = "'-'" if win == "NULL" else win
    return (f"""('{{"ledger_id": "' || {etype} || ':' || ({eid}) || ':' || {win_id} || ':' """
            f"""|| {ledger_ts} || '", "entity_type": "' || {etype} || '", "entity_id": "' || ({eid}) """
            f"""|| '", "window": ' || {window} || ', "period_start": "' || {start} || '", "period_end": ' || {end} """
            f"""|| '}}')""")


def _months(a: str, t: str) -> str:
    def index(x: str) -> str:
        return f"(extract(year FROM ({x})) * 12 + extract(month FROM ({x})))::int"
    m = f"({index(t)} - {index(a)})"
    return f"({m} - ((({a}) + {m} * interval '1 month') > ({t}))::int)"


def _days(a: str, t: str) -> str:
    return f"floor(extract(epoch FROM ({t}) - ({a})) / 86400)::int"


_MACROS: dict[str, Callable[..., str]] = {
    "ref": _ref,
    "never": lambda etype, eid: _ref(etype, eid, "NULL", "EPOCH", "NULL"),
    # calendar 1d: the UTC day (`day` is date_trunc('day', t) in the session's UTC)
    "cal_day": lambda etype, eid, day: _ref(etype, eid, "'1d'", day, f"(({day}) + interval '1 day')"),
    # rolling 1d: anchor + d whole days (periods.py _fixed_period)
    "roll_day": lambda etype, eid, a, d: _ref(etype, eid, "'1d'", f"(({a}) + ({d}) * interval '1 day')",
                                              f"(({a}) + (({d}) + 1) * interval '1 day')"),
    # rolling 1mo: add_months(anchor, n) (PostgreSQL clamps the day to the month end like add_months)
    "roll_month": lambda etype, eid, a, n: _ref(etype, eid, "'1mo'", f"(({a}) + ({n}) * interval '1 month')",
                                                f"(({a}) + (({n}) + 1) * interval '1 month')"),
    # whole months from anchor a to t: the largest n with add_months(a, n) <= t
    "months": _months,
    # whole days from anchor a to t
    "days": _days,
    # when entity number i of a kind was created: 30–90 days before the seed, whole seconds
    "born": lambda base, i, mult: f"(({base})::timestamptz + ((({i}) * {mult}) % 5184000) * interval '1 second')",
}


def _split_args(text: str) -> list[str]:
    args: list[str] = []
    current: list[str] = []
    depth, quote = 0, False
    for char in text:
        if char == "'":
            quote = not quote
        elif not quote and char == "(":
            depth += 1
        elif not quote and char == ")":
            depth -= 1
        elif not quote and char == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    args.append("".join(current).strip())
    return args


def expand(sql: str) -> str:
    """Replace every pg_temp.<macro>(args) (innermost arguments expanded first)."""
    while (start := sql.find("pg_temp.")) >= 0:
        name = sql[start + 8 : sql.index("(", start)]
        depth, position = 0, sql.index("(", start)
        for position in range(sql.index("(", start), len(sql)):
            depth += {"(": 1, ")": -1}.get(sql[position], 0)
            if depth == 0:
                break
        inner = sql[sql.index("(", start) + 1 : position]
        args = [expand(arg) for arg in _split_args(inner)]
        sql = sql[:start] + _MACROS[name](*args) + sql[position + 1 :]
    return sql


_ENTITIES = [
    """INSERT INTO orgs (id, name, blocked, created_at)
       SELECT 'org-' || o, 'Org ' || o, false, pg_temp.born($1, o, 104729) FROM generate_series(0, $2 - 1) o""",
    """INSERT INTO budgets (entity_type, entity_id, max_budget, soft_budget, duration, reset, set_at)
       SELECT 'org', 'org-' || o, w.max, NULL, w.dur, 'rolling', pg_temp.born($1, o, 104729)
       FROM generate_series(0, $2 - 1) o,
            (VALUES (1, 1000000000000000::bigint, '1mo'), (2, 5000000000000000, NULL)) w(pos, max, dur)
       ORDER BY o, w.pos""",
    """INSERT INTO teams (id, name, org_id, blocked, created_at)
       SELECT 'team-' || t, 'Team ' || t, 'org-' || (t % $3), false, pg_temp.born($1, t, 7907)
       FROM generate_series(0, $2 - 1) t""",
    """INSERT INTO budgets (entity_type, entity_id, max_budget, soft_budget, duration, reset, set_at)
       SELECT 'team', 'team-' || t, 100000000000000, 90000000000000, '1d', 'calendar', pg_temp.born($1, t, 7907)
       FROM generate_series(0, $2 - 1) t""",
    """INSERT INTO users (id, email, org_id, blocked, created_at)
       SELECT 'user-' || u, 'user' || u || '@example.com', 'org-' || ((u % $3) % $4), false, pg_temp.born($1, u, 7919)
       FROM generate_series(0, $2 - 1) u""",
    """INSERT INTO budgets (entity_type, entity_id, max_budget, soft_budget, duration, reset, set_at)
       SELECT 'user', 'user-' || u, 100000000000000, 90000000000000, '1d', 'calendar', pg_temp.born($1, u, 7919)
       FROM generate_series(0, $2 - 1) u""",
    """INSERT INTO team_members (team_id, user_id, blocked, created_at)
       SELECT 'team-' || (u % $3), 'user-' || u, false, pg_temp.born($1, u, 7919) FROM generate_series(0, $2 - 1) u""",
    """INSERT INTO budgets (entity_type, entity_id, max_budget, soft_budget, duration, reset, set_at)
       SELECT 'team_member', 'team-' || (u % $3) || '/user-' || u, 100000000000000, 90000000000000, '1d',
              'calendar', pg_temp.born($1, u, 7919)
       FROM generate_series(0, $2 - 1) u""",
    """INSERT INTO keys (id, key_hash, key_prefix, name, user_id, team_id, models, expires_at, blocked, deleted_at,
                         created_at)
       SELECT 'key-' || k, encode(sha256(convert_to(s.secret, 'UTF8')), 'hex'), left(s.secret, 10) || '…',
              'key ' || k, 'user-' || (k % $3), CASE WHEN k % 2 = 0 THEN 'team-' || ((k % $3) % $4) END,
              '[]'::json, NULL, false, NULL, pg_temp.born($1, k, 6151)
       FROM generate_series(0, $2 - 1) k,
            LATERAL (SELECT 'sk-sg-' || md5('sgbench:' || k) || left(md5('sgbench2:' || k), 11) AS secret) s""",
    """INSERT INTO budgets (entity_type, entity_id, max_budget, soft_budget, duration, reset, set_at)
       SELECT 'key', 'key-' || k, w.max, w.soft, w.dur, w.reset, pg_temp.born($1, k, 6151)
       FROM generate_series(0, $2 - 1) k,
            (VALUES (1, 100000000000000::bigint, 90000000000000::bigint, '1d', 'calendar'),
                    (2, 1000000000000000, NULL, '1mo', 'rolling')) w(pos, max, soft, dur, reset)
       ORDER BY k, w.pos""",
    """INSERT INTO budgets (entity_type, entity_id, max_budget, soft_budget, duration, reset, set_at)
       SELECT 'key_model', 'key-' || k || '/gpt-4o', 20000000000000, NULL, '1d', 'rolling', pg_temp.born($1, k, 6151)
       FROM generate_series(0, $2 - 1, 4) k""",
    """INSERT INTO end_users (id, blocked, created_at)
       SELECT 'cust-' || e, false, pg_temp.born($1, e, 3001) FROM generate_series(0, $2 - 1, 5) e""",
    """INSERT INTO budgets (entity_type, entity_id, max_budget, soft_budget, duration, reset, set_at)
       SELECT 'end_user', 'cust-' || e, 1000000000000, NULL, '1d', 'rolling', pg_temp.born($1, e, 3001)
       FROM generate_series(0, $2 - 1, 5) e""",
    f"""INSERT INTO tags (id, blocked, created_at)
       SELECT 'tag-' || t, false, pg_temp.born($1, t, 97) FROM generate_series(0, {TAGS - 1}, 2) t""",
    f"""INSERT INTO budgets (entity_type, entity_id, max_budget, soft_budget, duration, reset, set_at)
       SELECT 'tag', 'tag-' || t, 100000000000000, NULL, '1mo', 'rolling', pg_temp.born($1, t, 97)
       FROM generate_series(0, {TAGS - 1}, 2) t""",
]

# One spend event per spec row; the charges are the policy's (shipped config): the key, its key_model
# budget (gpt-4o on every fourth key), team + team member (team key) or user (personal key), the org
# (both windows), the end user and the tags — sorted by ledger id, as the policy's set comes out.
_EVENTS_SQL = """
WITH spec AS (
    SELECT i, k, t, model, eu, t1, t2, cost, outcome, request_id,
           k % $4 AS u, (k % $4) % $5 AS team, ((k % $4) % $5) % $6 AS org
    FROM (
        SELECT i, floor(random() * $2)::bigint AS k,
               $3::timestamptz - random() * ($7 * interval '1 day') AS t,
               (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-sonnet-4'])[1 + floor(random() * 3)::int] AS model,
               CASE WHEN random() < 0.8 THEN floor(random() * $8)::bigint END AS eu,
               CASE WHEN n_tags >= 1 THEN ta END AS t1,
               CASE WHEN n_tags = 2 THEN (ta + 1 + tb) % {tags} END AS t2,
               CASE WHEN fail THEN 0 ELSE (est * (0.3 + 0.7 * random()))::bigint END AS cost,
               CASE WHEN fail THEN 'failure' ELSE 'success' END AS outcome,
               'chatcmpl-' || md5($9 || i) AS request_id
        FROM (SELECT i, floor(random() * 3)::int AS n_tags, floor(random() * {tags})::int AS ta,
                     floor(random() * {tags_1})::int AS tb, random() < 0.05 AS fail,
                     (2 + floor(random() * 19)) * 1000000 AS est
              FROM generate_series(1, $1) i) r
    ) s
), anchored AS MATERIALIZED (  -- the rolling budgets' anchors: when the key, org, end user and tags were created
    SELECT spec.*, pg_temp.born($10, k, 6151) AS ak, pg_temp.born($10, org, 104729) AS ao,
           pg_temp.born($10, eu, 3001) AS aeu, pg_temp.born($10, t1, 97) AS at1, pg_temp.born($10, t2, 97) AS at2
    FROM spec
), periods AS MATERIALIZED (  -- which rolling period contains t: whole months / days since the anchor
    SELECT anchored.*, pg_temp.months(ak, t) AS nk, pg_temp.months(ao, t) AS no, pg_temp.months(at1, t) AS nt1,
           pg_temp.months(at2, t) AS nt2, pg_temp.days(ak, t) AS dk, pg_temp.days(aeu, t) AS deu
    FROM anchored
), pieces AS MATERIALIZED (
    SELECT periods.*,
           CASE WHEN t1 IS NOT NULL THEN CASE WHEN t1 % 2 = 0
                THEN pg_temp.roll_month('tag', 'tag-' || t1, at1, nt1)
                ELSE pg_temp.never('tag', 'tag-' || t1) END END AS pt1,
           CASE WHEN t2 IS NOT NULL THEN CASE WHEN t2 % 2 = 0
                THEN pg_temp.roll_month('tag', 'tag-' || t2, at2, nt2)
                ELSE pg_temp.never('tag', 'tag-' || t2) END END AS pt2,
           date_trunc('day', t) AS day
    FROM periods
)
SELECT request_id, cost, outcome, 'key-' || k AS key_id, model,
       ARRAY[
           CASE WHEN eu IS NOT NULL THEN CASE WHEN eu % 5 = 0
                THEN pg_temp.roll_day('end_user', 'cust-' || eu, aeu, deu)
                ELSE pg_temp.never('end_user', 'cust-' || eu) END END,
           pg_temp.cal_day('key', 'key-' || k, day),
           pg_temp.roll_month('key', 'key-' || k, ak, nk),
           CASE WHEN k % 4 = 0 AND model = 'gpt-4o' THEN pg_temp.roll_day('key_model', 'key-' || k || '/gpt-4o', ak, dk) END,
           pg_temp.never('org', 'org-' || org),
           pg_temp.roll_month('org', 'org-' || org, ao, no),
           LEAST(pt1 COLLATE "C", pt2 COLLATE "C"),
           CASE WHEN pt1 IS NOT NULL AND pt2 IS NOT NULL THEN GREATEST(pt1 COLLATE "C", pt2 COLLATE "C") END,
           CASE WHEN k % 2 = 0 THEN pg_temp.cal_day('team', 'team-' || team, day) END,
           CASE WHEN k % 2 = 0 THEN pg_temp.cal_day('team_member', 'team-' || team || '/user-' || u, day) END,
           CASE WHEN k % 2 = 1 THEN pg_temp.cal_day('user', 'user-' || u, day) END
       ] AS pieces,
       $11 AS policy_revision, t AS created_at
FROM pieces
""".format(tags=TAGS, tags_1=TAGS - 1)

# From the temporary table `seed_events` (the rows above, charges still an array of JSON texts; NULLs
# are charges the event does not have): the spend events, then the ledgers they imply — grouped on the
# JSON text of each charge first, so only distinct ledgers are parsed.
_INSERT_EVENTS_SQL = """
INSERT INTO spend_events (request_id, cost, outcome, key_id, model, charges, policy_revision, created_at)
SELECT request_id, cost, outcome, key_id, model, ('[' || array_to_string(pieces, ', ') || ']')::json,
       policy_revision, created_at
FROM seed_events
"""

_LEDGERS_SQL = f"""
INSERT INTO ledgers (ledger_id, entity_type, entity_id, "window", period_start, period_end, spent, reserved,
                     version, updated_at, limit_at_charge, headroom_tier)
SELECT c->>'ledger_id', c->>'entity_type', c->>'entity_id', c->>'window', (c->>'period_start')::timestamptz,
       (c->>'period_end')::timestamptz, spent, 0, records, updated_at, b.max_budget,
       {headroom_tier_sql("spent::bigint", "b.max_budget")}
FROM (SELECT piece::jsonb AS c, spent, records, updated_at
      FROM (SELECT piece, sum(cost) AS spent, count(*) AS records, max(created_at) AS updated_at
            FROM seed_events, unnest(pieces) AS piece WHERE piece IS NOT NULL GROUP BY piece) g) j
-- the limit the record path writes: the charged window's budget (none for budget-less end users)
LEFT JOIN (SELECT entity_type, entity_id, duration, min(max_budget) AS max_budget FROM budgets GROUP BY 1, 2, 3) b
       ON b.entity_type = c->>'entity_type' AND b.entity_id = c->>'entity_id'
          AND b.duration IS NOT DISTINCT FROM c->>'window'
ORDER BY 1  -- index order: the B-tree inserts then touch each leaf page once
"""


@dataclass
class Shape:
    keys: int
    events: int
    days: int

    @property
    def orgs(self) -> int:
        return max(1, self.keys // 1000)

    @property
    def teams(self) -> int:
        return max(4, self.keys // 25)

    @property
    def users(self) -> int:
        return max(16, self.keys // 4)

    @property
    def end_users(self) -> int:
        return 2 * self.keys


def plain_url(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def seed(database_url: str, shape: Shape, revision: str, now: datetime, seed: int) -> dict[str, float]:
    """Migrate with the service's migrations, then bulk-insert; returns seconds per phase."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from spendgate.migrate import upgrade

    timings: dict[str, float] = {}
    started = time.monotonic()
    engine = create_async_engine(database_url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    timings["migrate"] = time.monotonic() - started
    base = now - timedelta(days=90)
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        await conn.execute("SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'; SET work_mem = '1GB'; SET maintenance_work_mem = '512MB'")
        started = time.monotonic()
        async with conn.transaction():
            params = {
                0: (base, shape.orgs), 1: (base, shape.orgs),
                2: (base, shape.teams, shape.orgs), 3: (base, shape.teams),
                4: (base, shape.users, shape.teams, shape.orgs), 5: (base, shape.users),
                6: (base, shape.users, shape.teams), 7: (base, shape.users, shape.teams),
                8: (base, shape.keys, shape.users, shape.teams), 9: (base, shape.keys), 10: (base, shape.keys),
                11: (base, shape.end_users), 12: (base, shape.end_users), 13: (base,), 14: (base,),
            }
            for index, statement in enumerate(_ENTITIES):
                await conn.execute(expand(statement), *params[index])
        timings["entities"] = time.monotonic() - started
        if shape.events:
            started = time.monotonic()
            await conn.execute(f"SELECT setseed({(seed % 1000) / 1000})")
            async with conn.transaction():
                await conn.execute(
                    "CREATE TEMPORARY TABLE seed_events ON COMMIT DROP AS " + expand(_EVENTS_SQL),
                    shape.events, shape.keys, now - timedelta(minutes=5), shape.users, shape.teams, shape.orgs,
                    float(shape.days), shape.end_users, f"{seed}:", base, revision,
                )
                timings["generate"] = time.monotonic() - started
                started = time.monotonic()
                await conn.execute(_INSERT_EVENTS_SQL)
                timings["events"] = time.monotonic() - started
                started = time.monotonic()
                await conn.execute(_LEDGERS_SQL)
                timings["ledgers"] = time.monotonic() - started
        started = time.monotonic()
        await conn.execute("VACUUM ANALYZE")
        timings["vacuum analyze"] = time.monotonic() - started
    finally:
        await conn.close()
    return timings


async def seed_check(app: Any, database_url: str, samples: int) -> tuple[int, int, list[str]]:
    """Recompute the charges of sampled seeded events with the service's record path; count exact matches."""
    from spendgate.decisions.record import _attribute

    runtime = app.state.runtime
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        rows = await conn.fetch(
            "SELECT request_id, key_id, model, charges::text AS charges, created_at FROM spend_events "
            "TABLESAMPLE SYSTEM (1) REPEATABLE (7) LIMIT $1", samples)
        if len(rows) < samples:
            rows = await conn.fetch(
                "SELECT request_id, key_id, model, charges::text AS charges, created_at FROM spend_events LIMIT $1",
                samples)
    finally:
        await conn.close()
    matched, problems = 0, list[str]()
    for row in rows:
        charges = json.loads(row["charges"])
        end_user = next((c["entity_id"] for c in charges if c["entity_type"] == "end_user"), None)
        tags = [c["entity_id"] for c in charges if c["entity_type"] == "tag"]
        k = int(row["key_id"].split("-", 1)[1])
        request = RecordRequest.model_validate({
            "request_id": row["request_id"], "api_key": secret_of(k), "model": row["model"],
            "end_user": end_user, "tags": tags, "cost": "0", "outcome": "success",
        })
        attribution = await _attribute(request, facts_cache=runtime.facts, policy=runtime.policy,
                                       now=row["created_at"])
        expected = json.dumps(charges_json(attribution.ledgers))
        if expected == row["charges"] and attribution.key_id == row["key_id"]:
            matched += 1
        elif len(problems) < 2:
            problems.append(f"{row['request_id']}:\n  seeded  {row['charges']}\n  service {expected}")
    return matched, len(rows), problems


# --- measuring ------------------------------------------------------------------------------------


@dataclass
class Dataset:
    shape: Shape
    database_url: str
    label: str
    redis_db: int
    seed_seconds: dict[str, float] = field(default_factory=dict)
    app: Any = None
    client: httpx.AsyncClient | None = None
    keys: list[int] = field(default_factory=list)
    cpu: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    wall: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    pg_cpu: float = 0.0
    parts: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    pairs: int = 0
    reused: bool = False
    rounds: list[tuple[float, float]] = field(default_factory=list)  # (cpu per pair, pg cpu per pair) per round
    sizes: dict[str, str] = field(default_factory=dict)


#: CPU seconds inside wrapped calls, charged to the dataset being measured.
_current: list[Dataset] = []


def _timed(name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return await fn(*args, **kwargs)
        finally:
            if _current:
                _current[0].parts[name] += time.process_time() - started

    return wrapper


def instrument(app: Any) -> None:
    runtime = app.state.runtime
    runtime.facts.load = _timed("facts", runtime.facts.load)
    runtime.counters.read = _timed("counters read", runtime.counters.read)
    runtime.ledgers.record = _timed("db record tx", runtime.ledgers.record)


async def backend_pids(admin: asyncpg.Connection, database_url: str) -> list[int]:
    rows = await admin.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database_url.rsplit("/", 1)[1])
    return [int(r["pid"]) for r in rows]


async def run_chunk(ds: Dataset, admin: asyncpg.Connection, pairs: int, rng: random.Random, run_id: str,
                    measure: bool) -> None:
    assert ds.client is not None
    before_pids = await backend_pids(admin, ds.database_url)
    before = {pid: cpu_seconds([pid]) for pid in before_pids}
    chunk_cpu = 0.0
    _current[:] = [ds]
    parts_before = dict(ds.parts)
    for _ in range(pairs):
        if ds.keys:
            k = ds.keys.pop()
        else:  # more pairs than keys: reuse (noted in the output)
            k, ds.reused = rng.randrange(ds.shape.keys), True
        ds.pairs += int(measure)
        request_id = f"dg-{run_id}-{ds.redis_db}-{ds.pairs}-{rng.getrandbits(32):08x}"
        tags = rng.sample(range(TAGS), rng.randint(0, 2))
        estimate = rng.randint(2, 20) / 1000
        ok = rng.random() >= 0.05
        bodies = {
            "authorize": {"request_id": request_id, "api_key": secret_of(k), "model": rng.choice(MODELS),
                          "end_user": f"cust-{rng.randrange(ds.shape.end_users)}" if rng.random() < 0.8 else None,
                          "tags": [f"tag-{t}" for t in tags], "estimated_cost": f"{estimate:.3f}"},
            "record": {"request_id": request_id, "cost": f"{estimate * rng.uniform(0.3, 1.0):.6f}" if ok else "0",
                       "outcome": "success" if ok else "failure"},
        }
        for route in ("authorize", "record"):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            response = await ds.client.post(f"/v1/{route}", json=bodies[route])
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            if response.status_code != 200 or (route == "authorize" and response.json()["decision"] != "allow"):
                raise RuntimeError(f"{ds.label}: {route} → {response.status_code} {response.text[:500]}")
            if measure:
                ds.cpu[route].append(cpu)
                ds.wall[route].append(wall)
                chunk_cpu += cpu
    _current.clear()
    after_pids = await backend_pids(admin, ds.database_url)
    pg = sum(cpu_seconds([pid]) - before.get(pid, 0.0) for pid in after_pids)
    if measure:
        ds.pg_cpu += pg
        ds.rounds.append((chunk_cpu / pairs, pg / pairs))
    else:
        ds.parts.clear()
        ds.parts.update(parts_before)


# --- EXPLAIN --------------------------------------------------------------------------------------


def _positional(sql: str, names: list[str], tags: int) -> str:
    """SQLAlchemy's :name binds as $n (the expanding `IN :tags` as `IN ($a, $b)`, as the service sends it)."""
    out = sql
    number = 1
    for name in names:
        if name == "tags":
            placeholders = ", ".join(f"${number + i}" for i in range(tags))
            out = out.replace("IN :tags", f"IN ({placeholders})")
            number += tags
        else:
            out = re.sub(rf":{name}\b", f"${number}", out)
            number += 1
    return out


def explain_statements(sample: dict[str, Any], now: datetime) -> list[tuple[str, str, list[Any], bool]]:
    """(name, positional SQL, args, writes) of the statements of one authorize + record."""
    key_chain = _positional(str(getattr(_KEY_CHAIN_SQL.element, "text")), ["key_hash", "model"], 0)
    named = _positional(str(getattr(_NAMED_SQL.element, "text")), ["end_user", "tags"], 2)
    ids = [c["ledger_id"] for c in sample["charges"]]
    insert_event = (
        "INSERT INTO spend_events (request_id, cost, outcome, key_id, model, charges, policy_revision, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (request_id) DO NOTHING RETURNING spend_events.request_id"
    )
    return [
        ("facts: key chain", key_chain, [sample["key_hash"], "gpt-4o"], False),
        ("facts: end user + tags and their budgets", named, [sample["end_user"], sample["tags"][0], sample["tags"][1]],
         False),
        ("counters: ledger snapshots", "SELECT ledger_id, spent, version FROM ledgers WHERE ledger_id = ANY($1)",
         [ids], False),
        ("record: insert spend event", insert_event,
         [f"explain-{uuid.uuid4().hex}", 1000, "success", sample["key_id"], "gpt-4o", json.dumps(sample["charges"]),
          "rev", now], True),
        ("record: ledger upsert", _PG_ADD_SPEND,  # positional already: ids … ends, costs, limits, now
         [ids, [c["entity_type"] for c in sample["charges"]],
          [c["entity_id"] for c in sample["charges"]], [c["window"] for c in sample["charges"]],
          [datetime.fromisoformat(c["period_start"]) for c in sample["charges"]],
          [datetime.fromisoformat(c["period_end"]) if c["period_end"] else None for c in sample["charges"]],
          [1000] * len(ids), [c.get("limit") for c in sample["charges"]], now], True),
    ]


async def explain(database_url: str, now: datetime) -> dict[str, dict[str, list[str]]]:
    """{statement: {"custom"/"generic": plan lines}} for one key of the dataset (writes rolled back)."""
    conn = await asyncpg.connect(plain_url(database_url))
    plans: dict[str, dict[str, list[str]]] = {}
    try:
        k = (int(await conn.fetchval("SELECT count(*) FROM keys")) // 2) // 4 * 4  # a team key with a gpt-4o budget
        key_hash = hashlib.sha256(secret_of(k).encode()).hexdigest()
        event = await conn.fetchrow("SELECT charges::text FROM spend_events WHERE key_id = $1 LIMIT 1", f"key-{k}")
        if event is not None:
            charges = json.loads(event[0])
        else:  # no events: the ledgers a request of this key would charge, in the service's format
            charges = [{"ledger_id": f"key:key-{k}:1d:0", "entity_type": "key", "entity_id": f"key-{k}",
                        "window": "1d", "period_start": "2026-01-01T00:00:00+00:00",
                        "period_end": "2026-01-02T00:00:00+00:00"}]
        sample = {"key_hash": key_hash, "key_id": f"key-{k}", "end_user": "cust-5", "tags": ["tag-2", "tag-3"],
                  "charges": charges}
        for name, sql, args, writes in explain_statements(sample, now):
            plans[name] = {}
            for mode in ("custom", "generic"):
                tr = conn.transaction()
                await tr.start()
                try:
                    await conn.execute(f"SET LOCAL plan_cache_mode = force_{mode}_plan")
                    statement = await conn.prepare(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}")
                    rows = await statement.fetch(*args)
                    plans[name][mode] = [r[0] for r in rows]
                finally:
                    await tr.rollback()
    finally:
        await conn.close()
    return plans


async def statement_times(datasets: list[Dataset], now: datetime, samples: int) -> dict[str, dict[str, list[float]]]:
    """{statement: {dataset: [server execution ms]}}: EXPLAIN (ANALYZE, TIMING OFF) of every statement of a
    pair for `samples` of the pairs the run sent (today's ledgers, random keys), datasets interleaved."""
    conns, work = [], []
    try:
        for ds in datasets:
            conn = await asyncpg.connect(plain_url(ds.database_url))
            conns.append(conn)
            rows = await conn.fetch("SELECT key_id, charges::text FROM spend_events WHERE request_id LIKE 'dg-%' "
                                    "ORDER BY md5(request_id) LIMIT $1", samples)
            batch = []
            for row in rows:
                charges = json.loads(row[1])
                tags = [c["entity_id"] for c in charges if c["entity_type"] == "tag"] + ["tag-2", "tag-3"]
                end_user = next((c["entity_id"] for c in charges if c["entity_type"] == "end_user"), "cust-5")
                k = int(row[0].split("-", 1)[1])
                batch.append(explain_statements({"key_hash": hashlib.sha256(secret_of(k).encode()).hexdigest(),
                                                 "key_id": row[0], "end_user": end_user, "tags": tags[:2],
                                                 "charges": charges}, now))
            work.append(batch)
        times: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for i in range(min(len(b) for b in work)):
            for ds, conn, batch in zip(datasets, conns, work):
                for name, sql, args, _writes in batch[i]:
                    tr = conn.transaction()
                    await tr.start()
                    try:
                        lines = [r[0] for r in await conn.fetch(f"EXPLAIN (ANALYZE, TIMING OFF, COSTS OFF) {sql}", *args)]
                    finally:
                        await tr.rollback()
                    ms = next(float(ln.split(":", 1)[1].split()[0]) for ln in lines if ln.startswith("Execution Time"))
                    times[name][ds.label].append(ms)
        return times
    finally:
        for conn in conns:
            await conn.close()


_SCAN = re.compile(r"(Seq Scan|Index Scan|Index Only Scan|Bitmap Index Scan|Bitmap Heap Scan|Function Scan"
                   r"|Nested Loop|Hash Join|Merge Join)( using \S+)?( on \S+)?")


def scan_summary(lines: list[str]) -> str:
    found = []
    for line in lines:
        match = _SCAN.search(line)
        if match and not match.group(1).endswith("Join") and match.group(1) != "Nested Loop":
            found.append(f"{match.group(1)}{match.group(2) or ''}{match.group(3) or ''}".replace(" using", ":"))
    execution = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Execution Time")), "?")
    buffers = next((ln.strip() for ln in lines if ln.strip().startswith("Buffers:")), "")
    return f"{'; '.join(dict.fromkeys(found)) or '-'} | {execution} | {buffers}"


# --- main -----------------------------------------------------------------------------------------


async def amain(args: argparse.Namespace) -> None:
    keys_list = [int(x) for x in args.keys.split(",")]
    events_list = [int(x) for x in args.events.split(",")]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    settings_dir = Settings().policy_dir
    revision = load_policy_set(settings_dir).revision
    redis = services.RedisServer()
    redis.start()
    datasets: list[Dataset] = []
    run_id = uuid.uuid4().hex[:6]
    try:
        for index, (keys, events) in enumerate(itertools.product(keys_list, events_list)):
            url = await services.create_database("spendgate_bench")
            ds = Dataset(Shape(keys, events, args.days), url, label_of(keys, events), index)
            datasets.append(ds)
            started = time.monotonic()
            ds.seed_seconds = await seed(url, ds.shape, revision, now, args.seed + index)
            ds.seed_seconds["total"] = time.monotonic() - started
            print(f"seeded {ds.label} ({url.rsplit('/', 1)[1]}) in {ds.seed_seconds['total']:.1f} s: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in ds.seed_seconds.items() if k != "total"),
                  file=sys.stderr, flush=True)
        admin = await asyncpg.connect(services.PG_ADMIN_URL)
        async with contextlib.AsyncExitStack() as stack:
            rng = random.Random(args.seed)
            for ds in datasets:
                settings = Settings(
                    database_url=ds.database_url, redis_url=f"{redis.url.rsplit('/', 1)[0]}/{ds.redis_db}",
                    admin_token=SecretStr(ADMIN), gateway_token=SecretStr(GATEWAY), db_pool_size=2,
                    reconcile_interval_seconds=0, policy_reload_seconds=0,
                )
                ds.app = create_app(settings)
                await stack.enter_async_context(ds.app.router.lifespan_context(ds.app))
                instrument(ds.app)
                ds.client = await stack.enter_async_context(httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=ds.app), base_url="http://bench",
                    headers={"authorization": f"Bearer {GATEWAY}"}))
                ds.keys = list(range(ds.shape.keys))
                rng.shuffle(ds.keys)
                if ds.shape.events and args.check:
                    matched, total, problems = await seed_check(ds.app, ds.database_url, args.check)
                    print(f"seed check {ds.label}: {matched}/{total} sampled spend events have exactly the charges "
                          f"text and key the service's record path computes", file=sys.stderr, flush=True)
                    for problem in problems:
                        print(problem, file=sys.stderr)
                conn = await asyncpg.connect(plain_url(ds.database_url))
                try:
                    for table in ("keys", "budgets", "spend_events", "ledgers"):
                        ds.sizes[table] = str(await conn.fetchval(f"SELECT count(*) FROM {table}"))
                    ds.sizes["db size"] = str(await conn.fetchval(
                        "SELECT pg_size_pretty(pg_database_size(current_database()))"))
                finally:
                    await conn.close()
            for ds in datasets:  # warm-up: connections, prepared statements, the policy engine
                await run_chunk(ds, admin, args.warmup, rng, run_id, measure=False)
            machine0, wall0 = machine_busy_seconds(), time.monotonic()
            me0 = time.process_time()
            pg0 = {pid: cpu_seconds([pid]) for pid in postgres_pids()}
            for r in range(args.rounds):
                order = datasets[r % len(datasets):] + datasets[: r % len(datasets)]
                for ds in order:
                    await run_chunk(ds, admin, args.pairs, rng, run_id, measure=True)
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
            wall = time.monotonic() - wall0
            machine = (machine_busy_seconds() - machine0) / wall
            me = (time.process_time() - me0) / wall
            pg = sum(cpu_seconds([pid]) - pg0[pid] for pid in postgres_pids() if pid in pg0) / wall
            plans = {ds.label: await explain(ds.database_url, now) for ds in datasets}
            times = await statement_times(datasets, now, args.statements)
        await admin.close()
        report(args, datasets, plans, times, machine, me, pg)
    finally:
        redis.stop()
        if not args.keep:
            for ds in datasets:
                await services.drop_database(ds.database_url)
        else:
            print("kept: " + ", ".join(ds.database_url for ds in datasets), file=sys.stderr)


def report(args: argparse.Namespace, datasets: list[Dataset], plans: dict[str, dict[str, dict[str, list[str]]]],
           times: dict[str, dict[str, list[float]]], machine: float, me: float, pg: float) -> None:
    print(machine_summary())
    print(f"in-process over httpx.ASGITransport, sequential, embedded policy, Redis counters; {args.rounds} rounds × "
          f"{args.pairs} pairs per dataset (interleaved, order rotated) after {args.warmup} warm-up pairs; "
          f"each pair on a key not used before")
    print(f"CPU cores during the measurement: this process {me:.2f}, all postgres {pg:.2f}, "
          f"other (rest of the machine) {max(machine - me - pg, 0):.2f}")
    print()
    print(f"{'dataset':<24} {'keys':>7} {'budgets':>8} {'events':>8} {'ledgers':>8} {'db size':>8}   seed s")
    for ds in datasets:
        s = ds.sizes
        print(f"{ds.label:<24} {s['keys']:>7} {s['budgets']:>8} {s['spend_events']:>8} {s['ledgers']:>8} "
              f"{s['db size']:>8}   {ds.seed_seconds.get('total', 0):.1f}")
    print()
    base = datasets[0]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else float("nan")

    def pair_cpu(ds: Dataset) -> float:
        return mean(ds.cpu["authorize"]) + mean(ds.cpu["record"])

    head = (f"{'dataset':<24} {'auth CPU':>8} {'rec CPU':>8} {'pair CPU':>8} {'ratio':>6} {'±20%':>5} "
            f"{'PG CPU':>7} {'ratio':>6} {'±20%':>5} {'facts':>6} {'read':>6} {'rec tx':>6}   "
            f"{'auth p50':>8} {'p99':>6} {'rec p50':>8} {'p99':>6} {'wall ratio':>10}")
    print("CPU µs per request (process_time, mean) and per pair; PG CPU = the dataset's backends, µs per pair; "
          "facts/read/rec tx = CPU µs per pair inside those calls; wall ms")
    print(head)
    base_pg = base.pg_cpu / max(base.pairs, 1)
    for route in ("authorize", "record"):
        for ds in datasets:
            ds.wall[route].sort()
    base_wall = pct(base.wall["authorize"], 50) + pct(base.wall["record"], 50)
    for ds in datasets:
        ratio = pair_cpu(ds) / pair_cpu(base)
        pg_pair = ds.pg_cpu / max(ds.pairs, 1)
        wall_ratio = (pct(ds.wall["authorize"], 50) + pct(ds.wall["record"], 50)) / base_wall
        flat = "yes" if ratio <= 1.2 else "NO"
        pg_flat = "yes" if (pg_pair / base_pg if base_pg else 1) <= 1.2 else "NO"
        parts = {name: 1e6 * value / max(ds.pairs, 1) for name, value in ds.parts.items()}
        print(f"{ds.label:<24} {1e6 * mean(ds.cpu['authorize']):>8.0f} {1e6 * mean(ds.cpu['record']):>8.0f} "
              f"{1e6 * pair_cpu(ds):>8.0f} {ratio:>6.2f} {flat:>5} {1e6 * pg_pair:>7.0f} "
              f"{(pg_pair / base_pg if base_pg else float('nan')):>6.2f} {pg_flat:>5} {parts.get('facts', 0):>6.0f} "
              f"{parts.get('counters read', 0):>6.0f} {parts.get('db record tx', 0):>6.0f}   "
              f"{fmt_ms(pct(ds.wall['authorize'], 50)):>8} {fmt_ms(pct(ds.wall['authorize'], 99)):>6} "
              f"{fmt_ms(pct(ds.wall['record'], 50)):>8} {fmt_ms(pct(ds.wall['record'], 99)):>6} {wall_ratio:>10.2f}")
    print("(ratio: to the first dataset; ±20 %: within 20 % of it. PG CPU is from /proc in 10 ms ticks of the "
          "dataset's backends: coarse, and it moves with the machine's load from round to round)")
    print()
    print("pair CPU µs per round (interleaved), then PG CPU µs per pair per round:")
    for ds in datasets:
        print(f"  {ds.label:<24} " + " ".join(f"{1e6 * c:>6.0f}" for c, _ in ds.rounds)
              + "   | " + " ".join(f"{1e6 * p:>5.0f}" for _, p in ds.rounds))
    if any(ds.reused for ds in datasets):
        print("note: more pairs than keys in " + ", ".join(ds.label for ds in datasets if ds.reused)
              + ": keys were reused (fewer facts-cache and Redis misses there)")
    print()
    print(f"Postgres execution time per statement, ms (EXPLAIN ANALYZE, TIMING OFF; median / p90 over "
          f"{min((len(v) for d in times.values() for v in d.values()), default=0)} of the run's pairs per dataset, "
          f"interleaved; writes rolled back); ratio = median / first dataset's median")
    print(f"{'statement':<28} " + " ".join(f"{ds.label:>26}" for ds in datasets))
    for name, per in times.items():
        cells = []
        first = None
        for ds in datasets:
            values = sorted(per.get(ds.label, []))
            median = pct(values, 50)
            first = median if first is None else first
            cells.append(f"{median:.3f}/{pct(values, 90):.3f} ×{median / first if first else float('nan'):.2f}")
        print(f"{name:<28} " + " ".join(f"{c:>26}" for c in cells))
    print()
    print("Postgres plans (EXPLAIN ANALYZE, BUFFERS; custom plan | generic plan): scan nodes | execution time | buffers")
    for ds in datasets:
        print(f"  {ds.label}")
        for name, modes in plans[ds.label].items():
            print(f"    {name:<28} custom : {scan_summary(modes.get('custom', []))}")
            print(f"    {'':<28} generic: {scan_summary(modes.get('generic', []))}")
    if args.plans:
        last = datasets[-1]
        print()
        print(f"full plans on {last.label}:")
        for name, modes in plans[last.label].items():
            for mode, lines in modes.items():
                print(f"--- {name} ({mode} plan)")
                print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", default="1000,100000", help="key counts, one dataset per keys × events")
    parser.add_argument("--events", default="0,1000000", help="spend-event counts")
    parser.add_argument("--days", type=int, default=30, help="the seeded events span this many days")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=150, help="pairs per dataset per round")
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured pairs per dataset first")
    parser.add_argument("--check", type=int, default=200, help="seeded events to re-derive with the service's code")
    parser.add_argument("--statements", type=int, default=200,
                        help="pairs whose statements are EXPLAIN ANALYZEd per dataset for the server-side times")
    parser.add_argument("--plans", action="store_true", help="print the full plans of the largest dataset")
    parser.add_argument("--keep", action="store_true", help="keep the databases (prints their URLs)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        asyncio.run(amain(args))
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
