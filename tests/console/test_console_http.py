"""The console's security at the HTTP level (httpx against a real `spendgate serve`): sessions,
CSRF, the Content-Security-Policy, and two replicas sharing sessions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from pydantic import SecretStr

from console.helpers import csrf_of, signed_in_client
from reliability.harness import ADMIN_TOKEN, GATEWAY_TOKEN, Cluster, eventually
from spendgate.console.session import SessionSigner
from support.scenario import create


@pytest.fixture
async def admin(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=cluster.replicas[0].url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10
    ) as client:
        yield client


@pytest.fixture
async def console(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    client = await signed_in_client(cluster.replicas[0].url)
    yield client
    await client.aclose()


async def _team(admin: httpx.AsyncClient) -> str:
    team = f"team-{uuid.uuid4().hex[:8]}"
    await create(admin, "teams", {"id": team, "name": "Payments"})
    return team


async def test_a_change_without_the_csrf_token_is_refused(
    console: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    team = await _team(admin)
    refused = await console.post("/console/actions/block", data={"kind": "team", "id": team, "blocked": "true"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert "CSRF" in refused.json()["error"]["message"]
    wrong = await console.post(
        "/console/actions/block", data={"kind": "team", "id": team, "blocked": "true", "csrf_token": "x" * 43}
    )
    assert wrong.status_code == 403
    assert (await admin.get(f"/v1/admin/teams/{team}")).json()["blocked"] is False


async def test_a_change_with_the_sessions_csrf_token_applies(
    console: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    team = await _team(admin)
    token = csrf_of((await console.get(f"/console/e/team/{team}")).text)
    done = await console.post(
        "/console/actions/block", data={"kind": "team", "id": team, "blocked": "true", "csrf_token": token}
    )
    assert done.status_code == 303
    assert (await admin.get(f"/v1/admin/teams/{team}")).json()["blocked"] is True
    by_header = await console.post(
        "/console/actions/block", data={"kind": "team", "id": team, "blocked": "false"}, headers={"x-csrf-token": token}
    )
    assert by_header.status_code == 303
    assert (await admin.get(f"/v1/admin/teams/{team}")).json()["blocked"] is False


async def test_a_change_sent_from_another_origin_is_refused_even_with_the_token(
    console: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    team = await _team(admin)
    token = csrf_of((await console.get(f"/console/e/team/{team}")).text)
    refused = await console.post(
        "/console/actions/block",
        data={"kind": "team", "id": team, "blocked": "true", "csrf_token": token},
        headers={"origin": "https://evil.example"},
    )
    assert refused.status_code == 403


async def test_a_change_without_a_session_is_refused(cluster: Cluster, admin: httpx.AsyncClient) -> None:
    team = await _team(admin)
    async with httpx.AsyncClient(base_url=cluster.replicas[0].url) as anonymous:
        refused = await anonymous.post(
            "/console/actions/block", data={"kind": "team", "id": team, "blocked": "true", "csrf_token": "x"}
        )
    assert refused.status_code == 403
    assert "session" in refused.json()["error"]["message"]


async def test_the_session_cookie_is_httponly_samesite_strict_and_expiring(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.replicas[0].url) as client:
        response = await client.post("/console/login", data={"token": ADMIN_TOKEN})
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "max-age=28800" in cookie
    assert "path=/console" in cookie
    assert ADMIN_TOKEN.lower() not in cookie


async def test_a_token_in_the_url_does_not_sign_in(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.replicas[0].url) as client:
        response = await client.get("/console/login", params={"token": ADMIN_TOKEN})
        assert "set-cookie" not in response.headers
        assert (await client.get("/console")).status_code == 303


async def test_a_wrong_token_is_answered_401_without_a_cookie(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.replicas[0].url) as client:
        response = await client.post("/console/login", data={"token": "wrong"})
    assert response.status_code == 401
    assert "set-cookie" not in response.headers


async def test_every_page_has_a_strict_content_security_policy(console: httpx.AsyncClient) -> None:
    for path in ("/console", "/console/login", "/console/browse/team", "/console/policy"):
        response = await console.get(path)
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy and "style-src 'self'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert "<script>" not in response.text and " style=" not in response.text, path
        assert response.headers["cache-control"] == "no-store"


async def test_a_session_from_one_replica_works_on_the_other(cluster: Cluster, admin: httpx.AsyncClient) -> None:
    team = await _team(admin)
    first = await signed_in_client(cluster.replicas[0].url)
    try:
        token = csrf_of((await first.get(f"/console/e/team/{team}")).text)
        async with httpx.AsyncClient(base_url=cluster.replicas[1].url, cookies=first.cookies) as second:
            page = await second.get(f"/console/e/team/{team}")
            assert page.status_code == 200 and csrf_of(page.text) == token
            done = await second.post(
                "/console/actions/block", data={"kind": "team", "id": team, "blocked": "true", "csrf_token": token}
            )
            assert done.status_code == 303
    finally:
        await first.aclose()


async def test_signing_out_ends_the_session_in_that_browser(console: httpx.AsyncClient) -> None:
    token = csrf_of((await console.get("/console")).text)
    out = await console.post("/console/logout", data={"csrf_token": token})
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    assert (await console.get("/console")).status_code == 303


def test_a_forged_or_expired_or_foreign_cookie_is_not_a_session() -> None:
    now = datetime.now(timezone.utc)
    signer = SessionSigner(SecretStr("admin-token-one"), lifetime_seconds=60)
    cookie, session = signer.issue(now=now)
    assert signer.verify(cookie, now=now) == session
    payload, mac = cookie.split(".")
    assert signer.verify(f"{payload}x.{mac}", now=now) is None
    assert signer.verify(cookie, now=now + timedelta(seconds=61)) is None
    rotated = SessionSigner(SecretStr("admin-token-two"), lifetime_seconds=60)
    assert rotated.verify(cookie, now=now) is None, "rotating the admin token ends every session"
    assert SessionSigner.csrf_ok(session, session.csrf_token) and not SessionSigner.csrf_ok(session, None)


async def test_an_unknown_entity_is_an_html_page_with_the_apis_message(console: httpx.AsyncClient) -> None:
    page = await console.get("/console/e/team/no-such-team")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "not_found" in page.text and "no-such-team" in page.text


def test_the_console_can_be_switched_off() -> None:
    from fastapi.routing import iter_route_contexts

    from spendgate.api import create_app
    from spendgate.settings import Settings

    def console_paths(console: bool) -> list[str]:
        app = create_app(Settings(console=console, admin_token=SecretStr("a" * 20), gateway_token=SecretStr("g" * 20)))
        return [route.path for route in iter_route_contexts(app.routes) if route.path and route.path.startswith("/console")]

    assert "/console" in console_paths(True)
    assert console_paths(False) == []


async def test_a_denied_request_shows_on_the_overview_and_the_keys_page_with_its_reason(
    cluster: Cluster, console: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    team = await _team(admin)
    key = await create(admin, "keys", {"team_id": team, "budget": {"max_budget": "0.01"}})
    request_id = f"too-dear-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(
        base_url=cluster.replicas[0].url, headers={"authorization": f"Bearer {GATEWAY_TOKEN}"}
    ) as gateway:
        denied = await gateway.post(
            "/v1/authorize", json={"api_key": key["key"], "request_id": request_id, "estimated_cost": "1.00"}
        )
    assert denied.json()["decision"] == "deny"
    code = denied.json()["reasons"][0]["code"]

    async def listed() -> bool:  # the decision store is written off the decision path
        return request_id in (await console.get("/console")).text

    assert await eventually(listed, timeout=10, interval=0.2)
    page = (await console.get(f"/console/e/key/{key['id']}")).text
    assert request_id in page and code in page
