"""Fault-injection harness: real `spendgate serve` replicas, a load driver that retries like a
gateway, and the checks of DESIGN.md's invariants against Postgres and Redis themselves.

Nothing is faked: each cluster is 2–3 `spendgate serve` processes on loopback ports, one fresh
PostgreSQL database and one redis-server owned by the test. The load driver is concurrent
async clients that retry a request with the SAME request_id on timeouts, connection errors and
503 — on the next replica — with bounded retries and backoff, and hedge a few calls to two
replicas at once (as gateways do with slow calls). It keeps every authorize decision and every
acknowledged (200) record with its cost; the checks compare them with `spend_events`, `ledgers`
and the raw Redis hashes.

`SPENDGATE_TEST_SERVICE_DIR` (a directory holding a `spendgate` package) makes the replicas run
that copy of the service instead of the installed one — how the mutation checks run a
deliberately broken service without touching the working tree.

`SPENDGATE_TEST_DEFANG_FAULTS=1` turns every injected fault into a no-op (nothing is killed,
flushed or terminated; see `faults_armed`). It exists only to see each fault test fail on its
fault-bit assertion (`assert_fault_took_effect`): a fault test must fail when its fault did
nothing, not pass vacuously.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from support.services import PG_ADMIN_URL, RedisServer, create_database, drop_database, free_port

__all__ = [
    "ADMIN_TOKEN",
    "GATEWAY_TOKEN",
    "NANOS",
    "Cluster",
    "Replica",
    "OwnedRedis",
    "Scenario",
    "Plan",
    "LoadDriver",
    "Attempt",
    "Outcome",
    "Window",
    "run_with_faults",
    "FreezableProxy",
    "tcp_ports",
    "ledger_rows_locked",
    "backends_waiting_on_locks",
    "eventually",
    "HerdBarrier",
    "usd",
    "terminate_backends",
    "faults_armed",
    "assert_fault_took_effect",
    "dye_counters",
    "rebuilt_since_dyed",
    "scrape_counter",
    "check_invariants",
    "wait_for_counters_to_match_ledgers",
]

ADMIN_TOKEN = "reliability-admin-token-0123456789"
GATEWAY_TOKEN = "reliability-gateway-token-0123456789"
NANOS = 10**9
REPO = Path(__file__).resolve().parents[2]

#: Reservation lifetime and expiry sweep of the replicas: short, so leftovers clear quickly.
RESERVATION_TTL_SECONDS = 3
EXPIRY_INTERVAL_SECONDS = 0.25


def usd(nanos: int) -> str:
    """Nano-USD as the exact decimal string the API accepts."""
    return f"{nanos // NANOS}.{nanos % NANOS:09d}"


def _die_with_parent() -> None:
    """Child processes get SIGKILL if the test process dies, so nothing outlives a crashed run."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _tail(path: Path, lines: int = 40, *, skip_decisions: bool = False) -> str:
    """The last lines of a replica's log; with `skip_decisions`, without the decision-log lines
    (one per request), so warnings, errors and tracebacks are what shows."""
    try:
        kept = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    if skip_decisions:
        kept = [line for line in kept if "INFO spendgate.decisions:" not in line]
    return "\n".join(kept[-lines:])


# --- processes ------------------------------------------------------------------------------


class OwnedRedis(RedisServer):
    """support.services.RedisServer whose process also dies with the test process, and which
    can be (re)started without blocking the event loop (the load goes on meanwhile)."""

    def _spawn(self) -> None:
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir or "/tmp")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        self._spawn()
        deadline = time.monotonic() + 10
        while not self._answers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    async def restart(self) -> None:
        """Start it again on the same port (after `kill()`)."""
        self._spawn()
        deadline = time.monotonic() + 10
        while not self._answers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            await asyncio.sleep(0.02)

    async def client(self) -> aioredis.Redis:
        return aioredis.from_url(self.url, socket_timeout=5)


@dataclass
class Replica:
    index: int
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        """SIGKILL, like an OOM kill or a lost node: no shutdown hook runs."""
        if self.process is not None:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None


