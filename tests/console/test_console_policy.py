"""The console's policy page shows a rejected reload with its file:line message (in-process app, SQLite)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx

from spendgate.settings import DEFAULT_POLICY_DIR
from support.app import ADMIN_TOKEN


async def test_the_policy_page_shows_a_rejected_reload_with_its_file_and_line(
    app_factory: Any, sqlite_url: str, tmp_path: Path
) -> None:
    policy_dir = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, policy_dir)
    app = await app_factory(database_url=sqlite_url, policy_dir=policy_dir, policy_reload_seconds=0)
    broken = policy_dir / "spendgate" / "broken.rego"
    broken.write_text("package spendgate.broken\n\nx := if {\n")
    assert await app.app.state.policy_reloader.check_once() is False

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app.app), base_url="http://console") as browser:
        assert (await browser.post("/console/login", data={"token": ADMIN_TOKEN})).status_code == 303
        page = (await browser.get("/console/policy")).text
    assert f"{broken}:3:6: unexpected keyword `if`" in page
    assert app.runtime.policy.revision in page, "the previous revision keeps serving"
    assert 'id="policy-rejected"' in page
