"""DESIGN.md's invariants, one test (or a few) each, across two replicas sharing Postgres and Redis."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from support.app import RunningApp
from spendgate.settings import DEFAULT_POLICY_DIR
from support.scenario import authorize, charged_entities, create, create_key, ledger, record
from support.services import RedisServer

pytestmark = pytest.mark.asyncio


async def _two_replicas(app_factory: Any, pg: str, redis_url: str) -> tuple[RunningApp, RunningApp]:
    return await app_factory(database_url=pg, redis_url=redis_url), await app_factory(database_url=pg, redis_url=redis_url)


async def _team_setup(app: RunningApp) -> str:
    await create(app.admin, "orgs", {"id": "acme", "name": "Acme", "budget": {"max_budget": "100"}})
    await create(app.admin, "teams", {"id": "search", "name": "Search", "org_id": "acme", "budget": {"max_budget": "50"}})
    await create(app.admin, "users", {"id": "ada", "org_id": "acme", "budget": {"max_budget": "10"}})
    await app.admin.post("/v1/admin/teams/search/members", json={"user_id": "ada", "budget": {"max_budget": "5"}})
    return await create_key(app.admin, id="k1", team_id="search", user_id="ada",
                            budget={"max_budget": "20", "duration": "1d", "reset": "calendar"})


async def _ledgers_in_db(app: RunningApp) -> dict[str, int]:
    async with app.runtime.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT ledger_id, spent FROM ledgers"))).all()
    return {row[0]: int(row[1]) for row in rows}


async def _redis_ledgers(app: RunningApp) -> dict[str, tuple[int, int]]:
    """Every ledger hash in Redis: (spent, reserved) — read raw, without the adapter's rebuild."""
    assert app.runtime.redis is not None
    found = {}
    async for name in app.runtime.redis.scan_iter(match="sg:l:*"):
        values = await app.runtime.redis.hmget(name, "spent", "reserved")
        found[name.decode()[len("sg:l:"):]] = (int(values[0] or 0), int(values[1] or 0))
    return found


# 1. Symmetry --------------------------------------------------------------------------------------
# Between authorize and record the attribution facts change so that the policy now names other
# ledgers (a probe authorize shows it); the record still charges exactly the ledgers authorize
# checked — read from the ledger rows themselves, not from the record's answer. The record also
# carries the api_key, so re-attributing it would have been possible and is what must not happen.

COST = 80_000_000  # 0.08 USD in nano-USD


@pytest.fixture(params=["postgres+redis", "sqlite"])
def backend(request: pytest.FixtureRequest) -> dict[str, str]:
    """Database (and Redis) settings of each supported backend, for tests that start their own app."""
    if request.param == "sqlite":
        return {"database_url": request.getfixturevalue("sqlite_url")}
    return {"database_url": request.getfixturevalue("clean_pg"), "redis_url": request.getfixturevalue("redis_url")}


def _policies_with_team_keys_charging_the_user(tmp_path: Path) -> Path:
    """A copy of the shipped policies with the knob `team_keys_charge_user` turned on."""
    policy_dir = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, policy_dir)
    data = json.loads((policy_dir / "data.json").read_text())
    assert data["spendgate"]["config"]["team_keys_charge_user"] is False
    data["spendgate"]["config"]["team_keys_charge_user"] = True
    (policy_dir / "data.json").write_text(json.dumps(data))
    return policy_dir


async def _spent_by_entity(app: RunningApp) -> dict[tuple[str, str], int]:
    """Spent per entity, summed over its ledger rows (nano-USD), as the ledger store holds it."""
    async with app.runtime.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT entity_type, entity_id, spent FROM ledgers"))).all()
    spent: dict[tuple[str, str], int] = {}
    for entity_type, entity_id, amount in rows:
        spent[(entity_type, entity_id)] = spent.get((entity_type, entity_id), 0) + int(amount)
    return spent


async def _authorize_change_record(app: RunningApp, secret: str, change: Any) -> tuple[set[Any], set[Any]]:
    """Authorize r1, apply `change` (admin calls), probe the new attribution, record r1.
    Returns (the entities r1 checked, the entities a request is attributed to after the change)."""
    request = {"api_key": secret, "end_user": "c1", "tags": ["t"]}
    checked = await authorize(app.gateway, request_id="r1", estimated_cost="0.10", **request)
    assert checked["decision"] == "allow", checked["reasons"]
    await change()
    probe = await authorize(app.gateway, request_id="probe", **request)
    await record(app.gateway, request_id="r1", cost="0.08", outcome="success", **request)
    return charged_entities(checked), charged_entities(probe)


