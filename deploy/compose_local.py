"""Run docker-compose.yml's topology as local processes, for machines with no container engine.

    deploy/compose-local.sh            # or: .venv/bin/python deploy/compose_local.py [--compose FILE]

Each compose service becomes a process, recognised by its image: `postgres:*` is a fresh database on
the local PostgreSQL server (SPENDGATE_TEST_PG_ADMIN_URL, default postgresql://postgres@127.0.0.1:5432/
postgres), `redis:*` a redis-server on a free port, `openpolicyagent/opa:*` the OPA-compatible server
of the tests (tests/support/opa_compat.py, started with no policies, as OPA is in the compose file),
and every service built from the Dockerfile a `spendgate serve` replica. A replica gets exactly the
environment the compose file gives it, read from the YAML (so the two cannot drift), with three
substitutions a container network does for free: a URL naming a compose service points at that
service's local process, a path under a bind mount's target points at the mounted host folder, and
`${VAR:?…}` is taken from the environment (a missing token is generated and printed, as `spendgate
serve` does). It waits for /readyz on every replica, prints the URLs, and on Ctrl-C or SIGTERM stops
the replicas first, then OPA and Redis, and drops the database. Logs go to files in a work directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import yaml

ROOT = Path(__file__).resolve().parents[1]
OPA_COMPAT = ROOT / "tests" / "support" / "opa_compat.py"
PG_ADMIN_URL = os.environ.get("SPENDGATE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[?-])(?P<arg>[^}]*))?\}")
_READY_SECONDS = 90.0


class _Stop(Exception):
    """SIGINT or SIGTERM arrived: tear down."""


class ComposeError(Exception):
    """The compose file asks for something this emulation cannot provide."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_compose(path: Path) -> dict[str, Any]:
    """The compose file as data (YAML merge keys `<<` resolved by the loader)."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or not isinstance(document.get("services"), dict):
        raise ComposeError(f"{path} has no services")
    return document


def service_kind(service: dict[str, Any]) -> str:
    """`spendgate`, `postgres`, `redis` or `opa`, from how the service is built or which image it runs."""
    if "build" in service:
        return "spendgate"
    image = str(service.get("image", ""))
    for prefix, kind in (("postgres:", "postgres"), ("redis:", "redis"), ("openpolicyagent/opa:", "opa")):
        if image.startswith(prefix):
            return kind
    raise ComposeError(f"no local stand-in for image {image!r}")


def interpolate(value: str, environ: dict[str, str], generated: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}`; a missing `:?` token is generated once."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        current = environ.get(name, "")
        if current or (op is None and name in environ):
            return current
        if op in (":-", "-"):
            return str(arg)
        if op in (":?", "?"):
            if not name.endswith("_TOKEN"):
                raise ComposeError(f"{name}: {arg}")
            return generated.setdefault(name, "sg-" + secrets.token_urlsafe(24))
        return ""

    return _VARIABLE.sub(substitute, value)


def mounted(value: str, volumes: list[str], base: Path) -> str:
    """A container path under a bind mount's target, as the host path it shows."""
    for volume in volumes:
        source, _, rest = str(volume).partition(":")
        target = rest.split(":", 1)[0]
        if source.startswith((".", "/")) and (value == target or value.startswith(target.rstrip("/") + "/")):
            return str((base / source).resolve()) + value[len(target.rstrip("/")):]
    return value


def relocated(value: str, addresses: dict[str, str], database: str) -> str:
    """A URL naming a compose service, pointed at that service's local process."""
    parts = urlsplit(value)
    if not parts.scheme or parts.hostname not in addresses:
        return value
    if parts.hostname == database:  # credentials and database name are the local server's
        admin = urlsplit(PG_ADMIN_URL)
        return parts._replace(netloc=admin.netloc, path="/" + addresses[database]).geturl()
    return parts._replace(netloc=addresses[parts.hostname]).geturl()


@dataclass
class Process:
    name: str
    kind: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str = ""


