"""Load test of the decision path: authorize + record pairs against 1 or 2 real `spendgate serve` replicas.

It creates a fresh PostgreSQL database, starts its own redis-server and the replicas (subprocesses),
seeds entities through the admin API, then drives authorize+record pairs from separate load-generator
processes (httpx, async, HTTP/1.1 keep-alive pools), round-robin across replicas:

* open loop (default): pairs are scheduled on a fixed timetable at each offered rate; a pair's
  authorize latency is measured from its *scheduled* send time, so a server (or client) that falls
  behind shows up as latency instead of silently lowering the offered rate (no coordinated omission);
  record latency runs from the moment its authorize answered (it is sent then).
* closed loop (`--closed-loop --concurrency 4,16,64`): C workers each send pairs back to back; the
  highest pairs/s is the service's maximum throughput on this machine.

It prints one table row per step and the machine; everything it started is stopped on exit (Ctrl-C
included) and the database dropped. Run `python bench/decisions.py --help` for the knobs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from _rawhttp import RawClient, RawHTTPError
from _common import (
    ROOT,
    VENV_BIN,
    collector_paused,
    cpu_seconds,
    fmt_ms,
    machine_busy_seconds,
    machine_summary,
    pct,
    postgres_pids,
    services,
)

ADMIN_TOKEN = "bench-admin-token-0123456789"
GATEWAY_TOKEN = "bench-gateway-token-0123456789"
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4")


# --- the stack: database, redis-server, replicas --------------------------------------------------


@dataclass
class Replica:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Stack:
    """Everything the bench starts; `close()` stops it all and drops the database (idempotent)."""

    args: argparse.Namespace
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="spendgate-bench-")))
    database_url: str | None = None
    redis: Any = None
    replicas: list[Replica] = field(default_factory=list)

    def start(self) -> None:
        self.database_url = asyncio.run(services.create_database("spendgate_bench"))
        print(f"database: {self.database_url.rsplit('/', 1)[1]}", file=sys.stderr)
        if self.args.counters == "redis":
            self.redis = services.RedisServer(workdir=self.workdir)
            self.redis.start()
            print(f"redis-server: port {self.redis.port}", file=sys.stderr)
        # One at a time: the first migrates the fresh database, the next finds it up to date.
        for index in range(self.args.replicas):
            self.replicas.append(self._start_replica(index))

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
        env.update(
            SPENDGATE_DATABASE_URL=str(self.database_url),
            SPENDGATE_ADMIN_TOKEN=ADMIN_TOKEN,
            SPENDGATE_GATEWAY_TOKEN=GATEWAY_TOKEN,
        )
        if self.redis is not None:
            env["SPENDGATE_REDIS_URL"] = self.redis.url
        if self.args.policy == "opa":
            env["SPENDGATE_OPA_URL"] = self.args.opa_url
        # This tree's service/ first: in a worktree or copy of the repository sharing the venv (whose
        # editable install points at another checkout) the replicas must import the code measured here.
        paths = [*(self.args.server_pythonpath.split(os.pathsep) if self.args.server_pythonpath else []),
                 str(ROOT / "service")]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        return env

    def _start_replica(self, index: int) -> Replica:
        port = services.free_port()
        log = self.workdir / f"replica-{index}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(VENV_BIN / "spendgate"), "serve", "--host", "127.0.0.1", "--port", str(port),
                 "--log-level", "warning", "--workers", "1"],  # a replica is one process
                env=self._env(), cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the bench only; it stops the replicas itself
            )
        replica = Replica(port, process, log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"replica {index} exited with {process.returncode}:\n{_tail(log)}")
            try:
                if httpx.get(f"{replica.url}/readyz", timeout=1).status_code == 200:
                    print(f"replica {index}: {replica.url} ready (pid {process.pid})", file=sys.stderr)
                    return replica
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"replica {index} not ready after 60 s:\n{_tail(log)}")

    def close(self) -> None:
        for replica in self.replicas:
            if replica.process.poll() is None:
                replica.process.terminate()
        for replica in self.replicas:
            try:
                replica.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()
        self.replicas.clear()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.database_url is not None:
            asyncio.run(services.drop_database(self.database_url))
            print(f"dropped database {self.database_url.rsplit('/', 1)[1]}", file=sys.stderr)
            self.database_url = None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- seeding through the admin API ----------------------------------------------------------------


def seed(base_url: str, args: argparse.Namespace) -> list[str]:
    """An org, teams, users and memberships, keys (team and personal, daily and monthly windows, some
    per-model budgets), some end users and tags with budgets. Returns the key secrets.

    Limits are far above what a run spends: the bench measures admission, not refusals.
    """
    day = {"max_budget": "100000", "soft_budget": "90000", "duration": "1d", "reset": "calendar"}
    month = {"max_budget": "1000000", "duration": "1mo"}
    with httpx.Client(base_url=base_url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as admin:

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            response = admin.post(path, json=body)
            if response.status_code != 201:
                raise RuntimeError(f"POST {path} → {response.status_code}: {response.text}")
            return response.json()

        post("/v1/admin/orgs", {"id": "bench-org", "name": "Bench", "budget": [month, {"max_budget": "5000000"}]})
        for t in range(args.teams):
            post("/v1/admin/teams", {"id": f"team-{t}", "name": f"Team {t}", "org_id": "bench-org", "budget": day})
        for u in range(args.users):
            post("/v1/admin/users", {"id": f"user-{u}", "org_id": "bench-org", "budget": day})
            post(f"/v1/admin/teams/team-{u % args.teams}/members", {"user_id": f"user-{u}", "budget": day})
        secrets = []
        for k in range(args.keys):
            user = f"user-{k % args.users}"
            body: dict[str, Any] = {"id": f"key-{k}", "user_id": user, "budget": [day, month]}
            if k % 2 == 0:  # team key of the user's team (charges the team and the member, not the user)
                body["team_id"] = f"team-{(k % args.users) % args.teams}"
            if k % 4 == 0:
                body["model_budgets"] = {"gpt-4o": {"max_budget": "20000", "duration": "1d"}}
            secrets.append(post("/v1/admin/keys", body)["key"])
        for e in range(0, args.end_users, 5):  # one in five end users is created with a budget
            post("/v1/admin/end-users", {"id": f"cust-{e}", "budget": {"max_budget": "1000", "duration": "1d"}})
        for t in range(0, args.tags, 2):  # half the tags too
            post("/v1/admin/tags", {"id": f"tag-{t}", "budget": {"max_budget": "100000", "duration": "1mo"}})
    return secrets


# --- the load generator (runs in its own processes) ----------------------------------------------


@dataclass
class Workload:
    urls: list[str]
    secrets: list[str]
    end_users: int
    tags: int
    connections: int
    timeout: float
    affinity: bool
    seed: int
    #: "raw" (bench/_rawhttp.py, lean) or "httpx" (what earlier results used).
    client: str = "raw"


class _Step:
    """Everything one load-generator process measured in one step."""

    def __init__(self) -> None:
        self.authorize: list[float] = []
        self.record: list[float] = []
        self.pairs = 0
        self.denies = 0
        self.errors: Counter[str] = Counter()
        self.first_sched: float | None = None
        self.last_done = 0.0
        self.max_lag = 0.0

    def result(self) -> dict[str, Any]:
        return {
            "authorize": self.authorize, "record": self.record, "pairs": self.pairs, "denies": self.denies,
            "errors": dict(self.errors), "first": self.first_sched, "last": self.last_done, "max_lag": self.max_lag,
        }


class _Driver:
    def __init__(self, work: Workload, run_id: str) -> None:
        self.work = work
        self.run_id = run_id
        self.rng = random.Random(work.seed)
        headers = {"authorization": f"Bearer {GATEWAY_TOKEN}", "content-type": "application/json"}
        self.clients: list[Any]
        if work.client == "httpx":
            limits = httpx.Limits(max_connections=work.connections, max_keepalive_connections=work.connections)
            self.clients = [
                httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=work.timeout, http2=False)
                for url in work.urls
            ]
        else:
            self.clients = [
                RawClient(url, headers, max_connections=work.connections, timeout=work.timeout) for url in work.urls
            ]

    async def _post(self, client: Any, path: str, body: bytes) -> tuple[int, bytes]:
        if isinstance(client, RawClient):
            return await client.post(path, body)
        response = await client.post(path, content=body)
        return response.status_code, response.content

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()

    def bodies(self, request_id: str) -> tuple[bytes, bytes]:
        rng, work = self.rng, self.work
        estimate = rng.randint(2, 20) / 1000
        tags = rng.sample(range(work.tags), rng.randint(0, 2)) if work.tags else []
        authorize = {
            "request_id": request_id,
            "api_key": rng.choice(work.secrets),
            "model": rng.choice(MODELS),
            "end_user": f"cust-{rng.randrange(work.end_users)}" if work.end_users else None,
            "tags": [f"tag-{t}" for t in tags],
            "estimated_cost": f"{estimate:.3f}",
        }
        ok = rng.random() >= 0.05
        record = {"request_id": request_id, "cost": f"{estimate * rng.uniform(0.3, 1.0):.6f}" if ok else "0",
                  "outcome": "success" if ok else "failure"}
        return json.dumps(authorize).encode(), json.dumps(record).encode()

    async def pair(self, index: int, sched: float, step: _Step, tag: str) -> None:
        """One authorize then (if allowed) its record; latencies land in `step`."""
        replicas = len(self.clients)
        first = self.clients[index % replicas]
        second = first if self.work.affinity else self.clients[(index + 1) % replicas]
        authorize_body, record_body = self.bodies(f"{self.run_id}-{tag}-{index}")
        try:
            status, answer = await self._post(first, "/v1/authorize", authorize_body)
        except (httpx.HTTPError, RawHTTPError) as exc:
            step.authorize.append(time.monotonic() - sched)
            step.errors[f"authorize {exc.args[0] if isinstance(exc, RawHTTPError) else type(exc).__name__}"] += 1
            return
        answered = time.monotonic()
        step.authorize.append(answered - sched)
        if status != 200:
            step.errors[f"authorize {status}"] += 1
            return
        if b'"decision":"allow"' not in answer and json.loads(answer).get("decision") != "allow":
            step.denies += 1
            return
        try:
            status, answer = await self._post(second, "/v1/record", record_body)
        except (httpx.HTTPError, RawHTTPError) as exc:
            step.record.append(time.monotonic() - answered)
            step.errors[f"record {exc.args[0] if isinstance(exc, RawHTTPError) else type(exc).__name__}"] += 1
            return
        done = time.monotonic()
        step.record.append(done - answered)
        if status != 200:
            step.errors[f"record {status}"] += 1
            return
        step.pairs += 1
        step.last_done = max(step.last_done, done)

    async def open_loop(self, *, start: float, rate: float, count: int, part: int, parts: int, tag: str,
                        drain: float) -> _Step:
        """Pairs part, part+parts, … of `count` at `start + i/rate` (time.monotonic, shared by all processes)."""
        step = _Step()
        step.first_sched = start + part / rate
        tasks: set[asyncio.Task[None]] = set()
        index = part
        while index < count:
            now = time.monotonic()
            while index < count and start + index / rate <= now:  # everything due: send it now
                sched = start + index / rate
                step.max_lag = max(step.max_lag, now - sched)
                task = asyncio.create_task(self.pair(index, sched, step, tag))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                index += parts
            if index < count:
                await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
        if tasks:
            _done, pending = await asyncio.wait(set(tasks), timeout=drain)
            for task in pending:
                task.cancel()
                step.errors["not answered before the drain deadline"] += 1
            if pending:
                await asyncio.wait(pending)
        return step

    async def closed_loop(self, *, concurrency: int, duration: float, tag: str) -> _Step:
        step = _Step()
        step.first_sched = time.monotonic()
        deadline = step.first_sched + duration
        counter = iter(range(10**9))

        async def worker() -> None:
            while time.monotonic() < deadline:
                await self.pair(next(counter), time.monotonic(), step, tag)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return step


def _loadgen_main(conn: Any, work: Workload, run_id: str) -> None:
    """A load-generator process: obeys ("open", …) / ("closed", …) / ("stop",) messages from the bench."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench decides when this process stops

    async def serve() -> None:
        driver = _Driver(work, run_id)
        try:
            while True:
                message = await asyncio.to_thread(conn.recv)
                if message[0] == "stop":
                    break
                kind, options = message
                with collector_paused():  # no collector pauses during a step (_common.collector_paused)
                    if kind == "open":
                        step = await driver.open_loop(**options)
                    else:
                        step = await driver.closed_loop(**options)
                conn.send(step.result())
        finally:
            await driver.close()

    try:
        import uvloop  # the service's own dependency; a cheaper event loop for the generator too

        uvloop.run(serve())
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve())


