"""Trusted gateway identity: authorize and record with a `principal` instead of a Spendgate secret.

A gateway that authenticates its own keys asserts who the caller is (key, user, team, org ids)
under its gateway token. Entities never seen are created on first sight with the default budgets
of SPENDGATE_DEFAULT_BUDGETS; admins then manage them by id; the same Rego decides, and sees
`input.identity.source`. Every end-to-end test runs on PostgreSQL+Redis and on SQLite.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from support.app import RunningApp
from spendgate.client import Principal as ClientPrincipal
from spendgate.client.protocol import authorize_body, record_body
from spendgate.db import create_engine, session_factory
from spendgate.facts import FactsCache
from spendgate.first_sight import no_secret_hash
from spendgate.identity import Principal
from spendgate.migrate import upgrade
from spendgate.settings import DEFAULT_POLICY_DIR, Settings
from support.app import AppFactory
from support.scenario import authorize, charged_entities, create, create_key, ledger, record

DEFAULTS = (
    '{"org": {"max_budget": "1000", "duration": "1mo", "reset": "calendar"},'
    ' "team": {"max_budget": "100", "duration": "1mo"},'
    ' "user": {"max_budget": "10"},'
    ' "team_member": {"max_budget": "20", "duration": "1w"},'
    ' "key": [{"max_budget": "5", "duration": "1d"}, {"max_budget": "50", "duration": "1mo"}]}'
)
TEAM_CALLER = {"key": "gw-k1", "user": "ada", "team": "search", "org": "acme"}


@pytest.fixture(params=["postgres+redis", "sqlite"])
async def gateway_app(
    request: pytest.FixtureRequest, app_factory: AppFactory, clean_pg: str, redis_url: str, sqlite_url: str
) -> RunningApp:
    """The app with default budgets for first-seen entities, on each backend in turn."""
    if request.param == "sqlite":
        return await app_factory(database_url=sqlite_url, default_budgets=DEFAULTS)
    return await app_factory(database_url=clean_pg, redis_url=redis_url, default_budgets=DEFAULTS)


async def _get(app: RunningApp, path: str) -> dict[str, Any]:
    response = await app.admin.get(f"/v1/admin/{path}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _windows(budget: Any) -> set[tuple[str, str | None]]:
    items = budget if isinstance(budget, list) else [budget]
    return {(item["max_budget"], item["duration"]) for item in items}


def _ledgers(body: dict[str, Any]) -> set[tuple[str, str, str | None]]:
    return {(c["entity"]["type"], c["entity"]["id"], c["window"]) for c in body["charges"]}


# --- first sight ------------------------------------------------------------------------------


async def test_first_sight_creates_every_entity_of_the_principal_with_its_default_budget(
    gateway_app: RunningApp,
) -> None:
    decided = await authorize(gateway_app.gateway, request_id="r1", principal=TEAM_CALLER, estimated_cost="0.01")
    assert decided["decision"] == "allow", decided["reasons"]
    assert decided["key_id"] == "gw-k1"
    assert charged_entities(decided) == {
        ("key", "gw-k1"), ("team", "search"), ("team_member", "search/ada"), ("org", "acme"),
    }

    key = await _get(gateway_app, "keys/gw-k1")
    assert (key["team_id"], key["user_id"], key["key_prefix"]) == ("search", "ada", "")
    assert _windows(key["budget"]) == {("5.000000", "1d"), ("50.000000", "1mo")}
    team = await _get(gateway_app, "teams/search")
    assert (team["org_id"], _windows(team["budget"])) == ("acme", {("100.000000", "1mo")})
    user = await _get(gateway_app, "users/ada")
    assert (user["org_id"], _windows(user["budget"])) == (None, {("10.000000", None)})  # the org is the team's
    member = await _get(gateway_app, "teams/search/members/ada")
    assert _windows(member["budget"]) == {("20.000000", "1w")}
    org = await _get(gateway_app, "orgs/acme")
    assert (org["budget"]["reset"], _windows(org["budget"])) == ("calendar", {("1000.000000", "1mo")})


async def test_a_personal_principal_gives_its_user_the_asserted_org(gateway_app: RunningApp) -> None:
    caller = {"key": "gw-personal", "user": "bob", "org": "acme"}
    decided = await authorize(gateway_app.gateway, request_id="r1", principal=caller)
    assert charged_entities(decided) == {("key", "gw-personal"), ("user", "bob"), ("org", "acme")}
    assert (await _get(gateway_app, "users/bob"))["org_id"] == "acme"


async def test_a_budget_an_admin_sets_on_a_first_seen_team_refuses_what_exceeds_it(gateway_app: RunningApp) -> None:
    await authorize(gateway_app.gateway, request_id="seen", principal=TEAM_CALLER)
    response = await gateway_app.admin.patch("/v1/admin/teams/search", json={"budget": {"max_budget": "1"}})
    assert response.status_code == 200, response.text

    decided = await authorize(gateway_app.gateway, request_id="big", principal=TEAM_CALLER, estimated_cost="2")
    assert decided["decision"] == "deny"
    assert [(r["code"], r["entity"]) for r in decided["reasons"]] == [
        ("budget_exceeded", {"type": "team", "id": "search"})
    ]


async def test_fifty_concurrent_first_sight_authorizes_create_the_new_team_once(gateway_app: RunningApp) -> None:
    decisions = await asyncio.gather(*(
        authorize(gateway_app.gateway, request_id=f"r{i}", estimated_cost="0.01",
                  principal={"key": f"gw-k{i}", "user": f"u{i}", "team": "swarm", "org": "hive"})
        for i in range(50)
    ))
    assert [d["decision"] for d in decisions] == ["allow"] * 50
    team = await _get(gateway_app, "teams/swarm")
    assert isinstance(team["budget"], dict), team["budget"]  # one window: its default budget was added once
    assert _windows(team["budget"]) == {("100.000000", "1mo")}
    assert isinstance((await _get(gateway_app, "orgs/hive"))["budget"], dict)
    assert (await ledger(gateway_app.admin, "teams/swarm", "1mo"))["reserved"] == "0.500000"


# --- record -----------------------------------------------------------------------------------

CALLERS = {
    "team key": TEAM_CALLER,
    "personal key": {"key": "gw-k2", "user": "bob", "org": "acme"},
    "service key": {"key": "gw-k3"},
}


@pytest.mark.parametrize("caller", CALLERS.values(), ids=CALLERS.keys())
async def test_a_record_with_a_principal_and_no_authorize_charges_the_ledgers_authorize_would(
    gateway_app: RunningApp, caller: dict[str, Any]
) -> None:
    attribution = {"principal": caller, "model": "gpt-4o", "end_user": "cust-9", "tags": ["search"]}
    authorized = await authorize(gateway_app.gateway, request_id="with-authorize", **attribution)
    recorded = await record(gateway_app.gateway, request_id="without", cost="0.25", outcome="success", **attribution)
    assert recorded["duplicate"] is False
    assert _ledgers(recorded) == _ledgers(authorized)
    assert ("key", caller["key"]) in charged_entities(recorded)
    key_ledger = await ledger(gateway_app.admin, f"keys/{caller['key']}", "1d")
    assert Decimal(key_ledger["spent"]) == Decimal("0.25")


async def test_a_record_with_a_principal_first_sees_its_entities_too(gateway_app: RunningApp) -> None:
    recorded = await record(gateway_app.gateway, request_id="r1", cost="0.5", outcome="success", principal=TEAM_CALLER)
    assert charged_entities(recorded) >= {("key", "gw-k1"), ("team", "search")}
    assert (await ledger(gateway_app.admin, "teams/search", "1mo"))["spent"] == "0.500000"


# --- blocked, revoked, existing keys ----------------------------------------------------------

BLOCKABLE = {
    "key": ("keys/gw-k1", {"type": "key", "id": "gw-k1"}),
    "team": ("teams/search", {"type": "team", "id": "search"}),
    "user": ("users/ada", {"type": "user", "id": "ada"}),
    "team member": ("teams/search/members/ada", {"type": "team_member", "id": "search/ada"}),
    "org": ("orgs/acme", {"type": "org", "id": "acme"}),
}


@pytest.mark.parametrize(("path", "entity"), BLOCKABLE.values(), ids=BLOCKABLE.keys())
async def test_a_blocked_first_seen_entity_refuses_with_key_blocked_naming_it(
    gateway_app: RunningApp, path: str, entity: dict[str, str]
) -> None:
    assert (await authorize(gateway_app.gateway, request_id="before", principal=TEAM_CALLER))["decision"] == "allow"
    response = await gateway_app.admin.patch(f"/v1/admin/{path}", json={"blocked": True})
    assert response.status_code == 200, response.text
    decided = await authorize(gateway_app.gateway, request_id="after", principal=TEAM_CALLER)
    assert decided["decision"] == "deny"
    assert [(r["code"], r["entity"]) for r in decided["reasons"]] == [("key_blocked", entity)]


async def test_an_expiry_and_a_model_list_an_admin_sets_on_a_first_seen_key_apply(gateway_app: RunningApp) -> None:
    await authorize(gateway_app.gateway, request_id="seen", principal=TEAM_CALLER)
    expires_at = (gateway_app.runtime.clock() + timedelta(hours=1)).isoformat()
    response = await gateway_app.admin.patch(
        "/v1/admin/keys/gw-k1", json={"expires_at": expires_at, "models": ["gpt-4o-mini"]}
    )
    assert response.status_code == 200, response.text
    restricted = await authorize(gateway_app.gateway, request_id="model", principal=TEAM_CALLER, model="gpt-4o")
    real_clock = gateway_app.runtime.clock
    gateway_app.runtime.clock = lambda: real_clock() + timedelta(hours=2)
    expired = await authorize(gateway_app.gateway, request_id="late", principal=TEAM_CALLER, model="gpt-4o-mini")

    assert [r["code"] for r in restricted["reasons"]] == ["model_not_allowed"]
    assert [r["code"] for r in expired["reasons"]] == ["key_expired"]


async def test_a_deleted_key_named_by_a_principal_stays_revoked(gateway_app: RunningApp) -> None:
    await authorize(gateway_app.gateway, request_id="before", principal=TEAM_CALLER)
    assert (await gateway_app.admin.delete("/v1/admin/keys/gw-k1")).status_code == 204
    decided = await authorize(gateway_app.gateway, request_id="after", principal=TEAM_CALLER)
    assert [r["code"] for r in decided["reasons"]] == ["invalid_key"]
    assert (await gateway_app.admin.get("/v1/admin/keys/gw-k1")).status_code == 404


async def test_a_principal_naming_a_key_with_a_secret_is_that_key_attributed_as_asserted(
    gateway_app: RunningApp,
) -> None:
    await create(gateway_app.admin, "teams", {"id": "old-team", "name": "Old"})
    secret = await create_key(gateway_app.admin, id="k-both", team_id="old-team", budget={"max_budget": "3"})
    by_secret = await authorize(gateway_app.gateway, request_id="secret", api_key=secret)
    assert charged_entities(by_secret) == {("key", "k-both"), ("team", "old-team")}

    by_gateway = await authorize(gateway_app.gateway, request_id="gateway", principal={"key": "k-both", "team": "new"})
    assert by_gateway["decision"] == "allow"
    assert charged_entities(by_gateway) == {("key", "k-both"), ("team", "new")}  # the gateway's fact wins
    key = await _get(gateway_app, "keys/k-both")
    assert (key["team_id"], _windows(key["budget"])) == ("old-team", {("3.000000", None)})  # the row is untouched


async def test_a_key_created_from_a_principal_has_no_secret_that_matches(gateway_app: RunningApp) -> None:
    await authorize(gateway_app.gateway, request_id="seen", principal=TEAM_CALLER)
    for n, candidate in enumerate((no_secret_hash("gw-k1"), "gw-k1")):
        decided = await authorize(gateway_app.gateway, request_id=f"try-{n}", api_key=candidate)
        assert [r["code"] for r in decided["reasons"]] == ["invalid_key"]


# --- the request body and the token ---------------------------------------------------------


@pytest.mark.parametrize("route", ["/v1/authorize", "/v1/record"])
async def test_a_body_with_both_api_key_and_principal_is_refused_naming_both(
    gateway_app: RunningApp, route: str
) -> None:
    body = {"request_id": "r1", "api_key": "sk-sg-x", "principal": TEAM_CALLER, "cost": "0", "outcome": "success"}
    if route == "/v1/authorize":
        body = {k: v for k, v in body.items() if k not in ("cost", "outcome")}
    response = await gateway_app.gateway.post(route, json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert "api_key" in error["message"] and "principal" in error["message"]


async def test_an_authorize_with_neither_api_key_nor_principal_is_refused_naming_both(gateway_app: RunningApp) -> None:
    response = await gateway_app.gateway.post("/v1/authorize", json={"request_id": "r1"})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "api_key" in message and "principal" in message


async def test_a_record_with_no_authorize_and_no_identity_asks_for_one(gateway_app: RunningApp) -> None:
    response = await gateway_app.gateway.post("/v1/record", json={"request_id": "r1", "cost": "1", "outcome": "success"})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "api_key or principal" in message


BAD_PRINCIPALS = {
    "no key": ({"team": "t"}, "principal.key"),
    "slash": ({"key": "a/b"}, "principal.key"),
    "empty team": ({"key": "k", "team": ""}, "principal.team"),
    "long user": ({"key": "k", "user": "u" * 201}, "principal.user"),
    "unknown field": ({"key": "k", "project": "p"}, "principal.project"),
}


@pytest.mark.parametrize(("principal", "field"), BAD_PRINCIPALS.values(), ids=BAD_PRINCIPALS.keys())
async def test_a_malformed_principal_is_refused_naming_the_field(
    gateway_app: RunningApp, principal: dict[str, Any], field: str
) -> None:
    response = await gateway_app.gateway.post("/v1/authorize", json={"request_id": "r1", "principal": principal})
    assert response.status_code == 422
    assert field in response.json()["error"]["message"]


async def test_only_the_gateway_token_may_assert_a_principal(gateway_app: RunningApp) -> None:
    body = {"request_id": "r1", "principal": {"key": "gw-intruder", "team": "intruders"}}
    for client in (gateway_app.admin, gateway_app.anonymous):
        response = await client.post("/v1/authorize", json=body)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
    assert (await gateway_app.admin.get("/v1/admin/teams/intruders")).status_code == 404
    assert (await gateway_app.admin.get("/v1/admin/keys/gw-intruder")).status_code == 404


# --- the policy sees where the identity came from -----------------------------------------------

_GATEWAY_ONLY = """package spendgate.admission

