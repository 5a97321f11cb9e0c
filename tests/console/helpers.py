"""Helpers of the console tests: the embedded-default service, and a signed-in httpx client."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from reliability.harness import ADMIN_TOKEN, Cluster, Replica
from support.scenario import create
from support.services import free_port

__all__ = ["EmbeddedService", "csrf_of", "signed_in_client", "wait", "sign_in", "no_alert", "spend", "team_with_spend"]

WAIT_SECONDS = 15


class EmbeddedService(Cluster):
    """One replica on the embedded default: a SQLite file in the workdir, SQL counters, no Redis."""

    def _env(self, replica: int | None = None) -> dict[str, str]:
        env = super()._env(replica)
        env.pop("SPENDGATE_REDIS_URL")
        env["SPENDGATE_DATABASE_URL"] = f"sqlite+aiosqlite:///{self.workdir / 'spendgate.db'}"
        return env

    async def start(self) -> None:
        self.replicas = [Replica(i, free_port(), self.workdir / f"replica-{i}.log") for i in range(self.size)]
        for replica in self.replicas:
            self.spawn(replica)
        await self.wait_ready(self.replicas)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no CSRF token"
    return found.group(1)


async def signed_in_client(base_url: str) -> httpx.AsyncClient:
    """An httpx client holding a console session cookie (signed in through the form)."""
    client = httpx.AsyncClient(base_url=base_url, timeout=10)
    response = await client.post("/console/login", data={"token": ADMIN_TOKEN})
    assert response.status_code == 303, response.text
    return client


def wait(driver: Any, condition: Any) -> Any:
    return WebDriverWait(driver, WAIT_SECONDS).until(condition)


def sign_in(driver: Any, base_url: str, token: str = ADMIN_TOKEN) -> None:
    driver.delete_all_cookies()
    driver.get(f"{base_url}/console/login")
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "sign-in").click()
    wait(driver, lambda d: d.find_elements(By.ID, "login-error") or not d.current_url.endswith("/console/login"))


def no_alert(driver: Any) -> bool:
    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


async def spend(gateway: httpx.AsyncClient, secret: str, model: str, cost: str) -> None:
    request_id = f"console-{uuid.uuid4().hex}"
    allowed = await gateway.post(
        "/v1/authorize", json={"api_key": secret, "request_id": request_id, "model": model, "estimated_cost": cost}
    )
    assert allowed.status_code == 200 and allowed.json()["decision"] == "allow", allowed.text
    recorded = await gateway.post("/v1/record", json={"request_id": request_id, "cost": cost, "outcome": "success"})
    assert recorded.status_code == 200, recorded.text


async def team_with_spend(admin: httpx.AsyncClient, gateway: httpx.AsyncClient, name: str = "Search") -> tuple[str, str, str]:
    """A team with a 10 USD daily budget and a key that spent 1.25 on two models; (team, key id, secret)."""
    team = f"team-{uuid.uuid4().hex[:8]}"
    await create(admin, "teams", {"id": team, "name": name, "budget": {"max_budget": "10", "duration": "1d"}})
    key = await create(admin, "keys", {"team_id": team, "name": "search-prod"})
    await spend(gateway, key["key"], "gpt-4o", "1.00")
    await spend(gateway, key["key"], "claude-sonnet-4", "0.25")
    return team, key["id"], key["key"]
