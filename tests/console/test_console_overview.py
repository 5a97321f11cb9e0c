"""The overview's figures over HTTP, on PostgreSQL + Redis and on the embedded SQLite default:
the spend sums (read from the `*` rollups) and a lifetime budget in "closest to a limit"."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest

from console.helpers import signed_in_client, spend
from reliability.harness import ADMIN_TOKEN, GATEWAY_TOKEN, Cluster
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


async def test_a_recorded_request_adds_its_cost_to_today_this_month_and_its_key(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    admin, gateway, console = clients
    team = await create(admin, "teams", {"id": f"team-{uuid.uuid4().hex[:8]}", "name": "Sums"})
    key = await create(admin, "keys", {"team_id": team["id"], "name": "sums"})
    before = (await console.get("/console")).text

    await spend(gateway, key["key"], "gpt-4o", "7.25")
    after = (await console.get("/console")).text

    for tile in ("spend-today", "spend-month"):
        (spent_before, requests_before), (spent_after, requests_after) = _tile(before, tile), _tile(after, tile)
        assert (spent_after - spent_before, requests_after - requests_before) == (Decimal("7.25"), 1), tile
    top = after[after.index('<table id="top-keys">'):]
    assert key["id"] in top[: top.index("</table>")]


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
