"""Two versions of Spendgate side by side: another commit (A) and this checkout (B), measured in turns.

    python bench/ab.py REF [--embedded] [--kept-decisions N] [--mode authorize|pair|deny]
                           [--rounds 8] [--duration 5] [--connections 16]

REF (a commit, branch or tag) is checked out into a temporary git worktree. Each version runs as
`spendgate serve --workers 1` importing its own `service/` (and so serving its own `policies/`), on
a database and a redis-server of its own, seeded as floor.py seeds Spendgate (6 ledgers a request).
Both are started and warmed up, then measured one after the other `--rounds` times with wrk (the
order swapped every round), the one not being measured paused (SIGSTOP, its background work too).
Each round prints both throughputs, p50, p99 and CPU ms per request (floor.py's count: the server,
its redis-server, its PostgreSQL backends) and B's throughput as a percentage of A's; then medians.

Why turns: on a shared VM a target's rate moves ±10 % a minute (bench/README.md, thirteenth round),
so two full runs minutes apart cannot show a change of a few per cent; two steps seconds apart,
taken many times, can. `--embedded` measures the embedded default (SQLite file, no Redis) instead
of PostgreSQL + Redis; `--mode deny` sets the seeded tag's budget below one estimate first, so every
authorize is a budget denial.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from _common import ROOT
from floor import Bench, Result, Server
from floor import parse_args as floor_args

_WARMUP_SECONDS = 3.0


def _worktree(ref: str, into: Path) -> Path:
    """REF checked out (detached) under `into`; `_remove_worktree` takes it away again."""
    tree = into / "a"
    out = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"bench/ab.py: cannot check out {ref!r}: {out.stderr.strip()}")
    return tree


def _remove_worktree(tree: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                   capture_output=True, check=False)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True, check=False)


def _label(ref: str) -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref], capture_output=True, text=True,
                         check=False)
    return out.stdout.strip() or ref


def _line(name: str, r: Result) -> str:
    return f"{name} {r.per_second:7.0f}/s p50 {r.p50 * 1e3:5.1f} p99 {r.p99 * 1e3:6.1f} CPU {r.cpu_ms:4.2f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ref", help="the commit (branch, tag) to compare this checkout with: A; this checkout is B")
    parser.add_argument("--embedded", action="store_true", help="the embedded default (SQLite, no Redis)")
    parser.add_argument("--kept-decisions", type=int, default=0, metavar="N",
                        help="with --embedded: settled decisions of the last day already in each database")
    parser.add_argument("--mode", choices=("authorize", "pair", "deny"), default="authorize")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per step")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--smoke", action="store_true", help="2 rounds of 1 s at 4 connections (for the test)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.duration, args.connections = 2, 1.0, 4
    if args.rounds < 1 or args.duration <= 0 or args.connections < 1:
        parser.error("--rounds, --duration and --connections take positive numbers")
    if args.kept_decisions and not args.embedded:
        parser.error("--kept-decisions is for the embedded default (--embedded)")
    if args.mode == "pair" and args.embedded:
        parser.error("pairs need PostgreSQL + Redis (leave out --embedded)")
    return args


def _stop_on_sigterm(_signum: int, _frame: Any) -> None:
    raise SystemExit(143)  # unwinds through the clean-up below, as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    with ExitStack() as cleanup:  # undone in reverse: servers, databases and redis-servers, worktree, scratch
        scratch = Path(tempfile.mkdtemp(prefix="spendgate-ab-"))
        cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
        tree = _worktree(args.ref, scratch)
        cleanup.callback(_remove_worktree, tree)
        return _measure(args, tree, cleanup)
    raise AssertionError("unreachable")  # for type checkers: the block returns or raises


def _measure(args: argparse.Namespace, tree: Path, cleanup: ExitStack) -> int:
    names = {"A": f"A {_label(args.ref)}", "B": "B checkout"}
    benches: dict[str, Bench] = {}
    servers: dict[str, Server] = {}
    keys: dict[str, str] = {}
    postgres = not args.embedded
    for side, service in (("A", tree / "service"), ("B", ROOT / "service")):
        bench = Bench(floor_args(["--workers", "1", "--open-loop-seconds", "0"]))
        bench.service_dir = service
        benches[side] = bench
        cleanup.callback(bench.close)
        bench.prepare()
        server = servers[side] = bench.start_spendgate(names[side], embedded=args.embedded)
        cleanup.callback(server.stop)
        revision = httpx.get(f"{server.url}/readyz", timeout=10).json().get("policy_revision")
        print(f"({names[side]}: spendgate from {service}, policy revision {revision})", flush=True)
        keys[side] = bench.seed(server)
        if args.kept_decisions:
            bench.keep_decisions(args.kept_decisions)
        if args.mode == "deny":
            bench.exhaust(server, keys[side])
        bench.wrk(server, mode=args.mode, connections=args.connections, seconds=_WARMUP_SECONDS,
                  key=keys[side], postgres=postgres, tag=f"{side}-warm")
        server.pause()
    target = "embedded default (SQLite)" if args.embedded else "PostgreSQL + Redis"
    print(f"{args.mode} on the {target}, {args.connections} connections, {args.duration:g} s steps, "
          f"{args.rounds} rounds; A = {args.ref}, B = this checkout", flush=True)
    results: dict[str, list[Result]] = {"A": [], "B": []}
    for number in range(1, args.rounds + 1):
        for side in ("A", "B") if number % 2 else ("B", "A"):
            server = servers[side]
            server.resume()
            try:
                results[side].append(benches[side].wrk(
                    server, mode=args.mode, connections=args.connections, seconds=args.duration,
                    key=keys[side], postgres=postgres, tag=f"{side}-r{number}"))
            finally:
                server.pause()
        a, b = results["A"][-1], results["B"][-1]
        print(f"round {number:<2} {_line('A', a)} | {_line('B', b)} | B/A {100 * b.per_second / a.per_second:5.1f} %",
              flush=True)
    ratios = [100 * b.per_second / a.per_second for a, b in zip(results["A"], results["B"])]
    print(f"median B/A {statistics.median(ratios):.1f} % (rounds {min(ratios):.1f}–{max(ratios):.1f} %)")
    for side in ("A", "B"):
        rs = results[side]
        print(f"median {names[side]}: {statistics.median(r.per_second for r in rs):.0f}/s, "
              f"p99 {statistics.median(r.p99 for r in rs) * 1e3:.1f} ms, "
              f"CPU {statistics.median(r.cpu_ms for r in rs):.2f} ms a request")
    errors = sum(r.errors for rs in results.values() for r in rs)
    if errors:
        print(f"errors: {errors} requests failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
