"""Hot reload of policies in a running service: a good set goes live, a broken one never does."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from support.app import RunningApp
from spendgate.policy.reload import PolicyReloader, fingerprint
from spendgate.settings import DEFAULT_POLICY_DIR
from support.scenario import authorize, charged_entities, create, create_key, record

pytestmark = pytest.mark.asyncio


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, target)
    return target


async def _app_with_policies(app_factory: Any, sqlite_url: str, policy_dir: Path) -> tuple[RunningApp, PolicyReloader]:
    """The app and its own reloader (created even with polling off; the test drives it)."""
    app = await app_factory(database_url=sqlite_url, policy_dir=policy_dir, policy_reload_seconds=0)
    return app, app.app.state.policy_reloader


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


async def _metric(app: RunningApp, sample: str) -> float:
    response = await app.anonymous.get("/metrics")
    (value,) = [line.rsplit(" ", 1)[1] for line in response.text.splitlines() if line.startswith(sample + " ")]
    return float(value)


async def test_a_rejected_reload_shows_in_readyz_and_metrics_until_the_files_are_fixed(
    app_factory: Any, sqlite_url: str, policy_dir: Path
) -> None:
    app, reloader = await _app_with_policies(app_factory, sqlite_url, policy_dir)
    serving = app.runtime.policy.revision
    broken = policy_dir / "spendgate" / "broken.rego"
    broken.write_text("package spendgate.broken\n\nx := if {\n")

    assert await reloader.check_once() is False

    ready = await app.anonymous.get("/readyz")
    assert ready.status_code == 200  # still ready: it serves the previous revision
    body = ready.json()
    assert body["checks"]["policy"] == "ok" and body["policy_revision"] == serving
    rejected = body["policy_reload"]
    assert rejected["state"] == "rejected" and rejected["revision"] not in (None, serving)
    assert f"{broken}:3:6: unexpected keyword `if`" in rejected["error"]  # a path the operator can open
    assert await _metric(app, 'spendgate_policy_reloads_total{result="rejected"}') == 1
    assert await _metric(app, "spendgate_policy_reload_rejected") == 1

    broken.unlink()
    assert await reloader.check_once() is False  # the files on disk are the live set again

    body = (await app.anonymous.get("/readyz")).json()
    assert body["policy_reload"] is None and body["policy_revision"] == serving
    assert await _metric(app, "spendgate_policy_reload_rejected") == 0
    assert await _metric(app, 'spendgate_policy_reloads_total{result="applied"}') == 0


async def test_readyz_reports_an_unreadable_set_without_a_revision(
    app_factory: Any, sqlite_url: str, policy_dir: Path
) -> None:
    app, reloader = await _app_with_policies(app_factory, sqlite_url, policy_dir)
    (policy_dir / "data.json").write_text("{not json")

    assert await reloader.check_once() is False

    rejected = (await app.anonymous.get("/readyz")).json()["policy_reload"]
    assert rejected["revision"] is None and f"{policy_dir / 'data.json'}:1:2: invalid JSON" in rejected["error"]


async def test_a_revision_the_compiled_engine_misjudges_is_decided_by_the_interpreter_and_shown(
    app_factory: Any, sqlite_url: str, policy_dir: Path
) -> None:
    app, reloader = await _app_with_policies(app_factory, sqlite_url, policy_dir)
    secret = await _team_key(app)
    assert (await app.anonymous.get("/readyz")).json()["policy_engine"] == "compiled"
    assert await _metric(app, "spendgate_policy_compiled") == 1

    # regorus's VM takes `tier := input.key.tier` as satisfied though no key has a tier (policies/INTERFACE.md):
    # it would refuse every key; the interpreter, like OPA, refuses none.
    tiered = policy_dir / "spendgate" / "admission" / "tiers.rego"
    tiered.write_text(
        "package spendgate.admission\n\n"
        'reasons contains {"code": "key_blocked", "entity": {"type": "key", "id": input.key.id}, '
        '"message": "tiered keys are blocked"} if {\n\tinput.key.id\n\ttier := input.key.tier\n}\n'
    )
    assert await reloader.check_once() is True
    assert (await app.anonymous.get("/readyz")).json()["policy_engine"] == "interpreter"
    assert await _metric(app, "spendgate_policy_compiled") == 0
    allowed = await authorize(app.gateway, request_id="r1", api_key=secret)
    assert allowed["decision"] == "allow" and allowed["policy_revision"] == app.runtime.policy.revision

    tiered.unlink()
    assert await reloader.check_once() is True
    assert (await app.anonymous.get("/readyz")).json()["policy_engine"] == "compiled"
    assert await _metric(app, "spendgate_policy_compiled") == 1


async def test_the_fingerprint_sees_policy_files_only_and_survives_odd_entries(tmp_path: Path) -> None:
    # It runs every second on the event loop: a looping or dangling link, a pipe or a folder named like a
    # policy must neither stop it (an exception would end reloads) nor count as a policy.
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "a.rego").write_text("package a\n")
    (tmp_path / "data.json").write_text("{}")
    (tmp_path / "notes.md").write_text("not a policy")
    (tmp_path / "folder.rego").mkdir()
    (tmp_path / "loop.rego").symlink_to(tmp_path / "loop.rego")
    (tmp_path / "dangling.rego").symlink_to(tmp_path / "missing.rego")
    os.mkfifo(tmp_path / "pipe.rego")

    seen = fingerprint(tmp_path)

    assert [entry[0] for entry in seen] == ["data.json", "nested/a.rego"]
    (tmp_path / "nested" / "a.rego").write_text("package a\n\nx := 1\n")
    assert fingerprint(tmp_path) != seen
