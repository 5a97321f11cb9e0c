"""The decision routes end to end (API.md "Decision routes"), on PostgreSQL+Redis and on SQLite."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from support.app import RunningApp
from support.scenario import authorize, charged_entities, create, create_key, ledger, record

pytestmark = pytest.mark.asyncio


async def _org_team_user(app: RunningApp) -> None:
    await create(app.admin, "orgs", {"id": "acme", "name": "Acme"})
    await create(app.admin, "teams", {"id": "search", "name": "Search", "org_id": "acme"})
    await create(app.admin, "users", {"id": "ada", "org_id": "acme"})
    response = await app.admin.post("/v1/admin/teams/search/members", json={"user_id": "ada"})
    assert response.status_code == 201, response.text


async def test_personal_key_charges_key_user_org_end_user_and_tags(any_app: RunningApp) -> None:
    await _org_team_user(any_app)
    secret = await create_key(any_app.admin, id="k-personal", user_id="ada")

    body = await authorize(
        any_app.gateway, request_id="r1", api_key=secret, model="gpt-4o", end_user="cust-9",
        tags=["search", "beta"], estimated_cost="0.02",
    )

    assert body["decision"] == "allow", body
    assert charged_entities(body) == {
        ("key", "k-personal"), ("user", "ada"), ("org", "acme"), ("end_user", "cust-9"), ("tag", "search"),
        ("tag", "beta"),
    }
    assert body["reservation"]["amount"] == "0.020000"
    assert (await ledger(any_app.admin, "users/ada"))["reserved"] == "0.020000"


async def test_team_key_charges_team_member_and_org_but_never_the_personal_ledger(any_app: RunningApp) -> None:
    await _org_team_user(any_app)
    secret = await create_key(any_app.admin, id="k-team", team_id="search", user_id="ada")

    body = await authorize(any_app.gateway, request_id="r1", api_key=secret, estimated_cost="0.02")

    assert charged_entities(body) == {("key", "k-team"), ("team", "search"), ("team_member", "search/ada"),
                                      ("org", "acme")}


async def test_team_key_spend_is_not_charged_to_personal_budget(any_app: RunningApp) -> None:
    """Seed failure 1: team-key spend landed on the user's personal budget, which then refused."""
    await _org_team_user(any_app)
    await any_app.admin.patch("/v1/admin/users/ada", json={"budget": {"max_budget": "1.00"}})
    team_secret = await create_key(any_app.admin, id="k-team", team_id="search", user_id="ada")
    personal_secret = await create_key(any_app.admin, id="k-personal", user_id="ada")

    await authorize(any_app.gateway, request_id="t1", api_key=team_secret, estimated_cost="1.00")
    await record(any_app.gateway, request_id="t1", cost="1.00", outcome="success")

    assert (await ledger(any_app.admin, "users/ada"))["spent"] == "0.000000"
    personal = await authorize(any_app.gateway, request_id="p1", api_key=personal_secret, estimated_cost="0.50")
    assert personal["decision"] == "allow", personal["reasons"]


# -- every entity type's budget refuses once spent reaches its limit (seed failure 2) ----------

async def _budget_on(app: RunningApp, entity: str) -> tuple[str, dict[str, Any]]:
    """Give `entity` a 1.00 budget (everything else unlimited); returns a key secret and request extras."""
    await _org_team_user(app)
    budget = {"max_budget": "1.00"}
    extra: dict[str, Any] = {}
    key: dict[str, Any] = {"id": "k1", "team_id": "search", "user_id": "ada"}
    if entity == "org":
        await app.admin.patch("/v1/admin/orgs/acme", json={"budget": budget})
    elif entity == "team":
        await app.admin.patch("/v1/admin/teams/search", json={"budget": budget})
    elif entity == "user":
        key = {"id": "k1", "user_id": "ada"}
        await app.admin.patch("/v1/admin/users/ada", json={"budget": budget})
    elif entity == "team_member":
        response = await app.admin.patch("/v1/admin/teams/search/members/ada", json={"budget": budget})
        assert response.status_code == 200, response.text
    elif entity == "key":
        key["budget"] = budget
    elif entity == "key_model":
        key["model_budgets"] = {"gpt-4o": budget}
        extra["model"] = "gpt-4o"
    elif entity == "end_user":
        await create(app.admin, "end-users", {"id": "cust-9", "budget": budget})
        extra["end_user"] = "cust-9"
    elif entity == "tag":
        await create(app.admin, "tags", {"id": "search", "budget": budget})
        extra["tags"] = ["search"]
    return await create_key(app.admin, **key), extra