async def test_symmetry_a_personal_keys_record_charges_the_org_checked_even_after_its_user_moved_org(
    any_app: RunningApp,
) -> None:
    for org in ("acme", "other"):
        await create(any_app.admin, "orgs", {"id": org, "name": org})
    await create(any_app.admin, "users", {"id": "ada", "org_id": "acme"})
    secret = await create_key(any_app.admin, id="k1", user_id="ada")

    async def move_ada() -> None:
        response = await any_app.admin.patch("/v1/admin/users/ada", json={"org_id": "other"})
        assert response.status_code == 200, response.text

    checked, now_attributed = await _authorize_change_record(any_app, secret, move_ada)

    assert checked == {("key", "k1"), ("user", "ada"), ("org", "acme"), ("end_user", "c1"), ("tag", "t")}
    assert now_attributed == checked - {("org", "acme")} | {("org", "other")}
    spent = await _spent_by_entity(any_app)
    assert {entity: amount for entity, amount in spent.items() if amount} == dict.fromkeys(checked, COST)
    assert spent.get(("org", "other"), 0) == 0


async def test_symmetry_a_team_keys_record_charges_the_checked_user_member_and_orgs_after_they_changed(
    app_factory: Any, backend: dict[str, str], tmp_path: Path
) -> None:
    """Under `team_keys_charge_user: true` a team key also charges its user and the user's org."""
    app = await app_factory(**backend, policy_dir=_policies_with_team_keys_charging_the_user(tmp_path))
    for org in ("acme", "labs", "other", "elsewhere"):
        await create(app.admin, "orgs", {"id": org, "name": org})
    await create(app.admin, "teams", {"id": "search", "name": "Search", "org_id": "acme"})
    await create(app.admin, "users", {"id": "ada", "org_id": "labs"})
    await create(app.admin, "teams/search/members", {"user_id": "ada"})
    secret = await create_key(app.admin, id="k1", team_id="search", user_id="ada")

    async def reorganise() -> None:
        """Ada leaves the team and moves org; the team moves org too."""
        for method, path, body in [
            ("DELETE", "teams/search/members/ada", None),
            ("PATCH", "users/ada", {"org_id": "other"}),
            ("PATCH", "teams/search", {"org_id": "elsewhere"}),
        ]:
            response = await app.admin.request(method, f"/v1/admin/{path}", json=body)
            assert response.status_code in (200, 204), response.text

    checked, now_attributed = await _authorize_change_record(app, secret, reorganise)

    assert checked == {
        ("key", "k1"), ("team", "search"), ("team_member", "search/ada"), ("org", "acme"), ("user", "ada"),
        ("org", "labs"), ("end_user", "c1"), ("tag", "t"),
    }
    assert now_attributed == {
        ("key", "k1"), ("team", "search"), ("org", "elsewhere"), ("user", "ada"), ("org", "other"),
        ("end_user", "c1"), ("tag", "t"),
    }
    spent = await _spent_by_entity(app)
    assert {entity: amount for entity, amount in spent.items() if amount} == dict.fromkeys(checked, COST)
    assert spent.get(("org", "other"), 0) == spent.get(("org", "elsewhere"), 0) == 0


# 2. Exactly once ----------------------------------------------------------------------------------

async def test_exactly_once_when_the_same_record_races_on_two_replicas(
    app_factory: Any, clean_pg: str, redis_url: str
) -> None:
    one, two = await _two_replicas(app_factory, clean_pg, redis_url)
    secret = await _team_setup(one)
    await authorize(one.gateway, request_id="r1", api_key=secret, estimated_cost="0.50")

    results = await asyncio.gather(
        *(record((one if i % 2 else two).gateway, request_id="r1", cost="0.40", outcome="success") for i in range(10))
    )

    assert [r["duplicate"] for r in results].count(False) == 1
    for path in ["keys/k1", "teams/search", "teams/search/members/ada", "orgs/acme"]:
        window = "1d" if path == "keys/k1" else None
        shown = await ledger(two.admin, path, window)
        assert (shown["spent"], shown["reserved"]) == ("0.400000", "0.000000"), path


# 3. No phantom spend ------------------------------------------------------------------------------

