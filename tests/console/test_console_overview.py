"""The overview's figures over HTTP, on PostgreSQL + Redis and on the embedded SQLite default:
the spend sums (read from the `*` rollups) at day and month boundaries, a lifetime budget in
"closest to a limit", and the ranking behind that list (`limit_at_charge`, console/overview.py)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from decimal import Decimal

import httpx
import pytest

from console.helpers import signed_in_client, spend
from reliability.harness import ADMIN_TOKEN, GATEWAY_TOKEN, Cluster
from spendgate.console import overview as overview_module
from spendgate.console.overview import _candidates, near_limit
from support.app import AppFactory, RunningApp
from support.scenario import create

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["cluster", "embedded"])
def service(request: pytest.FixtureRequest) -> Cluster:
    found: Cluster = request.getfixturevalue(request.param)
    return found


@pytest.fixture
async def clients(service: Cluster) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient]]:
    url = service.replicas[0].url
    async with (
        httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10) as admin,
        httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {GATEWAY_TOKEN}"}, timeout=10) as gateway,
    ):
        console = await signed_in_client(url)
        try:
            yield admin, gateway, console
        finally:
            await console.aclose()


def _tile(page: str, tile: str) -> tuple[Decimal, int]:
    found = re.search(rf'id="{tile}">([^<]+)</b><small>(\d+) requests', page)
    assert found, f"no {tile} tile on the overview"
    return Decimal(found.group(1)), int(found.group(2))


def _first_near_limit_row(page: str) -> str:
    table = page[page.index('<table id="near-limit">'):]
    body = table[table.index("<tbody>"):]
    return body[: body.index("</tr>")]


async def _signed_in(app: RunningApp) -> httpx.AsyncClient:
    token = app.settings.admin_token.get_secret_value() if app.settings.admin_token else ""
    signed = await app.anonymous.post("/console/login", data={"token": token})
    assert signed.status_code == 303, signed.text
    return app.anonymous


async def test_today_and_this_month_sum_the_requests_recorded_since_midnight_and_the_first(
    any_app: RunningApp,
) -> None:
    """The app's clock is pinned (the overview reads "now" from the same clock that dates the
    records), so the day and month boundaries are where the test puts them, whenever it runs."""
    team = await create(any_app.admin, "teams", {"id": "team-sums", "name": "Sums"})
    key = await create(any_app.admin, "keys", {"team_id": team["id"], "name": "sums"})
    quiet = await create(any_app.admin, "keys", {"team_id": team["id"], "name": "quiet"})
    for at, cost, secret in [
        (datetime(2031, 2, 28, 23, 59, tzinfo=timezone.utc), "100", key["key"]),  # last month
        (datetime(2031, 3, 1, 0, 0, tzinfo=timezone.utc), "20", key["key"]),  # the month's first instant
        (datetime(2031, 3, 14, 23, 59, tzinfo=timezone.utc), "3", quiet["key"]),  # yesterday
        (datetime(2031, 3, 15, 0, 0, tzinfo=timezone.utc), "0.5", key["key"]),  # today's first instant
        (datetime(2031, 3, 15, 12, 0, tzinfo=timezone.utc), "7.25", key["key"]),
    ]:
        any_app.runtime.clock = lambda at=at: at
        await spend(any_app.gateway, secret, "gpt-4o", cost)

    console = await _signed_in(any_app)  # at the app's time: a console session expires by that clock
    page = (await console.get("/console")).text  # the clock is still 2031-03-15 12:00

    assert _tile(page, "spend-today") == (Decimal("7.75"), 2)
    assert _tile(page, "spend-month") == (Decimal("30.75"), 4)
    top = page[page.index('<table id="top-keys">'):]
    top = top[: top.index("</table>")]
    assert key["id"] in top and quiet["id"] not in top, "top keys are today's"


async def test_a_lifetime_budget_close_to_its_limit_is_listed_first(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    admin, gateway, console = clients
    team = f"team-{uuid.uuid4().hex[:8]}"
    await create(admin, "teams", {"id": team, "name": "Lifetime", "budget": {"max_budget": "1.30"}})
    key = await create(admin, "keys", {"team_id": team, "name": "lifetime"})
    await spend(gateway, key["key"], "gpt-4o", "1.29")

    first = _first_near_limit_row((await console.get("/console")).text)

    assert team in first and "no reset" in first
    assert "99.23 %" in first, "1.29 of 1.30 used"


async def _spend_on(app: RunningApp, budget: dict[str, str], cost: str) -> tuple[str, str]:
    """A new key with `budget`, charged `cost`: its id and secret."""
    key = await create(app.admin, "keys", {"name": "ranked", "budget": budget})
    await spend(app.gateway, key["key"], "gpt-4o", cost)
    return str(key["id"]), str(key["key"])


async def test_the_ranking_orders_by_spend_over_the_limit_at_the_last_charge_figures_by_the_budget(
    any_app: RunningApp,
) -> None:
    """Same spend, different limits: the smaller limit ranks first — for a windowed ledger and a
    never-ending one alike. The ranking reads `limit_at_charge` (no join to budgets): a limit raised
    after the charge moves nothing until the next charge, while the figures shown — and their
    order — come from the budget at once."""
    runtime = any_app.runtime
    tight, tight_secret = await _spend_on(any_app, {"max_budget": "5", "duration": "1d", "reset": "calendar"}, "1")
    wide, _ = await _spend_on(any_app, {"max_budget": "10"}, "1")

    async def ranked() -> list[str]:
        async with runtime.sessions() as session:
            return [i for t, i in await _candidates(session, runtime.clock()) if t == "key"]

    async def shown() -> list[tuple[str, str]]:
        async with runtime.sessions() as session:
            rows = await near_limit(session=session, runtime=runtime, now=runtime.clock())
        return [(row.entity_id, row.limit) for row in rows if row.entity_type == "key"]

    assert await ranked() == [tight, wide]
    assert await shown() == [(tight, "5.000000"), (wide, "10.000000")]

    raised = await any_app.admin.patch(
        f"/v1/admin/keys/{tight}", json={"budget": {"max_budget": "100", "duration": "1d", "reset": "calendar"}}
    )
    assert raised.status_code == 200, raised.text

    assert await ranked() == [tight, wide], "the ranking keeps the limit of the last charge"
    assert await shown() == [(wide, "10.000000"), (tight, "100.000000")], "figures come from the budget"

    await spend(any_app.gateway, tight_secret, "gpt-4o", "0.01")  # charged under the new limit

    assert await ranked() == [wide, tight]


async def test_an_end_user_on_the_default_budget_is_listed_with_that_limit(
    app_factory: AppFactory, clean_pg: str, redis_url: str
) -> None:
    """Never created, charged under SPENDGATE_DEFAULT_END_USER_BUDGET: its ledger carries that
    limit, and the list reads the default budget for it as the decision path does."""
    app = await app_factory(
        database_url=clean_pg, redis_url=redis_url, default_end_user_budget='{"max_budget": "2", "duration": "1d"}'
    )
    key = await create(app.admin, "keys", {"name": "shop"})
    allowed = await app.gateway.post("/v1/authorize", json={
        "api_key": key["key"], "request_id": "eu-1", "model": "gpt-4o", "estimated_cost": "1.5", "end_user": "cust-9",
    })
    assert allowed.status_code == 200 and allowed.json()["decision"] == "allow", allowed.text
    recorded = await app.gateway.post("/v1/record", json={"request_id": "eu-1", "cost": "1.5", "outcome": "success"})
    assert recorded.status_code == 200, recorded.text

    async with app.runtime.sessions() as session:
        rows = await near_limit(session=session, runtime=app.runtime, now=app.runtime.clock())

    assert [(r.entity_type, r.entity_id, r.window, r.limit, r.used_bp) for r in rows] == [
        ("end_user", "cust-9", "1d", "2.000000", 7500)
    ]


async def test_candidates_whose_budget_is_gone_are_skipped_for_the_next_ones(
    any_app: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A team charged at 90 % of a limit since removed still ranks first by its ledger's
    `limit_at_charge`; the list shows no figure of a removed limit and reads the next candidates
    instead (here one entity per round, one row shown)."""
    monkeypatch.setattr(overview_module, "_ROUND", 1)
    monkeypatch.setattr(overview_module, "_SHOWN", 1)
    gone = await create(any_app.admin, "teams", {"id": "team-gone", "name": "Gone", "budget": {"max_budget": "1"}})
    key = await create(any_app.admin, "keys", {"team_id": gone["id"], "name": "gone"})
    await spend(any_app.gateway, key["key"], "gpt-4o", "0.9")
    kept, _ = await _spend_on(any_app, {"max_budget": "10"}, "1")
    removed = await any_app.admin.patch(f"/v1/admin/teams/{gone['id']}", json={"budget": None})
    assert removed.status_code == 200, removed.text
    runtime = any_app.runtime

    async with runtime.sessions() as session:
        ranked = await _candidates(session, runtime.clock())
        rows = await near_limit(session=session, runtime=runtime, now=runtime.clock())

    assert ranked[0] == ("team", "team-gone")
    assert [(r.entity_type, r.entity_id, r.limit) for r in rows] == [("key", kept, "10.000000")]
