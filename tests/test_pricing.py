"""Usage pricing end to end: authorize and record with `usage` instead of a cost, on PostgreSQL+Redis and SQLite.

The expected charge is computed here, independently of the policy, with Decimal from the shipped price
table (policies/spendgate/pricing/data.json): USD per token = table units / 1e15, rounded up to the nano-USD.
"""

from __future__ import annotations

import json
import shutil
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import pytest

from support.app import AppFactory, RunningApp
from spendgate.settings import DEFAULT_POLICY_DIR
from support.scenario import authorize, create, create_key, ledger, record

pytestmark = pytest.mark.asyncio

TABLE = json.loads((DEFAULT_POLICY_DIR / "spendgate" / "pricing" / "data.json").read_text(), parse_float=Decimal)


def usd(
    model: str, *, input_tokens: int, output_tokens: int = 0, cached_input_tokens: int = 0, reasoning_tokens: int = 0,
    basis_points: int = 0,
) -> str:
    """The price-table arithmetic in Decimal, as the API writes amounts (at least six decimals)."""
    row = TABLE["prices"][model]
    per_token = {field: Decimal(units) / 10**15 for field, units in row.items()}
    exact = (
        (input_tokens - cached_input_tokens) * per_token["input"]
        + cached_input_tokens * per_token.get("cached_input", per_token["input"])
        + (output_tokens - reasoning_tokens) * per_token["output"]
        + reasoning_tokens * per_token.get("reasoning", per_token["output"])
    )
    nano = Decimal("1e-9")
    cost = exact.quantize(nano, rounding=ROUND_CEILING)
    if basis_points:
        cost = (cost * (10_000 + basis_points) / 10_000).quantize(nano, rounding=ROUND_CEILING)
    text = f"{cost:.9f}"
    whole, fraction = text.split(".")
    return f"{whole}.{fraction.rstrip('0').ljust(6, '0')}"


async def _personal_key(app: RunningApp, **budget: Any) -> str:
    await create(app.admin, "orgs", {"id": "acme", "name": "Acme"})
    await create(app.admin, "users", {"id": "ada", "org_id": "acme"})
    if budget:
        response = await app.admin.patch("/v1/admin/users/ada", json={"budget": budget})
        assert response.status_code == 200, response.text
    return await create_key(app.admin, id="k1", user_id="ada")


async def test_record_with_usage_charges_the_price_table_arithmetic_to_the_nano_usd(any_app: RunningApp) -> None:
    secret = await _personal_key(any_app)
    await authorize(any_app.gateway, request_id="r1", api_key=secret, model="gpt-4o", estimated_cost="0.05")
    usage = {"input_tokens": 123_457, "cached_input_tokens": 1_001, "output_tokens": 9_999, "reasoning_tokens": 333}

    body = await record(any_app.gateway, request_id="r1", outcome="success", usage=usage)

    expected = usd("gpt-4o", **usage)
    assert expected == "0.40738125"  # by hand: 122456 * 2500 + 1001 * 1250 + (9666 + 333) * 10000 nano-USD
    assert body["cost"] == expected
    assert {c["amount"] for c in body["charges"]} == {expected}
    assert body["priced"] == {
        "model": "gpt-4o", "list_cost": expected, "adjustment": None, "policy_revision": body["policy_revision"],
    }
    user_ledger = await ledger(any_app.admin, "users/ada")
    assert (user_ledger["spent"], user_ledger["reserved"]) == (expected, "0.000000")


async def test_record_without_prior_authorize_prices_usage_for_the_ledgers_it_attributes(any_app: RunningApp) -> None:
    secret = await _personal_key(any_app)

    body = await record(any_app.gateway, request_id="r1", api_key=secret, model="openai/claude-sonnet-4-5",
                        outcome="failure", usage={"input_tokens": 1_000_000, "output_tokens": 2_000})

    assert body["cost"] == usd("claude-sonnet-4-5", input_tokens=1_000_000, output_tokens=2_000) == "3.030000"
    assert body["priced"]["model"] == "claude-sonnet-4-5"
    assert (await ledger(any_app.admin, "keys/k1"))["spent"] == "3.030000"


async def test_explicit_cost_and_estimate_win_over_usage(any_app: RunningApp) -> None:
    secret = await _personal_key(any_app)

    allowed = await authorize(any_app.gateway, request_id="r1", api_key=secret, model="gpt-4o", estimated_cost="0.07",
                              usage={"input_tokens": 10, "max_output_tokens": 10})
    recorded = await record(any_app.gateway, request_id="r1", outcome="success", cost="0.011",
                            usage={"input_tokens": 10, "output_tokens": 10})

    assert allowed["reservation"]["amount"] == "0.070000"
    assert (recorded["cost"], recorded["priced"]) == ("0.011000", None)
    assert (await ledger(any_app.admin, "users/ada"))["spent"] == "0.011000"