ENTITY_TYPES = ["org", "team", "user", "team_member", "key", "key_model", "end_user", "tag"]


@pytest.mark.parametrize("entity", ENTITY_TYPES)
async def test_every_entity_types_budget_refuses_once_spent_reaches_its_limit(pg_app: RunningApp, entity: str) -> None:
    secret, extra = await _budget_on(pg_app, entity)
    first = await authorize(pg_app.gateway, request_id="r1", api_key=secret, estimated_cost="0.40", **extra)
    assert first["decision"] == "allow", first["reasons"]
    await record(pg_app.gateway, request_id="r1", cost="1.00", outcome="success")

    refused = await authorize(pg_app.gateway, request_id="r2", api_key=secret, **extra)

    assert refused["decision"] == "deny"
    assert refused["reservation"] is None
    reasons = [(r["code"], r["entity"]["type"]) for r in refused["reasons"]]
    assert reasons == [("budget_exceeded", entity)]
    assert refused["reasons"][0]["spent"] == "1.000000" and refused["reasons"][0]["limit"] == "1.000000"


async def test_estimate_that_does_not_fit_is_refused_and_reserves_nothing(any_app: RunningApp) -> None:
    secret = await create_key(any_app.admin, id="k1", budget={"max_budget": "0.10"})
    await authorize(any_app.gateway, request_id="r1", api_key=secret, estimated_cost="0.07")

    refused = await authorize(any_app.gateway, request_id="r2", api_key=secret, estimated_cost="0.04")
    fits = await authorize(any_app.gateway, request_id="r3", api_key=secret, estimated_cost="0.03")

    assert refused["decision"] == "deny" and fits["decision"] == "allow"
    assert (await ledger(any_app.admin, "keys/k1"))["reserved"] == "0.100000"


# -- key problems ---------------------------------------------------------------------------------

async def test_unknown_key_is_refused_as_invalid_key(any_app: RunningApp) -> None:
    body = await authorize(any_app.gateway, request_id="r1", api_key="sk-sg-not-a-key")
    assert body["decision"] == "deny"
    assert [r["code"] for r in body["reasons"]] == ["invalid_key"]
    assert body["charges"] == []


async def test_blocked_deleted_expired_and_model_restricted_keys_are_refused(any_app: RunningApp) -> None:
    blocked = await create_key(any_app.admin, id="blocked")
    await any_app.admin.patch("/v1/admin/keys/blocked", json={"blocked": True})
    deleted = await create_key(any_app.admin, id="deleted")
    await any_app.admin.delete("/v1/admin/keys/deleted")
    expiring = await create_key(any_app.admin, id="expiring", expires_at=(any_app.runtime.clock() + timedelta(hours=1)).isoformat())
    restricted = await create_key(any_app.admin, id="restricted", models=["gpt-4o-mini"])
    any_app.runtime.facts.invalidate()

    codes = {}
    for name, secret, extra in [
        ("blocked", blocked, {}), ("deleted", deleted, {}), ("restricted", restricted, {"model": "gpt-4o"}),
    ]:
        codes[name] = [r["code"] for r in (await authorize(any_app.gateway, request_id=name, api_key=secret, **extra))["reasons"]]
    real_clock = any_app.runtime.clock
    any_app.runtime.clock = lambda: real_clock() + timedelta(hours=2)
    expired = await authorize(any_app.gateway, request_id="expired", api_key=expiring)

    assert codes == {"blocked": ["key_blocked"], "deleted": ["invalid_key"], "restricted": ["model_not_allowed"]}
    assert [r["code"] for r in expired["reasons"]] == ["key_expired"]


async def test_a_block_applies_to_the_next_authorize_without_waiting(any_app: RunningApp) -> None:
    secret = await create_key(any_app.admin, id="k1")
    assert (await authorize(any_app.gateway, request_id="r1", api_key=secret))["decision"] == "allow"
    await any_app.admin.patch("/v1/admin/keys/k1", json={"blocked": True})
    assert (await authorize(any_app.gateway, request_id="r2", api_key=secret))["decision"] == "deny"


