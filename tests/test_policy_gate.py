"""SPENDGATE_POLICY_GATE: with `test`, a policy set whose tests fail never goes live — not on reload, not at start-up."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.app import RunningApp
from spendgate.errors import PolicyTestsFailed
from spendgate.policy.loader import load_policy_set
from spendgate.policy.reload import PolicyReloader
from spendgate.settings import DEFAULT_POLICY_DIR
from support.scenario import authorize, charged_entities, create, create_key

pytestmark = pytest.mark.asyncio

KNOB_TEST = "\tdata.spendgate.config.team_keys_charge_user == true # the knob; absent means false\n"
#: Compiles, but makes every team key charge its user: the pinned knob tests fail.
CHARGE_EVERY_TEAM_KEY_USER = "\ttrue # every team key charges its user\n"
#: A test the change breaks (it pins the knob to false and expects no personal ledger charged).
BROKEN_TEST = "data.spendgate.attribution_test.test_charges_team_ledgers_when_team_key"


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A copy of the shipped policies with their tests beside them (tmp/policies, tmp/policy_tests)."""
    shutil.copytree(DEFAULT_POLICY_DIR, tmp_path / "policies")
    shutil.copytree(DEFAULT_POLICY_DIR.parent / "policy_tests", tmp_path / "policy_tests")
    return tmp_path / "policies"


def _attribution(policy_dir: Path) -> Path:
    return policy_dir / "spendgate" / "attribution" / "attribution.rego"


def _break_tests(policy_dir: Path) -> str:
    """Write a change that compiles but fails policy tests; returns its revision."""
    source = _attribution(policy_dir).read_text()
    assert KNOB_TEST in source
    _attribution(policy_dir).write_text(source.replace(KNOB_TEST, CHARGE_EVERY_TEAM_KEY_USER))
    return load_policy_set(policy_dir).revision


def _fix(policy_dir: Path) -> str:
    """Undo the change (plus a comment, so it is a new revision); returns its revision."""
    source = _attribution(policy_dir).read_text().replace(CHARGE_EVERY_TEAM_KEY_USER, KNOB_TEST)
    _attribution(policy_dir).write_text(source + "\n# reviewed: team keys charge their user only with the knob\n")
    return load_policy_set(policy_dir).revision


def _reloader(app: RunningApp) -> PolicyReloader:
    return app.app.state.policy_reloader  # type: ignore[no-any-return]


async def _team_key(app: RunningApp) -> str:
    await create(app.admin, "users", {"id": "ada"})
    await create(app.admin, "teams", {"id": "search", "name": "Search"})
    return await create_key(app.admin, id="k1", team_id="search", user_id="ada")


async def _metric(app: RunningApp, sample: str) -> float:
    response = await app.anonymous.get("/metrics")
    assert response.status_code == 200
    (value,) = [line.rsplit(" ", 1)[1] for line in response.text.splitlines() if line.startswith(sample + " ")]
    return float(value)


async def test_a_set_failing_its_tests_is_refused_and_the_fixed_set_goes_live(
    app_factory: Any, sqlite_url: str, policy_dir: Path
) -> None:
    app = await app_factory(database_url=sqlite_url, policy_dir=policy_dir, policy_gate="test")
    secret = await _team_key(app)
    serving = app.runtime.policy.revision
    loaded_at = (await app.anonymous.get("/readyz")).json()["policy_loaded_at"]

    refused = _break_tests(policy_dir)
    assert await _reloader(app).check_once() is False

    decided = await authorize(app.gateway, request_id="r1", api_key=secret)
    assert decided["policy_revision"] == serving
    assert ("user", "ada") not in charged_entities(decided)
    ready = await app.anonymous.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["checks"]["policy"] == "ok" and body["policy_revision"] == serving
    assert body["policy_loaded_at"] == loaded_at
    assert body["policy_reload"]["state"] == "rejected" and body["policy_reload"]["revision"] == refused
    assert BROKEN_TEST in body["policy_reload"]["error"] and body["policy_reload"]["at"]
    assert await _metric(app, 'spendgate_policy_reloads_total{result="rejected"}') == 1
    assert await _metric(app, 'spendgate_policy_reloads_total{result="applied"}') == 0
    assert await _metric(app, "spendgate_policy_reload_rejected") == 1

    fixed = _fix(policy_dir)
    assert await _reloader(app).check_once() is True

    decided = await authorize(app.gateway, request_id="r2", api_key=secret)
    assert decided["policy_revision"] == fixed != serving
    body = (await app.anonymous.get("/readyz")).json()
    assert body["policy_reload"] is None and body["policy_revision"] == fixed
    assert body["policy_loaded_at"] > loaded_at
    assert await _metric(app, 'spendgate_policy_reloads_total{result="applied"}') == 1
    assert await _metric(app, "spendgate_policy_reload_rejected") == 0