async def test_authorize_with_usage_reserves_exactly_the_priced_estimate(any_app: RunningApp) -> None:
    secret = await _personal_key(any_app)

    body = await authorize(any_app.gateway, request_id="r1", api_key=secret, model="o3",
                           usage={"input_tokens": 12_345, "max_output_tokens": 4_096})

    estimate = usd("o3", input_tokens=12_345, output_tokens=4_096)
    assert estimate == "0.057458"
    assert body["decision"] == "allow"
    assert body["reservation"]["amount"] == estimate
    assert (await ledger(any_app.admin, "users/ada"))["reserved"] == estimate


async def test_authorize_refuses_when_the_priced_estimate_exceeds_the_budget(any_app: RunningApp) -> None:
    secret = await _personal_key(any_app, max_budget="0.05")

    body = await authorize(any_app.gateway, request_id="r1", api_key=secret, model="o3",
                           usage={"input_tokens": 12_345, "max_output_tokens": 4_096})

    assert body["decision"] == "deny"
    reason = next(r for r in body["reasons"] if r["entity"] == {"type": "user", "id": "ada"})
    assert reason["code"] == "budget_exceeded"
    assert "estimated $0.057458 would exceed it" in reason["message"]


async def test_usage_for_a_model_without_a_price_is_refused_with_unknown_price(any_app: RunningApp) -> None:
    secret = await _personal_key(any_app)

    refused_authorize = await any_app.gateway.post("/v1/authorize", json={
        "request_id": "r1", "api_key": secret, "model": "acme-llm-1", "usage": {"input_tokens": 5},
    })
    refused_record = await any_app.gateway.post("/v1/record", json={
        "request_id": "r2", "api_key": secret, "model": "acme-llm-1", "outcome": "success",
        "usage": {"input_tokens": 5, "output_tokens": 5},
    })
    unnamed = await any_app.gateway.post("/v1/record", json={
        "request_id": "r3", "api_key": secret, "outcome": "success", "usage": {"input_tokens": 5, "output_tokens": 5},
    })
    with_cost = await record(any_app.gateway, request_id="r4", api_key=secret, model="acme-llm-1", outcome="success",
                             cost="0.5", usage={"input_tokens": 5, "output_tokens": 5})

    for response, field in ((refused_authorize, "estimated_cost"), (refused_record, "cost")):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "unknown_price"
        assert "model acme-llm-1 has no price" in error["message"]
        assert f"Send {field} explicitly" in error["message"]
        assert "spendgate prices refresh --model" in error["message"]
    assert unnamed.status_code == 422 and "names no model" in unnamed.json()["error"]["message"]
    assert with_cost["cost"] == "0.500000"
    assert (await ledger(any_app.admin, "keys/k1"))["spent"] == "0.500000"  # only the explicit cost landed


@pytest.mark.parametrize("usage, problem", [
    ({"input_tokens": 5, "output_tokens": 5, "cached_input_tokens": 6}, "cached_input_tokens is part of input_tokens"),
    ({"input_tokens": 5, "output_tokens": 5, "reasoning_tokens": 6}, "reasoning_tokens is part of output_tokens"),
    ({"input_tokens": 5}, "output_tokens"),
    ({"input_tokens": -1, "output_tokens": 5}, "input_tokens"),
    ({"input_tokens": 1_000_000_001, "output_tokens": 5}, "input_tokens"),
    ({"input_tokens": "5", "output_tokens": 5}, "input_tokens"),
    ({"input_tokens": 5, "output_tokens": 5, "audio_tokens": 1}, "audio_tokens"),
])
async def test_malformed_usage_is_refused_naming_the_field(
    pg_app: RunningApp, usage: dict[str, Any], problem: str
) -> None:
    secret = await _personal_key(pg_app)

    response = await pg_app.gateway.post("/v1/record", json={
        "request_id": "r1", "api_key": secret, "model": "gpt-4o", "outcome": "success", "usage": usage,
    })

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert problem in response.json()["error"]["message"]


