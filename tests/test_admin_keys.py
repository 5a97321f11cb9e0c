"""Admin API for keys: the secret shown once, per-model budgets, expiry, revocation by deletion."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text

from spendgate.keys import hash_secret
from spendgate.tables import ApiKey
from support.app import RunningApp
from support.ledger_spend import ledger_ref, spend

A = "/v1/admin"


def _error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.json()
    return str(response.json()["error"]["message"])


async def _setup_people(running: RunningApp) -> None:
    await running.admin.post(f"{A}/orgs", json={"id": "o1", "name": "Org"})
    await running.admin.post(f"{A}/users", json={"id": "u1", "org_id": "o1"})
    await running.admin.post(f"{A}/teams", json={"id": "t1", "name": "Team", "org_id": "o1"})


# --- the secret ---------------------------------------------------------------------------


async def test_a_new_key_shows_its_secret_once_and_never_again(any_app: RunningApp) -> None:
    created = await any_app.admin.post(f"{A}/keys", json={"id": "k1", "name": "ci"})
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["key"]
    assert secret.startswith("sk-sg-") and len(secret) > 40
    assert secret.startswith(body["key_prefix"].removesuffix("…")) and body["key_prefix"] != secret
    assert {k: body[k] for k in ("id", "name", "user_id", "team_id", "models", "expires_at", "blocked")} == {
        "id": "k1",
        "name": "ci",
        "user_id": None,
        "team_id": None,
        "models": [],
        "expires_at": None,
        "blocked": False,
    }

    read = (await any_app.admin.get(f"{A}/keys/k1")).json()
    patched = (await any_app.admin.patch(f"{A}/keys/k1", json={"name": "ci-2"})).json()
    for shown in (read, patched):
        assert "key" not in shown and secret not in str(shown)
        assert shown["key_prefix"] == body["key_prefix"]


async def test_only_the_hash_of_a_secret_is_stored_and_nothing_logs_it(
    any_app: RunningApp, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        secret = (await any_app.admin.post(f"{A}/keys", json={"id": "k1"})).json()["key"]
    assert secret not in caplog.text

    async with any_app.runtime.sessions() as session:
        row = await session.get(ApiKey, "k1")
        conn = await session.connection()
        stored = [str(value) for value in (await conn.execute(text("SELECT * FROM keys"))).one()]
    assert row is not None and row.key_hash == hash_secret(secret)
    assert all(secret not in value and secret[6:] not in value for value in stored), "the secret itself is never stored"


async def test_two_keys_get_different_secrets_and_generated_ids(pg_app: RunningApp) -> None:
    first = (await pg_app.admin.post(f"{A}/keys", json={})).json()
    second = (await pg_app.admin.post(f"{A}/keys", json={})).json()
    assert first["id"].startswith("key_") and first["id"] != second["id"]
    assert first["key"] != second["key"]


# --- owners ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("owner", "expected"),
    [
        ({"user_id": "u1"}, (None, "u1")),
        ({"team_id": "t1"}, ("t1", None)),
        ({"team_id": "t1", "user_id": "u1"}, ("t1", "u1")),
        ({}, (None, None)),
    ],
    ids=["personal", "team", "team-key-of-a-non-member", "service"],
)
async def test_personal_team_and_service_keys_can_be_created(
    pg_app: RunningApp, owner: dict[str, str], expected: tuple[str | None, str | None]
) -> None:
    await _setup_people(pg_app)
    body = (await pg_app.admin.post(f"{A}/keys", json={"id": "k1", **owner})).json()
    assert (body["team_id"], body["user_id"]) == expected


@pytest.mark.parametrize(
    ("owner", "missing"), [({"user_id": "ghost"}, "user 'ghost'"), ({"team_id": "ghost"}, "team 'ghost'")]
)
async def test_a_key_for_a_missing_user_or_team_is_not_found(
    pg_app: RunningApp, owner: dict[str, str], missing: str
) -> None:
    assert missing in _error(await pg_app.admin.post(f"{A}/keys", json=owner), 404, "not_found")


@pytest.mark.parametrize("field", ["user_id", "team_id"])
async def test_a_key_owner_cannot_be_changed(pg_app: RunningApp, field: str) -> None:
    await _setup_people(pg_app)
    await pg_app.admin.post(f"{A}/keys", json={"id": "k1", "user_id": "u1"})
    message = _error(await pg_app.admin.patch(f"{A}/keys/k1", json={field: "u1"}), 422, "invalid_request")
    assert message.startswith(f"{field}: cannot be changed") and "create a new key" in message


async def test_a_duplicate_key_id_is_a_conflict(pg_app: RunningApp) -> None:
    await pg_app.admin.post(f"{A}/keys", json={"id": "k1"})
    assert "already exists" in _error(await pg_app.admin.post(f"{A}/keys", json={"id": "k1"}), 409, "conflict")


# --- settings of a key --------------------------------------------------------------------


async def test_a_key_has_models_and_a_budget_per_model_with_its_own_ledgers(any_app: RunningApp) -> None:
    created = await any_app.admin.post(
        f"{A}/keys",
        json={
            "id": "k1",
            "models": ["gpt-4o", "openai/gpt-4o-mini", "gpt-4o"],
            "budget": {"max_budget": "50", "duration": "1mo"},
            "model_budgets": {
                "gpt-4o": [{"max_budget": "5", "duration": "1d"}, {"max_budget": "20", "duration": "1w"}],
                "openai/gpt-4o-mini": {"max_budget": "1"},
            },
        },
    )
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["models"] == ["gpt-4o", "openai/gpt-4o-mini"], "duplicates are dropped, order kept"
    assert key["budget"]["max_budget"] == "50.000000" and key["ledgers"][0]["window"] == "1mo"
    assert [w["duration"] for w in key["model_budgets"]["gpt-4o"]] == ["1d", "1w"]
    assert key["model_budgets"]["openai/gpt-4o-mini"]["max_budget"] == "1.000000"
    assert [(item["window"], item["limit"]) for item in key["model_ledgers"]["gpt-4o"]] == [
        ("1d", "5.000000"),
        ("1w", "20.000000"),
    ]
    assert key["model_ledgers"]["openai/gpt-4o-mini"][0]["resets_at"] is None

    await spend(
        any_app.runtime,
        ledger_ref("key_model", "k1/openai/gpt-4o-mini", key["model_ledgers"]["openai/gpt-4o-mini"][0]),
        "0.5",
    )
    read = (await any_app.admin.get(f"{A}/keys/k1")).json()
    assert read["model_ledgers"]["openai/gpt-4o-mini"][0]["spent"] == "0.500000"
    assert read["model_budgets"] == key["model_budgets"]


async def test_patching_model_budgets_replaces_the_whole_map(pg_app: RunningApp) -> None:
    await pg_app.admin.post(
        f"{A}/keys",
        json={"id": "k1", "model_budgets": {"a": {"max_budget": "1", "duration": "1d"}, "b": {"max_budget": "2"}}},
    )
    raised = (
        await pg_app.admin.patch(f"{A}/keys/k1", json={"model_budgets": {"a": {"max_budget": "3", "duration": "1d"}}})
    ).json()
    assert list(raised["model_budgets"]) == ["a"] and raised["model_budgets"]["a"]["max_budget"] == "3.000000"
    assert list(raised["model_ledgers"]) == ["a"]

    untouched = (await pg_app.admin.patch(f"{A}/keys/k1", json={"name": "n"})).json()
    assert untouched["model_budgets"] == raised["model_budgets"]

    cleared = (await pg_app.admin.patch(f"{A}/keys/k1", json={"model_budgets": None})).json()
    assert cleared["model_budgets"] == {} and cleared["model_ledgers"] == {}


async def test_a_key_patch_sets_name_budget_models_expiry_and_block(pg_app: RunningApp) -> None:
    await pg_app.admin.post(f"{A}/keys", json={"id": "k1", "name": "old", "models": ["a"]})
    expires = (datetime.now(timezone.utc) + timedelta(days=30)).replace(microsecond=0)
    patched = await pg_app.admin.patch(
        f"{A}/keys/k1",
        json={
            "name": None,
            "budget": {"max_budget": "2", "duration": "1h"},
            "models": [],
            "expires_at": expires.isoformat(),
            "blocked": True,
        },
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["name"] is None and body["models"] == [] and body["blocked"] is True
    assert body["expires_at"] == expires.isoformat().replace("+00:00", "Z")
    assert body["ledgers"][0]["window"] == "1h" and body["ledgers"][0]["limit"] == "2.000000"
    assert (await pg_app.admin.get(f"{A}/keys/k1")).json() == body

    never = (await pg_app.admin.patch(f"{A}/keys/k1", json={"expires_at": None})).json()
    assert never["expires_at"] is None


async def test_an_expiry_in_another_time_zone_is_returned_in_utc(pg_app: RunningApp) -> None:
    body = (await pg_app.admin.post(f"{A}/keys", json={"expires_at": "2099-01-01T02:00:00+02:00"})).json()
    assert body["expires_at"] == "2099-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"expires_at": "2099-01-01T00:00:00"}, "expires_at", "time zone"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at", "must be in the future"),
        ({"expires_at": "tomorrow"}, "expires_at", ""),
        ({"models": ["gpt-4o", ""]}, "models[1]", "at least 1 character"),
        ({"models": "gpt-4o"}, "models", "valid list"),
        ({"model_budgets": {"gpt-4o": {"max_budget": -1}}}, "model_budgets.gpt-4o.max_budget", "must not be negative"),
        ({"model_budgets": {"gpt-4o": {"max_budget": 1, "soft_budget": 2}}}, "model_budgets.gpt-4o", "soft_budget"),
        (
            {"budget": {"max_budget": "1", "duration": "1d", "reset": "daily"}},
            "budget.reset",
            "'rolling' or 'calendar'",
        ),
        ({"secret": "sk-mine"}, "secret", "not a known field"),
        ({"blocked": "no"}, "blocked", "valid boolean"),
    ],
)
async def test_an_invalid_key_body_is_refused_naming_the_field(
    pg_app: RunningApp, body: dict[str, Any], field: str, says: str
) -> None:
    message = _error(await pg_app.admin.post(f"{A}/keys", json=body), 422, "invalid_request")
    assert message.startswith(f"{field}: ") and says in message, message


async def test_a_patch_cannot_move_the_expiry_into_the_past(pg_app: RunningApp) -> None:
    await pg_app.admin.post(f"{A}/keys", json={"id": "k1"})
    message = _error(
        await pg_app.admin.patch(f"{A}/keys/k1", json={"expires_at": "2001-01-01T00:00:00Z"}), 422, "invalid_request"
    )
    assert message == "expires_at: must be in the future"


# --- revocation -------------------------------------------------------------------------


async def test_deleting_a_key_hides_it_and_keeps_its_ledger_rows(any_app: RunningApp) -> None:
    key = (
        await any_app.admin.post(
            f"{A}/keys", json={"id": "k1", "budget": {"max_budget": "5"}, "model_budgets": {"m": {"max_budget": "1"}}}
        )
    ).json()
    await spend(any_app.runtime, ledger_ref("key", "k1", key["ledgers"][0]), "0.75")

    assert (await any_app.admin.delete(f"{A}/keys/k1")).status_code == 204
    assert "deleted" in _error(await any_app.admin.get(f"{A}/keys/k1"), 404, "not_found")
    _error(await any_app.admin.patch(f"{A}/keys/k1", json={"blocked": True}), 404, "not_found")
    _error(await any_app.admin.delete(f"{A}/keys/k1"), 404, "not_found")
    assert "never reused" in _error(await any_app.admin.post(f"{A}/keys", json={"id": "k1"}), 409, "conflict")

    async with any_app.runtime.sessions() as session:
        conn = await session.connection()
        ledgers = (await conn.execute(text("SELECT entity_id, spent FROM ledgers WHERE entity_type = 'key'"))).all()
        budgets = (await conn.execute(text("SELECT entity_type, entity_id FROM budgets"))).all()
        deleted_at = (await conn.execute(text("SELECT deleted_at FROM keys WHERE id = 'k1'"))).scalar_one()
    assert [(row[0], int(row[1])) for row in ledgers] == [("k1", 750_000_000)], "spend history stays"
    assert budgets == [], "the key's budgets go with it"
    assert deleted_at is not None


async def test_a_deleted_key_is_refused_by_authorize_at_once(pg_app: RunningApp) -> None:
    secret = (await pg_app.admin.post(f"{A}/keys", json={"id": "k1"})).json()["key"]
    allowed = await pg_app.gateway.post("/v1/authorize", json={"request_id": "r1", "api_key": secret})
    assert allowed.json()["decision"] == "allow", allowed.text

    assert (await pg_app.admin.delete(f"{A}/keys/k1")).status_code == 204
    refused = (await pg_app.gateway.post("/v1/authorize", json={"request_id": "r2", "api_key": secret})).json()
    assert refused["decision"] == "deny"
    assert [reason["code"] for reason in refused["reasons"]] == ["invalid_key"]


async def test_blocking_a_key_reaches_decisions_at_once(pg_app: RunningApp) -> None:
    secret = (await pg_app.admin.post(f"{A}/keys", json={"id": "k1"})).json()["key"]
    first = await pg_app.gateway.post("/v1/authorize", json={"request_id": "r1", "api_key": secret})
    assert first.json()["decision"] == "allow", first.text

    await pg_app.admin.patch(f"{A}/keys/k1", json={"blocked": True})
    refused = (await pg_app.gateway.post("/v1/authorize", json={"request_id": "r2", "api_key": secret})).json()
    assert refused["decision"] == "deny" and "key_blocked" in [reason["code"] for reason in refused["reasons"]]


async def test_a_reservation_shows_in_the_key_ledger(pg_app: RunningApp) -> None:
    secret = (
        await pg_app.admin.post(f"{A}/keys", json={"id": "k1", "budget": {"max_budget": "1", "duration": "1d"}})
    ).json()["key"]
    decision = await pg_app.gateway.post(
        "/v1/authorize", json={"request_id": "r1", "api_key": secret, "estimated_cost": "0.02"}
    )
    assert decision.json()["decision"] == "allow", decision.text
    ledger = (await pg_app.admin.get(f"{A}/keys/k1")).json()["ledgers"][0]
    assert ledger["reserved"] == "0.020000" and ledger["spent"] == "0.000000" and ledger["limit"] == "1.000000"
