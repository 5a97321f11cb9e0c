"""Admin API for team memberships, and the order in which entities may be deleted."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from support.app import RunningApp
from support.ledger_spend import ledger_ref, spend

A = "/v1/admin"


def _error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.json()
    return str(response.json()["error"]["message"])


async def _team_and_user(running: RunningApp, *, org: bool = False) -> None:
    if org:
        assert (await running.admin.post(f"{A}/orgs", json={"id": "o1", "name": "Org"})).status_code == 201
    org_id = {"org_id": "o1"} if org else {}
    assert (await running.admin.post(f"{A}/teams", json={"id": "t1", "name": "Team", **org_id})).status_code == 201
    assert (await running.admin.post(f"{A}/users", json={"id": "u1", **org_id})).status_code == 201


async def _rows(running: RunningApp, sql: str) -> list[tuple[Any, ...]]:
    async with running.runtime.sessions() as session:
        conn = await session.connection()
        return [tuple(row) for row in (await conn.execute(text(sql))).all()]


# --- memberships --------------------------------------------------------------------------


async def test_a_membership_is_added_read_updated_and_removed(any_app: RunningApp) -> None:
    await _team_and_user(any_app)
    added = await any_app.admin.post(
        f"{A}/teams/t1/members", json={"user_id": "u1", "budget": {"max_budget": "3", "duration": "1d"}}
    )
    assert added.status_code == 201, added.text
    member = added.json()
    assert (member["id"], member["team_id"], member["user_id"], member["blocked"]) == ("t1/u1", "t1", "u1", False)
    assert member["budget"]["max_budget"] == "3.000000"
    assert member["ledgers"][0]["window"] == "1d" and member["ledgers"][0]["limit"] == "3.000000"

    await spend(any_app.runtime, ledger_ref("team_member", "t1/u1", member["ledgers"][0]), "1.5")
    read = (await any_app.admin.get(f"{A}/teams/t1/members/u1")).json()
    assert read["ledgers"][0]["spent"] == "1.500000"

    blocked = (await any_app.admin.patch(f"{A}/teams/t1/members/u1", json={"blocked": True})).json()
    assert blocked["blocked"] is True and blocked["budget"] == member["budget"]
    unlimited = (await any_app.admin.patch(f"{A}/teams/t1/members/u1", json={"budget": None})).json()
    assert unlimited["budget"] is None and unlimited["ledgers"][0]["limit"] is None

    assert (await any_app.admin.delete(f"{A}/teams/t1/members/u1")).status_code == 204
    _error(await any_app.admin.get(f"{A}/teams/t1/members/u1"), 404, "not_found")
    assert (await any_app.admin.get(f"{A}/users/u1")).status_code == 200, "removing a member keeps the user"


async def test_adding_a_member_twice_is_a_conflict(pg_app: RunningApp) -> None:
    await _team_and_user(pg_app)
    await pg_app.admin.post(f"{A}/teams/t1/members", json={"user_id": "u1"})
    message = _error(await pg_app.admin.post(f"{A}/teams/t1/members", json={"user_id": "u1"}), 409, "conflict")
    assert "already a member" in message


@pytest.mark.parametrize(
    ("team", "user", "missing"), [("ghost", "u1", "team 'ghost'"), ("t1", "ghost", "user 'ghost'")]
)
async def test_a_membership_of_a_missing_team_or_user_is_not_found(
    pg_app: RunningApp, team: str, user: str, missing: str
) -> None:
    await _team_and_user(pg_app)
    message = _error(await pg_app.admin.post(f"{A}/teams/{team}/members", json={"user_id": user}), 404, "not_found")
    assert missing in message


async def test_a_user_who_is_not_a_member_has_no_membership(pg_app: RunningApp) -> None:
    await _team_and_user(pg_app)
    assert "not a member" in _error(await pg_app.admin.get(f"{A}/teams/t1/members/u1"), 404, "not_found")
    _error(await pg_app.admin.patch(f"{A}/teams/t1/members/u1", json={"blocked": True}), 404, "not_found")
    _error(await pg_app.admin.delete(f"{A}/teams/t1/members/u1"), 404, "not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "user_id"), ({"user_id": "u1", "role": "admin"}, "role"), ({"user_id": "u 1"}, "user_id")],
)
async def test_an_invalid_membership_body_is_refused_naming_the_field(
    pg_app: RunningApp, body: dict[str, Any], field: str
) -> None:
    await _team_and_user(pg_app)
    message = _error(await pg_app.admin.post(f"{A}/teams/t1/members", json=body), 422, "invalid_request")
    assert message.startswith(f"{field}: "), message


# --- deletion order -----------------------------------------------------------------------


async def test_an_org_with_teams_or_users_cannot_be_deleted(any_app: RunningApp) -> None:
    await _team_and_user(any_app, org=True)
    message = _error(await any_app.admin.delete(f"{A}/orgs/o1"), 409, "conflict")
    assert "1 team ('t1')" in message and "1 user ('u1')" in message and "first" in message

    await any_app.admin.patch(f"{A}/teams/t1", json={"org_id": None})
    message = _error(await any_app.admin.delete(f"{A}/orgs/o1"), 409, "conflict")
    assert "team" not in message and "1 user ('u1')" in message

    assert (await any_app.admin.delete(f"{A}/users/u1")).status_code == 204
    assert (await any_app.admin.delete(f"{A}/orgs/o1")).status_code == 204


async def test_a_team_with_live_keys_cannot_be_deleted_and_its_memberships_go_with_it(any_app: RunningApp) -> None:
    await _team_and_user(any_app)
    await any_app.admin.post(f"{A}/teams/t1/members", json={"user_id": "u1", "budget": {"max_budget": "1"}})
    await any_app.admin.post(f"{A}/keys", json={"id": "k1", "team_id": "t1", "user_id": "u1"})

    message = _error(await any_app.admin.delete(f"{A}/teams/t1"), 409, "conflict")
    assert "1 key ('k1')" in message and "delete them first" in message

    assert (await any_app.admin.delete(f"{A}/keys/k1")).status_code == 204
    assert (await any_app.admin.delete(f"{A}/teams/t1")).status_code == 204
    _error(await any_app.admin.get(f"{A}/teams/t1/members/u1"), 404, "not_found")
    assert await _rows(any_app, "SELECT * FROM team_members") == []
    assert await _rows(any_app, "SELECT entity_type FROM budgets") == [], "the membership's budget went with it"
    assert await _rows(any_app, "SELECT id, team_id, user_id FROM keys") == [("k1", None, "u1")], (
        "the deleted key stays (its id is never reused) but lets go of the team"
    )


async def test_a_user_with_live_keys_or_memberships_cannot_be_deleted(pg_app: RunningApp) -> None:
    await _team_and_user(pg_app)
    await pg_app.admin.post(f"{A}/teams/t1/members", json={"user_id": "u1"})
    await pg_app.admin.post(f"{A}/keys", json={"id": "k1", "user_id": "u1"})
    await pg_app.admin.post(f"{A}/keys", json={"id": "k2", "user_id": "u1"})

    message = _error(await pg_app.admin.delete(f"{A}/users/u1"), 409, "conflict")
    assert "2 keys ('k1', 'k2')" in message and "1 team membership ('t1')" in message

    await pg_app.admin.delete(f"{A}/keys/k1")
    await pg_app.admin.delete(f"{A}/keys/k2")
    message = _error(await pg_app.admin.delete(f"{A}/users/u1"), 409, "conflict")
    assert "key" not in message.split(";")[0] and "team membership" in message

    await pg_app.admin.delete(f"{A}/teams/t1/members/u1")
    assert (await pg_app.admin.delete(f"{A}/users/u1")).status_code == 204
    assert await _rows(pg_app, "SELECT id, user_id FROM keys ORDER BY id") == [("k1", None), ("k2", None)]


async def test_deleting_an_entity_removes_its_budget_and_keeps_its_ledgers(pg_app: RunningApp) -> None:
    team = (
        await pg_app.admin.post(
            f"{A}/teams",
            json={"id": "t1", "name": "T", "budget": [{"max_budget": "1", "duration": "1d"}, {"max_budget": "9"}]},
        )
    ).json()
    await spend(pg_app.runtime, ledger_ref("team", "t1", team["ledgers"][0]), "0.5")
    assert (await pg_app.admin.delete(f"{A}/teams/t1")).status_code == 204
    assert await _rows(pg_app, "SELECT * FROM budgets") == []
    assert await _rows(pg_app, "SELECT entity_id, spent FROM ledgers") == [("t1", 500_000_000)]

    recreated = (await pg_app.admin.post(f"{A}/teams", json={"id": "t1", "name": "T again"})).json()
    assert recreated["budget"] is None and recreated["ledgers"][0]["limit"] is None
