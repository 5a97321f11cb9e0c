"""Take the console screenshots of docs/console.md: `.venv/bin/python tests/console/screenshots.py`.

Starts a real `spendgate serve` (PostgreSQL + Redis, as the tests do), creates demo entities and
spend through the API, backfills 29 earlier days of hourly spend rollups for one team (the API
records spend only "now"; the backfill is plain rows of the rollup table, shaped as the record
path writes them) so the chart shows a month, then saves overview, team, key and policy pages at
1280×800 from headless Chromium into docs/console/.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import httpx

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from console.conftest import CHROMIUM_FLAGS, _browser_binaries  # noqa: E402
from console.helpers import sign_in  # noqa: E402
from reliability.harness import ADMIN_TOKEN, GATEWAY_TOKEN, Cluster  # noqa: E402

OUT = TESTS.parent / "docs" / "console"
MODELS = {"gpt-4o": (0.02, 0.09), "gpt-4o-mini": (0.001, 0.006), "claude-sonnet-4": (0.03, 0.12)}


async def _seed(cluster: Cluster) -> dict[str, str]:
    url = cluster.replicas[0].url
    admin = httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    gateway = httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {GATEWAY_TOKEN}"}, timeout=10)

    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await admin.post(path, json=body)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    await post("/v1/admin/orgs", {"id": "acme", "name": "Acme Corp", "budget": {"max_budget": "5000", "duration": "1mo", "reset": "calendar"}})
    teams = {
        "search": ("Search", [{"max_budget": "60", "duration": "1d"}, {"max_budget": "1200", "duration": "1mo", "reset": "calendar"}]),
        "support-bot": ("Support bot", {"max_budget": "400", "duration": "1mo", "reset": "calendar"}),
        "research": ("Research", {"max_budget": "3", "duration": "1d", "soft_budget": "2"}),
        "growth": ("Growth experiments", {"max_budget": "150", "duration": "1mo", "reset": "calendar"}),
    }
    for team_id, (name, budget) in teams.items():
        await post("/v1/admin/teams", {"id": team_id, "name": name, "org_id": "acme", "budget": budget})
    for user in ("ada", "grace", "linus"):
        await post("/v1/admin/users", {"id": user, "email": f"{user}@acme.example", "org_id": "acme"})
    await post("/v1/admin/teams/search/members", {"user_id": "ada", "budget": {"max_budget": "25", "duration": "1d"}})
    await post("/v1/admin/teams/research/members", {"user_id": "grace"})
    keys: dict[str, str] = {}
    for key_id, owner, budget in (
        ("search-prod", {"team_id": "search"}, {"max_budget": "40", "duration": "1d"}),
        ("search-staging", {"team_id": "search"}, {"max_budget": "5", "duration": "1d"}),
        ("support-bot-prod", {"team_id": "support-bot"}, None),
        ("research-notebook", {"team_id": "research"}, None),
        ("growth-ab-tests", {"team_id": "growth"}, {"max_budget": "10", "duration": "1d"}),
        ("ada-laptop", {"user_id": "ada"}, {"max_budget": "20", "duration": "1mo"}),
    ):
        created = await post("/v1/admin/keys", {"id": key_id, "name": key_id, **owner, **({"budget": budget} if budget else {})})
        keys[key_id] = created["key"]
    rng = random.Random(7)
    weights = {"search-prod": 40, "search-staging": 6, "support-bot-prod": 25, "research-notebook": 14,
               "growth-ab-tests": 8, "ada-laptop": 5}
    for _ in range(160):
        key_id = rng.choices(list(weights), list(weights.values()))[0]
        model = rng.choice(list(MODELS))
        low, high = MODELS[model]
        cost = f"{rng.uniform(low, high) * (8 if key_id == 'research-notebook' else 1):.6f}"
        request_id = f"req-{uuid.uuid4().hex[:12]}"
        body = {"api_key": keys[key_id], "request_id": request_id, "model": model, "estimated_cost": cost}
        if rng.random() < 0.5:
            body["end_user"] = f"customer-{rng.randint(1, 40)}"
        decided = (await gateway.post("/v1/authorize", json=body)).json()
        if decided["decision"] == "allow":
            outcome = "failure" if rng.random() < 0.04 else "success"
            await gateway.post("/v1/record", json={"request_id": request_id, "cost": cost if outcome == "success" else "0",
                                                   "outcome": outcome})
    await admin.patch("/v1/admin/keys/growth-ab-tests", json={"blocked": True})
    await admin.aclose()
    await gateway.aclose()
    return keys


async def _backfill(cluster: Cluster) -> None:
    """29 earlier days of rollups for team search, its org, its prod key and the all-requests row."""
    rng = random.Random(11)
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = []
    for day in range(1, 30):
        for model, (low, high) in MODELS.items():
            hour = today - timedelta(days=day) + timedelta(hours=rng.randint(8, 18))
            requests = rng.randint(20, 90) if model != "claude-sonnet-4" else rng.randint(5, 30)
            spend = int(requests * rng.uniform(low, high) * 1_000_000_000)
            for entity in (("team", "search"), ("org", "acme"), ("key", "search-prod"), ("*", "*")):
                rows.append((*entity, hour, model, "search-prod", "success", spend, requests, 0))
    connection = await asyncpg.connect(cluster.asyncpg_url)
    try:
        await connection.executemany(
            "INSERT INTO spend_rollups (entity_type, entity_id, hour, model, key_id, outcome, spend, requests, failures)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)", rows,
        )
    finally:
        await connection.close()


def _shoot(base_url: str) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = _browser_binaries()
    assert found, "install chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp()}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(found[1]))
    try:
        driver.set_window_size(1280, 800)
        sign_in(driver, base_url)
        OUT.mkdir(parents=True, exist_ok=True)
        for name, path in (("overview", "/console"), ("team", "/console/e/team/search"),
                           ("key", "/console/e/key/search-prod"), ("policy", "/console/policy")):
            driver.get(base_url + path)
            if name == "team":  # the budget bars' end and the whole chart
                driver.execute_script("window.scrollTo(0, document.getElementById('spend-chart').offsetTop - 330)")
            driver.save_screenshot(str(OUT / f"{name}.png"))
            print("saved", OUT / f"{name}.png")
    finally:
        driver.quit()


async def main() -> None:
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="spendgate-screens-")), replicas=1)
    try:
        await cluster.start()
        await _seed(cluster)
        await _backfill(cluster)
        await asyncio.to_thread(_shoot, cluster.replicas[0].url)
    finally:
        await cluster.stop()


if __name__ == "__main__":
    asyncio.run(main())
