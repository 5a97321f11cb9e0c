"""Spendgate against its floors, side by side in one run on one machine (issue 11).

Targets, each started as its own server process(es) with the same uvicorn settings (uvloop, httptools,
access log off, --workers N), one at a time:

  http floor       bench/floor_apps.py `hello`: one POST route answering a constant
  authorize floor  `authorize`: parse the body, one EVALSHA of Spendgate's own commit.lua holding 6 ledgers
  pair floor       `pair`: that authorize + a record that group-commits the spend event and its 6 ledger
                   upserts (Spendgate's RecordBatcher and statements) and then one EVALSHA of settle.lua
  spendgate        `spendgate serve` on PostgreSQL + Redis, seeded through the admin API with a team key
                   (day budget), its team and membership, a gpt-4o budget on the key, an end user and a tag:
                   6 ledgers per request, as the floors hold
  spendgate sqlite the embedded default (SQLite file, no Redis), same seed: authorize, then pairs

With --denials, each Spendgate target ends with a `deny` step: the seeded tag's budget is set below one
request's estimate, and the same authorize requests are all refused (budget_exceeded), as when a budget
has run out and the gateway keeps sending. With --kept-decisions N, the embedded target's database holds N
settled decisions of the last day before it is measured (its expiry sweep has to look past them).

Load: `wrk` (Debian package `wrk`) with bench/wrk/decisions.lua, closed loop, at each --connections
(authorize: min(C, 2) threads; pairs: one thread per connection so a record always follows its
authorize's answer). After a target's authorize steps (before its pair steps), an open loop at half its best
closed-loop authorize rate, from this process at a fixed rate with the lean client (bench/_rawhttp.py) on
uvloop, its connections opened beforehand and its garbage collector paused, latency from the scheduled send
time (no coordinated omission).

CPU per request: utime+stime from /proc of the server process and its children, plus the redis-server
(every target that uses it) and the PostgreSQL backends connected to the bench database (alive at both
snapshots), divided by requests. Not counted: the load generator, PostgreSQL's shared background processes
(walwriter, checkpointer: other users of the machine write through them too).

With --alternate N, only authorize is measured, and in turns: the authorize floor and Spendgate (PostgreSQL +
Redis) are both started, then measured one after the other N times (the order swapped every round), the
one not being measured paused (SIGSTOP, so that its background work cannot run in the other's step). Each
round's ratio is printed, then their median: on a machine whose speed drifts over minutes (a shared VM),
a ratio of two steps measured seconds apart, taken many times, says more than one ratio of two targets
measured minutes apart.

Run `python bench/floor.py --help`; `--smoke` runs a few hundred requests per target (for the test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvloop

from _common import ROOT, VENV_BIN, collector_paused, cpu_seconds, fmt_ms, machine_summary, pct, services
from _rawhttp import RawClient, RawHTTPError
from floor_apps import LEDGERS

ADMIN_TOKEN = "bench-admin-token-0123456789"
GATEWAY_TOKEN = "bench-gateway-token-0123456789"
#: How long a target waits for PostgreSQL's autovacuum workers to finish before it starts.
_QUIET_WAIT_SECONDS = 60.0
#: Connections the open loop opens (with one request each) before its timetable starts.
_OPEN_LOOP_WARM = 16
WRK_SCRIPT = Path(os.environ.get("FLOOR_WRK_SCRIPT", ROOT / "bench" / "wrk" / "decisions.lua"))
BENCH_DIR = ROOT / "bench"


@dataclass
class Result:
    target: str
    mode: str  # "authorize" | "pair"
    connections: str  # "1", "16", or "open@R"
    requests: int
    seconds: float
    errors: int
    p50: float  # seconds
    p99: float
    cpu: float  # seconds, all counted processes

    @property
    def per_second(self) -> float:
        units = self.requests / 2 if self.mode == "pair" else self.requests
        return units / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms(self) -> float:
        units = self.requests / 2 if self.mode == "pair" else self.requests
        return 1000 * self.cpu / units if units else float("nan")


@dataclass
class Server:
    """One target's server process (own session: stopping it stops its uvicorn workers too)."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    extra_pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return [self.process.pid, *_descendants(self.process.pid), *self.extra_pids]

    def pause(self) -> None:
        """Stop every process of the server (SIGSTOP): nothing of it runs until `resume`."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.resume()  # a paused server would not act on SIGTERM
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        children = [child for child, parent in parents.items() if parent == current]
        found += children
        frontier += children
    return found


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="spendgate-floor-"))
        self.database_url: str | None = None
        self.redis: Any = None
        self.run_id = uuid.uuid4().hex[:8]
        self.results: list[Result] = []
        #: Put before every server's command (bench/instructions.py runs the servers under valgrind).
        self.command_prefix: list[str] = []
        #: The `service/` whose `spendgate` the servers import (bench/ab.py points one at another commit's).
        self.service_dir = ROOT / "service"

    # --- processes -------------------------------------------------------------------------------

    def _env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPENDGATE_", "FLOOR_"))}
        env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), str(self.service_dir)])
        env.update(extra)
        return env

    def _start(self, name: str, command: list[str], env: dict[str, str], ready: str) -> Server:
        port = services.free_port()
        log = self.workdir / f"{name.replace(' ', '-')}.log"
        with log.open("wb") as out:
            process = subprocess.Popen([*self.command_prefix, *command, "--host", "127.0.0.1", "--port", str(port)],
                                       env=env, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        server = Server(name, process, port, log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{log.read_text(errors='replace')}")
            try:
                if ready == "GET /readyz":
                    ok = httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200
                else:
                    ok = httpx.post(f"{server.url}/v1/authorize", json={"request_id": f"probe-{uuid.uuid4()}"},
                                    timeout=1).status_code == 200
                if ok:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        server.stop()
        raise RuntimeError(f"{name} not ready after 60 s:\n{log.read_text(errors='replace')}")

    def start_floor(self, name: str, app: str) -> Server:
        command = [str(VENV_BIN / "uvicorn"), f"floor_apps:{app}", "--loop", "uvloop", "--http", "httptools",
                   "--no-access-log", "--log-level", "warning", "--workers", str(self.args.workers)]
        env = self._env(FLOOR_REDIS_URL=self.redis.url, FLOOR_DATABASE_URL=str(self.database_url))
        server = self._start(name, command, env, "POST /v1/authorize")
        if app != "hello":
            server.extra_pids.append(self.redis.process.pid)
        return server

    def start_spendgate(self, name: str, *, embedded: bool) -> Server:
        # `spendgate serve` runs uvicorn with loop/http "auto": uvloop and httptools (both installed),
        # access log off — the floors' settings. --workers always: serve's default is one per core.
        command = [str(VENV_BIN / "spendgate"), "serve", "--log-level", "warning", "--workers", str(self.args.workers)]
        settings = {"SPENDGATE_ADMIN_TOKEN": ADMIN_TOKEN, "SPENDGATE_GATEWAY_TOKEN": GATEWAY_TOKEN,
                    **dict(item.split("=", 1) for item in self.args.spendgate_setting)}
        if embedded:
            settings["SPENDGATE_DATABASE_URL"] = f"sqlite+aiosqlite:///{self.workdir / 'spendgate.db'}"
        else:
            settings["SPENDGATE_DATABASE_URL"] = str(self.database_url)
            settings["SPENDGATE_REDIS_URL"] = self.redis.url
        server = self._start(name, command, self._env(**settings), "GET /readyz")
        if not embedded:
            server.extra_pids.append(self.redis.process.pid)
        return server

    # --- seeding ---------------------------------------------------------------------------------

    @staticmethod
    def seed(server: Server) -> str:
        """A team key with a day budget, its team and membership (budgets), a gpt-4o budget on the key,
        end user cust-1 and tag tag-1 with budgets: 6 ledgers per request. Returns the key's secret."""
        day = {"max_budget": "100000000", "duration": "1d"}
        with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                          timeout=30) as admin:

            def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
                response = admin.post(path, json=body)
                if response.status_code != 201:
                    raise RuntimeError(f"POST {path} → {response.status_code}: {response.text}")
                return dict(response.json())

            post("/v1/admin/teams", {"id": "team-1", "name": "Team", "budget": day})
            post("/v1/admin/users", {"id": "user-1"})
            post("/v1/admin/teams/team-1/members", {"user_id": "user-1", "budget": day})
            secret = post("/v1/admin/keys", {"id": "key-1", "user_id": "user-1", "team_id": "team-1", "budget": day,
                                              "model_budgets": {"gpt-4o": day}})["key"]
            post("/v1/admin/end-users", {"id": "cust-1", "budget": day})
            post("/v1/admin/tags", {"id": "tag-1", "budget": day})
        answer = _probe(server, secret, "seed-check")
        if answer.get("decision") != "allow":
            raise RuntimeError(f"the seeded key is not allowed: {answer}")
        held = [f"{c['entity']['type']} {c['entity']['id']}" for c in answer.get("charges", [])]
        print(f"({server.name}: each request holds {len(held)} ledgers: {', '.join(held)})", flush=True)
        return str(secret)

    @staticmethod
    def exhaust(server: Server, key: str) -> None:
        """Tag tag-1's day budget set below one request's estimate: from here on every authorize is refused
        with `budget_exceeded` (a storm of denials: a budget ran out and the gateway keeps sending)."""
        with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                          timeout=30) as admin:
            response = admin.patch("/v1/admin/tags/tag-1", json={"budget": {"max_budget": "0.000001", "duration": "1d"}})
            if response.status_code != 200:
                raise RuntimeError(f"PATCH /v1/admin/tags/tag-1 → {response.status_code}: {response.text}")
        answer = _probe(server, key, "deny-check")
        codes = [reason.get("code") for reason in answer.get("reasons", [])]
        if answer.get("decision") != "deny" or codes != ["budget_exceeded"]:
            raise RuntimeError(f"the exhausted tag does not refuse: {answer}")
        print(f"({server.name}: tag-1's budget is now below one estimate, every authorize is a budget denial)",
              flush=True)

    def keep_decisions(self, count: int) -> None:
        """`count` settled decisions in the embedded target's reservations table, made over the last day
        (as many a day of traffic leaves there): what its once-a-second expiry sweep has to look past."""
        now = time.time()
        stamp = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's DateTime text in SQLite

        def at(seconds_ago: float) -> str:
            return datetime.fromtimestamp(now - seconds_ago, timezone.utc).strftime(stamp)

        rows = [(f"kept-{i}", at(i * 85_000 / count), at(i * 85_000 / count + 600)) for i in range(count)]
        with sqlite3.connect(self.workdir / "spendgate.db", timeout=30) as db:
            db.executemany(
                "INSERT INTO reservations (request_id, amount, charges, decision, expires_at, released, created_at)"
                " VALUES (?, 0, '[]', '{}', ?, 1, ?)", rows)
        print(f"({count:,} settled decisions of the last day put in the embedded database)", flush=True)

    # --- CPU -------------------------------------------------------------------------------------

    async def _backend_pids(self) -> list[int]:
        if self.database_url is None:
            return []
        conn = await asyncpg.connect(services.PG_ADMIN_URL)
        try:
            rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1",
                                    self.database_url.rsplit("/", 1)[1])
        finally:
            await conn.close()
        return [int(row[0]) for row in rows]

    @staticmethod
    async def _checkpoint() -> None:
        """PostgreSQL quiet before the next target: autovacuum done with what the last target wrote (up to
        `_QUIET_WAIT_SECONDS`), then the dirty pages written out now, not by a checkpoint in the middle of it.
        On two cores a vacuum of the pair steps' writes would otherwise run inside the next target."""
        conn = await asyncpg.connect(services.PG_ADMIN_URL)
        try:
            deadline = time.monotonic() + _QUIET_WAIT_SECONDS
            while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"):
                if time.monotonic() > deadline:
                    print(f"(autovacuum still running after {_QUIET_WAIT_SECONDS:g} s: measuring anyway)", flush=True)
                    break
                await asyncio.sleep(0.5)
            await conn.execute("CHECKPOINT")
        finally:
            await conn.close()

    def snapshot(self, server: Server, postgres: bool) -> dict[int, float]:
        pids = server.pids() + (asyncio.run(self._backend_pids()) if postgres else [])
        return {pid: cpu_seconds([pid]) for pid in pids}

    @staticmethod
    def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
        return sum(after[pid] - before[pid] for pid in after if pid in before)

    # --- load ------------------------------------------------------------------------------------

    def wrk(self, server: Server, *, mode: str, connections: int, seconds: float, key: str, postgres: bool,
            tag: str) -> Result:
        threads = connections if mode == "pair" else min(connections, 2)
        script_mode = "authorize" if mode == "deny" else mode  # the same requests; the budget refuses them
        command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "10s",
                   "-s", str(WRK_SCRIPT), server.url, "--", script_mode, f"{self.run_id}-{tag}", GATEWAY_TOKEN, key]
        before = self.snapshot(server, postgres)
        out = subprocess.run(command, capture_output=True, text=True, check=False)
        after = self.snapshot(server, postgres)
        line = next((x for x in out.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
        if out.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
        if out.stderr:
            print(out.stderr, file=sys.stderr)
        data = json.loads(line.removeprefix("WRK_JSON "))
        return Result(server.name, mode, str(connections), data["requests"], data["duration_us"] / 1e6,
                      data["status_errors"] + data["socket_errors"], data["p50_us"] / 1e6, data["p99_us"] / 1e6,
                      self.cpu_between(before, after))

    def open_loop(self, server: Server, *, rate: float, seconds: float, key: str, postgres: bool) -> Result:
        with collector_paused():  # the load generator must not pause (_common.collector_paused)
            before, count, latencies, errors, wall = uvloop.run(self._fixed_rate(server, rate, seconds, key, postgres))
        after = self.snapshot(server, postgres)
        latencies.sort()
        return Result(server.name, "authorize", f"open@{rate:.0f}", count, wall, errors, pct(latencies, 50),
                      pct(latencies, 99), self.cpu_between(before, after))

    async def _fixed_rate(self, server: Server, rate: float, seconds: float, key: str,
                          postgres: bool) -> tuple[dict[int, float], int, list[float], int, float]:
        headers = {"authorization": f"Bearer {GATEWAY_TOKEN}", "content-type": "application/json"}
        client = RawClient(server.url, headers, max_connections=256, timeout=10)
        latencies: list[float] = []
        errors = 0
        kinds: Counter[str] = Counter()
        count = max(1, int(rate * seconds))
        prefix = f"{self.run_id}-open-{rate:.0f}"
        # Connections opened before the timetable starts: its first requests would otherwise carry
        # TCP connects and the server's accepts in their latency.
        await asyncio.gather(*(
            client.post("/v1/authorize", json.dumps({"request_id": f"{prefix}-warm-{i}", "api_key": key, "model": "gpt-4o",
                                                     "estimated_cost": "0.002"}).encode())
            for i in range(_OPEN_LOOP_WARM)
        ))
        before = await asyncio.to_thread(self.snapshot, server, postgres)
        start = time.monotonic() + 0.2

        async def one(index: int, sched: float) -> None:
            nonlocal errors
            body = (f'{{"request_id":"{prefix}-{index}","api_key":"{key}","model":"gpt-4o","end_user":"cust-1",'
                    f'"tags":["tag-1"],"estimated_cost":"0.002"}}').encode()
            try:
                status, _answer = await client.post("/v1/authorize", body)
                if status != 200:
                    errors += 1
                    kinds[f"HTTP {status}"] += 1
            except RawHTTPError as exc:
                errors += 1
                kinds[str(exc)] += 1
            latencies.append(time.monotonic() - sched)

        tasks = []
        for index in range(count):
            sched = start + index / rate
            delay = sched - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(index, sched)))
        await asyncio.gather(*tasks)
        wall = time.monotonic() - start
        await client.aclose()
        if kinds:
            print(f"  open loop errors: {', '.join(f'{n} × {what}' for what, n in kinds.most_common())}", flush=True)
        return before, count, latencies, errors, wall

    # --- the run ---------------------------------------------------------------------------------

    def measure(self, server: Server, *, modes: tuple[str, ...], key: str, postgres: bool,
                open_loop: bool) -> None:
        args = self.args
        for mode in modes:
            if mode == "deny":
                self.exhaust(server, key)
            if args.warmup > 0:
                self.wrk(server, mode=mode, connections=4, seconds=args.warmup, key=key, postgres=postgres,
                         tag=f"{server.name}-{mode}-warm".replace(" ", "_"))
            for connections in args.connections:
                result = self.wrk(server, mode=mode, connections=connections, seconds=args.duration, key=key,
                                  postgres=postgres, tag=f"{server.name}-{mode}-c{connections}".replace(" ", "_"))
                self.results.append(result)
                print(format_result(result), flush=True)
            # The open loop measures authorize: right after the authorize steps, for Spendgate as for the
            # authorize floor, not after Spendgate's pair steps (whose writes PostgreSQL is still vacuuming
            # and checkpointing on the same two cores: that was in Spendgate's tail and not the floor's).
            if mode == "authorize" and open_loop and args.open_loop_seconds > 0:
                best = max(r.per_second for r in self.results if r.target == server.name and r.mode == "authorize")
                result = self.open_loop(server, rate=max(best / 2, 1.0), seconds=args.open_loop_seconds, key=key,
                                        postgres=postgres)
                self.results.append(result)
                print(format_result(result), flush=True)
        if any(r.errors for r in self.results if r.target == server.name):
            _print_last_error(server)

    def prepare(self) -> None:
        """The run's own database, migrated, and its own redis-server (`close` removes both)."""
        self.database_url = asyncio.run(services.create_database("spendgate_floor"))
        self.redis = services.RedisServer(workdir=self.workdir)
        self.redis.start()
        migrate = subprocess.run([str(VENV_BIN / "spendgate"), "migrate"], cwd=self.workdir, capture_output=True,
                                 text=True, env=self._env(SPENDGATE_DATABASE_URL=self.database_url), check=False)
        if migrate.returncode != 0:
            raise RuntimeError(f"spendgate migrate failed: {migrate.stdout}{migrate.stderr}")

    def run(self) -> None:
        args = self.args
        self.prepare()
        print(machine_summary())
        print(f"load generator: wrk ({_wrk_version()}) closed loop, bench/wrk/decisions.lua; open loop: "
              f"bench/floor.py fixed rate (lean client) at half the best closed-loop authorize rate")
        print(f"uvicorn: uvloop, httptools, access log off, --workers {args.workers}; {args.duration:g} s per "
              f"closed-loop step, {args.open_loop_seconds:g} s open loop; load average before: {_loadavg()}")
        print(f"floors: each request holds {len(LEDGERS)} ledgers ({', '.join(r.entity_type for r in LEDGERS)})")
        if args.alternate:
            print(f"alternating: authorize floor and spendgate, {args.alternate} rounds, the idle one paused")
            print(f"{'':10}{HEADER}", flush=True)
            asyncio.run(self._checkpoint())
            self.alternate(args.alternate)
            print(f"load average after: {_loadavg()}")
            return
        print(HEADER, flush=True)
        denials = ("deny",) if args.denials else ()
        plan: list[tuple[str, str | None, tuple[str, ...], bool]] = [
            ("http floor", "hello", ("authorize",), False),
            ("authorize floor", "authorize", ("authorize",), True),
            ("pair floor", "pair", ("pair",), False),
            ("spendgate", None, ("authorize", "pair", *denials), True),
        ]
        if not args.skip_sqlite:
            plan.append(("spendgate sqlite", None, ("authorize", "pair", *denials), False))
        for name, app, modes, open_loop in plan:
            if name not in args.targets:
                continue
            embedded = name == "spendgate sqlite"
            asyncio.run(self._checkpoint())
            server = self.start_floor(name, app) if app else self.start_spendgate(name, embedded=embedded)
            try:
                key = self.seed(server) if app is None else "floor"
                if embedded and args.kept_decisions:
                    self.keep_decisions(args.kept_decisions)
                self.measure(server, modes=modes, key=key, postgres=not embedded and app != "hello",
                             open_loop=open_loop)
            finally:
                server.stop()
        print(f"load average after: {_loadavg()}")
        print_ratios(self.results)

    def alternate(self, rounds: int) -> None:
        """Authorize of the authorize floor and of Spendgate, measured in turns `rounds` times (--alternate)."""
        args = self.args
        floor = spendgate = None
        try:
            floor = self.start_floor("authorize floor", "authorize")
            spendgate = self.start_spendgate("spendgate", embedded=False)
            targets = [(floor, "floor"), (spendgate, self.seed(spendgate))]
            for server, key in targets:
                if args.warmup > 0:
                    self.wrk(server, mode="authorize", connections=4, seconds=args.warmup, key=key, postgres=True,
                             tag=f"{server.name}-warm".replace(" ", "_"))
            for server, _key in targets:
                server.pause()
            turns: list[tuple[int, Result, Result]] = []
            for number in range(1, rounds + 1):
                measured: dict[str, Result] = {}
                for server, key in targets if number % 2 else targets[::-1]:
                    server.resume()
                    try:
                        for connections in args.connections:
                            result = self.wrk(server, mode="authorize", connections=connections,
                                              seconds=args.duration, key=key, postgres=True,
                                              tag=f"{server.name}-r{number}-c{connections}".replace(" ", "_"))
                            print(f"round {number:<3} {format_result(result)}", flush=True)
                            measured[f"{server.name}/{connections}"] = result
                    finally:
                        server.pause()
                for connections in args.connections:
                    turns.append((connections, measured[f"spendgate/{connections}"],
                                  measured[f"authorize floor/{connections}"]))
            print_alternating_ratios(turns)
        finally:
            for server in (floor, spendgate):
                if server is not None:
                    server.stop()

    def close(self) -> None:
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self.database_url is not None:
            asyncio.run(services.drop_database(self.database_url))
            self.database_url = None
        shutil.rmtree(self.workdir, ignore_errors=True)