# -- idempotency, exactly once, conflicts -----------------------------------------------------------

async def test_repeated_authorize_returns_the_first_decision_and_reserves_nothing_more(any_app: RunningApp) -> None:
    secret = await create_key(any_app.admin, id="k1", budget={"max_budget": "1.00"})
    first = await authorize(any_app.gateway, request_id="r1", api_key=secret, estimated_cost="0.30")
    again = await authorize(any_app.gateway, request_id="r1", api_key=secret, estimated_cost="0.30")

    assert again == first
    assert (await ledger(any_app.admin, "keys/k1"))["reserved"] == "0.300000"


async def test_retried_record_charges_once_and_says_duplicate(any_app: RunningApp) -> None:
    secret = await create_key(any_app.admin, id="k1", budget={"max_budget": "1.00"})
    await authorize(any_app.gateway, request_id="r1", api_key=secret, estimated_cost="0.30")

    first = await record(any_app.gateway, request_id="r1", cost="0.25", outcome="success")
    retries = [await record(any_app.gateway, request_id="r1", cost="0.25", outcome="success") for _ in range(3)]

    assert first["duplicate"] is False
    assert all(r["duplicate"] is True and r["charges"] == first["charges"] for r in retries)
    key_ledger = await ledger(any_app.admin, "keys/k1")
    assert (key_ledger["spent"], key_ledger["reserved"]) == ("0.250000", "0.000000")


async def test_record_with_another_cost_for_the_same_request_is_a_conflict(any_app: RunningApp) -> None:
    secret = await create_key(any_app.admin, id="k1")
    await authorize(any_app.gateway, request_id="r1", api_key=secret)
    await record(any_app.gateway, request_id="r1", cost="0.25", outcome="success")

    response = await any_app.gateway.post("/v1/record", json={"request_id": "r1", "cost": "0.26", "outcome": "success"})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    assert (await ledger(any_app.admin, "keys/k1"))["spent"] == "0.250000"


async def test_failure_releases_the_reservation_and_charges_only_the_cost_it_carries(any_app: RunningApp) -> None:
    secret = await create_key(any_app.admin, id="k1", budget={"max_budget": "1.00"})
    await authorize(any_app.gateway, request_id="r1", api_key=secret, estimated_cost="0.50")
    await authorize(any_app.gateway, request_id="r2", api_key=secret, estimated_cost="0.40")

    await record(any_app.gateway, request_id="r1", outcome="failure")
    await record(any_app.gateway, request_id="r2", cost="0.01", outcome="failure")

    key_ledger = await ledger(any_app.admin, "keys/k1")
    assert (key_ledger["spent"], key_ledger["reserved"]) == ("0.010000", "0.000000")


async def test_record_without_authorize_is_attributed_by_the_same_rule(any_app: RunningApp) -> None:
    await _org_team_user(any_app)
    secret = await create_key(any_app.admin, id="k-team", team_id="search", user_id="ada")
    authorized = await authorize(any_app.gateway, request_id="a1", api_key=secret, end_user="c1")

    direct = await record(any_app.gateway, request_id="d1", api_key=secret, end_user="c1", cost="0.10", outcome="success")

    assert charged_entities(direct) == charged_entities(authorized)


async def test_record_without_authorize_or_api_key_says_what_to_send(any_app: RunningApp) -> None:
    response = await any_app.gateway.post("/v1/record", json={"request_id": "nobody", "cost": "0.1", "outcome": "success"})
    assert response.status_code == 422
    assert "api_key" in response.json()["error"]["message"]


async def test_abandoned_reservation_is_released_when_it_expires(any_app: RunningApp) -> None:
    secret = await create_key(any_app.admin, id="k1", budget={"max_budget": "1.00"})
    await authorize(any_app.gateway, request_id="r1", api_key=secret, estimated_cost="0.90")
    assert (await authorize(any_app.gateway, request_id="r2", api_key=secret, estimated_cost="0.20"))["decision"] == "deny"

    later = any_app.runtime.clock() + timedelta(seconds=any_app.settings.reservation_ttl + 1)
    released = await any_app.runtime.counters.expire(now=later)

    assert released == 1
    assert (await ledger(any_app.admin, "keys/k1"))["reserved"] == "0.000000"
    assert (await authorize(any_app.gateway, request_id="r3", api_key=secret, estimated_cost="0.20"))["decision"] == "allow"


