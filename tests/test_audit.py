"""The audit trail (`GET /v1/admin/audit`): every admin change leaves one row with who, when, what and
before/after — written in the change's transaction, so a refused change leaves none — and never a key
secret or hash.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from support.app import RunningApp
from support.services import RedisServer

A = "/v1/admin"


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return str(body["error"]["message"])


async def _ok(response: Any) -> Any:
    answer = await response
    assert answer.status_code in (200, 201, 204), answer.text
    return answer.json() if answer.status_code != 204 else None


async def _trail(app: RunningApp, **params: Any) -> list[dict[str, Any]]:
    """Every audit row matching `params`, newest first, across all pages."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        answer = await app.admin.get(f"{A}/audit", params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        items += answer.json()["items"]
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return items


def _only(rows: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(rows) == 1, rows
    return rows[0]


# --- what each change records ---------------------------------------------------------------


async def test_a_budget_patch_shows_who_changed_the_limit_when_and_from_what_to_what(any_app: RunningApp) -> None:
    admin = any_app.admin
    monthly = {"max_budget": "100", "duration": "30d"}
    await _ok(admin.post(f"{A}/teams", json={"id": "search", "name": "Search", "budget": monthly}))
    before_patch = datetime.now(timezone.utc)
    await _ok(admin.patch(f"{A}/teams/search", json={"budget": {"max_budget": "250.5", "duration": "30d"}}))

    newest = (await _trail(any_app, entity="team:search"))[0]
    assert newest["actor"] == "admin" and newest["action"] == "update"
    assert newest["entity"] == {"type": "team", "id": "search"}
    assert newest["before"] == {"budget": {**newest["before"]["budget"], "max_budget": "100.000000"}}
    assert newest["after"]["budget"]["max_budget"] == "250.500000"
    assert newest["after"]["budget"]["set_at"] == newest["before"]["budget"]["set_at"]  # the period did not restart
    at = datetime.fromisoformat(newest["at"].replace("Z", "+00:00"))
    assert before_patch - timedelta(seconds=1) <= at <= datetime.now(timezone.utc) and newest["at"].endswith("Z")


@pytest.mark.parametrize(
    ("path", "body", "entity_type", "entity_id"),
    [
        ("orgs", {"id": "o1", "name": "One"}, "org", "o1"),
        ("teams", {"id": "t1", "name": "T1"}, "team", "t1"),
        ("users", {"id": "u1", "email": "a@x"}, "user", "u1"),
        ("end-users", {"id": "e1"}, "end_user", "e1"),
        ("tags", {"id": "g1"}, "tag", "g1"),
    ],
)
async def test_create_block_unblock_update_and_delete_each_leave_one_row(
    any_app: RunningApp, path: str, body: dict[str, Any], entity_type: str, entity_id: str
) -> None:
    admin = any_app.admin
    created = {**body, "budget": {"max_budget": "5", "duration": "1d"}}
    await _ok(admin.post(f"{A}/{path}", json=created))
    await _ok(admin.patch(f"{A}/{path}/{entity_id}", json={"blocked": True}))
    await _ok(admin.patch(f"{A}/{path}/{entity_id}", json={"blocked": False}))
    await _ok(admin.patch(f"{A}/{path}/{entity_id}", json={"budget": None}))
    await _ok(admin.delete(f"{A}/{path}/{entity_id}"))

    rows = await _trail(any_app, entity=f"{entity_type}:{entity_id}")
    assert [row["action"] for row in rows] == ["delete", "update", "unblock", "block", "create"]
    delete, clear, unblock, block, create = rows
    assert create["before"] is None and create["after"]["id"] == entity_id and create["after"]["blocked"] is False
    assert create["after"]["budget"]["max_budget"] == "5.000000" and create["after"]["budget"]["duration"] == "1d"
    assert (block["before"], block["after"]) == ({"blocked": False}, {"blocked": True})
    assert (unblock["before"], unblock["after"]) == ({"blocked": True}, {"blocked": False})
    assert clear["before"]["budget"]["max_budget"] == "5.000000" and clear["after"] == {"budget": None}
    assert delete["after"] is None and delete["before"]["id"] == entity_id and delete["before"]["budget"] is None
    assert {row["actor"] for row in rows} == {"admin"}
    assert all(row["entity"] == {"type": entity_type, "id": entity_id} for row in rows)


async def test_an_update_records_old_and_new_values_of_the_fields_it_named(any_app: RunningApp) -> None:
    admin = any_app.admin
    await _ok(admin.post(f"{A}/orgs", json={"id": "o1", "name": "One"}))
    await _ok(admin.post(f"{A}/orgs", json={"id": "o2", "name": "Two"}))
    await _ok(admin.post(f"{A}/teams", json={"id": "t1", "name": "T1", "org_id": "o1"}))
    await _ok(admin.patch(f"{A}/teams/t1", json={"name": "Team one", "org_id": "o2"}))

    row = (await _trail(any_app, entity="team:t1"))[0]
    assert (row["action"], row["before"], row["after"]) == (
        "update",
        {"name": "T1", "org_id": "o1"},
        {"name": "Team one", "org_id": "o2"},
    )


async def test_memberships_are_audited_as_team_member_entities(any_app: RunningApp) -> None:
    admin = any_app.admin
    await _ok(admin.post(f"{A}/teams", json={"id": "t1", "name": "T1"}))
    await _ok(admin.post(f"{A}/users", json={"id": "u1"}))
    await _ok(admin.post(f"{A}/teams/t1/members", json={"user_id": "u1", "budget": {"max_budget": "2"}}))
    await _ok(admin.patch(f"{A}/teams/t1/members/u1", json={"budget": {"max_budget": "3"}}))
    await _ok(admin.delete(f"{A}/teams/t1/members/u1"))

    rows = await _trail(any_app, entity="team_member:t1/u1")
    assert [row["action"] for row in rows] == ["delete", "update", "create"]
    assert rows[2]["after"]["team_id"] == "t1" and rows[2]["after"]["user_id"] == "u1"
    assert rows[1]["before"]["budget"]["max_budget"] == "2.000000"
    assert rows[1]["after"]["budget"]["max_budget"] == "3.000000"


async def test_deleting_a_team_audits_the_memberships_that_go_with_it(any_app: RunningApp) -> None:
    admin = any_app.admin
    await _ok(admin.post(f"{A}/teams", json={"id": "t1", "name": "T1"}))
    await _ok(admin.post(f"{A}/users", json={"id": "u1"}))
    await _ok(admin.post(f"{A}/teams/t1/members", json={"user_id": "u1", "budget": {"max_budget": "2"}}))
    await _ok(admin.delete(f"{A}/teams/t1"))

    member = (await _trail(any_app, entity="team_member:t1/u1"))[0]
    assert member["action"] == "delete" and member["after"] is None
    assert member["before"]["budget"]["max_budget"] == "2.000000"
    assert (await _trail(any_app, entity="team:t1"))[0]["action"] == "delete"


async def test_key_create_update_and_revoke_are_audited_without_the_secret_or_its_hash(any_app: RunningApp) -> None:
    admin = any_app.admin
    await _ok(admin.post(f"{A}/users", json={"id": "u1"}))
    key = await _ok(
        admin.post(
            f"{A}/keys",
            json={"id": "k1", "user_id": "u1", "models": ["gpt-4o"], "model_budgets": {"gpt-4o": {"max_budget": "1"}}},
        )
    )
    await _ok(admin.patch(f"{A}/keys/k1", json={"model_budgets": {"gpt-4o": {"max_budget": "1.5"}}, "name": "ci"}))
    await _ok(admin.delete(f"{A}/keys/k1"))

    rows = await _trail(any_app, entity="key:k1")
    assert [row["action"] for row in rows] == ["revoke", "update", "create"]
    revoke, update, create = rows
    assert create["after"]["user_id"] == "u1" and create["after"]["key_prefix"] == key["key_prefix"]
    assert create["after"]["model_budgets"]["gpt-4o"]["max_budget"] == "1.000000"
    assert update["before"] == {"model_budgets": {"gpt-4o": create["after"]["model_budgets"]["gpt-4o"]}, "name": None}
    assert update["after"]["model_budgets"]["gpt-4o"]["max_budget"] == "1.500000" and update["after"]["name"] == "ci"
    assert revoke["after"] is None and revoke["before"]["name"] == "ci"

    everything = (await admin.get(f"{A}/audit", params={"limit": 500})).text
    assert key["key"] not in everything
    assert hashlib.sha256(key["key"].encode()).hexdigest() not in everything
    assert "key_hash" not in everything


# --- refused changes leave no row ---------------------------------------------------------


async def test_a_refused_change_writes_no_audit_row(any_app: RunningApp) -> None:
    admin = any_app.admin
    await _ok(admin.post(f"{A}/orgs", json={"id": "o1", "name": "One"}))
    await _ok(admin.post(f"{A}/teams", json={"id": "t1", "name": "T1", "org_id": "o1"}))
    await _ok(admin.post(f"{A}/keys", json={"id": "k1", "team_id": "t1"}))
    before = await _trail(any_app)
    assert len(before) == 3

    _error(await admin.post(f"{A}/orgs", json={"id": "o1", "name": "Again"}), 409, "conflict")
    _error(await admin.delete(f"{A}/orgs/o1"), 409, "conflict")  # a team still belongs to it
    _error(await admin.delete(f"{A}/teams/t1"), 409, "conflict")  # a live key
    _error(await admin.post(f"{A}/keys", json={"id": "k1"}), 409, "conflict")
    _error(await admin.patch(f"{A}/teams/t1", json={"org_id": "nope"}), 404, "not_found")
    _error(await admin.patch(f"{A}/orgs/o1", json={"budget": {"max_budget": "-1"}}), 422, "invalid_request")
    _error(await admin.delete(f"{A}/keys/nope"), 404, "not_found")

    assert await _trail(any_app) == before


async def test_a_change_that_fails_after_its_audit_row_was_added_commits_neither(
    pg_app: RunningApp, redis_server: RedisServer
) -> None:
    """The PATCH is applied and audited, then reading the ledgers for its answer fails: 503, and
    the rollback takes the audit row with the change — they share one transaction."""
    await _ok(pg_app.admin.post(f"{A}/orgs", json={"id": "o1", "name": "One", "budget": {"max_budget": "1"}}))
    redis_server.kill()
    try:
        patched = await pg_app.admin.patch(f"{A}/orgs/o1", json={"budget": {"max_budget": "2"}})
        assert "redis" in _error(patched, 503, "unavailable")
    finally:
        redis_server.start()
    assert [row["action"] for row in await _trail(pg_app, entity="org:o1")] == ["create"]
    assert (await pg_app.admin.get(f"{A}/orgs/o1")).json()["budget"]["max_budget"] == "1.000000"


# --- querying -----------------------------------------------------------------------------


async def test_the_trail_is_newest_first_and_pages_without_skips_or_repeats(any_app: RunningApp) -> None:
    admin = any_app.admin
    for i in range(7):
        await _ok(admin.post(f"{A}/tags", json={"id": f"g{i}"}))
    first = (await admin.get(f"{A}/audit", params={"limit": 3})).json()
    await _ok(admin.post(f"{A}/tags", json={"id": "late"}))  # newer than the cursor: not in later pages

    rows = first["items"]
    cursor = first["next_cursor"]
    while cursor:
        page = (await admin.get(f"{A}/audit", params={"limit": 3, "cursor": cursor})).json()
        rows += page["items"]
        cursor = page["next_cursor"]
    assert [row["entity"]["id"] for row in rows] == [f"g{i}" for i in reversed(range(7))]
    assert [row["at"] for row in rows] == sorted((row["at"] for row in rows), reverse=True)


async def test_the_trail_filters_by_entity_type_and_time(any_app: RunningApp) -> None:
    admin = any_app.admin
    await _ok(admin.post(f"{A}/tags", json={"id": "g1"}))
    await _ok(admin.post(f"{A}/end-users", json={"id": "g1"}))
    middle = datetime.now(timezone.utc)
    await _ok(admin.patch(f"{A}/tags/g1", json={"blocked": True}))

    assert [r["action"] for r in await _trail(any_app, entity="tag")] == ["block", "create"]
    assert [r["entity"]["type"] for r in await _trail(any_app, entity="end_user:g1")] == ["end_user"]
    since = await _trail(any_app, **{"from": middle.isoformat()})
    until = await _trail(any_app, **{"to": middle.isoformat()})
    assert [r["action"] for r in since] == ["block"]
    assert [r["action"] for r in until] == ["create", "create"]
    assert await _trail(any_app, entity="tag:nope") == []


@pytest.mark.parametrize(
    "params",
    [
        {"entity": "planet:earth"},
        {"entity": "team:"},
        {"from": "2026-11-28T00:00:00"},
        {"to": "yesterday"},
        {"limit": "0"},
        {"limit": "501"},
        {"cursor": "nonsense"},
        {"team_id": "t1"},
    ],
)
async def test_bad_audit_queries_are_refused(pg_app: RunningApp, params: dict[str, str]) -> None:
    _error(await pg_app.admin.get(f"{A}/audit", params=params), 422, "invalid_request")


async def test_an_audit_cursor_works_only_with_the_filters_it_came_from(any_app: RunningApp) -> None:
    admin = any_app.admin
    for i in range(3):
        await _ok(admin.post(f"{A}/tags", json={"id": f"g{i}"}))
    cursor = (await admin.get(f"{A}/audit", params={"limit": 1, "entity": "tag"})).json()["next_cursor"]
    assert cursor
    assert (await admin.get(f"{A}/audit", params={"entity": "tag", "cursor": cursor})).status_code == 200
    _error(await admin.get(f"{A}/audit", params={"entity": "org", "cursor": cursor}), 422, "invalid_request")
    _error(await admin.get(f"{A}/audit", params={"cursor": cursor}), 422, "invalid_request")
    _error(await admin.get(f"{A}/tags", params={"cursor": cursor}), 422, "invalid_request")