HEADER = f"{'target':<17} {'mode':<9} {'conns':>9} {'per s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'CPU ms':>7}"


def format_result(r: Result) -> str:
    return (f"{r.target:<17} {r.mode:<9} {r.connections:>9} {r.per_second:>8.0f} {fmt_ms(r.p50):>7} "
            f"{fmt_ms(r.p99):>7} {r.errors:>6} {r.cpu_ms:>7.2f}")


#: (what, Spendgate's target and mode, the floor's target and mode)
COMPARISONS = (
    ("spendgate authorize / http floor", ("spendgate", "authorize"), ("http floor", "authorize")),
    ("spendgate authorize / authorize floor", ("spendgate", "authorize"), ("authorize floor", "authorize")),
    ("spendgate pairs / pair floor", ("spendgate", "pair"), ("pair floor", "pair")),
    ("sqlite authorize / pg+redis authorize", ("spendgate sqlite", "authorize"), ("spendgate", "authorize")),
    ("sqlite pairs / pg+redis pairs", ("spendgate sqlite", "pair"), ("spendgate", "pair")),
    ("spendgate denials / spendgate authorize", ("spendgate", "deny"), ("spendgate", "authorize")),
    ("sqlite denials / sqlite authorize", ("spendgate sqlite", "deny"), ("spendgate sqlite", "authorize")),
)


