"""Admin lists (`GET /v1/admin/<kind>`, `GET /v1/admin/teams/{id}/members`): each item is what the
entity's GET answers, cursor pages never skip or repeat an entity while others are inserted,
filters narrow, a misused cursor or parameter is 422, and no key secret or hash is ever listed.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from starlette.datastructures import State

from spendgate.api import create_app
from spendgate.settings import Settings
from spendgate.tables import Tag
from support.app import ADMIN_TOKEN, GATEWAY_TOKEN, RunningApp
from support.ledger_spend import ledger_ref, spend

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


async def _all_pages(admin: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        answer = await admin.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert set(page) == {"items", "next_cursor"}
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the list never ended")


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


# --- every kind: the items are the GET answers --------------------------------------------


async def _world(app: RunningApp) -> dict[str, Any]:
    """Two of every kind, with budgets, one blocked, and spend on a few ledgers."""
    admin = app.admin
    daily = {"max_budget": "10", "soft_budget": "8", "duration": "1d"}
    await _ok(admin.post(f"{A}/orgs", json={"id": "o1", "name": "One", "budget": [daily, {"max_budget": "100"}]}))
    await _ok(admin.post(f"{A}/orgs", json={"id": "o2", "name": "Two", "blocked": True}))
    await _ok(admin.post(f"{A}/teams", json={"id": "t1", "name": "T1", "org_id": "o1", "budget": daily}))
    await _ok(admin.post(f"{A}/teams", json={"id": "t2", "name": "T2", "org_id": "o2"}))
    await _ok(admin.post(f"{A}/users", json={"id": "u1", "email": "a@x", "org_id": "o1", "budget": daily}))
    await _ok(admin.post(f"{A}/users", json={"id": "u2", "org_id": "o2", "blocked": True}))
    await _ok(admin.post(f"{A}/teams/t1/members", json={"user_id": "u1", "budget": daily}))
    await _ok(admin.post(f"{A}/teams/t1/members", json={"user_id": "u2", "blocked": True}))
    k1 = await _ok(
        admin.post(
            f"{A}/keys",
            json={
                "id": "k1",
                "user_id": "u1",
                "budget": daily,
                "models": ["gpt-4o", "org/model"],
                "model_budgets": {"gpt-4o": daily, "org/model": {"max_budget": "3"}},
            },
        )
    )
    # 'k1x' sorts right after 'k1/…' budgets in byte order: its budgets must not leak into k1's.
    k2 = await _ok(
        admin.post(f"{A}/keys", json={"id": "k1x", "team_id": "t1", "user_id": "u1", "model_budgets": {"m": daily}})
    )
    await _ok(admin.post(f"{A}/end-users", json={"id": "e1", "budget": daily}))
    await _ok(admin.post(f"{A}/end-users", json={"id": "e2", "blocked": True}))
    await _ok(admin.post(f"{A}/tags", json={"id": "g1", "budget": daily}))
    await _ok(admin.post(f"{A}/tags", json={"id": "g2"}))
    for entity_type, entity_id, path in (("org", "o1", "orgs/o1"), ("key", "k1", "keys/k1"), ("tag", "g1", "tags/g1")):
        shown = (await admin.get(f"{A}/{path}")).json()["ledgers"][0]
        await spend(app.runtime, ledger_ref(entity_type, entity_id, shown), "1.25")
    return {"secrets": [k1["key"], k2["key"]]}


async def test_every_list_shows_each_entity_exactly_as_its_get_does(any_app: RunningApp) -> None:
    admin = any_app.admin
    await _world(any_app)
    for kind, ids in {
        "orgs": ["o1", "o2"],
        "teams": ["t1", "t2"],
        "users": ["u1", "u2"],
        "keys": ["k1", "k1x"],
        "end-users": ["e1", "e2"],
        "tags": ["g1", "g2"],
    }.items():
        listed = await _all_pages(admin, f"{A}/{kind}", limit=1)
        assert _ids(listed) == ids, kind
        assert listed == [(await admin.get(f"{A}/{kind}/{i}")).json() for i in ids], kind

    members = await _all_pages(admin, f"{A}/teams/t1/members")
    assert [m["user_id"] for m in members] == ["u1", "u2"]
    assert members == [(await admin.get(f"{A}/teams/t1/members/{u}")).json() for u in ("u1", "u2")]
    key = (await admin.get(f"{A}/keys", params={"id_prefix": "k1"})).json()["items"][0]
    assert key["ledgers"][0]["spent"] == "1.250000" and set(key["model_budgets"]) == {"gpt-4o", "org/model"}


async def test_lists_never_show_a_key_secret_or_hash(any_app: RunningApp) -> None:
    world = await _world(any_app)
    text = ""
    for kind in ("orgs", "teams", "users", "keys", "end-users", "tags", "teams/t1/members"):
        text += (await any_app.admin.get(f"{A}/{kind}")).text
    assert '"k1"' in text and '"key_prefix"' in text  # the keys really were listed
    for secret in world["secrets"]:
        assert secret not in text
        assert hashlib.sha256(secret.encode()).hexdigest() not in text
    assert "key_hash" not in text


async def test_a_deleted_key_is_not_listed(pg_app: RunningApp) -> None:
    await _world(pg_app)
    await _ok(pg_app.admin.delete(f"{A}/keys/k1"))
    assert _ids(await _all_pages(pg_app.admin, f"{A}/keys")) == ["k1x"]


async def test_an_empty_list_is_one_page_without_a_cursor(any_app: RunningApp) -> None:
    answer = await any_app.admin.get(f"{A}/orgs")
    assert answer.status_code == 200 and answer.json() == {"items": [], "next_cursor": None}


async def test_members_of_a_missing_team_are_not_found(any_app: RunningApp) -> None:
    _error(await any_app.admin.get(f"{A}/teams/nope/members"), 404, "not_found")


async def test_lists_need_the_admin_token(pg_app: RunningApp) -> None:
    _error(await pg_app.gateway.get(f"{A}/keys"), 401, "unauthorized")
    _error(await pg_app.anonymous.get(f"{A}/audit"), 401, "unauthorized")


# --- filters ------------------------------------------------------------------------------


async def test_filters_narrow_each_list(any_app: RunningApp) -> None:
    admin = any_app.admin
    await _world(any_app)
    await _ok(admin.post(f"{A}/keys", json={"id": "k3", "user_id": "u2"}))

    async def ids(path: str, **params: Any) -> list[str]:
        return _ids(await _all_pages(admin, f"{A}/{path}", **params))

    assert await ids("teams", org_id="o1") == ["t1"]
    assert await ids("users", org_id="o2") == ["u2"]
    assert await ids("users", team_id="t1") == ["u1", "u2"]
    assert await ids("users", team_id="t2") == []
    assert await ids("keys", user_id="u1") == ["k1", "k1x"]
    assert await ids("keys", team_id="t1") == ["k1x"]
    assert await ids("keys", user_id="u1", team_id="t1") == ["k1x"]
    assert await ids("orgs", blocked="true") == ["o2"]
    assert await ids("orgs", blocked="false") == ["o1"]
    assert await ids("end-users", blocked="true") == ["e2"]
    assert [m["user_id"] for m in await _all_pages(admin, f"{A}/teams/t1/members", blocked="false")] == ["u1"]
    assert await ids("keys", id_prefix="k1") == ["k1", "k1x"]
    assert await ids("keys", id_prefix="k1x") == ["k1x"]


async def test_id_prefix_is_literal_and_case_sensitive(any_app: RunningApp) -> None:
    for tag in ("a%b", "axb", "a_c", "abc", "A_c", "Abc"):
        await _ok(any_app.admin.post(f"{A}/tags", json={"id": tag}))

    async def ids(prefix: str) -> list[str]:
        return _ids(await _all_pages(any_app.admin, f"{A}/tags", id_prefix=prefix))

    assert await ids("a%") == ["a%b"]
    assert await ids("a_") == ["a_c"]
    assert await ids("A") == ["A_c", "Abc"]
    assert await ids("ab") == ["abc"]


# --- misuse -------------------------------------------------------------------------------


async def test_a_cursor_used_with_other_filters_or_another_list_is_refused(any_app: RunningApp) -> None:
    admin = any_app.admin
    await _world(any_app)
    cursor = (await admin.get(f"{A}/users", params={"limit": 1, "org_id": "o1"})).json()["next_cursor"]
    first = (await admin.get(f"{A}/keys", params={"limit": 1})).json()["next_cursor"]
    assert cursor is None  # o1 has a single user
    cursor = (await admin.get(f"{A}/keys", params={"limit": 1, "user_id": "u1"})).json()["next_cursor"]
    assert cursor and first

    same = await admin.get(f"{A}/keys", params={"limit": 1, "user_id": "u1", "cursor": cursor})
    assert _ids(same.json()["items"]) == ["k1x"]
    for path, params in (
        ("keys", {"user_id": "u2"}),
        ("keys", {}),
        ("keys", {"user_id": "u1", "blocked": "false"}),
        ("tags", {"user_id": "u1"}),
        ("orgs", {}),
    ):
        refused = await admin.get(f"{A}/{path}", params={**params, "cursor": cursor})
        assert refused.status_code == 422, (path, params, refused.text)
    assert "other filters" in _error(await admin.get(f"{A}/keys", params={"cursor": cursor}), 422, "invalid_request")


@pytest.mark.parametrize("cursor", ["nonsense", "eyJhZnRlciI6IDF9", "", "%%%", "e30"])
async def test_a_cursor_the_service_did_not_issue_is_refused(pg_app: RunningApp, cursor: str) -> None:
    message = _error(await pg_app.admin.get(f"{A}/orgs", params={"cursor": cursor}), 422, "invalid_request")
    assert message.startswith("cursor")


@pytest.mark.parametrize("limit", ["0", "501", "-1", "ten"])
async def test_a_limit_outside_1_to_500_is_refused(pg_app: RunningApp, limit: str) -> None:
    message = _error(await pg_app.admin.get(f"{A}/keys", params={"limit": limit}), 422, "invalid_request")
    assert "limit" in message


async def test_a_limit_of_500_is_accepted(pg_app: RunningApp) -> None:
    assert (await pg_app.admin.get(f"{A}/keys", params={"limit": "500"})).status_code == 200


@pytest.mark.parametrize(
    ("path", "param"),
    [("orgs", "org_id"), ("tags", "team_id"), ("teams", "user_id"), ("keys", "org_id"), ("keys", "nonsense")],
)
async def test_a_filter_the_list_does_not_take_is_refused_rather_than_ignored(
    pg_app: RunningApp, path: str, param: str
) -> None:
    message = _error(await pg_app.admin.get(f"{A}/{path}", params={param: "x"}), 422, "invalid_request")
    assert message.startswith(param) and "limit" in message


# --- pagination under concurrent inserts --------------------------------------------------


async def test_paging_while_entities_are_inserted_before_and_after_the_cursor_never_skips_or_repeats(
    any_app: RunningApp,
) -> None:
    admin = any_app.admin
    originals = [f"k{i:03d}" for i in range(0, 60, 2)]
    for key_id in originals:
        await _ok(admin.post(f"{A}/keys", json={"id": key_id}))
    seen: list[str] = []
    cursor = None
    inserted = itertools.count(1)
    for _ in range(100):  # bounded: a cursor that does not advance must fail, not hang
        params: dict[str, Any] = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = (await admin.get(f"{A}/keys", params=params)).json()
        seen += _ids(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        last = int(seen[-1][1:])
        n = next(inserted)
        # one id just before the cursor, one just after it, one at the far end, one at the start
        for key_id in (f"k{last - 1:03d}x{n}", f"k{last + 1:03d}", f"k{999 - n:03d}", f"k000a{n}"):
            if (await admin.get(f"{A}/keys/{key_id}")).status_code == 404:
                await _ok(admin.post(f"{A}/keys", json={"id": key_id}))
    else:
        raise AssertionError("the list never ended")
    assert len(seen) == len(set(seen)), "an entity was listed twice"
    assert seen == sorted(seen), "pages are not in id order"
    assert [key_id for key_id in seen if key_id in originals] == originals, "an original entity was skipped"
    assert any(key_id not in originals for key_id in seen), "entities inserted after the cursor appear"


# --- a property of keyset order -------------------------------------------------------------

_ID_CHARS = "aAbB09_%-.~"


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("clean_pg" if request.param == "postgres" else "sqlite_url"))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A loop of the test's own: hypothesis runs examples synchronously."""
    own = asyncio.new_event_loop()
    yield own
    own.close()


