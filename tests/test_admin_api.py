"""Admin API (API.md "Admin routes"): orgs, teams, users, end users, tags, tokens and validation.

Every test runs on PostgreSQL with Redis counters (`pg_app`); those using `any_app` also run
on the embedded SQLite default. Keys: test_admin_keys.py; memberships and deletion rules:
test_admin_members.py.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from support.app import ADMIN_TOKEN, GATEWAY_TOKEN, AppFactory, RunningApp
from support.ledger_spend import ledger_ref, spend
from support.services import RedisServer

A = "/v1/admin"


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return str(body["error"]["message"])


# --- authentication ----------------------------------------------------------------------


async def test_admin_routes_refuse_a_request_without_a_token(pg_app: RunningApp) -> None:
    response = await pg_app.anonymous.get(f"{A}/orgs/o1")
    assert "SPENDGATE_ADMIN_TOKEN" in _error(response, 401, "unauthorized")


async def test_admin_routes_refuse_a_wrong_token(pg_app: RunningApp) -> None:
    response = await pg_app.anonymous.post(
        f"{A}/orgs", json={"name": "Acme"}, headers={"authorization": "Bearer not-the-admin-token"}
    )
    _error(response, 401, "unauthorized")


async def test_the_gateway_token_does_not_open_admin_routes(pg_app: RunningApp) -> None:
    response = await pg_app.gateway.post(f"{A}/orgs", json={"name": "Acme"})
    _error(response, 401, "unauthorized")


async def test_the_admin_token_does_not_open_decision_routes(pg_app: RunningApp) -> None:
    response = await pg_app.admin.post("/v1/authorize", json={"request_id": "r1", "api_key": "sk-x"})
    assert "SPENDGATE_GATEWAY_TOKEN" in _error(response, 401, "unauthorized")
    assert ADMIN_TOKEN != GATEWAY_TOKEN


async def test_a_bad_token_is_refused_before_the_body_is_validated(pg_app: RunningApp) -> None:
    response = await pg_app.anonymous.post(f"{A}/orgs", json={"nonsense": True})
    _error(response, 401, "unauthorized")


# --- orgs, teams, users: create, read, update, delete ------------------------------------


async def test_an_org_is_created_read_updated_and_deleted(any_app: RunningApp) -> None:
    admin = any_app.admin
    created = await admin.post(f"{A}/orgs", json={"id": "acme", "name": "Acme", "budget": {"max_budget": "100"}})
    assert created.status_code == 201, created.text
    org = created.json()
    assert org["id"] == "acme" and org["name"] == "Acme" and org["blocked"] is False
    assert org["created_at"].endswith("Z")
    assert org["budget"]["max_budget"] == "100.000000" and org["budget"]["duration"] is None
    assert org["ledgers"] == [
        {
            "window": None,
            "spent": "0.000000",
            "reserved": "0.000000",
            "limit": "100.000000",
            "soft_budget": None,
            "period_start": "1970-01-01T00:00:00Z",
            "resets_at": None,
        }
    ]

    assert (await admin.get(f"{A}/orgs/acme")).json() == org

    patched = await admin.patch(f"{A}/orgs/acme", json={"name": "Acme Inc", "blocked": True})
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Acme Inc" and patched.json()["blocked"] is True
    assert patched.json()["budget"] == org["budget"], "a field absent from the PATCH stays as it was"

    assert (await admin.delete(f"{A}/orgs/acme")).status_code == 204
    _error(await admin.get(f"{A}/orgs/acme"), 404, "not_found")


async def test_an_id_is_generated_when_omitted(pg_app: RunningApp) -> None:
    for path, body, prefix in [
        ("orgs", {"name": "A"}, "org_"),
        ("teams", {"name": "T"}, "team_"),
        ("users", {}, "user_"),
    ]:
        first = (await pg_app.admin.post(f"{A}/{path}", json=body)).json()
        second = (await pg_app.admin.post(f"{A}/{path}", json=body)).json()
        assert first["id"].startswith(prefix) and second["id"].startswith(prefix)
        assert first["id"] != second["id"]
        assert "/" not in first["id"]


async def test_a_team_belongs_to_an_org_and_can_move_to_another(pg_app: RunningApp) -> None:
    admin = pg_app.admin
    await admin.post(f"{A}/orgs", json={"id": "o1", "name": "One"})
    await admin.post(f"{A}/orgs", json={"id": "o2", "name": "Two"})
    team = await admin.post(f"{A}/teams", json={"id": "t1", "name": "Search", "org_id": "o1"})
    assert team.status_code == 201 and team.json()["org_id"] == "o1"

    moved = await admin.patch(f"{A}/teams/t1", json={"org_id": "o2"})
    assert moved.json()["org_id"] == "o2" and moved.json()["name"] == "Search"
    detached = await admin.patch(f"{A}/teams/t1", json={"org_id": None})
    assert detached.json()["org_id"] is None
    assert (await admin.delete(f"{A}/teams/t1")).status_code == 204


async def test_a_user_has_an_email_and_an_org(pg_app: RunningApp) -> None:
    admin = pg_app.admin
    await admin.post(f"{A}/orgs", json={"id": "o1", "name": "One"})
    user = await admin.post(f"{A}/users", json={"id": "u1", "email": "ada@example.com", "org_id": "o1"})
    assert user.status_code == 201
    assert {k: user.json()[k] for k in ("id", "email", "org_id", "blocked")} == {
        "id": "u1",
        "email": "ada@example.com",
        "org_id": "o1",
        "blocked": False,
    }
    patched = await admin.patch(f"{A}/users/u1", json={"email": None, "blocked": True})
    assert patched.json()["email"] is None and patched.json()["blocked"] is True and patched.json()["org_id"] == "o1"
    assert (await admin.get(f"{A}/users/u1")).json() == patched.json()
    assert (await admin.delete(f"{A}/users/u1")).status_code == 204


@pytest.mark.parametrize("kind", ["orgs", "teams", "users", "keys", "end-users", "tags"])
async def test_reading_updating_or_deleting_an_unknown_id_is_not_found(pg_app: RunningApp, kind: str) -> None:
    admin = pg_app.admin
    _error(await admin.get(f"{A}/{kind}/missing"), 404, "not_found")
    _error(await admin.patch(f"{A}/{kind}/missing", json={"blocked": True}), 404, "not_found")
    _error(await admin.delete(f"{A}/{kind}/missing"), 404, "not_found")


@pytest.mark.parametrize(
    ("path", "body", "missing"),
    [
        ("teams", {"name": "T", "org_id": "nope"}, "org 'nope'"),
        ("users", {"org_id": "nope"}, "org 'nope'"),
    ],
)
async def test_creating_an_entity_that_references_a_missing_one_is_not_found(
    pg_app: RunningApp, path: str, body: dict[str, Any], missing: str
) -> None:
    message = _error(await pg_app.admin.post(f"{A}/{path}", json=body), 404, "not_found")
    assert missing in message


async def test_moving_a_team_to_a_missing_org_is_not_found_and_changes_nothing(pg_app: RunningApp) -> None:
    await pg_app.admin.post(f"{A}/teams", json={"id": "t1", "name": "T"})
    _error(await pg_app.admin.patch(f"{A}/teams/t1", json={"org_id": "nope", "name": "X"}), 404, "not_found")
    assert (await pg_app.admin.get(f"{A}/teams/t1")).json()["name"] == "T"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("orgs", {"id": "dup", "name": "A"}),
        ("teams", {"id": "dup", "name": "T"}),
        ("users", {"id": "dup"}),
        ("end-users", {"id": "dup"}),
        ("tags", {"id": "dup"}),
    ],
)
async def test_a_duplicate_id_is_a_conflict(any_app: RunningApp, path: str, body: dict[str, Any]) -> None:
    assert (await any_app.admin.post(f"{A}/{path}", json=body)).status_code == 201
    message = _error(await any_app.admin.post(f"{A}/{path}", json=body), 409, "conflict")
    assert "'dup' already exists" in message


@pytest.mark.parametrize("kind", ["orgs", "teams", "users", "end-users", "tags"])
async def test_every_kind_can_be_blocked_and_unblocked(pg_app: RunningApp, kind: str) -> None:
    body: dict[str, Any] = {"id": "x1"} | ({"name": "X"} if kind in ("orgs", "teams") else {})
    assert (await pg_app.admin.post(f"{A}/{kind}", json=body)).status_code == 201
    assert (await pg_app.admin.patch(f"{A}/{kind}/x1", json={"blocked": True})).json()["blocked"] is True
    assert (await pg_app.admin.get(f"{A}/{kind}/x1")).json()["blocked"] is True
    assert (await pg_app.admin.patch(f"{A}/{kind}/x1", json={"blocked": False})).json()["blocked"] is False


# --- end users and tags ------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "entity_type"), [("end-users", "end_user"), ("tags", "tag")])
async def test_end_users_and_tags_are_created_with_a_required_id(
    any_app: RunningApp, kind: str, entity_type: str
) -> None:
    _error(await any_app.admin.post(f"{A}/{kind}", json={"budget": {"max_budget": 1}}), 422, "invalid_request")
    created = await any_app.admin.post(
        f"{A}/{kind}", json={"id": "cust-9", "budget": {"max_budget": "5", "duration": "1w"}}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"] == "cust-9" and body["created"] is True
    assert body["ledgers"][0]["window"] == "1w" and body["ledgers"][0]["limit"] == "5.000000"
    assert (await any_app.admin.patch(f"{A}/{kind}/cust-9", json={"budget": None})).json()["budget"] is None
    assert (await any_app.admin.delete(f"{A}/{kind}/cust-9")).status_code == 204


@pytest.mark.parametrize(("kind", "entity_type"), [("end-users", "end_user"), ("tags", "tag")])
async def test_an_end_user_or_tag_never_created_but_charged_reads_as_not_created(
    any_app: RunningApp, kind: str, entity_type: str
) -> None:
    _error(await any_app.admin.get(f"{A}/{kind}/seen-in-traffic"), 404, "not_found")
    ref = ledger_ref(
        entity_type, "seen-in-traffic", {"window": None, "period_start": "1970-01-01T00:00:00Z", "resets_at": None}
    )
    await spend(any_app.runtime, ref, "0.25")

    response = await any_app.admin.get(f"{A}/{kind}/seen-in-traffic")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["created"] is False and body["created_at"] is None and body["budget"] is None
    assert body["ledgers"] == [
        {
            "window": None,
            "spent": "0.250000",
            "reserved": "0.000000",
            "limit": None,
            "soft_budget": None,
            "period_start": "1970-01-01T00:00:00Z",
            "resets_at": None,
        }
    ]
    message = _error(await any_app.admin.patch(f"{A}/{kind}/seen-in-traffic", json={"blocked": True}), 404, "not_found")
    assert f"POST /v1/admin/{kind}" in message


async def test_a_tracked_end_user_shows_the_configured_default_budget(
    app_factory: AppFactory, clean_pg: str, redis_url: str
) -> None:
    running = await app_factory(
        database_url=clean_pg, redis_url=redis_url, default_end_user_budget='{"max_budget": "5", "soft_budget": "4"}'
    )
    ref = ledger_ref("end_user", "cust-1", {"window": None, "period_start": "1970-01-01T00:00:00Z", "resets_at": None})
    await spend(running.runtime, ref, "1")
    body = (await running.admin.get(f"{A}/end-users/cust-1")).json()
    assert body["created"] is False
    assert body["budget"]["max_budget"] == "5.000000"
    assert body["ledgers"][0]["limit"] == "5.000000" and body["ledgers"][0]["soft_budget"] == "4.000000"
    assert body["ledgers"][0]["spent"] == "1.000000"


async def test_deleting_a_created_end_user_keeps_its_spend_visible_as_tracked(pg_app: RunningApp) -> None:
    created = (await pg_app.admin.post(f"{A}/end-users", json={"id": "cust-2"})).json()
    await spend(pg_app.runtime, ledger_ref("end_user", "cust-2", created["ledgers"][0]), "2")
    assert (await pg_app.admin.delete(f"{A}/end-users/cust-2")).status_code == 204
    body = (await pg_app.admin.get(f"{A}/end-users/cust-2")).json()
    assert body["created"] is False and body["ledgers"][0]["spent"] == "2.000000"


# --- budgets and ledgers ------------------------------------------------------------------


async def test_a_budget_may_be_a_list_of_windows_each_with_its_own_ledger(any_app: RunningApp) -> None:
    response = await any_app.admin.post(
        f"{A}/teams",
        json={
            "id": "t1",
            "name": "T",
            "budget": [
                {"max_budget": 10, "soft_budget": "8", "duration": "1d"},
                {"max_budget": "100.5", "duration": "1mo", "reset": "calendar"},
            ],
        },
    )
    assert response.status_code == 201, response.text
    team = response.json()
    assert [w["duration"] for w in team["budget"]] == ["1d", "1mo"]
    assert [w["max_budget"] for w in team["budget"]] == ["10.000000", "100.500000"]
    assert team["budget"][0]["soft_budget"] == "8.000000"
    assert [(item["window"], item["limit"], item["soft_budget"]) for item in team["ledgers"]] == [
        ("1d", "10.000000", "8.000000"),
        ("1mo", "100.500000", None),
    ]
    month = team["ledgers"][1]
    start, end = _time(month["period_start"]), _time(month["resets_at"])
    assert start.day == 1 and start.hour == 0 and end.day == 1 and end > start


async def test_a_calendar_day_budget_resets_at_the_next_utc_midnight(any_app: RunningApp) -> None:
    before = datetime.now(timezone.utc)
    org = (
        await any_app.admin.post(
            f"{A}/orgs",
            json={"id": "o1", "name": "O", "budget": {"max_budget": "10", "duration": "1d", "reset": "calendar"}},
        )
    ).json()
    after = datetime.now(timezone.utc)
    ledger = org["ledgers"][0]
    start, resets_at = _time(ledger["period_start"]), _time(ledger["resets_at"])
    assert ledger["period_start"].endswith("T00:00:00Z") and ledger["resets_at"].endswith("T00:00:00Z")
    assert resets_at - start == timedelta(days=1)
    assert start <= after and before < resets_at


async def test_raising_a_rolling_limit_keeps_the_period_and_changing_the_duration_restarts_it(
    pg_app: RunningApp,
) -> None:
    admin = pg_app.admin
    first = (await admin.post(f"{A}/users", json={"id": "u1", "budget": {"max_budget": "10", "duration": "1d"}})).json()
    start = first["ledgers"][0]["period_start"]
    assert first["ledgers"][0]["resets_at"] == (_time(start) + timedelta(days=1)).isoformat().replace("+00:00", "Z")

    raised = (await admin.patch(f"{A}/users/u1", json={"budget": {"max_budget": "20", "duration": "1d"}})).json()
    assert raised["ledgers"][0]["period_start"] == start
    assert raised["ledgers"][0]["limit"] == "20.000000"
    assert raised["budget"]["set_at"] == first["budget"]["set_at"]

    longer = (await admin.patch(f"{A}/users/u1", json={"budget": {"max_budget": "20", "duration": "2d"}})).json()
    assert _time(longer["ledgers"][0]["period_start"]) > _time(start)
    assert longer["ledgers"][0]["window"] == "2d"


async def test_a_budget_of_null_clears_it_and_the_ledger_has_no_limit(pg_app: RunningApp) -> None:
    await pg_app.admin.post(
        f"{A}/orgs", json={"id": "o1", "name": "O", "budget": {"max_budget": "1", "duration": "1h"}}
    )
    cleared = (await pg_app.admin.patch(f"{A}/orgs/o1", json={"budget": None})).json()
    assert cleared["budget"] is None
    assert [(item["window"], item["limit"], item["resets_at"]) for item in cleared["ledgers"]] == [(None, None, None)]


async def test_ledgers_show_spend_and_a_new_period_starts_at_zero(any_app: RunningApp) -> None:
    org = (
        await any_app.admin.post(
            f"{A}/orgs", json={"id": "o1", "name": "O", "budget": {"max_budget": "10", "duration": "1d"}}
        )
    ).json()
    ref = ledger_ref("org", "o1", org["ledgers"][0])
    await spend(any_app.runtime, ref, "1.25")
    await spend(any_app.runtime, ref, "0.000000001")
    ledger = (await any_app.admin.get(f"{A}/orgs/o1")).json()["ledgers"][0]
    assert ledger["spent"] == "1.250000001" and ledger["reserved"] == "0.000000"

    # A new duration is a new period: its ledger starts from nothing.
    renewed = (
        await any_app.admin.patch(f"{A}/orgs/o1", json={"budget": {"max_budget": "10", "duration": "1w"}})
    ).json()
    assert renewed["ledgers"][0]["spent"] == "0.000000"


async def test_amounts_may_be_json_numbers_or_decimal_strings_and_come_back_as_strings(pg_app: RunningApp) -> None:
    org = (
        await pg_app.admin.post(
            f"{A}/orgs", json={"id": "o1", "name": "O", "budget": {"max_budget": 0.1, "soft_budget": "0.000000001"}}
        )
    ).json()
    assert org["budget"]["max_budget"] == "0.100000"
    assert org["budget"]["soft_budget"] == "0.000000001"


# --- validation: 422 naming the field ----------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "field", "says"),
    [
        ({"max_budget": -1}, "budget.max_budget", "must not be negative"),
        ({"max_budget": "-0.5"}, "budget.max_budget", "must not be negative"),
        ({"max_budget": "NaN"}, "budget.max_budget", "finite"),
        ({"max_budget": "Infinity"}, "budget.max_budget", "finite"),
        ({"max_budget": "ten dollars"}, "budget.max_budget", "not a decimal amount"),
        ({"max_budget": True}, "budget.max_budget", "decimal amount"),
        ({"max_budget": "0.0000000001"}, "budget.max_budget", "more than 9 decimal places"),
        ({"max_budget": 1, "soft_budget": -1}, "budget.soft_budget", "must not be negative"),
        ({"max_budget": 1, "duration": "1fortnight"}, "budget.duration", "unknown duration unit"),
        ({"max_budget": 1, "duration": "0d"}, "budget.duration", "at least 1"),
        ({"max_budget": 1, "reset": "weekly"}, "budget.reset", "'rolling' or 'calendar'"),
        ({"max_budget": 1, "soft_budget": 2}, "budget", "soft_budget must not be larger than max_budget"),
        ({"soft_budget": 2}, "budget.max_budget", "is required"),
        ({"max_budget": 1, "limit": 2}, "budget.limit", "not a known field"),
        ([{"max_budget": 1, "duration": "1d"}, {"max_budget": 2, "duration": "1d"}], "budget", "same duration 1d"),
        ([{"max_budget": 1}, {"max_budget": -2, "duration": "1d"}], "budget[1].max_budget", "must not be negative"),
        (5, "budget", "budget object"),
    ],
)
async def test_an_invalid_budget_is_refused_naming_the_field(
    pg_app: RunningApp, budget: Any, field: str, says: str
) -> None:
    response = await pg_app.admin.post(f"{A}/orgs", json={"name": "O", "budget": budget})
    message = _error(response, 422, "invalid_request")
    assert message.startswith(f"{field}: "), message
    assert says in message, message
    assert message.count(";") <= 1 or "duration" in message, f"one problem, one sentence: {message}"


@pytest.mark.parametrize(
    ("bad_id", "says"),
    [
        ("a/b", "must not contain '/'"),
        ("a b", "must not contain whitespace"),
        ("tab\there", "must not contain whitespace"),
        ("", "1 to 200 characters"),
        ("x" * 201, "1 to 200 characters"),
        (42, "valid string"),
    ],
)
@pytest.mark.parametrize("kind", ["orgs", "teams", "users", "end-users", "tags", "keys"])
async def test_a_bad_id_is_refused(pg_app: RunningApp, kind: str, bad_id: Any, says: str) -> None:
    body: dict[str, Any] = {"id": bad_id} | ({"name": "X"} if kind in ("orgs", "teams") else {})
    message = _error(await pg_app.admin.post(f"{A}/{kind}", json=body), 422, "invalid_request")
    assert message.startswith("id: ") and says in message, message


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("orgs", {"name": "O", "colour": "red"}, "colour"),
        ("teams", {"name": "T", "parent": "x"}, "parent"),
        ("users", {"mail": "a@b"}, "mail"),
        ("end-users", {"id": "e", "max_budget": 1}, "max_budget"),
        ("tags", {"id": "t", "budget": {"max_budget": 1, "durration": "1d"}}, "budget.durration"),
    ],
)
async def test_an_unknown_field_is_refused(pg_app: RunningApp, path: str, body: dict[str, Any], field: str) -> None:
    message = _error(await pg_app.admin.post(f"{A}/{path}", json=body), 422, "invalid_request")
    assert message == f"{field}: is not a known field (check its spelling in docs/api.md)"


async def test_an_update_refuses_unknown_fields_and_nulls_for_required_fields(pg_app: RunningApp) -> None:
    await pg_app.admin.post(f"{A}/orgs", json={"id": "o1", "name": "O"})
    assert "id: is not a known field" in _error(
        await pg_app.admin.patch(f"{A}/orgs/o1", json={"id": "o2"}), 422, "invalid_request"
    )
    assert "name: must not be null" in _error(
        await pg_app.admin.patch(f"{A}/orgs/o1", json={"name": None}), 422, "invalid_request"
    )
    assert "blocked: must not be null" in _error(
        await pg_app.admin.patch(f"{A}/orgs/o1", json={"blocked": None}), 422, "invalid_request"
    )
    assert "blocked: " in _error(
        await pg_app.admin.patch(f"{A}/orgs/o1", json={"blocked": "yes"}), 422, "invalid_request"
    )
    assert (await pg_app.admin.get(f"{A}/orgs/o1")).json()["name"] == "O"


async def test_a_body_that_is_not_json_is_refused(pg_app: RunningApp) -> None:
    response = await pg_app.admin.post(f"{A}/orgs", content=b"{not json", headers={"content-type": "application/json"})
    assert _error(response, 422, "invalid_request").startswith("body: is not valid JSON")


async def test_a_name_is_required_for_orgs_and_teams(sqlite_app: RunningApp) -> None:
    for kind in ("orgs", "teams"):
        assert (
            _error(await sqlite_app.admin.post(f"{A}/{kind}", json={}), 422, "invalid_request") == "name: is required"
        )


# --- races and outages --------------------------------------------------------------------


async def test_two_concurrent_creates_of_one_id_give_one_entity_and_one_conflict(pg_app: RunningApp) -> None:
    responses = await asyncio.gather(
        *(pg_app.admin.post(f"{A}/orgs", json={"id": "race", "name": f"N{i}"}) for i in range(4))
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409], [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            _error(response, 409, "conflict")


async def test_an_admin_write_while_redis_is_down_is_unavailable_and_changes_nothing(
    pg_app: RunningApp, redis_server: RedisServer
) -> None:
    await pg_app.admin.post(f"{A}/orgs", json={"id": "existing", "name": "E"})
    redis_server.kill()
    response = await pg_app.admin.post(f"{A}/orgs", json={"id": "o1", "name": "O"})
    assert "redis" in _error(response, 503, "unavailable")
    assert "redis" in _error(await pg_app.admin.get(f"{A}/orgs/existing"), 503, "unavailable")
    _error(await pg_app.admin.get(f"{A}/orgs/o1"), 404, "not_found")
    redis_server.start()
    assert (await pg_app.admin.post(f"{A}/orgs", json={"id": "o1", "name": "O"})).status_code == 201
