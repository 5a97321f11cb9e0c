"""The service with an OPA server deciding (SPENDGATE_OPA_URL): same decisions, 503 when OPA is down.

The OPA server is tests/support/opa_compat.py evaluating with OPA's own Go engine, so "the same
decisions" compares regorus with OPA; its query count shows each decision really was OPA's.
"""

from __future__ import annotations

from typing import Any

import pytest

from support.app import RunningApp
from support.opa_compat import OpaCompatServer
from support.scenario import authorize, create, create_key, record

pytestmark = pytest.mark.asyncio


#: Authorize calls in `_scenario` that ask the policy (every one: none is a replay of an earlier request id).
SCENARIO_DECISIONS = 5


async def _scenario(app: RunningApp) -> list[dict[str, Any]]:
    await create(app.admin, "orgs", {"id": "acme", "name": "Acme"})
    await create(app.admin, "teams", {"id": "search", "name": "Search", "org_id": "acme"})
    await create(app.admin, "users", {"id": "ada", "org_id": "acme", "budget": {"max_budget": "1"}})
    await app.admin.post("/v1/admin/teams/search/members", json={"user_id": "ada"})
    team = await create_key(app.admin, id="k-team", team_id="search", user_id="ada", budget={"max_budget": "0.50"})
    personal = await create_key(app.admin, id="k-personal", user_id="ada")
    bodies = [
        await authorize(app.gateway, request_id="r1", api_key=team, end_user="c1", tags=["x"], estimated_cost="0.40"),
        await authorize(app.gateway, request_id="r2", api_key=team, estimated_cost="0.20"),
        await authorize(app.gateway, request_id="r3", api_key=personal, estimated_cost="0.10"),
        await authorize(app.gateway, request_id="r4", api_key="sk-sg-unknown"),
    ]
    await record(app.gateway, request_id="r1", cost="0.45", outcome="success")
    bodies.append(await authorize(app.gateway, request_id="r5", api_key=team))
    return bodies


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("reservation",)} | {
        "charges": [{k: v for k, v in c.items() if k not in ("period_start", "resets_at")} for c in body["charges"]]
    }


async def test_opa_and_embedded_services_make_identical_decisions(
    app_factory: Any, sqlite_url: str, tmp_path: Any, opa: OpaCompatServer
) -> None:
    # Figures read afresh for every decision: a refusal first decided on remembered figures is
    # decided again (SPENDGATE_FIGURES_MAX_AGE_SECONDS), which would make the query count vary.
    embedded = await app_factory(database_url=sqlite_url, figures_max_age_seconds=0)
    with_opa = await app_factory(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'opa.db'}", opa_url=opa.url, figures_max_age_seconds=0
    )
    queried_before = opa.data_queries

    by_opa = await _scenario(with_opa)
    queried = opa.data_queries - queried_before
    by_embedded = await _scenario(embedded)

    assert [_comparable(b) for b in by_opa] == [_comparable(b) for b in by_embedded]
    assert queried == SCENARIO_DECISIONS  # OPA made every one of the OPA-backed service's decisions
    assert opa.data_queries - queried_before == SCENARIO_DECISIONS  # and none of the embedded one's


async def test_each_authorize_asks_opa_once_and_a_replay_or_a_record_asks_nothing(
    app_factory: Any, sqlite_url: str, opa: OpaCompatServer
) -> None:
    app = await app_factory(database_url=sqlite_url, opa_url=opa.url)
    secret = await create_key(app.admin, id="k1", budget={"max_budget": "1"})
    queried = [opa.data_queries]

    for step in (
        authorize(app.gateway, request_id="r1", api_key=secret, estimated_cost="0.10"),
        authorize(app.gateway, request_id="r1", api_key=secret, estimated_cost="0.10"),  # a replay: the stored answer
        record(app.gateway, request_id="r1", cost="0.05", outcome="success"),  # attributed by its authorize
        authorize(app.gateway, request_id="r2", api_key="sk-sg-unknown"),  # an unknown key is the policy's call too
    ):
        await step
        queried.append(opa.data_queries)

    assert [after - before for before, after in zip(queried, queried[1:])] == [1, 0, 0, 1]


async def test_opa_down_is_503_naming_opa_and_recovers_by_itself(
    app_factory: Any, sqlite_url: str, opa: OpaCompatServer
) -> None:
    app = await app_factory(database_url=sqlite_url, opa_url=opa.url, opa_timeout_seconds=0.5)
    secret = await create_key(app.admin, id="k1")
    opa.go_down()
    try:
        down = await app.gateway.post("/v1/authorize", json={"request_id": "r1", "api_key": secret})
        ready = await app.anonymous.get("/readyz")
    finally:
        opa.come_back()

    assert down.status_code == 503
    assert down.json()["error"]["code"] == "unavailable" and "opa" in down.json()["error"]["message"]
    assert ready.status_code == 503
    assert opa.data_queries == 0
    assert (await authorize(app.gateway, request_id="r1", api_key=secret))["decision"] == "allow"
    assert opa.data_queries == 1  # the decision after OPA came back is OPA's


async def test_opa_fail_over_keeps_deciding_in_process_when_configured(
    app_factory: Any, sqlite_url: str, opa: OpaCompatServer
) -> None:
    app = await app_factory(database_url=sqlite_url, opa_url=opa.url, opa_timeout_seconds=0.5, opa_fail_over=True)
    secret = await create_key(app.admin, id="k1", budget={"max_budget": "0.10"})
    opa.go_down()
    try:
        allowed = await authorize(app.gateway, request_id="r1", api_key=secret, estimated_cost="0.10")
        refused = await authorize(app.gateway, request_id="r2", api_key=secret, estimated_cost="0.01")
    finally:
        opa.come_back()

    assert allowed["decision"] == "allow"
    assert [r["code"] for r in refused["reasons"]] == ["budget_exceeded"]
    assert opa.data_queries == 0  # both were decided in-process: none reached OPA
