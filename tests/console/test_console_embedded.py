"""The console on the embedded default (SQLite, no Redis): sign in, the chart, a budget change, CSRF."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from console.helpers import csrf_of, sign_in, signed_in_client, team_with_spend, wait
from reliability.harness import ADMIN_TOKEN, GATEWAY_TOKEN, Cluster


@pytest.fixture
async def clients(embedded: Cluster) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    url = embedded.replicas[0].url
    async with (
        httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10) as admin,
        httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {GATEWAY_TOKEN}"}, timeout=10) as gateway,
    ):
        yield admin, gateway


async def test_on_sqlite_the_team_page_draws_its_chart_and_a_budget_change_moves_the_bar(
    browser: Any, embedded: Cluster, clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    team, _, _ = await team_with_spend(*clients)
    sign_in(browser, embedded.replicas[0].url)
    browser.get(f"{embedded.replicas[0].url}/console/e/team/{team}")
    wait(browser, lambda d: d.execute_script("return !!(window.spendgateCharts && window.spendgateCharts['spend-chart'])"))
    data = browser.execute_script("return window.spendgateCharts['spend-chart'].data")
    assert len(data[0]) == 30 and len(data) == 3
    assert browser.find_element(By.CSS_SELECTOR, '.bar[data-window="1d"] .remaining').text == "8.750000"
    browser.find_element(By.ID, "max_budget").send_keys("5")
    browser.find_element(By.ID, "duration").send_keys("1d")
    browser.find_element(By.ID, "set-budget").click()
    wait(browser, lambda d: d.find_elements(By.ID, "change-done"))
    assert browser.find_element(By.CSS_SELECTOR, '.bar[data-window="1d"] .remaining').text == "3.750000"


async def test_on_sqlite_the_overview_lists_the_team_nearest_its_limit(
    browser: Any, embedded: Cluster, clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    admin, gateway = clients
    team, _, _ = await team_with_spend(admin, gateway)
    patched = await admin.patch(f"/v1/admin/teams/{team}", json={"budget": {"max_budget": "1.30", "duration": "1d"}})
    assert patched.status_code == 200, patched.text
    sign_in(browser, embedded.replicas[0].url)
    first = browser.find_element(By.CSS_SELECTOR, "#near-limit tbody tr")
    assert first.text.split()[:2] == [team, "team"]
    assert "96.15 %" in first.text, "1.25 of 1.30 used"


async def test_on_sqlite_a_change_without_the_csrf_token_is_refused(
    embedded: Cluster, clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    admin, _ = clients
    team = f"team-{uuid.uuid4().hex[:8]}"
    assert (await admin.post("/v1/admin/teams", json={"id": team, "name": "Ops"})).status_code == 201
    console = await signed_in_client(embedded.replicas[0].url)
    try:
        refused = await console.post("/console/actions/block", data={"kind": "team", "id": team, "blocked": "true"})
        assert refused.status_code == 403
        token = csrf_of((await console.get(f"/console/e/team/{team}")).text)
        done = await console.post(
            "/console/actions/block", data={"kind": "team", "id": team, "blocked": "true", "csrf_token": token}
        )
        assert done.status_code == 303
    finally:
        await console.aclose()
    assert (await admin.get(f"/v1/admin/teams/{team}")).json()["blocked"] is True
