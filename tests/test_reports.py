"""Spend reports (`GET /v1/reports/spend`, `spendgate report`) agree with the ledgers exactly.

The property test drives a real service (PostgreSQL + Redis, and SQLite) through a random mix
of authorizes, records (success and failure), retried records, records with no authorize and
clock steps across calendar periods; then, for every ledger of the example's entities, the
report over that ledger's period must equal its `spent` to the nano-USD, and the CSV, the JSON
and the CLI must say the same.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.datastructures import State

from support.app import RunningApp
from support.services import ALL_TABLES
from spendgate.api import create_app
from spendgate.cli import main
from spendgate.migrate import upgrade
from spendgate.periods import Duration, period_at
from spendgate.reports.cli import render, run_report
from spendgate.settings import Settings, get_settings
from support.app import ADMIN_TOKEN, GATEWAY_TOKEN
from support.scenario import create, create_key
from support.services import RedisServer

EXAMPLES = 50
MODELS = ("gpt-4o", "mini")
#: Far enough to hold any ledger that never resets.
EVER = ("1970-01-01T00:00:00Z", "9999-01-01T00:00:00Z")


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text_value: str | None) -> datetime | None:
    return datetime.fromisoformat(text_value.replace("Z", "+00:00")) if text_value else None


# --- a service on a loop of its own (hypothesis runs examples synchronously) -----------------


@dataclass
class Service:
    settings: Settings
    admin: httpx.AsyncClient
    gateway: httpx.AsyncClient
    app: Any
    now: datetime = field(default_factory=lambda: datetime(2030, 1, 1, tzinfo=timezone.utc))

    def step(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)


@asynccontextmanager
async def _service(**overrides: Any) -> AsyncIterator[Service]:
    settings = Settings(admin_token=ADMIN_TOKEN, gateway_token=GATEWAY_TOKEN, policy_reload_seconds=0, **overrides)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            base = "http://spendgate.test"
            async with (
                httpx.AsyncClient(transport=transport, base_url=base, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as admin,
                httpx.AsyncClient(transport=transport, base_url=base, headers={"authorization": f"Bearer {GATEWAY_TOKEN}"}) as gateway,
            ):
                service = Service(settings, admin, gateway, app)
                # Start at a real whole hour ahead of the wall clock: counters' expiries stay positive.
                service.now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
                app.state.runtime.clock = lambda: service.now
                yield service
    finally:
        app.state = State()


async def _empty(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            for table in ALL_TABLES.split(", "):
                await conn.execute(text(f"DELETE FROM {table}"))
        else:
            await conn.execute(text(f"TRUNCATE {ALL_TABLES}"))
    await engine.dispose()


async def _migrate(url: str) -> None:
    engine = create_async_engine(url)
    await upgrade(engine)
    await engine.dispose()


@pytest.fixture(params=["postgres+redis", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> dict[str, str]:
    if request.param == "sqlite":
        return {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'reports.db'}"}
    server: RedisServer = request.getfixturevalue("redis_server")
    if server.process is None:
        server.start()
    return {"database_url": request.getfixturevalue("pg_url"), "redis_url": server.url}


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    own = asyncio.new_event_loop()
    yield own
    own.close()


# --- the scenario ---------------------------------------------------------------------------

LedgerKey = tuple[str, str, str | None, str]  # entity type, id, window, period start


@dataclass
class Expected:
    """What the ledgers must hold, from the records' answers (first records only)."""

    ledgers: dict[LedgerKey, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    entities: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    total: list[int] = field(default_factory=lambda: [0, 0, 0])

    def add(self, body: dict[str, Any], cost: int) -> None:
        failed = int(body["outcome"] == "failure")
        for charge in body["charges"]:
            key = (charge["entity"]["type"], charge["entity"]["id"], charge["window"], charge["period_start"])
            _bump(self.ledgers[key], cost, failed)
        for entity in {(c["entity"]["type"], c["entity"]["id"]) for c in body["charges"]}:
            _bump(self.entities[entity], cost, failed)
        _bump(self.total, cost, failed)


def _bump(sums: list[int], cost: int, failed: int) -> None:
    sums[0] += cost
    sums[1] += 1
    sums[2] += failed


def _usd(nanos: int) -> str:
    return f"{nanos // 10**9}.{nanos % 10**9:09d}"


def _nanos(amount: str) -> int:
    whole, _, frac = amount.partition(".")
    return int(whole) * 10**9 + int(frac.ljust(9, "0"))


operations = st.lists(
    st.one_of(
        st.tuples(st.just("authorize"), st.sampled_from(["team", "own"]), st.sampled_from(MODELS),
                  st.sampled_from([None, "c1"]), st.sampled_from([(), ("a",), ("a", "b")])),
        st.tuples(st.just("record"), st.integers(0, 9), st.integers(0, 5_000_000_000),
                  st.sampled_from(["success", "failure"])),
        st.tuples(st.just("unannounced"), st.sampled_from(["team", "own"]), st.sampled_from(MODELS),
                  st.integers(0, 5_000_000_000), st.sampled_from(["success", "failure"])),
        st.tuples(st.just("retry"), st.integers(0, 9)),
        st.tuples(st.just("step"), st.sampled_from([1, 17, 59, 61, 180, 600])),
    ),
    min_size=1,
    max_size=14,
)
groupings = st.sampled_from(["", "model", "day", "model,day", "key,outcome,hour", "entity", "entity,month", "outcome,week"])


async def _entities(service: Service, p: str) -> dict[str, str]:
    """A fresh org/team/user set, calendar windows only (whole-hour periods); the key secrets."""
    hourly_daily = [{"max_budget": "1000000", "duration": "1h", "reset": "calendar"},
                    {"max_budget": "1000000", "duration": "1d", "reset": "calendar"}]
    await create(service.admin, "orgs", {"id": f"{p}o", "name": "O", "budget": {"max_budget": "1000000"}})
    await create(service.admin, "teams", {"id": f"{p}t", "name": "T", "org_id": f"{p}o", "budget": hourly_daily})
    await create(service.admin, "users", {"id": f"{p}u", "org_id": f"{p}o",
                                          "budget": {"max_budget": "1000000", "duration": "1mo", "reset": "calendar"}})
    await service.admin.post(f"/v1/admin/teams/{p}t/members", json={"user_id": f"{p}u"})
    return {
        "team": await create_key(service.admin, id=f"{p}k1", team_id=f"{p}t", user_id=f"{p}u",
                                 budget={"max_budget": "1000000", "duration": "1h", "reset": "calendar"}),
        "own": await create_key(service.admin, id=f"{p}k2", user_id=f"{p}u"),
    }


async def _run(service: Service, p: str, ops: list[tuple[Any, ...]]) -> Expected:
    keys = await _entities(service, p)
    expected = Expected()
    authorized: list[dict[str, Any]] = []
    recorded: list[dict[str, Any]] = []
    serial = itertools.count()
    for op in ops:
        kind = op[0]
        if kind == "authorize":
            _, key, model, end_user, tags = op
            body = {"request_id": f"{p}r{next(serial)}", "api_key": keys[key], "model": model,
                    "end_user": f"{p}{end_user}" if end_user else None, "tags": [f"{p}{tag}" for tag in tags], "estimated_cost": "0.01"}
            answer = await service.gateway.post("/v1/authorize", json=body)
            assert answer.status_code == 200 and answer.json()["decision"] == "allow", answer.text
            authorized.append(body)
        elif kind in ("record", "unannounced"):
            if kind == "record":
                if not authorized:
                    continue
                prior = authorized.pop(op[1] % len(authorized))
                # api_key etc. too: used only if the authorize were forgotten (never here: answers must match)
                body = prior | {"cost": _usd(op[2]), "outcome": op[3]}
                del body["estimated_cost"]
            else:
                _, key, model, cost, outcome = op
                body = {"request_id": f"{p}r{next(serial)}", "api_key": keys[key], "model": model,
                        "cost": _usd(cost), "outcome": outcome}
            answer = await service.gateway.post("/v1/record", json=body)
            assert answer.status_code == 200, answer.text
            assert not answer.json()["duplicate"]
            expected.add(answer.json(), _nanos(answer.json()["cost"]))
            recorded.append(body)
        elif kind == "retry":
            if recorded:
                answer = await service.gateway.post("/v1/record", json=recorded[op[1] % len(recorded)])
                assert answer.status_code == 200 and answer.json()["duplicate"], answer.text
        else:
            service.step(op[1])
    service.step(61)  # the authorizes still open are recorded in the next hour: after their 1h periods closed
    for i, prior in enumerate(authorized):
        body = prior | {"cost": _usd(7_000_000 * i + 3), "outcome": "failure" if i % 2 else "success"}
        del body["estimated_cost"]
        answer = await service.gateway.post("/v1/record", json=body)
        assert answer.status_code == 200 and not answer.json()["duplicate"], answer.text
        expected.add(answer.json(), _nanos(answer.json()["cost"]))
    return expected


async def _report(service: Service, **params: str) -> dict[str, Any]:
    answer = await service.admin.get("/v1/reports/spend", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def _ledgers(url: str, p: str) -> dict[LedgerKey, int]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        rows = (await conn.execute(
            text("SELECT entity_type, entity_id, \"window\", period_start, spent FROM ledgers WHERE entity_id LIKE :p"),
            {"p": f"{p}%"},
        )).all()
    await engine.dispose()
    found = {}
    for entity_type, entity_id, window, start, spent in rows:
        start = start if isinstance(start, datetime) else datetime.fromisoformat(start)
        found[(entity_type, entity_id, window, _iso(start.replace(tzinfo=timezone.utc)))] = int(spent)
    return found


async def _check(service: Service, p: str, expected: Expected, grouping: str) -> None:
    ledgers = await _ledgers(service.settings.database_url, p)
    model_ledgers = {(t, i, w, _iso(_parse(s))): sums for (t, i, w, s), sums in expected.ledgers.items()}
    # (authorize creates a ledger before any record: the SQL counters hold reservations in it)
    assert set(model_ledgers) <= set(ledgers)
    assert ledgers == {key: model_ledgers[key][0] if key in model_ledgers else 0 for key in ledgers}
    for (entity_type, entity_id, window, start), spent in ledgers.items():
        bounds = EVER if window is None else (start, _period_end(window, start))
        report = await _report(service, entity=f"{entity_type}:{entity_id}", **{"from": bounds[0], "to": bounds[1]})
        sums = model_ledgers.get((entity_type, entity_id, window, start), [0, 0, 0])
        assert _nanos(report["total"]["spend"]) == spent, (entity_type, entity_id, window, start)
        assert (report["total"]["requests"], report["total"]["failures"]) == (sums[1], sums[2])
    for (entity_type, entity_id), sums in expected.entities.items():  # once per entity, whatever its windows
        report = await _report(service, entity=f"{entity_type}:{entity_id}", **{"from": EVER[0], "to": EVER[1]})
        assert (_nanos(report["total"]["spend"]), report["total"]["requests"], report["total"]["failures"]) == tuple(sums)
    # One grouping, in JSON, CSV and from the CLI's code: the same rows.
    params = {"entity": f"team:{p}t", "group_by": grouping, "from": EVER[0], "to": EVER[1]}
    as_json = await _report(service, **params)
    assert _nanos(as_json["total"]["spend"]) == sum(_nanos(row["spend"]) for row in as_json["rows"])
    as_csv = await service.admin.get("/v1/reports/spend", params=params | {"format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert _csv_rows(as_csv.text) == [_stringly(row) for row in as_json["rows"]]
    cli = await run_report(service.settings, params)
    assert json.loads(render(cli, "json")) == as_json


def _period_end(window: str, start: str) -> str:
    begin = _parse(start)
    assert begin is not None
    period = period_at(duration=Duration.parse(window), reset="calendar", anchor=begin, at=begin)
    assert period.end is not None and _iso(period.start) == start
    return _iso(period.end)


def _csv_rows(body: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body)))


def _stringly(row: dict[str, Any]) -> dict[str, str]:
    return {name: "" if value is None else str(value) for name, value in row.items()}


def test_reports_equal_every_ledger_exactly_under_random_traffic_and_period_rollovers(
    backend: dict[str, str], loop: asyncio.AbstractEventLoop
) -> None:
    loop.run_until_complete(_migrate(backend["database_url"]))
    loop.run_until_complete(_empty(backend["database_url"]))
    service_cm = _service(**backend)
    service = loop.run_until_complete(service_cm.__aenter__())
    examples = itertools.count()
    grand = Expected()
    try:

        @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
        @given(ops=operations, grouping=groupings)
        def example(ops: list[tuple[Any, ...]], grouping: str) -> None:
            p = f"x{next(examples)}-"  # a fresh set of entities per example
            expected = loop.run_until_complete(_run(service, p, ops))
            loop.run_until_complete(_check(service, p, expected, grouping))
            for i in range(3):
                grand.total[i] += expected.total[i]

        example()
        # Every example's requests, counted once each in the unfiltered report (no double counting).
        everything = loop.run_until_complete(_report(service, **{"from": EVER[0], "to": EVER[1]}))
        by_entity = loop.run_until_complete(_report(service, group_by="entity", **{"from": EVER[0], "to": EVER[1]}))
        assert everything["total"] == by_entity["total"]
        assert (_nanos(everything["total"]["spend"]), everything["total"]["requests"]) == (grand.total[0], grand.total[1])
    finally:
        loop.run_until_complete(service_cm.__aexit__(None, None, None))


# --- filters, groupings and errors, on a small known history ----------------------------------


def _base() -> datetime:
    """Midnight two days ahead of the wall clock (counters' expiries stay positive)."""
    return datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=2)


async def _history(app: RunningApp) -> datetime:
    """acme ⊃ search ∋ ada; k1 a team key of search (member ada), k2 ada's personal key. Four records."""
    await create(app.admin, "orgs", {"id": "acme", "name": "Acme"})
    await create(app.admin, "teams", {"id": "search", "name": "Search", "org_id": "acme",
                                      "budget": [{"max_budget": "100", "duration": "1d", "reset": "calendar"},
                                                 {"max_budget": "900", "duration": "1mo", "reset": "calendar"}]})
    await create(app.admin, "users", {"id": "ada", "org_id": "acme"})
    await app.admin.post("/v1/admin/teams/search/members", json={"user_id": "ada"})
    k1 = await create_key(app.admin, id="k1", team_id="search", user_id="ada")
    k2 = await create_key(app.admin, id="k2", user_id="ada")
    base = _base()
    for at, secret, model, cost, outcome, extra in [
        (timedelta(hours=10, minutes=15), k1, "gpt-4o", "0.5", "success", {"tags": ["alpha"], "end_user": "c1"}),
        (timedelta(hours=10, minutes=40), k1, "gpt-4o", "0.25", "failure", {}),
        (timedelta(days=1, hours=9), k1, "mini", "0.125", "success", {"end_user": "c1"}),
        (timedelta(hours=10, minutes=20), k2, "gpt-4o", "1", "success", {"tags": ["alpha"]}),
    ]:
        app.runtime.clock = lambda at=at: base + at
        answer = await app.gateway.post("/v1/record", json={
            "request_id": f"r-{at}-{model}", "api_key": secret, "model": model, "cost": cost, "outcome": outcome, **extra})
        assert answer.status_code == 200, answer.text
    return base


async def _get(app: RunningApp, base: datetime, **params: str) -> dict[str, Any]:
    window = {"from": _iso(base), "to": _iso(base + timedelta(days=2))}
    answer = await app.admin.get("/v1/reports/spend", params=window | params)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def _totals(body: dict[str, Any]) -> tuple[str, int, int]:
    return body["total"]["spend"], body["total"]["requests"], body["total"]["failures"]


async def test_a_team_report_by_model_and_day_sums_what_was_charged_to_the_team(any_app: RunningApp) -> None:
    base = await _history(any_app)
    body = await _get(any_app, base, entity="team:search", group_by="model,day")
    day1, day2 = base.date().isoformat(), (base + timedelta(days=1)).date().isoformat()
    assert body["group_by"] == ["model", "day"] and body["from"] == _iso(base)
    assert body["rows"] == [
        {"model": "gpt-4o", "day": day1, "spend": "0.750000", "requests": 2, "failures": 1},
        {"model": "mini", "day": day2, "spend": "0.125000", "requests": 1, "failures": 0},
    ]
    # Two budget windows (1d, 1mo) charged per request: each request still counts once for the team.
    assert _totals(body) == ("0.875000", 3, 1)


async def test_filters_by_tag_end_user_key_and_model_read_only_those_charges(any_app: RunningApp) -> None:
    base = await _history(any_app)
    by_tag = await _get(any_app, base, tag="alpha", group_by="key")
    assert [(row["key"], row["spend"]) for row in by_tag["rows"]] == [("k1", "0.500000"), ("k2", "1.000000")]
    assert _totals(await _get(any_app, base, end_user="c1")) == ("0.625000", 2, 0)
    assert _totals(await _get(any_app, base, key="k2")) == ("1.000000", 1, 0)
    assert _totals(await _get(any_app, base, entity="org:acme", model="mini")) == ("0.125000", 1, 0)
    assert _totals(await _get(any_app, base, entity="team:nobody")) == ("0.000000", 0, 0)


async def test_unfiltered_and_by_entity_reports_count_each_request_once_in_the_total(any_app: RunningApp) -> None:
    base = await _history(any_app)
    by_outcome = await _get(any_app, base, group_by="outcome")
    assert [(r["outcome"], r["spend"], r["requests"]) for r in by_outcome["rows"]] == [
        ("failure", "0.250000", 1), ("success", "1.625000", 3)]
    assert _totals(by_outcome) == ("1.875000", 4, 1)
    by_entity = await _get(any_app, base, group_by="entity")
    rows = {row["entity"]: (row["spend"], row["requests"]) for row in by_entity["rows"]}
    assert rows["org:acme"] == ("1.875000", 4)
    assert rows["team:search"] == ("0.875000", 3)
    assert rows["user:ada"] == ("1.000000", 1)  # only the personal key charges ada herself
    assert rows["tag:alpha"] == ("1.500000", 2)
    assert _totals(by_entity) == ("1.875000", 4, 1)  # rows overlap; the total does not


async def test_time_buckets_label_hours_days_weeks_and_months_in_utc(any_app: RunningApp) -> None:
    base = await _history(any_app)
    hours = await _get(any_app, base, entity="team:search", group_by="hour")
    assert [(row["hour"], row["spend"]) for row in hours["rows"]] == [
        (_iso(base + timedelta(hours=10)), "0.750000"), (_iso(base + timedelta(days=1, hours=9)), "0.125000")]
    one_hour = await _get(any_app, base, entity="team:search", **{"from": _iso(base + timedelta(hours=10)),
                                                                  "to": _iso(base + timedelta(hours=11))})
    assert _totals(one_hour) == ("0.750000", 2, 1)
    weeks = await _get(any_app, base, entity="team:search", group_by="week")
    mondays = {(base + timedelta(days=d) - timedelta(days=(base + timedelta(days=d)).weekday())).date().isoformat()
               for d in (0, 1)}
    assert {row["week"] for row in weeks["rows"]} == mondays
    months = await _get(any_app, base, group_by="month")
    assert {row["month"] for row in months["rows"]} == {(base + timedelta(days=d)).strftime("%Y-%m") for d in (0, 1)}


async def test_csv_streams_the_same_rows_with_a_header(any_app: RunningApp) -> None:
    base = await _history(any_app)
    params = {"from": _iso(base), "to": _iso(base + timedelta(days=2)), "entity": "team:search", "group_by": "model,day"}
    answer = await any_app.admin.get("/v1/reports/spend", params=params | {"format": "csv"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert answer.text.splitlines()[0] == "model,day,spend,requests,failures"
    assert _csv_rows(answer.text) == [_stringly(row) for row in (await _get(any_app, base, **params))["rows"]]


async def test_the_default_range_is_the_last_30_days_up_to_the_next_whole_hour(any_app: RunningApp) -> None:
    now = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    any_app.runtime.clock = lambda: now
    body = (await any_app.admin.get("/v1/reports/spend")).json()
    assert (body["from"], body["to"]) == ("2031-04-06T08:00:00Z", "2031-05-06T08:00:00Z")


@pytest.mark.parametrize(
    ("params", "field_name"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2030-01-01T10:30:00Z"}, "to"),
        ({"from": "2030-01-02", "to": "2030-01-01"}, "from"),
        ({"to": "0001-01-02"}, "to"),
        ({"to": "0001-01-01T00:00:00+01:00"}, "to"),  # its offset moves it before year 1
        ({"from": "9999-12-31T23:00:00-02:00"}, "from"),  # and after year 9999
        ({"group_by": "colour"}, "group_by"),
        ({"group_by": "day,hour"}, "group_by"),
        ({"group_by": "model,model"}, "group_by"),
        ({"entity": "planet:mars"}, "entity"),
        ({"entity": "team"}, "entity"),
        ({"entity": "team:search", "tag": "alpha"}, "entity and tag"),
        ({"format": "xml"}, "format"),
    ],
)
async def test_bad_parameters_are_refused_naming_the_parameter(
    sqlite_app: RunningApp, params: dict[str, str], field_name: str
) -> None:
    answer = await sqlite_app.admin.get("/v1/reports/spend", params=params)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid_request"
    assert answer.json()["error"]["message"].startswith(f"{field_name}: ")


async def test_reports_need_the_admin_token(sqlite_app: RunningApp) -> None:
    assert (await sqlite_app.anonymous.get("/v1/reports/spend")).status_code == 401
    assert (await sqlite_app.gateway.get("/v1/reports/spend")).status_code == 401


# --- the rollup commits with the record or not at all -------------------------------------------

_PG_REFUSE = [
    """CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN IF NEW.entity_id = 'poison' THEN RAISE EXCEPTION 'rollup refused'; END IF; RETURN NEW; END $$""",
    "CREATE TRIGGER refuse_poison BEFORE INSERT ON spend_rollups FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
]
_PG_ALLOW = ["DROP TRIGGER refuse_poison ON spend_rollups", "DROP FUNCTION refuse_poison()"]
_SQLITE_REFUSE = ["""CREATE TRIGGER refuse_poison BEFORE INSERT ON spend_rollups WHEN NEW.entity_id = 'poison'
                     BEGIN SELECT RAISE(ABORT, 'rollup refused'); END"""]
_SQLITE_ALLOW = ["DROP TRIGGER refuse_poison"]


async def _sql(app: RunningApp, statements: list[str]) -> None:
    async with app.runtime.engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))


async def test_a_record_whose_rollup_fails_charges_no_ledger(any_app: RunningApp) -> None:
    """The database refuses the rollup row (a trigger): the event and ledger writes roll back with it."""
    postgres = any_app.runtime.engine.dialect.name == "postgresql"
    await create(any_app.admin, "teams", {"id": "poison", "name": "P"})
    secret = await create_key(any_app.admin, id="kp", team_id="poison")
    body = {"request_id": "rp", "api_key": secret, "model": "gpt-4o", "cost": "0.3", "outcome": "success"}
    await _sql(any_app, _PG_REFUSE if postgres else _SQLITE_REFUSE)
    try:
        transport = httpx.ASGITransport(app=any_app.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://spendgate.test",
                                     headers={"authorization": f"Bearer {GATEWAY_TOKEN}"}) as gateway:
            assert (await gateway.post("/v1/record", json=body)).status_code == 500
        async with any_app.runtime.engine.connect() as conn:
            spent = (await conn.execute(text("SELECT coalesce(sum(spent), 0) FROM ledgers"))).scalar_one()
            events = (await conn.execute(text("SELECT count(*) FROM spend_events"))).scalar_one()
        assert (int(spent), int(events)) == (0, 0)
    finally:
        await _sql(any_app, _PG_ALLOW if postgres else _SQLITE_ALLOW)
    assert (await any_app.gateway.post("/v1/record", json=body)).status_code == 200
    report = (await any_app.admin.get("/v1/reports/spend", params={"entity": "team:poison"})).json()
    assert report["total"]["spend"] == "0.300000"


# --- the CLI --------------------------------------------------------------------------------


def test_the_cli_prints_the_api_report_as_an_aligned_table_csv_and_json(
    tmp_path: Any, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"

    async def prepare() -> tuple[datetime, dict[str, Any], str]:
        async with _service(database_url=url) as service:
            app = RunningApp(service.app, service.settings, service.admin, service.gateway, service.admin)
            base = await _history(app)
            params = {"from": _iso(base), "to": _iso(base + timedelta(days=2)), "entity": "team:search",
                      "group_by": "day,model"}
            answer = await service.admin.get("/v1/reports/spend", params=params)
            as_csv = (await service.admin.get("/v1/reports/spend", params=params | {"format": "csv"})).text
            return base, answer.json(), as_csv

    base, api, api_csv = loop.run_until_complete(prepare())
    monkeypatch.setenv("SPENDGATE_DATABASE_URL", url)
    argv = ["report", "--entity", "team:search", "--by", "day,model", "--from", _iso(base),
            "--to", _iso(base + timedelta(days=2))]
    assert main([*argv, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == api
    assert main([*argv, "--format", "csv"]) == 0
    assert capsys.readouterr().out == api_csv
    assert main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    header, rows, total = table[1], table[3:-2], table[-1]
    assert header.split() == ["day", "model", "spend", "requests", "failures"]
    assert [line.split() for line in rows] == [
        [row["day"], row["model"], row["spend"], str(row["requests"]), str(row["failures"])] for row in api["rows"]]
    assert total.split() == ["TOTAL", "0.875000", "3", "1"]
    assert len({len(line) for line in [header, *rows]}) == 1  # aligned columns
    assert main([*argv[:-2], "--to", "2030-01-01T10:30:00Z"]) == 2
    assert "to: " in capsys.readouterr().err
    monkeypatch.setenv("SPENDGATE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'never-migrated.db'}")
    get_settings.cache_clear()
    assert main(argv) == 2
    assert "run `spendgate migrate` first" in capsys.readouterr().err


async def test_a_record_arriving_after_its_period_closed_is_reported_in_the_period_it_charged(
    any_app: RunningApp,
) -> None:
    await create(any_app.admin, "teams", {"id": "late", "name": "L",
                                          "budget": {"max_budget": "10", "duration": "1h", "reset": "calendar"}})
    secret = await create_key(any_app.admin, id="kl", team_id="late")
    hour = _base() + timedelta(hours=10)
    any_app.runtime.clock = lambda: hour + timedelta(minutes=59, seconds=59)
    decided = await any_app.gateway.post("/v1/authorize", json={"request_id": "rl", "api_key": secret, "model": "m"})
    assert decided.json()["decision"] == "allow", decided.text
    any_app.runtime.clock = lambda: hour + timedelta(hours=1, minutes=1)
    recorded = await any_app.gateway.post("/v1/record", json={"request_id": "rl", "cost": "0.2", "outcome": "success"})
    [charge] = [c for c in recorded.json()["charges"] if c["entity"]["type"] == "team"]
    assert charge["period_start"].startswith(_iso(hour)[:16])  # the authorize's period, not the record's
    closed = {"entity": "team:late", "from": _iso(hour), "to": _iso(hour + timedelta(hours=1))}
    assert (await any_app.admin.get("/v1/reports/spend", params=closed)).json()["total"]["spend"] == "0.200000"


async def test_the_migration_rolls_up_the_spend_recorded_before_it(tmp_path: Any) -> None:
    """A database at 0001 with recorded spend: after the upgrade, its report equals its ledger."""
    from alembic import command

    from spendgate.migrate import alembic_config

    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    engine = create_async_engine(url)
    hour = datetime(2029, 3, 4, 5, tzinfo=timezone.utc)
    charges = [{"ledger_id": f"team:old:1d:{int(hour.replace(hour=0).timestamp())}", "entity_type": "team",
                "entity_id": "old", "window": "1d", "period_start": hour.replace(hour=0).isoformat(),
                "period_end": (hour.replace(hour=0) + timedelta(days=1)).isoformat()}]
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0001"))
            for i, outcome in enumerate(["success", "failure", "success"]):
                await conn.execute(
                    text("INSERT INTO spend_events (request_id, cost, outcome, key_id, model, charges, created_at)"
                         " VALUES (:id, :cost, :outcome, 'k', 'm', :charges, :at)"),
                    {"id": f"old{i}", "cost": 100 + i, "outcome": outcome, "charges": json.dumps(charges),
                     "at": (hour + timedelta(minutes=i)).replace(tzinfo=None).isoformat(sep=" ")},
                )
        await upgrade(engine)
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT entity_type, sum(spend), sum(requests), sum(failures) FROM spend_rollups"
                " GROUP BY entity_type ORDER BY entity_type"))).all()
        assert [tuple(row) for row in rows] == [("*", 303, 3, 1), ("team", 303, 3, 1)]
    finally:
        await engine.dispose()