def print_ratios(results: list[Result]) -> None:
    """One "ratio" line per comparison and connection count: throughput ratio and CPU per request of both."""
    print("ratios (throughput of the first over the second; CPU ms per request or pair of each):")
    by = {(r.target, r.mode, r.connections): r for r in results}
    for what, (a_target, a_mode), (b_target, b_mode) in COMPARISONS:
        for connections in sorted({r.connections for r in results}, key=lambda c: (not c.isdigit(), c)):
            a, b = by.get((a_target, a_mode, connections)), by.get((b_target, b_mode, connections))
            if a is None or b is None or b.per_second == 0:
                continue
            print(f"ratio {what:<40} conns {connections:>9}  {a.per_second / b.per_second:>6.1%}   "
                  f"CPU ms {a.cpu_ms:.2f} vs {b.cpu_ms:.2f}")


def print_alternating_ratios(turns: list[tuple[int, Result, Result]]) -> None:
    """Per connection count: each round's Spendgate/floor throughput ratio, their median and range."""
    print("ratios (spendgate authorize / authorize floor, each round's two steps measured one after the other):")
    for connections in sorted({c for c, _, _ in turns}):
        rounds = [(s, f) for c, s, f in turns if c == connections and f.per_second > 0]
        ratios = [s.per_second / f.per_second for s, f in rounds]
        if not ratios:
            continue
        cpu = statistics.median(s.cpu_ms for s, _ in rounds), statistics.median(f.cpu_ms for _, f in rounds)
        print(f"ratio by round  conns {connections:>4}  {'  '.join(f'{r:.1%}' for r in ratios)}")
        print(f"ratio median    conns {connections:>4}  {statistics.median(ratios):.1%} (range {min(ratios):.1%}"
              f" to {max(ratios):.1%}, {len(ratios)} rounds)   CPU ms median {cpu[0]:.2f} vs {cpu[1]:.2f}")