def test_pages_of_any_size_concatenate_to_the_ids_in_order_each_exactly_once(
    database_url: str, loop: asyncio.AbstractEventLoop
) -> None:
    app = create_app(
        Settings(
            database_url=database_url,
            admin_token=SecretStr(ADMIN_TOKEN),
            gateway_token=SecretStr(GATEWAY_TOKEN),
            policy_reload_seconds=0,
        )
    )
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())
    admin = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://spendgate.test",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    examples = itertools.count()

    async def insert(ids: set[str]) -> None:
        async with app.state.runtime.sessions() as session:
            session.add_all([Tag(id=tag_id) for tag_id in ids])
            await session.commit()

    try:

        @settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            ids=st.sets(st.text(_ID_CHARS, min_size=1, max_size=5), max_size=25),
            later=st.sets(st.text(_ID_CHARS, min_size=1, max_size=5), max_size=10),
            limit=st.integers(min_value=1, max_value=6),
        )
        def example(ids: set[str], later: set[str], limit: int) -> None:
            prefix = f"p{next(examples)}:"
            originals = sorted(prefix + i for i in ids)
            loop.run_until_complete(insert(set(originals)))
            extra = iter(sorted(prefix + i for i in later - ids))
            seen: list[str] = []
            cursor = None
            for _ in range(len(ids) + len(later) + 2):  # bounded: a stuck cursor fails, not hangs
                params: dict[str, Any] = {"id_prefix": prefix, "limit": limit, **({"cursor": cursor} if cursor else {})}
                answer = loop.run_until_complete(admin.get(f"{A}/tags", params=params))
                assert answer.status_code == 200, answer.text
                seen += _ids(answer.json()["items"])
                cursor = answer.json()["next_cursor"]
                if cursor is None:
                    break
                tag = next(extra, None)  # lands before or after the cursor, as the draw falls
                if tag is not None:
                    loop.run_until_complete(insert({tag}))
            else:
                raise AssertionError("the list never ended")
            assert seen == sorted(set(seen)), "strictly increasing: no repeats, keyset order"
            assert [i for i in seen if i in set(originals)] == originals, "every original exactly once"

        example()
    finally:
        loop.run_until_complete(admin.aclose())
        loop.run_until_complete(lifespan.__aexit__(None, None, None))
        app.state = State()
