"""Real backing services for tests: a fresh PostgreSQL database per run, own redis-server processes.

Nothing here fakes a database or a cache: tests talk to real servers over real connections.
PostgreSQL is the machine's (SPENDGATE_TEST_PG_ADMIN_URL, default the local trust-auth server);
Redis is a redis-server this process starts on a free port, so a test may kill or restart it
without touching anybody else's.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

__all__ = ["ALL_TABLES", "PG_ADMIN_URL", "create_database", "drop_database", "RedisServer", "free_port"]

#: Every table of the schema, for TRUNCATE between tests (a new table must be added here).
ALL_TABLES = "audit_events, alert_events, decision_records, decision_record_entities, spend_rollups, spend_events, reservations, ledgers, budgets, keys, team_members, users, teams, orgs, end_users, tags"
PG_ADMIN_URL = os.environ.get("SPENDGATE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def create_database(prefix: str = "spendgate_test") -> str:
    """Create an empty database; returns its postgresql+asyncpg URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


async def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass
class RedisServer:
    """A redis-server process owned by the test run (no persistence, loopback only)."""

    port: int = field(default_factory=free_port)
    workdir: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; install Debian's redis-server package")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir or "/tmp")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL, like a crashed or OOM-killed Redis."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