# -- money and periods -----------------------------------------------------------------------------

async def test_money_is_exact_from_api_to_ledger(any_app: RunningApp) -> None:
    secret = await create_key(any_app.admin, id="k1")
    costs = ["0.1"] * 10 + ["0.000000001"] * 3
    for i, cost in enumerate(costs):
        await record(any_app.gateway, request_id=f"m{i}", api_key=secret, cost=cost, outcome="success")
    # JSON numbers are read as the decimals they spell, never as binary floats.
    await record(any_app.gateway, request_id="n1", api_key=secret, cost=0.1, outcome="success")

    assert Decimal((await ledger(any_app.admin, "keys/k1"))["spent"]) == Decimal("1.100000003")


@pytest.mark.parametrize("entity", ENTITY_TYPES)
async def test_every_entity_types_budget_starts_fresh_in_its_next_period(pg_app: RunningApp, entity: str) -> None:
    """Seed failure 4: an org budget never reset. No reset job here: periods are part of the ledger id."""
    secret, extra = await _budget_on(pg_app, entity)
    daily = {"max_budget": "1.00", "duration": "1d", "reset": "calendar"}
    patch_paths = {
        "org": "orgs/acme", "team": "teams/search", "user": "users/ada", "team_member": "teams/search/members/ada",
        "key": "keys/k1", "end_user": "end-users/cust-9", "tag": "tags/search",
    }
    if entity == "key_model":
        response = await pg_app.admin.patch("/v1/admin/keys/k1", json={"model_budgets": {"gpt-4o": daily}})
    else:
        response = await pg_app.admin.patch(f"/v1/admin/{patch_paths[entity]}", json={"budget": daily})
    assert response.status_code == 200, response.text
    pg_app.runtime.facts.invalidate()
    await authorize(pg_app.gateway, request_id="r1", api_key=secret, **extra)
    await record(pg_app.gateway, request_id="r1", cost="1.00", outcome="success")
    assert (await authorize(pg_app.gateway, request_id="r2", api_key=secret, **extra))["decision"] == "deny"

    real_clock = pg_app.runtime.clock
    pg_app.runtime.clock = lambda: real_clock() + timedelta(days=1)
    next_day = await authorize(pg_app.gateway, request_id="r3", api_key=secret, **extra)

    assert next_day["decision"] == "allow", next_day["reasons"]
    fresh = [c for c in next_day["charges"] if c["entity"]["type"] == entity]
    assert fresh and fresh[0]["spent"] == "0.000000" and fresh[0]["window"] == "1d"


async def test_soft_budget_crossed_is_an_alert_not_a_refusal(any_app: RunningApp) -> None:
    secret = await create_key(any_app.admin, id="k1", budget={"max_budget": "1.00", "soft_budget": "0.50"})
    await record(any_app.gateway, request_id="r1", api_key=secret, cost="0.60", outcome="success")

    body = await authorize(any_app.gateway, request_id="r2", api_key=secret)

    assert body["decision"] == "allow"
    assert [(a["code"], a["entity"]["id"]) for a in body["alerts"]] == [("soft_budget_crossed", "k1")]


# -- concurrency: two replicas, one Postgres, one Redis --------------------------------------------

@pytest.mark.parametrize("counters", ["redis", "sql"])
async def test_concurrent_authorizes_on_two_replicas_never_overshoot_the_limit(
    app_factory: Any, clean_pg: str, redis_url: str, counters: str
) -> None:
    redis = redis_url if counters == "redis" else None
    first = await app_factory(database_url=clean_pg, redis_url=redis)
    second = await app_factory(database_url=clean_pg, redis_url=redis)
    secret = await create_key(first.admin, id="k1", budget={"max_budget": "0.10"})

    async def one(i: int) -> str:
        replica = first if i % 2 else second
        return (await authorize(replica.gateway, request_id=f"c{i}", api_key=secret, estimated_cost="0.03"))["decision"]

    decisions = await asyncio.gather(*(one(i) for i in range(50)))

    assert decisions.count("allow") == 3
    assert (await ledger(first.admin, "keys/k1"))["reserved"] == "0.090000"