async def test_a_test_fixed_beside_the_policies_lets_the_refused_set_go_live(
    app_factory: Any, sqlite_url: str, policy_dir: Path
) -> None:
    app = await app_factory(database_url=sqlite_url, policy_dir=policy_dir, policy_gate="test")
    refused = _break_tests(policy_dir)
    assert await _reloader(app).check_once() is False

    # The author decides the new behaviour is right and deletes the tests of the old one.
    tests = policy_dir.parent / "policy_tests" / "spendgate"
    for path in tests.rglob("*_test.rego"):
        if path.parent.name != "lib":
            path.unlink()
    assert await _reloader(app).check_once() is True
    assert app.runtime.policy.revision == refused
    assert (await app.anonymous.get("/readyz")).json()["policy_reload"] is None


async def test_the_compile_gate_lets_a_set_failing_its_tests_go_live(
    app_factory: Any, sqlite_url: str, policy_dir: Path
) -> None:
    app = await app_factory(database_url=sqlite_url, policy_dir=policy_dir)  # SPENDGATE_POLICY_GATE=compile
    secret = await _team_key(app)

    changed = _break_tests(policy_dir)
    assert await _reloader(app).check_once() is True

    decided = await authorize(app.gateway, request_id="r1", api_key=secret)
    assert decided["policy_revision"] == changed
    assert ("user", "ada") in charged_entities(decided)
    assert (await app.anonymous.get("/readyz")).json()["policy_reload"] is None
    assert await _metric(app, 'spendgate_policy_reloads_total{result="applied"}') == 1


async def test_start_up_is_refused_with_one_line_naming_the_failing_tests(
    app_factory: Any, sqlite_url: str, policy_dir: Path
) -> None:
    _break_tests(policy_dir)
    with pytest.raises(PolicyTestsFailed) as refused:
        await app_factory(database_url=sqlite_url, policy_dir=policy_dir, policy_gate="test")
    message = refused.value.message
    assert "\n" not in message
    assert BROKEN_TEST in message and "attribution_test.rego:" in message
    assert "spendgate policy test" in message


async def test_start_up_is_refused_when_no_policy_tests_are_beside_the_policies(
    app_factory: Any, sqlite_url: str, policy_dir: Path
) -> None:
    shutil.rmtree(policy_dir.parent / "policy_tests")
    with pytest.raises(PolicyTestsFailed, match="no policy tests found"):
        await app_factory(database_url=sqlite_url, policy_dir=policy_dir, policy_gate="test")


async def test_start_up_passes_the_test_gate_with_the_shipped_policies(
    app_factory: Any, sqlite_url: str, policy_dir: Path
) -> None:
    app = await app_factory(database_url=sqlite_url, policy_dir=policy_dir, policy_gate="test")
    body = (await app.anonymous.get("/readyz")).json()
    assert body["status"] == "ready" and body["policy_reload"] is None
    assert body["policy_revision"] == load_policy_set(policy_dir).revision


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serve_exits_non_zero_when_the_test_gate_refuses_the_policies(tmp_path: Path, policy_dir: Path) -> None:
    _break_tests(policy_dir)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")},
        "SPENDGATE_POLICY_DIR": str(policy_dir),
        "SPENDGATE_POLICY_GATE": "test",
        "SPENDGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
    }
    port = _free_port()
    done = subprocess.run(
        [sys.executable, "-m", "spendgate", "serve", "--port", str(port)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0
    assert "refused by SPENDGATE_POLICY_GATE=test" in done.stderr and BROKEN_TEST in done.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz")


async def test_start_up_refuses_a_set_that_does_not_compile_in_one_line(
    app_factory: Any, sqlite_url: str, policy_dir: Path
) -> None:
    broken = policy_dir / "spendgate" / "broken.rego"
    broken.write_text("package spendgate.broken\n\nx := if {\n")
    with pytest.raises(PolicyTestsFailed) as refused:
        await app_factory(database_url=sqlite_url, policy_dir=policy_dir, policy_gate="test")
    assert "\n" not in refused.value.message
    assert f"{broken}:3:6: unexpected keyword `if`" in refused.value.message