@dataclass
class Topology:
    compose_path: Path
    workdir: Path
    processes: list[Process] = field(default_factory=list)
    database: str | None = None
    generated: dict[str, str] = field(default_factory=dict)

    def start(self, argv: list[str], name: str, kind: str, env: dict[str, str] | None = None) -> Process:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv, cwd=self.workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches this supervisor only; it stops them in order
            )
        process = Process(name, kind, popen, log)
        self.processes.append(process)
        return process

    def up(self) -> list[Process]:
        compose = load_compose(self.compose_path)
        services: dict[str, dict[str, Any]] = compose["services"]
        kinds = {name: service_kind(service) for name, service in services.items()}
        addresses: dict[str, str] = {}
        database_service = ""
        for name, kind in kinds.items():
            if kind == "postgres":
                self.database = f"spendgate_local_{uuid.uuid4().hex[:10]}"
                asyncio.run(_create_database(self.database))
                addresses[name], database_service = self.database, name
            elif kind == "redis":
                port = free_port()
                binary = shutil.which("redis-server") or "redis-server"
                self.start([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                            "--dir", str(self.workdir)], name, kind).url = f"redis://127.0.0.1:{port}"
                addresses[name] = f"127.0.0.1:{port}"
            elif kind == "opa":
                port = free_port()
                self.start([sys.executable, str(OPA_COMPAT), "--port", str(port), "--control-port", str(free_port())],
                           name, kind).url = f"http://127.0.0.1:{port}"
                addresses[name] = f"127.0.0.1:{port}"
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
        replicas = []
        for name, service in services.items():
            if kinds[name] != "spendgate":
                continue
            env = {}
            for key, raw in (service.get("environment") or {}).items():
                value = interpolate(str(raw), dict(os.environ), self.generated)
                env[key] = relocated(mounted(value, service.get("volumes") or [], self.compose_path.parent),
                                     addresses, database_service)
            port = free_port()
            replica = self.start([sys.executable, "-m", "spendgate", "serve", "--host", "127.0.0.1", "--port", str(port)],
                                 name, "spendgate", env=base_env | env)
            replica.url = f"http://127.0.0.1:{port}"
            replicas.append(replica)
        if not replicas:
            raise ComposeError(f"{self.compose_path} has no service built from the Dockerfile")
        return replicas

    def wait_ready(self, replicas: list[Process]) -> None:
        deadline = time.monotonic() + _READY_SECONDS
        pending = list(replicas)
        while pending:
            for process in list(pending):
                self.check_alive()
                try:
                    with urllib.request.urlopen(process.url + "/readyz", timeout=2) as response:
                        if response.status == 200:
                            pending.remove(process)
                except OSError:
                    pass
            if pending and time.monotonic() > deadline:
                raise ComposeError(f"{', '.join(p.name for p in pending)} not ready after {_READY_SECONDS:g}s")
            if pending:
                time.sleep(0.2)

    def check_alive(self) -> None:
        for process in self.processes:
            code = process.popen.poll()
            if code is not None:
                tail = process.log.read_text(errors="replace").strip().splitlines()[-5:]
                raise ComposeError(f"{process.name} exited with status {code}:\n  " + "\n  ".join(tail))

    def down(self) -> None:
        """Replicas first (SIGINT: uvicorn's graceful shutdown), then OPA and Redis; then the database."""
        for process in reversed(self.processes):
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGINT if process.kind == "spendgate" else signal.SIGTERM)
            try:
                process.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()
        if self.database is not None:
            asyncio.run(_drop_database(self.database))
            self.database = None


async def _create_database(name: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _drop_database(name: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def _stop(signum: int, _frame: Any) -> None:
    raise _Stop(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--compose", type=Path, default=ROOT / "docker-compose.yml")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    topology = Topology(args.compose.resolve(), Path(tempfile.mkdtemp(prefix="spendgate-compose-local-")))
    code = 0
    try:
        replicas = topology.up()
        topology.wait_ready(replicas)
        for name, value in topology.generated.items():
            print(f"{name}={value}  (generated; set it in the environment to keep it)", file=sys.stderr)
        print("compose-local: ready (Ctrl-C stops everything)")
        for process in topology.processes:
            print(f"  {process.name:<12} {process.url}")
        print(f"  {'postgres':<12} {PG_ADMIN_URL.rsplit('/', 1)[0]}/{topology.database}")
        print(f"  {'logs':<12} {topology.workdir}", flush=True)
        while True:
            topology.check_alive()
            time.sleep(0.5)
    except _Stop:
        pass
    except (ComposeError, OSError, asyncpg.PostgresError) as exc:  # OSError: PostgreSQL or a binary missing
        print(f"compose-local: {exc}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the teardown short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        topology.down()
        if code == 0:
            shutil.rmtree(topology.workdir, ignore_errors=True)
        else:
            print(f"compose-local: logs kept in {topology.workdir}", file=sys.stderr)
    print("compose-local: stopped", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