async def test_no_phantom_spend_once_every_request_finished_or_expired(
    app_factory: Any, clean_pg: str, redis_url: str
) -> None:
    one, two = await _two_replicas(app_factory, clean_pg, redis_url)
    secret = await _team_setup(one)

    async def request(i: int) -> None:
        first, other = (one, two) if i % 2 else (two, one)
        rid = f"r{i}"
        await authorize(first.gateway, request_id=rid, api_key=secret, end_user=f"c{i % 3}", estimated_cost="0.05")
        match i % 4:
            case 0:
                await record(first.gateway, request_id=rid, cost="0.03", outcome="success")
            case 1:
                await record(first.gateway, request_id=rid, cost="0.01", outcome="failure")
            case 2:
                pass  # abandoned: the gateway died before recording
            case 3:  # retried on the other replica, as a gateway does after a timeout
                await record(first.gateway, request_id=rid, cost="0.02", outcome="success")
                await record(other.gateway, request_id=rid, cost="0.02", outcome="success")

    await asyncio.gather(*(request(i) for i in range(40)))
    later = one.runtime.clock() + timedelta(seconds=one.settings.reservation_ttl + 1)
    await asyncio.gather(one.runtime.counters.expire(now=later), two.runtime.counters.expire(now=later))

    in_db = await _ledgers_in_db(one)
    in_redis = await _redis_ledgers(one)
    assert in_redis, "the workload should have left counters in Redis"
    assert {lid: (spent, 0) for lid, spent in in_db.items()} == {
        lid: figures for lid, figures in in_redis.items() if lid in in_db
    }
    assert all(figures == (0, 0) for lid, figures in in_redis.items() if lid not in in_db)
    expected_total = 10 * Decimal("0.03") + 10 * Decimal("0.01") + 10 * Decimal("0.02")
    assert Decimal((await ledger(one.admin, "orgs/acme"))["spent"]) == expected_total


# 6. Durable ---------------------------------------------------------------------------------------

async def test_an_acknowledged_record_survives_a_redis_flush_and_the_counter_is_rebuilt(pg_app: RunningApp) -> None:
    secret = await _team_setup(pg_app)
    await authorize(pg_app.gateway, request_id="r1", api_key=secret, estimated_cost="4.00")
    await record(pg_app.gateway, request_id="r1", cost="4.50", outcome="success")
    assert pg_app.runtime.redis is not None
    await pg_app.runtime.redis.flushall()

    refused = await authorize(pg_app.gateway, request_id="r2", api_key=secret, estimated_cost="0.60")

    assert refused["decision"] == "deny"
    assert [(r["entity"]["type"], r["spent"]) for r in refused["reasons"]] == [("team_member", "4.500000")]


async def test_an_acknowledged_record_survives_redis_being_killed_and_the_service_restarting(
    app_factory: Any, clean_pg: str, redis_url: str, redis_server: RedisServer
) -> None:
    first = await app_factory(database_url=clean_pg, redis_url=redis_url)
    secret = await _team_setup(first)
    await authorize(first.gateway, request_id="r1", api_key=secret, estimated_cost="1.00")
    await record(first.gateway, request_id="r1", cost="1.25", outcome="success")

    redis_server.kill()
    redis_server.start()  # empty: nothing was persisted
    restarted = await app_factory(database_url=clean_pg, redis_url=redis_url)

    assert (await ledger(restarted.admin, "teams/search/members/ada"))["spent"] == "1.250000"
    retry = await record(restarted.gateway, request_id="r1", cost="1.25", outcome="success")
    assert retry["duplicate"] is True
    assert (await ledger(restarted.admin, "orgs/acme"))["spent"] == "1.250000"


async def test_a_record_lands_in_the_ledger_while_redis_is_down(
    app_factory: Any, clean_pg: str, redis_url: str, redis_server: RedisServer
) -> None:
    app = await app_factory(database_url=clean_pg, redis_url=redis_url)
    secret = await _team_setup(app)
    await authorize(app.gateway, request_id="r1", api_key=secret, estimated_cost="1.00")
    redis_server.kill()
    try:
        down = await app.gateway.post("/v1/authorize", json={"request_id": "r2", "api_key": secret})
        landed = await record(app.gateway, request_id="r3", api_key=secret, cost="0.75", outcome="success")
    finally:
        redis_server.start()

    assert down.status_code == 503 and down.json()["error"]["code"] == "unavailable"
    assert "redis" in down.json()["error"]["message"]
    assert landed["recorded"] is True
    assert (await ledger(app.admin, "orgs/acme"))["spent"] == "0.750000"
