"""Blocking each entity type through the admin API, end to end, on PostgreSQL+Redis and on SQLite.

An operator blocks an org, a team, a user, a team member, an end user or a tag with
`PATCH /v1/admin/... {"blocked": true}`; the next authorize of a request that touches it is
refused with one `key_blocked` reason naming exactly that entity, and unblocking admits it again.
No waiting: an admin change clears this replica's facts cache (API.md: every replica within 1 s).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from support.app import RunningApp
from support.scenario import authorize, create, create_key

pytestmark = pytest.mark.asyncio


class Case(NamedTuple):
    #: The admin path that blocks the entity (PATCH) and the key whose request touches it.
    path: str
    key: str


#: Each entity type, through each kind of key that touches it (the user and the org both ways).
CASES: dict[str, Case] = {
    "org via team key": Case("orgs/acme", "k-team"),
    "org via personal key": Case("orgs/acme", "k-personal"),
    "team": Case("teams/search", "k-team"),
    "user via team key": Case("users/ada", "k-team"),
    "user via personal key": Case("users/ada", "k-personal"),
    "team member": Case("teams/search/members/ada", "k-team"),
    "end user": Case("end-users/cust-9", "k-personal"),
    "tag": Case("tags/search", "k-personal"),
}

#: The entity type each admin path names (API.md `{kind}`; a membership is a `team_member`).
TYPES = {"orgs": "org", "teams": "team", "users": "user", "end-users": "end_user", "tags": "tag"}


async def _everything(app: RunningApp) -> dict[str, str]:
    """Org acme, its team search and user ada (a member), end user cust-9, tag search, and a team key
    and a personal key of ada; returns the keys' secrets by id."""
    await create(app.admin, "orgs", {"id": "acme", "name": "Acme"})
    await create(app.admin, "teams", {"id": "search", "name": "Search", "org_id": "acme"})
    await create(app.admin, "users", {"id": "ada", "org_id": "acme"})
    await create(app.admin, "teams/search/members", {"user_id": "ada"})
    await create(app.admin, "end-users", {"id": "cust-9"})
    await create(app.admin, "tags", {"id": "search"})
    return {
        "k-team": await create_key(app.admin, id="k-team", team_id="search", user_id="ada"),
        "k-personal": await create_key(app.admin, id="k-personal", user_id="ada"),
    }


async def _set_blocked(app: RunningApp, path: str, blocked: bool) -> dict[str, Any]:
    """Block or unblock as an operator would; returns the entity as the API names it: {"type", "id"}."""
    response = await app.admin.patch(f"/v1/admin/{path}", json={"blocked": blocked})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["blocked"] is blocked
    if "/members/" in path:
        return {"type": "team_member", "id": f"{body['team_id']}/{body['user_id']}"}
    return {"type": TYPES[path.split("/")[0]], "id": body["id"]}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_a_blocked_entity_refuses_the_requests_that_touch_it_until_unblocked(
    any_app: RunningApp, case: Case
) -> None:
    secrets = await _everything(any_app)
    request = {"api_key": secrets[case.key], "end_user": "cust-9", "tags": ["search"], "estimated_cost": "0.01"}
    before = await authorize(any_app.gateway, request_id="before", **request)
    assert before["decision"] == "allow", before["reasons"]

    entity = await _set_blocked(any_app, case.path, True)
    blocked = await authorize(any_app.gateway, request_id="blocked", **request)
    unblocked_entity = await _set_blocked(any_app, case.path, False)
    after = await authorize(any_app.gateway, request_id="after", **request)

    assert blocked["decision"] == "deny" and blocked["reservation"] is None
    assert [(r["code"], r["entity"]) for r in blocked["reasons"]] == [("key_blocked", entity)]
    label = f"{entity['type'].replace('_', ' ')} {entity['id']}"
    assert blocked["reasons"][0]["message"] == f"{label} is blocked"
    # Named as the API names it everywhere: the same {"type", "id"} as in the charges (a team
    # key's user is not charged under the shipped policy, yet its block refuses the key).
    charged = [c["entity"] for c in before["charges"]]
    assert entity in charged or (entity["type"] == "user" and case.key == "k-team")
    assert unblocked_entity == entity
    assert after["decision"] == "allow", after["reasons"]
    assert after["reasons"] == [] and after["reservation"] is not None