class Cluster:
    """Replicas + their fresh database + their redis-server; `stop()` removes all of it."""

    def __init__(self, workdir: Path, replicas: int = 3, redis_proxied: Iterable[int] = ()) -> None:
        self.workdir = workdir
        self.size = replicas
        self.database_url = ""
        self.redis = OwnedRedis(workdir=workdir)
        #: Replicas that reach Redis through a FreezableProxy, by index.
        self.proxies: dict[int, FreezableProxy] = {index: FreezableProxy(self.redis.port) for index in redis_proxied}
        self.replicas: list[Replica] = []
        self._logs: list[Any] = []

    @property
    def database_name(self) -> str:
        return self.database_url.rsplit("/", 1)[1]

    @property
    def asyncpg_url(self) -> str:
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)

    def _env(self, replica: int | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
        env.update(
            SPENDGATE_DATABASE_URL=self.database_url,
            SPENDGATE_REDIS_URL=self.proxies[replica].url if replica in self.proxies else self.redis.url,
            SPENDGATE_ADMIN_TOKEN=ADMIN_TOKEN,
            SPENDGATE_GATEWAY_TOKEN=GATEWAY_TOKEN,
            SPENDGATE_RESERVATION_TTL=str(RESERVATION_TTL_SECONDS),
            SPENDGATE_EXPIRY_INTERVAL_SECONDS=str(EXPIRY_INTERVAL_SECONDS),
            SPENDGATE_POLICY_RELOAD_SECONDS="0",
            SPENDGATE_POLICY_DIR=str(REPO / "policies"),
            SPENDGATE_DB_POOL_SIZE="4",
            PYTHONUNBUFFERED="1",
        )
        service_dir = os.environ.get("SPENDGATE_TEST_SERVICE_DIR")
        if service_dir:
            if not (Path(service_dir) / "spendgate" / "__init__.py").is_file():
                raise RuntimeError(f"SPENDGATE_TEST_SERVICE_DIR={service_dir} holds no spendgate package")
            env["PYTHONPATH"] = service_dir + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def _check_service_copy(self) -> None:
        """With SPENDGATE_TEST_SERVICE_DIR, make sure the replicas really import that copy."""
        service_dir = os.environ.get("SPENDGATE_TEST_SERVICE_DIR")
        if not service_dir:
            return
        found = subprocess.run(
            [sys.executable, "-c", "import spendgate; print(spendgate.__file__)"],
            env=self._env(), capture_output=True, text=True, check=True, cwd=self.workdir,
        ).stdout.strip()
        if not found.startswith(str(Path(service_dir).resolve())):
            raise RuntimeError(f"replicas would import {found}, not the copy in {service_dir}")

    async def start(self) -> None:
        self._check_service_copy()
        self.database_url = await create_database("spendgate_reliability")
        self.redis.start()
        for proxy in self.proxies.values():
            await proxy.start()
        self.replicas = [Replica(i, free_port(), self.workdir / f"replica-{i}.log") for i in range(self.size)]
        for replica in self.replicas:
            self.spawn(replica)
        await self.wait_ready(self.replicas)

    def spawn(self, replica: Replica) -> None:
        log = open(replica.log_path, "ab")  # noqa: SIM115 — closed in stop()
        self._logs.append(log)
        replica.process = subprocess.Popen(
            [sys.executable, "-m", "spendgate", "serve", "--host", "127.0.0.1", "--port", str(replica.port),
             "--log-level", "warning", "--workers", "1"],  # a replica is one process: the faults kill it
            env=self._env(replica.index),
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    async def wait_ready(self, replicas: Iterable[Replica], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            for replica in replicas:
                while True:
                    if not replica.alive:
                        raise RuntimeError(f"replica {replica.index} exited:\n{_tail(replica.log_path)}")
                    try:
                        if (await client.get(f"{replica.url}/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"replica {replica.index} not ready:\n{_tail(replica.log_path)}")
                    await asyncio.sleep(0.1)

    def live(self) -> list[Replica]:
        return [replica for replica in self.replicas if replica.alive]

    def logs(self) -> str:
        return "\n".join(
            f"--- replica {r.index} (decision log left out) ---\n{_tail(r.log_path, 150, skip_decisions=True)}"
            for r in self.replicas
        )

    async def stop(self) -> None:
        """Kill everything this cluster started and drop its database; safe to call twice."""
        errors: list[BaseException] = []
        for replica in self.replicas:
            try:
                replica.kill9()
            except BaseException as exc:  # noqa: BLE001 — clean up the rest regardless
                errors.append(exc)
        for log in self._logs:
            log.close()
        self._logs.clear()
        for proxy in self.proxies.values():
            try:
                await proxy.stop()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
        try:
            self.redis.kill()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        if self.database_url:
            try:
                await drop_database(self.database_url)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
            self.database_url = ""
        if errors:
            raise errors[0]

    # --- admin API ------------------------------------------------------------------------

    async def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        async with httpx.AsyncClient(
            base_url=self.live()[0].url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10
        ) as client:
            response = await client.request(method, path, json=body)
        assert response.status_code in (200, 201), f"{method} {path}: {response.status_code} {response.text}"
        return response.json()  # type: ignore[no-any-return]


def faults_armed() -> bool:
    """False only under SPENDGATE_TEST_DEFANG_FAULTS=1: the tests then skip every injection."""
    return os.environ.get("SPENDGATE_TEST_DEFANG_FAULTS") != "1"


def assert_fault_took_effect(fault: str, **bits: Any) -> None:
    """The fault BIT, asserted before the invariants: each named sign that the fault really hit
    (a count or a list) must be non-empty, or the test would pass with a fault that did nothing."""
    missing = [name for name, seen in bits.items() if not seen]
    shown = {name: len(seen) if isinstance(seen, (list, set, dict)) else seen for name, seen in bits.items()}
    assert not missing, f"{fault} showed no effect: no {', no '.join(missing)} (saw {shown})"


async def terminate_backends(database: str) -> int:
    """pg_terminate_backend every connection to `database` (from a connection to another one);
    with the faults defanged, only counts them."""
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        rows = await conn.fetch(
            f"SELECT {'pg_terminate_backend(pid)' if faults_armed() else 'true'} AS ok FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await conn.close()
    return sum(1 for row in rows if row["ok"])


_DYE = """
local dyed = 0
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, 'test_dye', '1')
    dyed = dyed + 1
  end
end
return dyed
"""


async def _ledger_keys(redis: aioredis.Redis) -> list[bytes]:
    return [key async for key in redis.scan_iter(match="sg:l:*", count=1000)]


async def dye_counters(cluster: Cluster) -> set[bytes]:
    """Mark every ledger counter hash now in Redis with a `test_dye` field (the service reads
    only its own fields). A hash found later without the dye was created again since: rebuilt
    from the ledger. The harness' own count of rebuilds, blind to counters new to the load."""
    redis = await cluster.redis.client()
    try:
        keys = await _ledger_keys(redis)
        await redis.eval(_DYE, len(keys), *keys)
        return set(keys)
    finally:
        await redis.aclose()


async def rebuilt_since_dyed(cluster: Cluster, dyed: set[bytes]) -> set[bytes]:
    """Ledger counters dyed by `dye_counters` that exist again without the dye."""
    redis = await cluster.redis.client()
    try:
        rebuilt = set()
        for key in dyed:
            exists, dye = await redis.exists(key), await redis.hget(key, "test_dye")
            if exists and dye is None:
                rebuilt.add(key)
        return rebuilt
    finally:
        await redis.aclose()


async def scrape_counter(cluster: Cluster, name: str) -> int:
    """A Prometheus counter (e.g. spendgate_counter_rebuilds_total) summed over the live replicas."""
    total = 0.0
    async with httpx.AsyncClient(timeout=5) as client:
        for replica in cluster.live():
            for line in (await client.get(f"{replica.url}/metrics")).text.splitlines():
                if line.startswith(name + " "):
                    total += float(line.split()[1])
    return int(total)


class FreezableProxy:
    """A TCP proxy (in the test's event loop) between one replica and Redis. `freeze()` stops
    forwarding in both directions while keeping every connection open: to that replica, Redis
    hangs — the moment between its ledger commit and its counter update is held open."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    def freeze(self) -> None:
        self._flowing.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(upstream)
            await asyncio.gather(self._pipe(reader, upstream), self._pipe(up_reader, writer), return_exceptions=True)
        except OSError:
            pass
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self._writers.discard(end)
                    end.close()
            self._handlers.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def stop(self) -> None:
        self._flowing.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5)


def tcp_ports(pid: int) -> list[int]:
    """Local ports of a process's TCP sockets (Linux /proc), to find its backends in pg_stat_activity."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[9] in inodes:
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@contextlib.asynccontextmanager
async def ledger_rows_locked(cluster: Cluster, ledger_pattern: str) -> AsyncIterator[asyncpg.Connection]:
    """Hold FOR UPDATE locks on the matching ledger rows: every record charging them queues up
    inside its transaction — past its reads, before its commit — until the block ends."""
    conn = await asyncpg.connect(cluster.asyncpg_url)
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("SELECT 1 FROM ledgers WHERE ledger_id LIKE $1 FOR UPDATE", ledger_pattern)
        try:
            yield conn
        finally:
            await transaction.rollback()
    finally:
        await conn.close()


async def backends_waiting_on_locks(conn: asyncpg.Connection, database: str, client_ports: list[int]) -> int:
    return int(await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'"
        " AND client_port = ANY($2::int[])",
        database, client_ports,
    ))


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.02) -> bool:
    """Poll `check` until it is true (True) or the deadline passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)


class HerdBarrier:
    """Lines a herd up so that every request in it reads the figures before any of them reserves:
    Redis writes are paused (`CLIENT PAUSE WRITE`: reads go on, scripts wait), the herd starts,
    and once MONITOR has shown every request of it reading the herd's ledger, writes resume.
    Without the atomic re-check in the reservation script, every one of them would be admitted."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        #: Per herd: did every request read the figures while reservations were held back?
        self.lined_up: dict[str, bool] = {}
        self._client: aioredis.Redis | None = None
        self._monitor: Any = None
        self._monitor_client: aioredis.Redis | None = None

    async def close(self) -> None:
        """Before the herd starts: watch every command, hold back every write."""
        self._client = await self.cluster.redis.client()
        self._monitor_client = await self.cluster.redis.client()
        self._monitor = self._monitor_client.monitor()
        await self._monitor.__aenter__()
        await self._client.execute_command("CLIENT", "PAUSE", "5000", "WRITE")

    async def open_when_read(self, key_id: str, requests: int, timeout: float = 5) -> None:
        """Once `requests` reads of the key's ledger went by (or the deadline), let writes go."""
        ledger = f"sg:l:key:{key_id}:-:0"
        reads = 0
        deadline = time.monotonic() + timeout
        try:
            while reads < requests and time.monotonic() < deadline:
                command = await asyncio.wait_for(self._monitor.next_command(), max(deadline - time.monotonic(), 0.01))
                if command["command"].split()[:2] == ["HMGET", ledger]:
                    reads += 1
        except (asyncio.TimeoutError, RedisError, OSError):
            pass
        finally:
            self.lined_up[key_id] = reads >= requests
            await self.release()

    async def release(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            if self._client is not None:
                await self._client.execute_command("CLIENT", "UNPAUSE")
        with contextlib.suppress(RedisError, OSError):
            if self._monitor is not None:
                await self._monitor.__aexit__(None, None, None)
        for client in (self._client, self._monitor_client):
            if client is not None:
                await client.aclose()
        self._client = self._monitor = self._monitor_client = None


# --- the scenario: entities, budgets, requests ------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """One model call a gateway makes: authorize, (call), record — unless it is abandoned."""

    request_id: str
    key_id: str
    secret: str
    model: str
    end_user: str | None
    tags: tuple[str, ...]
    estimate: int
    cost: int
    outcome: str
    #: The "gateway" dies after authorize: never recorded; only the reservation's expiry frees it.
    abandon: bool
    #: Seconds the simulated model call takes between authorize and record.
    call_seconds: float
    hedge_authorize: bool
    hedge_record: bool

    def _without_hedging(self) -> Plan:
        """A herd member: one authorize at a time (the herd barrier counts their reads)."""
        return dataclasses.replace(self, hedge_authorize=False)


@dataclass
class Scenario:
    """Entities and budgets designed so that admission is contested.

    - key `k-tight` (a personal key): many requests compete for its budget, which runs out about
      a fifth of the way through the load — every later admission on it would be an overshoot;
    - team member `search/u1` (charged through team keys `kt1`, `kt2`) runs out late in the load;
    - keys `k-herd-1..3`: each gets one herd of 12 simultaneous requests (at 12 %, 55 %, 85 % of
      the load) with room for exactly one — a check-then-act race would admit more;
    - everything else (an org with two windows, team, users, loose keys, tags, end users) has room.

    Requests on these contested budgets cost exactly their estimate and are never abandoned, so
    the sum of the estimates admitted on one of them is exactly what its reservations held.
    """

    requests: int
    seed: int = 1
    secrets: dict[str, str] = field(default_factory=dict)
    tight_limits: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Share of records a gateway hedges to two replicas at once.
    hedge_record_rate: float = 0.08

    TIGHT_KEY = ("key", "k-tight")
    TIGHT_MEMBER = ("team_member", "search/u1")
    HERDS = {0.12: "k-herd-1", 0.55: "k-herd-2", 0.85: "k-herd-3"}
    HERD_SIZE = 12
    HERD_ESTIMATE = 10_000_000  # 0.01 USD; each herd key has room for 1.5 of them

    async def seed_entities(self, cluster: Cluster) -> None:
        tight_share = self.requests // 4  # requests per tight ledger (see plans())
        mean_estimate = 12_500_000  # 0.0125 USD, the mean of the tight estimates
        self.tight_limits = {
            self.TIGHT_KEY: tight_share * mean_estimate // 5 + 1_234,
            self.TIGHT_MEMBER: tight_share * mean_estimate * 7 // 10 + 4_321,
            **{("key", herd): self.HERD_ESTIMATE * 3 // 2 for herd in self.HERDS.values()},
        }
        big = {"max_budget": "100000"}
        await cluster.admin("POST", "/v1/admin/orgs", {
            "id": "acme", "name": "Acme",
            "budget": [{"max_budget": "100000"}, {"max_budget": "90000", "duration": "1d"}],
        })
        await cluster.admin("POST", "/v1/admin/teams", {"id": "search", "name": "Search", "org_id": "acme", "budget": big})
        for user in ("u1", "u2", "u-tight"):
            await cluster.admin("POST", "/v1/admin/users", {"id": user, "org_id": "acme", "budget": big})
        await cluster.admin("POST", "/v1/admin/teams/search/members", {
            "user_id": "u1", "budget": {"max_budget": usd(self.tight_limits[self.TIGHT_MEMBER])},
        })
        await cluster.admin("POST", "/v1/admin/tags", {"id": "chat", "budget": big})
        keys: dict[str, dict[str, Any]] = {
            "k-tight": {"user_id": "u-tight", "budget": {"max_budget": usd(self.tight_limits[self.TIGHT_KEY])}},
            "kt1": {"team_id": "search", "user_id": "u1", "budget": big},
            "kt2": {"team_id": "search", "user_id": "u1"},
            "kl1": {"user_id": "u2", "budget": [big, {"max_budget": "50000", "duration": "1d"}]},
            "kl2": {"user_id": "u2"},
            "kl3": {"team_id": "search", "budget": big},
            **{herd: {"user_id": "u2", "budget": {"max_budget": usd(self.tight_limits[("key", herd)])}}
               for herd in self.HERDS.values()},
        }
        for key_id, body in keys.items():
            self.secrets[key_id] = (await cluster.admin("POST", "/v1/admin/keys", {"id": key_id, **body}))["key"]

    def contested_entities(self, plan: Plan) -> list[tuple[str, str]]:
        """Which contested budgets a plan's request touches (by the shipped attribution policy)."""
        if plan.key_id in ("kt1", "kt2"):
            return [self.TIGHT_MEMBER]
        return [entity for entity in self.tight_limits if entity == ("key", plan.key_id)]

    def batches(self, run: str) -> list[list[Plan]]:
        """The load, in order: single requests, and herds (a batch run all at once)."""
        rng = random.Random(self.seed)
        batches: list[list[Plan]] = []
        herds = {int(self.requests * at): key for at, key in self.HERDS.items()}
        for i in range(self.requests):
            if i in herds:
                batches.append([
                    self._plan(rng, f"{run}-{herds[i]}-{n:02d}", herds[i], tight=True, estimate=self.HERD_ESTIMATE,
                               call_seconds=0.05)._without_hedging()
                    for n in range(self.HERD_SIZE)
                ])
            lane = i % 4
            if lane == 0:
                key_id, tight = "k-tight", True
            elif lane == 1:
                key_id, tight = rng.choice(["kt1", "kt2"]), True
            else:
                key_id, tight = rng.choice(["kl1", "kl2", "kl3"]), False
            batches.append([self._plan(rng, f"{run}-{i:05d}", key_id, tight=tight)])
        return batches

    def _plan(self, rng: random.Random, request_id: str, key_id: str, *, tight: bool, estimate: int | None = None,
              call_seconds: float | None = None) -> Plan:
        if tight:
            estimate = estimate or rng.randint(5_000_000, 20_000_000)
            cost, outcome, abandon = estimate, "success", False
        else:
            estimate = estimate or rng.randint(1_000_000, 50_000_000)
            roll = rng.random()
            if roll < 0.06:
                cost, outcome, abandon = 0, "success", True
            elif roll < 0.14:
                cost, outcome, abandon = rng.choice([0, rng.randint(1, estimate)]), "failure", False
            else:
                cost, outcome, abandon = rng.randint(1, estimate), "success", False
        long_call = rng.random() < 0.15  # a slow model call (long generation, streaming)
        return Plan(
            request_id=request_id,
            key_id=key_id,
            secret=self.secrets[key_id],
            model=rng.choice(["gpt-4o", "claude-3-5-sonnet", "llama-3-70b"]),
            end_user=rng.choice([None, "cust-1", "cust-2", "cust-3"]),
            tags=tuple(rng.sample(["chat", "search", "batch"], rng.randint(0, 2))),
            estimate=estimate,
            cost=cost,
            outcome=outcome,
            abandon=abandon,
            call_seconds=call_seconds if call_seconds is not None else (
                rng.uniform(0.3, 1.2) if long_call else rng.uniform(0, 0.02)),
            hedge_authorize=rng.random() < 0.05,
            hedge_record=rng.random() < self.hedge_record_rate,
        )


# --- the load driver ------------------------------------------------------------------------


@dataclass
class Attempt:
    """One HTTP attempt: where, when (monotonic), and what came back."""

    path: str
    replica: int
    sent: float
    done: float
    status: int | None  # None: transport error / timeout
    body: dict[str, Any] | None
    error: str | None = None


@dataclass
class Outcome:
    plan: Plan
    attempts: list[Attempt] = field(default_factory=list)
    #: allow | deny | unavailable (gave up: the gateway fails closed) | error (an unusable answer)
    decision: str | None = None
    authorize_body: dict[str, Any] | None = None
    authorize_sent: float | None = None
    #: Wall-clock expiry of the reservation, as authorize reported it.
    expires_at: float | None = None
    #: Monotonic time the simulated model call ends.
    call_ends: float | None = None
    record_sent: float | None = None
    #: Monotonic time of the first 200 for the record; None: never acknowledged.
    record_acked: float | None = None
    #: Wall-clock time of the first acknowledgement.
    record_acked_wall: float | None = None
    record_bodies: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Window:
    """A span of monotonic time in which a fault was in force."""

    start: float
    end: float


@dataclass(frozen=True)
class InFlight:
    path: str
    replica: int
    request_id: str
    sent: float


RETRYABLE_STATUS = {503}


class LoadDriver:
    """Concurrent gateway clients working through a fixed list of batches of plans."""

    def __init__(
        self,
        cluster: Cluster,
        batches: list[list[Plan]],
        *,
        concurrency: int = 10,
        authorize_deadline: float = 2.0,
        record_deadline: float = 25.0,
        attempt_timeout: float = 3.0,
    ) -> None:
        self.cluster = cluster
        self.herd_barrier = HerdBarrier(cluster)
        self.batches = batches
        self.plans = [plan for batch in batches for plan in batch]
        self.concurrency = concurrency
        self.authorize_deadline = authorize_deadline
        self.record_deadline = record_deadline
        self.attempt_timeout = attempt_timeout
        self.outcomes: dict[str, Outcome] = {plan.request_id: Outcome(plan) for plan in self.plans}
        self.in_flight: dict[int, InFlight] = {}
        self.done = 0
        self._progress = asyncio.Condition()
        self._client: httpx.AsyncClient | None = None
        self._rng = random.Random(7)
        self._urls = [replica.url for replica in cluster.replicas]

    # one request to one path, retried like a gateway --------------------------------------

    async def _attempt(self, path: str, replica: int, body: dict[str, Any]) -> Attempt:
        assert self._client is not None
        sent = time.monotonic()
        token = object()
        self.in_flight[id(token)] = InFlight(path, replica, body["request_id"], sent)
        try:
            response = await self._client.post(f"{self._urls[replica]}{path}", json=body)
        except httpx.TransportError as exc:
            return Attempt(path, replica, sent, time.monotonic(), None, None, type(exc).__name__)
        finally:
            del self.in_flight[id(token)]
        try:
            parsed = response.json()
        except ValueError:
            parsed = {"raw": response.text[:200]}
        return Attempt(path, replica, sent, time.monotonic(), response.status_code, parsed)

    async def _call(self, outcome: Outcome, path: str, body: dict[str, Any], first: int, deadline: float) -> Attempt:
        """Retry with the same body (same request_id) on the next replica, with backoff, until
        an answer that is not 503 / a transport error, or the deadline."""
        replicas = len(self._urls)
        n = 0
        while True:
            attempt = await self._attempt(path, (first + n) % replicas, body)
            outcome.attempts.append(attempt)
            if attempt.status is not None and attempt.status not in RETRYABLE_STATUS:
                return attempt
            n += 1
            pause = min(0.05 * 2 ** min(n - 1, 4), 0.5) * self._rng.uniform(0.5, 1.0)
            if time.monotonic() + pause > deadline:
                return attempt
            await asyncio.sleep(pause)

    async def _hedged(self, outcome: Outcome, path: str, body: dict[str, Any], first: int, hedge: bool,
                      deadline: float) -> Attempt:
        """Hedging: the same call to two replicas at once; the first usable answer wins."""
        if not hedge:
            return await self._call(outcome, path, body, first, deadline)
        results = await asyncio.gather(
            self._call(outcome, path, body, first, deadline),
            self._call(outcome, path, body, first + 1, deadline),
        )
        ok = [a for a in results if a.status == 200]
        return ok[0] if ok else results[0]

    # one plan ----------------------------------------------------------------------------

    async def _run(self, plan: Plan, home: int) -> None:
        outcome = self.outcomes[plan.request_id]
        attribution: dict[str, Any] = {"model": plan.model, "tags": list(plan.tags)}
        if plan.end_user is not None:
            attribution["end_user"] = plan.end_user
        body = {"request_id": plan.request_id, "api_key": plan.secret, "estimated_cost": usd(plan.estimate),
                **attribution}
        outcome.authorize_sent = time.monotonic()
        answer = await self._hedged(
            outcome, "/v1/authorize", body, home, plan.hedge_authorize, time.monotonic() + self.authorize_deadline
        )
        if answer.status is None or answer.status in RETRYABLE_STATUS:
            outcome.decision = "unavailable"  # the gateway fails closed: the call is refused
            return
        if answer.status != 200 or answer.body is None:
            outcome.decision = "error"
            return
        outcome.authorize_body = answer.body
        outcome.decision = answer.body.get("decision")
        if outcome.decision != "allow" or plan.abandon:
            return
        expires = (answer.body.get("reservation") or {}).get("expires_at")
        if expires:
            outcome.expires_at = datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
        outcome.call_ends = time.monotonic() + plan.call_seconds
        await asyncio.sleep(plan.call_seconds)
        # A gateway sends what authorize saw, so the record can be attributed even if the
        # decision is gone (Redis down or flushed): see decisions/record.py.
        record = {"request_id": plan.request_id, "cost": usd(plan.cost), "outcome": plan.outcome,
                  "api_key": plan.secret, **attribution}
        outcome.record_sent = time.monotonic()
        await self._hedged(
            outcome, "/v1/record", record, home + 1, plan.hedge_record, time.monotonic() + self.record_deadline
        )
        acks = [a for a in outcome.attempts if a.path == "/v1/record" and a.status == 200]
        if acks:
            first = min(acks, key=lambda a: a.done)
            outcome.record_acked = first.done
            outcome.record_acked_wall = time.time() - (time.monotonic() - first.done)
            outcome.record_bodies = [a.body for a in acks if a.body is not None]

    async def _worker(self, index: int, queue: asyncio.Queue[list[Plan]]) -> None:
        while True:
            try:
                batch = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                if len(batch) == 1:
                    await self._run(batch[0], home=index)
                else:
                    await self._run_herd(batch, index)
            finally:
                async with self._progress:
                    self.done += len(batch)
                    self._progress.notify_all()

    async def _run_herd(self, batch: list[Plan], index: int) -> None:
        """Every request of the batch at once, lined up by the herd barrier (see HerdBarrier)."""
        barrier: HerdBarrier | None = self.herd_barrier
        try:
            await self.herd_barrier.close()
        except (RedisError, OSError):
            await self.herd_barrier.release()
            barrier = None
        tasks = [asyncio.create_task(self._run(plan, home=index + n)) for n, plan in enumerate(batch)]
        try:
            if barrier is not None:
                await barrier.open_when_read(batch[0].key_id, len(batch))
            else:
                self.herd_barrier.lined_up[batch[0].key_id] = False
        finally:
            await asyncio.gather(*tasks)

    async def run(self) -> None:
        queue: asyncio.Queue[list[Plan]] = asyncio.Queue()
        for batch in self.batches:
            queue.put_nowait(batch)
        limits = httpx.Limits(max_connections=8 * self.concurrency, max_keepalive_connections=4 * self.concurrency)
        timeout = httpx.Timeout(self.attempt_timeout, connect=1.0)
        async with httpx.AsyncClient(
            headers={"authorization": f"Bearer {GATEWAY_TOKEN}"}, limits=limits, timeout=timeout
        ) as client:
            self._client = client
            await asyncio.gather(*(self._worker(i, queue) for i in range(self.concurrency)))
        self._client = None

    async def wait_done(self, fraction: float, timeout: float = 60) -> None:
        """Until that fraction of the plans has finished (how faults are placed mid-load)."""
        target = int(len(self.plans) * fraction)
        async with self._progress:
            await asyncio.wait_for(self._progress.wait_for(lambda: self.done >= target), timeout)

    # what is going on / what happened ------------------------------------------------------

    def in_model_call(self, at_least: float) -> int:
        """Requests now in their model call with at least that many seconds of it left."""
        now = time.monotonic()
        return sum(1 for o in self.outcomes.values()
                   if o.call_ends is not None and o.record_sent is None and o.call_ends - now >= at_least)

    def records_in_flight(self, replica: int) -> set[str]:
        return {f.request_id for f in list(self.in_flight.values()) if f.path == "/v1/record" and f.replica == replica}

    def all_attempts(self) -> list[Attempt]:
        return [a for o in self.outcomes.values() for a in o.attempts]

    def unavailable(self, path: str | None = None, naming: str = "") -> list[Attempt]:
        """503 `unavailable` answers the gateway clients saw (and retried), whose message names
        `naming` (e.g. "database")."""
        return [a for a in self.all_attempts() if a.status == 503 and (path is None or a.path == path)
                and (a.body or {}).get("error", {}).get("code") == "unavailable"
                and naming in (a.body or {}).get("error", {}).get("message", "").lower()]

    def failed_over(self, replica: int, *, sent_before: float = float("inf"), sent_after: float = 0.0,
                    errors: tuple[str, ...] = ()) -> list[str]:
        """Request ids with an attempt on `replica` (sent in that span) that got no answer (with
        one of `errors`, if given), then a 200 for the same call from another replica."""
        found = []
        for outcome in self.outcomes.values():
            for dead in outcome.attempts:
                if (dead.replica == replica and dead.status is None and sent_after <= dead.sent < sent_before
                        and (not errors or dead.error in errors)
                        and any(a.path == dead.path and a.replica != replica and a.status == 200
                                and a.sent >= dead.sent for a in outcome.attempts)):
                    found.append(outcome.plan.request_id)
                    break
        return found

    def retried_duplicates(self) -> list[str]:
        """Records whose attempt got a 503 or no answer, and a LATER attempt a 200 saying
        `duplicate: true`: the failed attempt had committed (or a hedged twin had), and the
        retry charged nothing."""
        found = []
        for outcome in self.outcomes.values():
            records = [a for a in outcome.attempts if a.path == "/v1/record"]
            failed = [a.done for a in records if a.status is None or a.status == 503]
            if failed and any(a.status == 200 and (a.body or {}).get("duplicate") is True and a.sent >= min(failed)
                              for a in records):
                found.append(outcome.plan.request_id)
        return found

    def summary(self) -> dict[str, Any]:
        latencies: dict[str, list[float]] = defaultdict(list)
        for attempt in self.all_attempts():
            latencies[f"{attempt.path} {attempt.status or attempt.error}"].append(attempt.done - attempt.sent)
        statuses = {
            name: f"{len(times)} (p50 {sorted(times)[len(times) // 2] * 1000:.0f} ms, max {max(times) * 1000:.0f} ms)"
            for name, times in sorted(latencies.items())
        }
        decisions: dict[str, int] = defaultdict(int)
        for outcome in self.outcomes.values():
            decisions[str(outcome.decision)] += 1
        acked = sum(1 for o in self.outcomes.values() if o.record_acked is not None)
        return {"decisions": dict(decisions), "records_acked": acked, "attempts": statuses}


async def run_with_faults(driver: LoadDriver, faults: list[tuple[float, Callable[[], Awaitable[Any]]]]) -> list[Any]:
    """Start the load; apply each fault once that fraction of the plans is done (the load goes
    on meanwhile); wait for the load to finish. Returns what each fault returned."""
    load = asyncio.create_task(driver.run())
    results = []
    try:
        for at, fault in faults:
            await driver.wait_done(at)
            results.append(await fault())
        await load
        return results
    finally:
        if not load.done():
            load.cancel()
            await asyncio.gather(load, return_exceptions=True)


# --- the checks -----------------------------------------------------------------------------


def _entity(charge: dict[str, Any]) -> tuple[str, str]:
    entity = charge["entity"] if "entity" in charge else {"type": charge["entity_type"], "id": charge["entity_id"]}
    return entity["type"], entity["id"]


def _charge_key(charge: dict[str, Any]) -> tuple[str, str, str | None]:
    return (*_entity(charge), charge.get("window"))


async def _database_state(cluster: Cluster) -> tuple[dict[str, asyncpg.Record], dict[str, int]]:
    conn = await asyncpg.connect(cluster.asyncpg_url)
    try:
        events = {row["request_id"]: row for row in await conn.fetch("SELECT request_id, cost, outcome, charges FROM spend_events")}
        ledgers = {row["ledger_id"]: int(row["spent"]) for row in await conn.fetch("SELECT ledger_id, spent FROM ledgers")}
    finally:
        await conn.close()
    return events, ledgers


def _charges(row: asyncpg.Record) -> list[dict[str, Any]]:
    raw = row["charges"]
    return json.loads(raw) if isinstance(raw, str) else list(raw)


async def check_invariants(
    cluster: Cluster,
    driver: LoadDriver,
    scenario: Scenario,
    *,
    redis_loss: list[Window] | None = None,
) -> dict[str, Any]:
    """DESIGN.md 1, 2, 4, 6, 7 after the load; returns figures for the test's own assertions.

    `redis_loss`: spans in which Redis lost its data (flush, restart). Reservations held then
    are gone with it — a documented limit — so admissions on the tight budgets may exceed the
    limit by at most the estimates of the requests in flight across such a span.
    """
    outcomes = list(driver.outcomes.values())
    problems: list[str] = []

    # Every answer is one a gateway can act on: 200, or 503 while a dependency is down.
    odd = [(a.path, a.status, a.body) for a in driver.all_attempts() if a.status not in (None, 200, 503)]
    if odd:
        problems.append(f"{len(odd)} answers other than 200/503, e.g. {odd[:3]}")
    unnamed = [a.body for a in driver.all_attempts()
               if a.status == 503 and (a.body or {}).get("error", {}).get("code") != "unavailable"]
    if unnamed:
        problems.append(f"503 answers without code 'unavailable': {unnamed[:3]}")

    def forgotten(outcome: Outcome) -> bool:
        """Its authorize attempts straddle a Redis data loss: the first decision may be gone, and
        a later attempt decide afresh (a documented limit, not a broken promise)."""
        asked = [a for a in outcome.attempts if a.path == "/v1/authorize"]
        return len(asked) > 1 and any(
            min(a.sent for a in asked) <= window.end and max(a.done for a in asked) >= window.start
            for window in (redis_loss or [])
        )

    # Authorize is idempotent per request id: every 200 for one id carries the same decision.
    for outcome in outcomes:
        seen = {a.body["decision"] for a in outcome.attempts
                if a.path == "/v1/authorize" and a.status == 200 and a.body and "decision" in a.body}
        if len(seen) > 1 and not forgotten(outcome):
            problems.append(f"{outcome.plan.request_id}: authorize answered {seen}")

    # Each herd really raced: all its requests read the figures before any could reserve.
    not_lined_up = [key for key, ok in driver.herd_barrier.lined_up.items() if not ok]
    if not_lined_up:
        problems.append(f"herds on {not_lined_up} could not be lined up: the no-overshoot check is weaker")

    # An allow always comes with its reservation and the ledgers it charges (API.md).
    bare = [o.plan.request_id for o in outcomes if o.decision == "allow"
            and not ((o.authorize_body or {}).get("reservation") and (o.authorize_body or {}).get("charges"))]
    if bare:
        problems.append(f"{len(bare)} requests were allowed without a reservation on their ledgers: {bare[:5]}")

    # The driver retried every allowed record until acknowledged (nothing was given up on).
    unacked = [o.plan.request_id for o in outcomes
               if o.decision == "allow" and not o.plan.abandon and o.record_acked is None]
    if unacked:
        problems.append(f"{len(unacked)} allowed requests never got their record acknowledged: {unacked[:5]}")

    events, ledgers = await _database_state(cluster)
    acked = {o.plan.request_id: o for o in outcomes if o.record_acked is not None}

    # 6 + 2: the ledger holds exactly the acknowledged records, each once, with its cost.
    missing = sorted(set(acked) - set(events))
    if missing:
        problems.append(f"{len(missing)} acknowledged records are not in spend_events: {missing[:5]}")
    extra = sorted(set(events) - set(acked))
    if extra:
        problems.append(f"{len(extra)} spend_events were never acknowledged: {extra[:5]}")
    for request_id in sorted(set(acked) & set(events)):
        plan, row = acked[request_id].plan, events[request_id]
        if (int(row["cost"]), row["outcome"]) != (plan.cost, plan.outcome):
            problems.append(f"{request_id}: ledger has {row['cost']} {row['outcome']}, gateway sent {plan.cost} {plan.outcome}")
        non_duplicate = [b for b in acked[request_id].record_bodies if b.get("duplicate") is False]
        if len(non_duplicate) > 1:
            problems.append(f"{request_id}: {len(non_duplicate)} record answers said duplicate=false")

    # 1: record charged exactly the ledgers authorize checked.
    for request_id in sorted(set(acked) & set(events)):
        body = acked[request_id].authorize_body or {}
        checked = {_charge_key(c) for c in body.get("charges", [])}
        charged = {_charge_key(c) for c in _charges(events[request_id])}
        if checked != charged and not forgotten(acked[request_id]):
            problems.append(f"{request_id}: authorize checked {sorted(checked, key=str)}, record charged {sorted(charged, key=str)}")

    # 2 + 7: each ledger's spent is the exact sum of the acknowledged costs charged to it.
    expected: dict[str, int] = defaultdict(int)
    for request_id, row in events.items():
        for charge in _charges(row):
            expected[charge["ledger_id"]] += int(row["cost"])
    for ledger_id in sorted(set(expected) | set(ledgers)):
        if ledgers.get(ledger_id, 0) != expected.get(ledger_id, 0):
            problems.append(
                f"ledger {ledger_id}: spent {usd(ledgers.get(ledger_id, 0))} != sum of its acknowledged costs "
                f"{usd(expected.get(ledger_id, 0))}"
            )

    # 4: no budget admitted more than its limit in reservations.
    admitted: dict[tuple[str, str], int] = defaultdict(int)
    allowance: dict[tuple[str, str], int] = defaultdict(int)
    refusals: dict[tuple[str, str], int] = defaultdict(int)
    refused: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
    #: Estimates possibly held by authorizes whose answer never arrived (the gateway gave up).
    ghosts: dict[tuple[str, str], int] = defaultdict(int)
    for outcome in outcomes:
        body = outcome.authorize_body or {}
        if outcome.decision == "deny":
            for reason in body.get("reasons", []):
                if reason.get("code") == "budget_exceeded":
                    entity = (reason["entity"]["type"], reason["entity"]["id"])
                    refusals[entity] += 1
                    refused[entity].append(outcome)
        if outcome.decision in ("unavailable", "error"):
            for entity in scenario.contested_entities(outcome.plan):
                ghosts[entity] += outcome.plan.estimate
        if outcome.decision != "allow":
            continue
        for entity in {_entity(c) for c in body.get("charges", [])} & set(scenario.tight_limits):
            admitted[entity] += outcome.plan.estimate
            # A reservation that may have ended before its record landed frees room legitimately:
            # it expired (record later than expires_at), or Redis lost it (flush / restart).
            late = outcome.record_acked_wall is None or (
                outcome.expires_at is not None and outcome.record_acked_wall > outcome.expires_at - 0.2
            )
            # The decision was committed no earlier than the first attempt that may have reached
            # the counters (a refused connection or a 503 did not commit one that survived).
            decided_from = min(
                (a.sent for a in outcome.attempts if a.path == "/v1/authorize" and a.status != 503
                 and a.error not in ("ConnectError", "ConnectTimeout")),
                default=None,
            )
            lost = decided_from is not None and any(
                decided_from <= window.end and (outcome.record_acked is None or outcome.record_acked >= window.start)
                for window in (redis_loss or [])
            )
            if late or lost:
                allowance[entity] += outcome.plan.estimate
    for entity, limit in scenario.tight_limits.items():
        if admitted[entity] > limit + allowance[entity]:
            problems.append(
                f"{entity[0]} {entity[1]}: admitted {usd(admitted[entity])} in reservations over a limit of "
                f"{usd(limit)} (+ {usd(allowance[entity])} that Redis lost or that expired before its record)"
            )
        # The check is only meaningful if the budget was really contested.
        if refusals[entity] == 0:
            problems.append(f"{entity[0]} {entity[1]} refused nothing: the overshoot check proves nothing")
        # 3: no phantom spend. Admitted estimates (= costs here) are all this budget ever held;
        # besides, a record between its ledger commit and its counter update may briefly count
        # twice (the committed figure already holds it, its reservation is not yet released).
        # A refusal of a request that fits beside all that was made on spend that never existed.
        for outcome in refused[entity]:
            asked = [a for a in outcome.attempts if a.path == "/v1/authorize" and a.status == 200]
            start, end = min(a.sent for a in asked), max(a.done for a in asked)
            settling = sum(
                other.plan.estimate for other in outcomes
                if other.decision == "allow" and entity in scenario.contested_entities(other.plan)
                and other.record_sent is not None and other.record_sent <= end
                and (other.record_acked is None or other.record_acked >= start)
            )
            held = admitted[entity] + ghosts[entity] + settling
            if held + outcome.plan.estimate <= limit:
                saw = [(c.get("spent"), c.get("reserved")) for c in (outcome.authorize_body or {}).get("charges", [])
                        if _entity(c) == entity]
                problems.append(
                    f"{entity[0]} {entity[1]}: refused {outcome.plan.request_id} ({usd(outcome.plan.estimate)}) as "
                    f"over budget, but the budget never held more than {usd(held)} of {usd(limit)} "
                    f"(phantom spend: a false 'over budget'; the refusal saw spent, reserved = {saw})"
                )
                break

    assert not problems, "invariants violated:\n  " + "\n  ".join(problems[:40]) + f"\nload: {driver.summary()}"
    return {"events": len(events), "ledgers": len(ledgers), "admitted": dict(admitted), "allowance": dict(allowance),
            "refusals": dict(refusals), "summary": driver.summary()}


async def _redis_ledgers(redis: aioredis.Redis) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    async for name in redis.scan_iter(match="sg:l:*", count=1000):
        spent, reserved = await redis.hmget(name, "spent", "reserved")
        found[name.decode()[len("sg:l:"):]] = (int(spent or 0), int(reserved or 0))
    return found


async def wait_for_counters_to_match_ledgers(cluster: Cluster, timeout: float = 25) -> dict[str, tuple[int, int]]:
    """DESIGN.md 3: once reservations expire, each Redis counter equals its ledger and nothing is
    reserved. Polls the raw hashes (`sg:l:<ledger id>`: spent, reserved) until true or the deadline."""
    redis = await cluster.redis.client()
    deadline = time.monotonic() + timeout
    try:
        while True:
            counters = await _redis_ledgers(redis)
            _, ledgers = await _database_state(cluster)
            holds = [key async for key in redis.scan_iter(match="sg:h:*", count=1000)]
            pending = await redis.zcard("sg:exp")
            wrong = {
                ledger_id: {"redis_spent": usd(spent), "redis_reserved": usd(reserved),
                            "ledger_spent": usd(ledgers.get(ledger_id, 0))}
                for ledger_id, (spent, reserved) in counters.items()
                if reserved != 0 or spent != ledgers.get(ledger_id, 0)
            }
            if not wrong and not holds and pending == 0 and counters:
                return counters
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{timeout}s after the load, Redis counters still differ from the ledger "
                    f"(or hold reservations): {dict(list(wrong.items())[:10])}; "
                    f"{len(holds)} holds, {pending} pending expiries, {len(counters)} counters"
                )
            await asyncio.sleep(0.2)
    finally:
        await redis.aclose()