def _probe(server: Server, key: str, prefix: str) -> dict[str, Any]:
    """One authorize of the seeded request shape (the 6 ledgers every step holds), answered as JSON."""
    body = {"request_id": f"{prefix}-{uuid.uuid4()}", "api_key": key, "model": "gpt-4o",
            "end_user": "cust-1", "tags": ["tag-1"], "estimated_cost": "0.002"}
    return dict(httpx.post(f"{server.url}/v1/authorize", json=body, timeout=10,
                           headers={"authorization": f"Bearer {GATEWAY_TOKEN}"}).json())


def _print_last_error(server: Server) -> None:
    """The last exception the server logged, so that a step's errors say what they were."""
    lines = server.log.read_text(errors="replace").splitlines()
    errors = [line for line in lines if line and not line[0].isspace() and ("Error" in line or "Exception" in line)]
    if errors:
        print(f"  {server.name} logged {len(errors)} error lines; the last: {errors[-1][:300]}", flush=True)


def _wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).split(" [")[0].strip() or "wrk"


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


TARGETS = ("http floor", "authorize floor", "pair floor", "spendgate", "spendgate sqlite")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", default="1,16", help="closed-loop connections, one wrk step each")
    parser.add_argument("--duration", type=float, default=10, help="seconds per closed-loop step")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per target and mode")
    parser.add_argument("--open-loop-seconds", type=float, default=10,
                        help="open loop at half the best authorize rate, per authorize target (0: skip)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of every target")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of: {', '.join(TARGETS)}")
    parser.add_argument("--skip-sqlite", action="store_true", help="leave out the embedded SQLite run")
    parser.add_argument("--denials", action="store_true",
                        help="after each Spendgate target's other steps, a `deny` step: the seeded tag's budget set "
                             "below one estimate, so every authorize is refused (a storm of denials)")
    parser.add_argument("--kept-decisions", type=int, default=0, metavar="N",
                        help="settled decisions already in the embedded target's database, as a day of traffic leaves "
                             "them (kept 24 h for idempotency); 0: a fresh database")
    parser.add_argument("--spendgate-setting", action="append", default=[], metavar="SPENDGATE_X=VALUE",
                        help="an extra setting for the Spendgate targets, e.g. to compare one switched off (repeatable)")
    parser.add_argument("--alternate", type=int, default=0, metavar="N",
                        help="only authorize: the authorize floor and Spendgate measured in turns, N rounds, "
                             "each round's ratio and their median (other targets and options ignored)")
    parser.add_argument("--smoke", action="store_true", help="seconds per target, for tests: 1 s steps at 4 conns")
    args = parser.parse_args(argv)
    if args.smoke:
        args.connections, args.duration, args.warmup, args.open_loop_seconds = "4", 1.0, 0.0, 1.0
    args.connections = [int(c) for c in str(args.connections).split(",")]
    if not all(item.startswith("SPENDGATE_") and "=" in item for item in args.spendgate_setting):
        parser.error("--spendgate-setting takes SPENDGATE_NAME=VALUE")
    args.targets = {t.strip() for t in args.targets.split(",")}
    unknown = args.targets - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if args.alternate < 0:
        parser.error("--alternate takes a number of rounds (0: the usual run)")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed: apt-get install -y wrk (Debian package)")
    return args


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    bench = Bench(args)
    try:
        bench.run()
        return 0
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        bench.close()


if __name__ == "__main__":
    sys.exit(main())