# --- running steps and printing -------------------------------------------------------------------


@dataclass
class LoadGen:
    processes: list[Any]
    conns: list[Any]

    @classmethod
    def start(cls, work: Workload, count: int, run_id: str) -> LoadGen:
        context = mp.get_context("spawn")
        processes, conns = [], []
        for i in range(count):
            parent, child = context.Pipe()
            part = Workload(**{**work.__dict__, "seed": work.seed + i})
            process = context.Process(target=_loadgen_main, args=(child, part, run_id), daemon=True)
            process.start()
            processes.append(process)
            conns.append(parent)
        return cls(processes, conns)

    def run(self, messages: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        for conn, message in zip(self.conns, messages):
            conn.send(message)
        return [conn.recv() for conn in self.conns]

    def close(self) -> None:
        for conn, process in zip(self.conns, self.processes):
            if process.is_alive():
                try:
                    conn.send(("stop",))
                except OSError:
                    pass
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()


class Profiler:
    """py-spy recording one replica for the duration of a step (raw collapsed stacks)."""

    def __init__(self, pid: int, out: Path, rate: int) -> None:
        self.out = out
        self.process = subprocess.Popen(
            [str(VENV_BIN / "py-spy"), "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        time.sleep(0.5)  # let it attach

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            _out, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _out, err = self.process.communicate()
        if not self.out.exists():
            print(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}", file=sys.stderr)
        else:
            print(f"py-spy profile: {self.out}", file=sys.stderr)


@dataclass
class Row:
    label: str
    offered: str
    sent: int
    pairs: int
    seconds: float
    errors: Counter[str]
    denies: int
    authorize: list[float]
    record: list[float]
    cpu: dict[str, float]
    max_lag: float
    pg: dict[str, float] = field(default_factory=dict)

    @property
    def achieved(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else 0.0


def _merge(results: list[dict[str, Any]]) -> tuple[int, int, Counter[str], list[float], list[float], float, float]:
    errors: Counter[str] = Counter()
    authorize: list[float] = []
    record: list[float] = []
    pairs = denies = 0
    first = min((r["first"] for r in results if r["first"] is not None), default=0.0)
    last = max((r["last"] for r in results), default=0.0)
    lag = 0.0
    for r in results:
        pairs += r["pairs"]
        denies += r["denies"]
        errors.update(r["errors"])
        authorize += r["authorize"]
        record += r["record"]
        lag = max(lag, r["max_lag"])
    authorize.sort()
    record.sort()
    return pairs, denies, errors, authorize, record, max(last - first, 0.0), lag


class PgActivity:
    """Samples pg_stat_activity of the bench database every 50 ms in a thread, for one step at a time.

    Reports the average number of the service's connections that are running a statement, waiting on a
    lock (row locks of shared ledgers), idle inside a transaction (waiting for the service) and idle.
    """

    def __init__(self, database_url: str) -> None:
        self.dbname = database_url.rsplit("/", 1)[1]
        self.admin_url = services.PG_ADMIN_URL
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples: Counter[str] = Counter()
        self.rounds = 0

    def start(self) -> None:
        self.samples, self.rounds = Counter(), 0
        self._stop.clear()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _run(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.admin_url)
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(
                    "SELECT state, wait_event_type FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    self.dbname,
                )
                self.rounds += 1
                for row in rows:
                    state, wait = row["state"], row["wait_event_type"]
                    if state == "active":
                        self.samples["lock wait" if wait == "Lock" else "running"] += 1
                    elif state == "idle in transaction":
                        self.samples["idle in tx"] += 1
                    else:
                        self.samples["idle"] += 1
                await asyncio.sleep(0.05)
        finally:
            await conn.close()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        rounds = max(self.rounds, 1)
        return {name: self.samples[name] / rounds for name in ("running", "lock wait", "idle in tx", "idle")}


class CpuMeter:
    """CPU used per group of processes between two snapshots, in cores (CPU seconds per wall second).

    Postgres backends come and go (the pool, other clients): only processes alive at both snapshots count.
    "other" is the machine's busy time not accounted to any group (e.g. another job on the machine).
    """

    def __init__(self, stack: Stack, loadgen: LoadGen) -> None:
        self.groups = {
            "spendgate": lambda: [r.process.pid for r in stack.replicas],
            "postgres": postgres_pids,
            "redis": lambda: [stack.redis.process.pid] if stack.redis is not None and stack.redis.process else [],
            "loadgen": lambda: [p.pid for p in loadgen.processes],
        }

    def snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {name: {pid: cpu_seconds([pid]) for pid in pids()} for name, pids in self.groups.items()}
        snap["machine"] = machine_busy_seconds()
        snap["t"] = time.monotonic()
        return snap

    @staticmethod
    def cores(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        wall = max(after["t"] - before["t"], 1e-9)
        used = {
            name: sum(after[name][pid] - before[name][pid] for pid in after[name] if pid in before[name]) / wall
            for name in before if name not in ("t", "machine")
        }
        used["machine"] = (after["machine"] - before["machine"]) / wall
        used["other"] = max(used["machine"] - sum(v for k, v in used.items() if k != "machine"), 0.0)
        return used


def run_step(loadgen: LoadGen, meter: CpuMeter, label: str, offered: str,
             messages: list[tuple[str, dict[str, Any]]], sent: int | None = None,
             activity: PgActivity | None = None) -> Row:
    if activity is not None:
        activity.start()
    before = meter.snapshot()
    results = loadgen.run(messages)
    after = meter.snapshot()
    pg = activity.stop() if activity is not None else {}
    pairs, denies, errors, authorize, record, seconds, lag = _merge(results)
    return Row(label, offered, sent if sent is not None else len(authorize), pairs, seconds, errors, denies,
               authorize, record, CpuMeter.cores(before, after), lag, pg)


HEADER = (
    f"{'mode':<22} {'offered/s':>9} {'sent':>6} {'pairs/s':>8} {'errors':>6} "
    f"{'auth p50':>8} {'p95':>6} {'p99':>6} {'rec p50':>8} {'p95':>6} {'p99':>6}   "
    f"CPU cores: spendgate pg redis loadgen other   PG conns: run lock idle-in-tx"
)


def format_row(row: Row) -> str:
    a, r = row.authorize, row.record
    errors = sum(row.errors.values()) + row.denies
    c = row.cpu
    return (
        f"{row.label:<22} {row.offered:>9} {row.sent:>6} {row.achieved:>8.0f} {errors:>6} "
        f"{fmt_ms(pct(a, 50)):>8} {fmt_ms(pct(a, 95)):>6} {fmt_ms(pct(a, 99)):>6} "
        f"{fmt_ms(pct(r, 50)):>8} {fmt_ms(pct(r, 95)):>6} {fmt_ms(pct(r, 99)):>6}   "
        f"{c['spendgate']:>9.2f} {c['postgres']:>4.2f} {c['redis']:>5.2f} {c['loadgen']:>7.2f} {c['other']:>5.2f}"
        + (f"   {row.pg['running']:>12.1f} {row.pg['lock wait']:>4.1f} {row.pg['idle in tx']:>10.1f}" if row.pg else "")
    )


def describe_errors(row: Row) -> str | None:
    parts = [f"{n} × {what}" for what, n in row.errors.most_common()]
    if row.denies:
        parts.append(f"{row.denies} × decision deny")
    return f"  {row.label} @ {row.offered}: " + ", ".join(parts) if parts else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, choices=(1, 2), default=1)
    parser.add_argument("--rates", default="250,500,1000,2000", help="offered pairs/s, one open-loop step each")
    parser.add_argument("--duration", type=float, default=10, help="seconds per step")
    parser.add_argument("--max-pairs", type=int, default=40_000, help="upper bound on pairs sent per step")
    parser.add_argument("--closed-loop", action="store_true", help="closed loop instead of open loop")
    parser.add_argument("--concurrency", default="4,16,64", help="closed-loop workers, one step each")
    parser.add_argument("--counters", choices=("redis", "sql"), default="redis")
    parser.add_argument("--policy", choices=("embedded", "opa"), default="embedded")
    parser.add_argument("--opa-url", help="with --policy opa: a running OPA with policies/ loaded")
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--teams", type=int, default=4)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--end-users", type=int, default=500, help="pool of end users named in requests (0: none)")
    parser.add_argument("--tags", type=int, default=8, help="pool of tags; each request names 0–2 (0: none)")
    parser.add_argument("--loadgen-procs", type=int, default=1, help="load-generator processes sharing the timetable")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="load generator's HTTP client: raw (lean, bench/_rawhttp.py) or httpx (as before)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections per replica per process")
    parser.add_argument("--timeout", type=float, default=10, help="per-request timeout, seconds")
    parser.add_argument("--warmup", type=float, default=2, help="closed-loop warm-up seconds before measuring")
    parser.add_argument("--affinity", action="store_true",
                        help="send a pair's record to the replica that authorized it (default: the next one)")
    parser.add_argument("--py-spy", metavar="PREFIX",
                        help="record replica 0 with py-spy during each step into PREFIX-<step>.txt (raw stacks)")
    parser.add_argument("--py-spy-rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--server-pythonpath", help="PYTHONPATH for the replicas (e.g. to try uvloop/httptools)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.policy == "opa" and not args.opa_url:
        parser.error("--policy opa needs --opa-url (an OPA server with policies/ loaded)")
    return args


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored (`&`)
    stack = Stack(args)
    loadgen: LoadGen | None = None
    rows: list[Row] = []
    try:
        stack.start()
        started = time.monotonic()
        secrets = seed(stack.replicas[0].url, args)
        print(f"seeded {args.keys} keys, {args.teams} teams, {args.users} users in "
              f"{time.monotonic() - started:.1f} s", file=sys.stderr)
        run_id = uuid.uuid4().hex[:8]
        work = Workload([r.url for r in stack.replicas], secrets, args.end_users, args.tags, args.connections,
                        args.timeout, args.affinity, args.seed, args.client)
        loadgen = LoadGen.start(work, args.loadgen_procs, run_id)
        meter = CpuMeter(stack, loadgen)
        activity = PgActivity(str(stack.database_url))
        procs = args.loadgen_procs
        if args.warmup > 0:
            run_step(loadgen, meter, "warm-up", "-", [
                ("closed", {"concurrency": 8, "duration": args.warmup, "tag": "warm"}) for _ in range(procs)
            ])
        label = f"{'closed' if args.closed_loop else 'open'} {args.replicas}r {args.counters}"
        steps: list[tuple[str, list[tuple[str, dict[str, Any]]], int | None]] = []
        if args.closed_loop:
            for c in (int(x) for x in args.concurrency.split(",")):
                per = max(1, c // procs)
                steps.append((f"c={per * procs}", [
                    ("closed", {"concurrency": per, "duration": args.duration, "tag": f"c{c}"}) for _ in range(procs)
                ], None))
        else:
            for rate in (float(x) for x in args.rates.split(",")):
                count = min(int(rate * args.duration), args.max_pairs)
                steps.append((f"{rate:g}", [
                    ("open", {"start": 0.0, "rate": rate, "count": count, "part": i, "parts": procs,
                              "tag": f"r{rate:g}", "drain": args.timeout + 5}) for i in range(procs)
                ], count))
        print(machine_summary())
        print(f"replicas={args.replicas} counters={args.counters} policy={args.policy} keys={args.keys} "
              f"end_users={args.end_users} tags={args.tags} loadgen_procs={procs} "
              f"connections/replica/proc={args.connections} client={args.client} duration={args.duration:g}s")
        print("latencies in ms; open loop: authorize from its scheduled send time, record from authorize's answer")
        print(HEADER, flush=True)
        for offered, messages, count in steps:
            if not args.closed_loop:  # the timetable starts when the step does, not when it was planned
                start_at = time.monotonic() + 0.3
                for _kind, options in messages:
                    options["start"] = start_at
            profiler = None
            if args.py_spy:
                out = Path(f"{args.py_spy}-{label.replace(' ', '-')}-{offered.replace('=', '')}.txt")
                profiler = Profiler(stack.replicas[0].process.pid, out, args.py_spy_rate)
            try:
                row = run_step(loadgen, meter, label, offered, messages, count, activity)
            finally:
                if profiler is not None:
                    profiler.stop()
            rows.append(row)
            print(format_row(row), flush=True)
            if row.max_lag > 0.05:
                print(f"  (load generator fell behind its timetable by up to {row.max_lag * 1000:.0f} ms)", flush=True)
        notes = [line for line in (describe_errors(row) for row in rows) if line]
        if notes:
            print("errors and denials:")
            print("\n".join(notes))
        if args.closed_loop and rows:
            best = max(rows, key=lambda r: r.achieved)
            print(f"max throughput: {best.achieved:.0f} pairs/s at {best.offered} "
                  f"(authorize p50 {fmt_ms(pct(best.authorize, 50))} ms, p99 {fmt_ms(pct(best.authorize, 99))} ms)")
        return 0
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the clean-up
        if loadgen is not None:
            loadgen.close()
        stack.close()


if __name__ == "__main__":
    sys.exit(main())
