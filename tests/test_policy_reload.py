"""Hot reload of policies in a running service: a good set goes live, a broken one never does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from conftest import RunningApp
from spendgate.policy.reload import PolicyReloader
from spendgate.settings import DEFAULT_POLICY_DIR
from support.scenario import authorize, charged_entities, create, create_key, record

pytestmark = pytest.mark.asyncio


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, target)
    return target


async def _app_with_policies(app_factory: Any, sqlite_url: str, policy_dir: Path) -> tuple[RunningApp, PolicyReloader]:
    app = await app_factory(database_url=sqlite_url, policy_dir=policy_dir, policy_reload_seconds=0)
    return app, PolicyReloader(app.runtime.policy, policy_dir)


async def _team_key(app: RunningApp) -> str:
    await create(app.admin, "users", {"id": "ada"})
    await create(app.admin, "teams", {"id": "search", "name": "Search"})
    return await create_key(app.admin, id="k1", team_id="search", user_id="ada")


async def test_a_changed_policy_goes_live_without_a_restart(app_factory: Any, sqlite_url: str, policy_dir: Path) -> None:
    app, reloader = await _app_with_policies(app_factory, sqlite_url, policy_dir)
    secret = await _team_key(app)
    before = await authorize(app.gateway, request_id="r1", api_key=secret)
    assert ("user", "ada") not in charged_entities(before)

    data_file = policy_dir / "data.json"
    data = json.loads(data_file.read_text())
    data["spendgate"]["config"]["team_keys_charge_user"] = True
    data_file.write_text(json.dumps(data, indent=2))
    assert await reloader.check_once() is True

    after = await authorize(app.gateway, request_id="r2", api_key=secret)
    assert ("user", "ada") in charged_entities(after)
    assert after["policy_revision"] != before["policy_revision"]
    recorded = await record(app.gateway, request_id="r2", cost="0.01", outcome="success")
    assert recorded["policy_revision"] == after["policy_revision"]
    async with app.runtime.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT policy_revision FROM spend_events WHERE request_id = 'r2'"))).scalar()
    assert stored == after["policy_revision"]


async def test_a_policy_that_does_not_compile_never_replaces_the_working_one(
    app_factory: Any, sqlite_url: str, policy_dir: Path
) -> None:
    app, reloader = await _app_with_policies(app_factory, sqlite_url, policy_dir)
    secret = await _team_key(app)
    serving = app.runtime.policy.revision

    (policy_dir / "spendgate" / "broken.rego").write_text("package spendgate.broken\n\nx := if {\n")

    assert await reloader.check_once() is False
    assert reloader.last_error is not None and "broken.rego" in reloader.last_error
    assert app.runtime.policy.revision == serving
    still = await authorize(app.gateway, request_id="r1", api_key=secret)
    assert still["decision"] == "allow" and still["policy_revision"] == serving


async def test_invalid_data_json_is_rejected_like_a_broken_policy(
    app_factory: Any, sqlite_url: str, policy_dir: Path
) -> None:
    app, reloader = await _app_with_policies(app_factory, sqlite_url, policy_dir)
    serving = app.runtime.policy.revision

    (policy_dir / "data.json").write_text("{not json")

    assert await reloader.check_once() is False
    assert reloader.last_error is not None and "data.json" in reloader.last_error
    assert app.runtime.policy.revision == serving
