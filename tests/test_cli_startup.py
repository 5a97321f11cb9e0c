"""The real `spendgate` command, run as a process: start-up failures are one line naming the cause.

Each failure an operator can fix must end the process with a non-zero status and a last stderr line
saying what is wrong and which setting to check, and never a traceback.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import uuid
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url

import spendgate
from spendgate.api import create_app
from spendgate.settings import Settings
from support.app import ADMIN_TOKEN, GATEWAY_TOKEN
from support.services import PG_ADMIN_URL, RedisServer, free_port

PG_BASE = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)


def _spendgate(cwd: Path, *args: str, stdout: int | None = subprocess.PIPE, **env: str) -> subprocess.CompletedProcess[str]:
    """`spendgate ARGS` in a clean environment (no SPENDGATE_* of the caller's), tokens set, hot reload off."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
    base |= {"SPENDGATE_ADMIN_TOKEN": ADMIN_TOKEN, "SPENDGATE_GATEWAY_TOKEN": GATEWAY_TOKEN,
             "SPENDGATE_POLICY_RELOAD_SECONDS": "0", "SPENDGATE_DATABASE_URL": f"sqlite+aiosqlite:///{cwd / 'sg.db'}"}
    return subprocess.run(
        [sys.executable, "-m", "spendgate", *args], cwd=cwd, env=base | env, stdout=stdout,
        stderr=subprocess.PIPE, text=True, timeout=120,
    )


def _cause_line(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The failure's last stderr line, after checking it failed with no traceback."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    cause = [line for line in lines if line.startswith(f"spendgate {command}: cannot start: ")]
    assert len(cause) == 1, result.stderr
    return cause[0]


def _serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return _spendgate(tmp_path, "serve", "--port", str(free_port()), **env)


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_a_postgres_database_that_does_not_exist_stops_start_up_with_one_line(tmp_path: Path, command: str) -> None:
    name = f"spendgate_missing_{uuid.uuid4().hex[:8]}"
    # With a password (trust auth ignores it): the message must show the URL without it.
    url = make_url(f"{PG_BASE}/{name}").set(password="hunter2-not-shown").render_as_string(hide_password=False)
    result = _spendgate(tmp_path, command, *(["--port", str(free_port())] if command == "serve" else []),
                        SPENDGATE_DATABASE_URL=url)
    line = _cause_line(result, command)
    assert result.stderr.strip().splitlines()[-1] == line
    assert f'database "{name}" does not exist' in line and "SPENDGATE_DATABASE_URL" in line
    assert "hunter2-not-shown" not in result.stderr  # the password never reaches the console


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_a_database_port_that_refuses_connections_stops_start_up_with_one_line(tmp_path: Path, command: str) -> None:
    port = free_port()  # bound and released: nothing listens there
    result = _spendgate(tmp_path, command, *(["--port", str(free_port())] if command == "serve" else []),
                        SPENDGATE_DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/spendgate")
    line = _cause_line(result, command)
    assert result.stderr.strip().splitlines()[-1] == line
    assert f"127.0.0.1:{port}" in line and "SPENDGATE_DATABASE_URL" in line


def test_a_redis_that_cannot_be_reached_stops_start_up_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    result = _serve(tmp_path, SPENDGATE_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    line = _cause_line(result, "serve")
    assert result.stderr.strip().splitlines()[-1] == line
    assert line.startswith("spendgate serve: cannot start: redis is unavailable")
    assert f"127.0.0.1:{port}" in line and "SPENDGATE_REDIS_URL" in line


def test_an_opa_server_that_cannot_be_reached_stops_start_up_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    result = _serve(tmp_path, SPENDGATE_OPA_URL=f"http://127.0.0.1:{port}", SPENDGATE_OPA_TIMEOUT_SECONDS="1")
    line = _cause_line(result, "serve")
    assert line.startswith("spendgate serve: cannot start: opa is unavailable") and f"127.0.0.1:{port}" in line


def test_policies_that_do_not_compile_stop_start_up_naming_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "policies" / "spendgate" / "broken"
    broken.mkdir(parents=True)
    (broken / "broken.rego").write_text("package spendgate.broken\n\nallow if {\n", encoding="utf-8")
    result = _serve(tmp_path, SPENDGATE_POLICY_DIR=str(tmp_path / "policies"))
    line = _cause_line(result, "serve")
    assert result.stderr.strip().splitlines()[-1] == line  # one line: the source excerpt is not printed
    assert "broken.rego" in line and "does not compile" in line and "spendgate policy check" in line


def test_a_working_configuration_is_not_reported_as_a_start_up_failure(tmp_path: Path, redis_server: RedisServer) -> None:
    """The guard's other side: `migrate` with reachable services succeeds and prints no cause line."""
    result = _spendgate(tmp_path, "migrate", SPENDGATE_REDIS_URL=redis_server.url)
    assert result.returncode == 0, result.stderr
    assert "cannot start" not in result.stderr and "schema is up to date" in result.stderr


def test_policy_test_into_a_closed_pipe_stops_quietly(tmp_path: Path) -> None:
    """`spendgate policy test -v | head -1`: the reader is gone before the first write (deterministic)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = _spendgate(tmp_path, "policy", "test", "-v", stdout=write_end)
    finally:
        os.close(write_end)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr
    assert result.stderr == ""


def test_version_prints_the_one_version_the_package_declares(tmp_path: Path) -> None:
    result = _spendgate(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"spendgate {spendgate.__version__}"
    assert version("spendgate") == spendgate.__version__  # pyproject reads it from spendgate/__init__.py
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'v.db'}"))
    assert app.version == spendgate.__version__


def test_generated_tokens_go_to_a_private_file_not_to_a_log(tmp_path: Path) -> None:
    """stderr that is not a terminal ends up in logs (Docker, journald): generated tokens must not be in it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
    env |= {"SPENDGATE_POLICY_RELOAD_SECONDS": "0", "SPENDGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'sg.db'}"}
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "spendgate", "serve", "--port", str(port)],
                                   cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        tokens_file = tmp_path / ".spendgate-tokens"
        deadline = time.monotonic() + 60
        while True:  # ready when it answers; a process that exits first fails with its log
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
        tokens = dict(line.split("=", 1) for line in tokens_file.read_text().splitlines())
        assert set(tokens) == {"SPENDGATE_ADMIN_TOKEN", "SPENDGATE_GATEWAY_TOKEN"}
        answer = httpx.get(f"http://127.0.0.1:{port}/v1/admin/orgs/nobody",
                           headers={"Authorization": f"Bearer {tokens['SPENDGATE_ADMIN_TOKEN']}"}, timeout=5)
        assert answer.status_code == 404  # the file's token is the one the service accepts
    finally:
        process.terminate()
        process.wait(timeout=30)
    output = log.read_text()
    assert str(tokens_file) in output
    assert all(token not in output for token in tokens.values())
