"""The console in a real headless Chromium against a real `spendgate serve` (PostgreSQL + Redis).

Each test drives the pages as an operator would and checks the outcome through the page and,
for changes, through the real API (`/v1/authorize`, `/v1/admin/...`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from selenium.webdriver.common.by import By

from console.helpers import no_alert, sign_in, spend, team_with_spend, wait
from reliability.harness import ADMIN_TOKEN, GATEWAY_TOKEN, Cluster
from support.scenario import create


@pytest.fixture
async def admin(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=cluster.replicas[0].url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10
    ) as client:
        yield client


@pytest.fixture
async def gateway(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=cluster.replicas[0].url, headers={"authorization": f"Bearer {GATEWAY_TOKEN}"}, timeout=10
    ) as client:
        yield client


async def test_admin_token_signs_in_and_lands_on_the_overview(browser: Any, cluster: Cluster) -> None:
    sign_in(browser, cluster.replicas[0].url)
    assert browser.current_url.endswith("/console")
    assert browser.find_element(By.ID, "spend-today").text
    assert browser.find_element(By.ID, "near-limit").is_displayed()


async def test_a_wrong_token_cannot_sign_in(browser: Any, cluster: Cluster) -> None:
    sign_in(browser, cluster.replicas[0].url, token="not-the-admin-token")
    assert browser.current_url.endswith("/console/login")
    assert "Wrong token" in browser.find_element(By.ID, "login-error").text
    browser.get(f"{cluster.replicas[0].url}/console")
    assert browser.current_url.endswith("/console/login"), "no session: the overview redirects to sign-in"


async def test_the_gateway_token_cannot_sign_in(browser: Any, cluster: Cluster) -> None:
    sign_in(browser, cluster.replicas[0].url, token=GATEWAY_TOKEN)
    assert browser.current_url.endswith("/console/login")
    assert "gateway token" in browser.find_element(By.ID, "login-error").text
    assert browser.get_cookie("spendgate_console") is None


async def test_browse_to_a_team_and_its_chart_draws_one_point_per_day_stacked_by_model(
    browser: Any, cluster: Cluster, admin: httpx.AsyncClient, gateway: httpx.AsyncClient
) -> None:
    team, _, _ = await team_with_spend(admin, gateway)
    sign_in(browser, cluster.replicas[0].url)
    browser.get(f"{cluster.replicas[0].url}/console/browse/team?q={team}")
    browser.find_element(By.LINK_TEXT, team).click()
    wait(browser, lambda d: d.execute_script("return !!(window.spendgateCharts && window.spendgateCharts['spend-chart'])"))
    data = browser.execute_script("return window.spendgateCharts['spend-chart'].data")
    labels = browser.execute_script("return window.spendgateCharts['spend-chart'].series.map(s => s.label)")
    assert len(data[0]) == 30, "one x value per day of the last 30 days"
    assert len(data) == 3 and sorted(labels[1:]) == ["claude-sonnet-4", "gpt-4o"]
    assert all(len(series) == 30 for series in data[1:])
    assert data[1][-1] == pytest.approx(1.25), "the top of today's stack is the team's spend today"
    rows = browser.find_elements(By.CSS_SELECTOR, "#per-model tbody tr")
    assert [row.text.split()[:2] for row in rows] == [["gpt-4o", "1.000000"], ["claude-sonnet-4", "0.250000"]]


async def test_changing_a_budget_moves_the_bar(
    browser: Any, cluster: Cluster, admin: httpx.AsyncClient, gateway: httpx.AsyncClient
) -> None:
    team, _, _ = await team_with_spend(admin, gateway)
    sign_in(browser, cluster.replicas[0].url)
    browser.get(f"{cluster.replicas[0].url}/console/e/team/{team}")
    bar = '.bar[data-window="1d"]'
    assert browser.find_element(By.CSS_SELECTOR, f"{bar} .remaining").text == "8.750000"
    before = browser.find_element(By.CSS_SELECTOR, f"{bar} progress").get_attribute("max")
    browser.find_element(By.ID, "max_budget").send_keys("2.50")
    browser.find_element(By.ID, "duration").send_keys("1d")
    browser.find_element(By.ID, "set-budget").click()
    wait(browser, lambda d: d.find_elements(By.ID, "change-done"))
    assert browser.find_element(By.CSS_SELECTOR, f"{bar} .remaining").text == "1.250000"
    assert browser.find_element(By.CSS_SELECTOR, f"{bar} progress").get_attribute("max") != before
    assert (await admin.get(f"/v1/admin/teams/{team}")).json()["budget"]["max_budget"] == "2.500000"


async def test_a_refused_budget_shows_the_apis_message(
    browser: Any, cluster: Cluster, admin: httpx.AsyncClient, gateway: httpx.AsyncClient
) -> None:
    team, _, _ = await team_with_spend(admin, gateway)
    api = await admin.patch(f"/v1/admin/teams/{team}", json={"budget": [{"max_budget": "ten", "duration": "1d"}]})
    sign_in(browser, cluster.replicas[0].url)
    browser.get(f"{cluster.replicas[0].url}/console/e/team/{team}")
    browser.find_element(By.ID, "max_budget").send_keys("ten")
    browser.find_element(By.ID, "duration").send_keys("1d")
    browser.find_element(By.ID, "set-budget").click()
    shown = wait(browser, lambda d: d.find_elements(By.ID, "change-error"))[0].text
    assert shown == f"invalid_request {api.json()['error']['message']}"


async def test_revoking_a_key_makes_authorize_refuse_it(
    browser: Any, cluster: Cluster, admin: httpx.AsyncClient, gateway: httpx.AsyncClient
) -> None:
    team, key_id, secret = await team_with_spend(admin, gateway)
    sign_in(browser, cluster.replicas[0].url)
    browser.get(f"{cluster.replicas[0].url}/console/e/key/{key_id}")
    browser.find_element(By.ID, "revoke-key").click()
    wait(browser, lambda d: d.find_elements(By.ID, "change-done"))
    assert f"/console/e/team/{team}" in browser.current_url
    refused = await gateway.post(
        "/v1/authorize", json={"api_key": secret, "request_id": uuid.uuid4().hex, "model": "gpt-4o", "estimated_cost": "0.01"}
    )
    assert refused.json()["decision"] == "deny"
    assert [reason["code"] for reason in refused.json()["reasons"]] == ["invalid_key"]


async def test_a_key_created_in_the_console_shows_its_secret_once_and_works(
    browser: Any, cluster: Cluster, admin: httpx.AsyncClient, gateway: httpx.AsyncClient
) -> None:
    team, _, _ = await team_with_spend(admin, gateway)
    sign_in(browser, cluster.replicas[0].url)
    browser.get(f"{cluster.replicas[0].url}/console/e/team/{team}")
    browser.find_element(By.ID, "key-name").send_keys("made-in-console")
    browser.find_element(By.ID, "create-key").click()
    secret = wait(browser, lambda d: d.find_elements(By.ID, "key-secret"))[0].text
    browser.find_element(By.ID, "key-link").click()
    assert secret not in browser.page_source, "the key page never shows the secret again"
    await spend(gateway, secret, "gpt-4o", "0.10")


async def test_a_team_name_with_markup_renders_as_text(
    browser: Any, cluster: Cluster, admin: httpx.AsyncClient, gateway: httpx.AsyncClient
) -> None:
    attack = "<img src=x onerror=alert(1)>"
    team, _, _ = await team_with_spend(admin, gateway, name=attack)
    odd_id = f"q\"'<b>ü-{uuid.uuid4().hex[:6]}"
    await create(admin, "teams", {"id": odd_id, "name": f"<script>alert(2)</script>{attack}"})
    sign_in(browser, cluster.replicas[0].url)
    browser.get(f"{cluster.replicas[0].url}/console/e/team/{team}")
    assert browser.find_element(By.ID, "entity-name").text == attack
    assert not browser.find_elements(By.CSS_SELECTOR, "main img"), "the markup was not turned into an element"
    assert no_alert(browser)
    browser.get(f"{cluster.replicas[0].url}/console/browse/team?q={quote(odd_id[:4], safe='')}")
    browser.find_element(By.LINK_TEXT, odd_id).click()
    assert browser.find_element(By.ID, "entity-id").text == odd_id
    assert browser.find_element(By.ID, "entity-name").text == f"<script>alert(2)</script>{attack}"
    assert no_alert(browser)


async def test_the_policy_page_shows_the_live_revision_and_knobs(browser: Any, cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.replicas[0].url) as client:
        ready = (await client.get("/readyz")).json()
    sign_in(browser, cluster.replicas[0].url)
    browser.get(f"{cluster.replicas[0].url}/console/policy")
    assert browser.find_element(By.ID, "policy-revision").text == ready["policy_revision"]
    assert browser.find_element(By.ID, "policy-rejected-none").is_displayed()
    assert "team_keys_charge_user" in browser.page_source


async def test_clicking_a_request_shows_the_ledgers_it_charged_in_place(
    browser: Any, cluster: Cluster, admin: httpx.AsyncClient, gateway: httpx.AsyncClient
) -> None:
    team, key_id, _ = await team_with_spend(admin, gateway)
    sign_in(browser, cluster.replicas[0].url)
    browser.get(f"{cluster.replicas[0].url}/console/e/key/{key_id}")
    page_url = browser.current_url
    browser.find_element(By.CSS_SELECTOR, "#events tbody tr a").click()
    detail = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#request-detail .charges"))[0]
    assert browser.current_url == page_url, "htmx loaded the detail into the page (the CSP let it run)"
    charged = {row.text.split()[1] for row in detail.find_elements(By.CSS_SELECTOR, "tbody tr")}
    assert {team, key_id} <= charged
    assert no_alert(browser)


async def test_the_pages_run_under_their_content_security_policy_without_violations(
    browser: Any, cluster: Cluster, admin: httpx.AsyncClient, gateway: httpx.AsyncClient
) -> None:
    team, key_id, _ = await team_with_spend(admin, gateway)
    sign_in(browser, cluster.replicas[0].url)
    browser.get_log("browser")  # start from an empty log
    for path in ("/console", f"/console/e/team/{team}", f"/console/e/key/{key_id}", "/console/browse/key",
                 "/console/policy"):
        browser.get(f"{cluster.replicas[0].url}{path}")
        wait(browser, lambda d: d.execute_script("return document.readyState") == "complete")
    wait(browser, lambda d: d.execute_script("return !!window.htmx"))
    problems = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"
                or "Content Security Policy" in entry["message"]]
    assert problems == []