reasons contains {
	"code": "key_blocked",
	"entity": {"type": "key", "id": input.key.id},
	"message": "this key may only be used through the gateway",
} if {
	input.key.id == "gw-only"
	input.identity.source != "gateway"
}
"""


async def test_a_policy_can_decide_by_where_the_identity_came_from(
    app_factory: AppFactory, sqlite_url: str, tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, policies)
    (policies / "spendgate" / "admission" / "gateway_only.rego").write_text(_GATEWAY_ONLY)
    app = await app_factory(database_url=sqlite_url, policy_dir=policies)
    secret = await create_key(app.admin, id="gw-only")

    by_secret = await authorize(app.gateway, request_id="secret", api_key=secret)
    assert [r["code"] for r in by_secret["reasons"]] == ["key_blocked"]
    by_gateway = await authorize(app.gateway, request_id="gateway", principal={"key": "gw-only"})
    assert by_gateway["decision"] == "allow", by_gateway["reasons"]


# --- settings ---------------------------------------------------------------------------------

BAD_DEFAULTS = {
    "not json": ("{team", "SPENDGATE_DEFAULT_BUDGETS"),
    "unknown type": ('{"project": {"max_budget": "1"}}', "project"),
    "bad budget": ('{"team": {"max_budget": "-1"}}', "team.max_budget"),
    "same window twice": ('{"key": [{"max_budget": "1"}, {"max_budget": "2"}]}', "same duration"),
}


@pytest.mark.parametrize(("value", "named"), BAD_DEFAULTS.values(), ids=BAD_DEFAULTS.keys())
def test_bad_default_budgets_stop_the_service_naming_the_variable(value: str, named: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, default_budgets=value)  # type: ignore[call-arg]
    message = str(caught.value)
    assert "SPENDGATE_DEFAULT_BUDGETS" in message and named in message


# --- the facts cache --------------------------------------------------------------------------


class SteppedClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def cache(sqlite_url: str) -> AsyncIterator[tuple[FactsCache, SteppedClock]]:
    settings = Settings(_env_file=None, database_url=sqlite_url)  # type: ignore[call-arg]
    engine = create_engine(settings)
    await upgrade(engine)
    clock = SteppedClock()
    yield FactsCache(session_factory(engine), ttl_seconds=0.5, settings=settings, clock=clock), clock
    await engine.dispose()


async def test_principal_facts_are_cached_apart_from_secrets_and_no_longer_than_their_lifetime(
    cache: tuple[FactsCache, SteppedClock],
) -> None:
    facts, clock = cache
    principal = Principal(key="k1", team="t1")

    async def load() -> Any:
        return await facts.load(principal=principal, model=None, end_user=None, tags=())

    first = await load()
    assert (first.identity_source, first.key.id, first.team.id) == ("gateway", "k1", "t1")
    by_secret = await facts.load(api_key="k1", model=None, end_user=None, tags=())
    assert (by_secret.key, by_secret.identity_source) == (None, "api_key")  # not the principal's entry
    clock.now += 0.4
    assert await load() is first
    clock.now += 0.2
    assert await load() is not first


# --- the client -------------------------------------------------------------------------------


def test_the_client_sends_a_principal_instead_of_an_api_key() -> None:
    principal = ClientPrincipal(key="gw-k1", team="search")
    body = authorize_body(request_id="r1", api_key=None, principal=principal, model=None, estimated_cost=None,
                          end_user=None, tags=())
    assert body == {"request_id": "r1", "tags": [],
                    "principal": {"key": "gw-k1", "user": None, "team": "search", "org": None}}
    recorded = record_body(request_id="r1", cost="1", outcome="success", api_key=None, principal=principal,
                           model=None, end_user=None, tags=())
    assert recorded["principal"] == body["principal"] and "api_key" not in recorded
    assert "principal" not in record_body(request_id="r1", cost="1", outcome="success", api_key=None,
                                          model=None, end_user=None, tags=())
    for both_or_neither in ({"api_key": "sk-sg-x", "principal": principal}, {"api_key": None}):
        with pytest.raises(ValueError, match="exactly one of api_key"):
            authorize_body(request_id="r1", model=None, estimated_cost=None, end_user=None, tags=(),
                           **both_or_neither)  # type: ignore[arg-type]
