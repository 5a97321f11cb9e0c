"""`spendgate serve --workers N`, run as a real process: N workers on PostgreSQL, one on SQLite.

Every replica invariant holds between workers because all shared state lives in the database and
Redis (the fault suite covers replicas); what is checked here is the process model: the workers
exist, answer, and die with the command that started them, and SQLite refuses a second writer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from support.app import ADMIN_TOKEN, GATEWAY_TOKEN
from support.services import free_port


def _workers_of(pid: int) -> list[int]:
    """The uvicorn worker processes (multiprocessing spawns) whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"multiprocessing.spawn" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextmanager
def _serving(tmp_path: Path, workers: int, **env: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
    base |= {"SPENDGATE_ADMIN_TOKEN": ADMIN_TOKEN, "SPENDGATE_GATEWAY_TOKEN": GATEWAY_TOKEN,
             "SPENDGATE_POLICY_RELOAD_SECONDS": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "spendgate", "serve", "--port", str(port), "--workers", str(workers),
         "--log-level", "warning"],
        cwd=tmp_path, env=base | env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert process.poll() is None, process.communicate()[1]
        yield process, url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)  # also closes the stderr pipe


def test_two_workers_on_postgres_answer_and_die_with_their_supervisor(
    tmp_path: Path, clean_pg: str, redis_url: str
) -> None:
    with _serving(tmp_path, 2, SPENDGATE_DATABASE_URL=clean_pg, SPENDGATE_REDIS_URL=redis_url) as (process, url):
        workers = _workers_of(process.pid)
        assert len(workers) == 2
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        process.kill()  # the supervisor crashes: no worker may go on answering on its port
        process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers)


def test_sqlite_runs_one_worker_and_says_why(tmp_path: Path, sqlite_url: str) -> None:
    with _serving(tmp_path, 2, SPENDGATE_DATABASE_URL=sqlite_url) as (process, url):
        assert _workers_of(process.pid) == []  # one process, no spawned workers
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert "starting 1 worker, not 2: the embedded SQLite database has one writer" in stderr


def test_the_decision_log_of_a_served_process_reaches_stderr(tmp_path: Path, sqlite_url: str) -> None:
    """The decision log is written by a thread (cli.py): every decision's line is on stderr by the
    time the process has stopped, and the key's secret never is."""
    with _serving(tmp_path, 1, SPENDGATE_DATABASE_URL=sqlite_url) as (process, url):
        admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        created = httpx.post(f"{url}/v1/admin/keys", json={"id": "k-log"}, headers=admin, timeout=10).json()
        for index in range(3):
            answer = httpx.post(
                f"{url}/v1/authorize", json={"request_id": f"logged-{index}", "api_key": created["key"]},
                headers={"authorization": f"Bearer {GATEWAY_TOKEN}"}, timeout=10,
            )
            assert answer.status_code == 200 and answer.json()["decision"] == "allow"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    logged = [line for line in stderr.splitlines() if " INFO spendgate.decisions: " in line]
    assert [f'"request_id":"logged-{i}"' in line for i, line in enumerate(logged)] == [True, True, True]
    assert created["key"] not in stderr