async def test_a_retried_usage_record_is_a_duplicate_and_other_usage_a_conflict(any_app: RunningApp) -> None:
    secret = await _personal_key(any_app)
    usage = {"input_tokens": 1_000, "output_tokens": 100}
    await authorize(any_app.gateway, request_id="r1", api_key=secret, model="gpt-4.1", estimated_cost="0.01")
    first = await record(any_app.gateway, request_id="r1", outcome="success", usage=usage)

    again = await record(any_app.gateway, request_id="r1", outcome="success", usage=usage)
    other = await any_app.gateway.post("/v1/record", json={
        "request_id": "r1", "outcome": "success", "usage": {"input_tokens": 1_000, "output_tokens": 101},
    })

    assert (again["duplicate"], again["cost"]) == (True, first["cost"])
    assert other.status_code == 409, other.text
    assert (await ledger(any_app.admin, "users/ada"))["spent"] == first["cost"] == usd(
        "gpt-4.1", input_tokens=1_000, output_tokens=100)


def _policies_with(tmp_path: Path, *, adjustments: dict[str, Any], prices: dict[str, Any] | None = None) -> Path:
    """The shipped policies, with the operator's adjustments and extra prices in the price table."""
    policy_dir = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, policy_dir)
    table_file = policy_dir / "spendgate" / "pricing" / "data.json"
    table = json.loads(table_file.read_text())
    table["adjustments"] = adjustments
    table["prices"].update(prices or {})
    table_file.write_text(json.dumps(table))
    return policy_dir


async def test_cost_rounds_up_to_the_nano_usd_when_usage_costs_a_fraction_of_one(
    app_factory: AppFactory, sqlite_url: str, tmp_path: Path
) -> None:
    # Every shipped price is a whole number of nano-USD per token; an operator's may not be.
    policy_dir = _policies_with(tmp_path, adjustments={}, prices={"house-llm": {"input": 333_333, "output": 1}})
    app = await app_factory(database_url=sqlite_url, policy_dir=policy_dir)
    secret = await _personal_key(app)

    three = await record(app.gateway, request_id="r1", api_key=secret, model="house-llm", outcome="success",
                         usage={"input_tokens": 3, "output_tokens": 0})
    four = await record(app.gateway, request_id="r2", api_key=secret, model="house-llm", outcome="success",
                        usage={"input_tokens": 4, "output_tokens": 1})

    assert three["cost"] == "0.000000001"  # 0.999999 nano-USD, rounded up
    assert four["cost"] == "0.000000002"  # 1.333332 + 0.000001 nano-USD: one rounding of the sum


@pytest.mark.parametrize("backend", ["postgres+redis", "sqlite"])
async def test_operator_adjustments_apply_to_the_team_and_customer_charged(
    app_factory: AppFactory, clean_pg: str, redis_url: str, sqlite_url: str, tmp_path: Path, backend: str
) -> None:
    policy_dir = _policies_with(tmp_path, adjustments={"team": {"search": -1500}, "end_user": {"cust-9": 2500}})
    backend_settings = {"database_url": sqlite_url} if backend == "sqlite" else {
        "database_url": clean_pg, "redis_url": redis_url}
    app = await app_factory(policy_dir=policy_dir, **backend_settings)
    await create(app.admin, "orgs", {"id": "acme", "name": "Acme"})
    await create(app.admin, "teams", {"id": "search", "name": "Search", "org_id": "acme"})
    secret = await create_key(app.admin, id="k-team", team_id="search")
    usage = {"input_tokens": 200_000, "cached_input_tokens": 50_000, "output_tokens": 7_777}

    estimate = await authorize(app.gateway, request_id="r1", api_key=secret, model="claude-opus-4-5",
                               usage={"input_tokens": 200_000, "max_output_tokens": 8_000})
    team_only = await record(app.gateway, request_id="r1", outcome="success", usage=usage)
    customer = await record(app.gateway, request_id="r2", api_key=secret, model="claude-opus-4-5",
                            end_user="cust-9", outcome="success", usage=usage)

    assert estimate["reservation"]["amount"] == usd(
        "claude-opus-4-5", input_tokens=200_000, output_tokens=8_000, basis_points=-1500)
    assert team_only["cost"] == usd("claude-opus-4-5", **usage, basis_points=-1500)
    assert team_only["priced"]["list_cost"] == usd("claude-opus-4-5", **usage)
    assert team_only["priced"]["adjustment"] == {"entity": {"type": "team", "id": "search"}, "basis_points": -1500}
    # The customer's markup is more specific than the team's discount: it is the one that applies.
    assert customer["cost"] == usd("claude-opus-4-5", **usage, basis_points=2500)
    assert customer["priced"]["adjustment"]["entity"] == {"type": "end_user", "id": "cust-9"}
