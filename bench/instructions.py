"""Instructions per authorize: the authorize floor and Spendgate, counted by valgrind, side by side.

    python bench/instructions.py [-n 500] [--rounds 2]

Each target is started as floor.py starts it (`uvicorn floor_apps:authorize`; `spendgate serve` on
PostgreSQL + Redis, seeded with the same 6 ledgers), its server process under valgrind's callgrind with
instrumentation off, so it starts and warms up at near full speed. Then, per round: instrumentation on
(`callgrind_control -i on`), N authorize requests one at a time (the requests wrk sends in floor.py),
instrumentation off, and a dump. Printed: instructions per authorize, by the shared object they ran in
(libpython is the interpreter running Python code; regorus the policy engine), and Spendgate's ratio to
the floor.

Why count instructions: on a shared VM whose speed drifts minute to minute, two throughputs measured
a minute apart differ by ±10 % (bench/README.md, thirteenth round); an instruction count is the same on
a busy machine or a quiet one, within ~2 % here — the server's background work (expiry sweeps, facts
read ahead, the decision log's thread) runs meanwhile and is counted with the requests, in both targets.
So it tells whether a change made the decision path do less, where floor.py's ratios cannot.

What it does not count: the kernel (every read and write on a socket: the same for both targets),
Redis and PostgreSQL (other processes), and time spent waiting. Throughput is floor.py's to measure.
Under valgrind a request takes ~25 times as long, so the background work that runs per second (the
facts cache's read ahead, the expiry sweep) is shared among ~25 times fewer requests than at full
speed: Spendgate's figure is a little high (~1 %), never low.

Needs valgrind (Debian package `valgrind`; its callgrind_control and callgrind_annotate too).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx

from _common import machine_summary
from floor import GATEWAY_TOKEN, Bench, Server
from floor import parse_args as floor_args

_WARMUP_REQUESTS = 50


def _body(run: str, index: int, key: str) -> dict[str, object]:
    """The request bench/wrk/decisions.lua sends."""
    return {"request_id": f"ins-{run}-{index}", "api_key": key, "model": "gpt-4o", "end_user": "cust-1",
            "tags": ["tag-1"], "estimated_cost": "0.002"}


def _object_name(path: str) -> str:
    name = Path(path).name
    for known in ("libpython", "regorus", "orjson", "libc.so", "ld-linux", "uvloop", "hiredis", "httptools",
                  "pydantic_core", "asyncpg", "libcrypto"):
        if known in name:
            return known.removesuffix(".so")
    return "other"


def by_object(dump: Path) -> Counter[str]:
    """Instructions in `dump` (a callgrind output file) by the shared object they ran in: each function's own
    cost lines under the `ob=` it was declared with; the line after a `calls=` (a callee's cost) is skipped."""
    names: dict[str, str] = {}  # callgrind names an object once ("(3) /path"), then by its number ("(3)")
    found: Counter[str] = Counter()
    current, skip_next = "other", False
    with dump.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            head = line[:1]
            if head.isdigit() or head in "+-*":
                if skip_next:
                    skip_next = False
                else:
                    found[current] += int(line.split()[-1])
            elif line.startswith(("ob=", "cob=")):  # an object is named where it first appears, call or not
                key, _, value = line.partition("=")
                ref, _, path = value.strip().partition(" ")
                if path:
                    names[ref] = _object_name(path)
                if key == "ob":
                    current = names.get(ref, _object_name(ref))
            elif line.startswith("calls="):
                skip_next = True
    return found


def measure(server: Server, key: str, run: str, count: int, dumps: Path) -> Counter[str]:
    """Instructions of `count` authorizes in the server's process (it runs under callgrind)."""
    pid = str(server.process.pid)
    before = set(dumps.parent.glob(f"{dumps.name}.{pid}*"))
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {GATEWAY_TOKEN}"}, timeout=60) as client:
        for i in range(_WARMUP_REQUESTS):
            client.post("/v1/authorize", json=_body(f"{run}-warm", i, key)).raise_for_status()
        subprocess.run(["callgrind_control", "--instr=on", pid], check=True, capture_output=True)
        for i in range(count):
            answer = client.post("/v1/authorize", json=_body(run, i, key))
            answer.raise_for_status()
        subprocess.run(["callgrind_control", "--instr=off", pid], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True)
    total: Counter[str] = Counter()
    for dump in sorted(set(dumps.parent.glob(f"{dumps.name}.{pid}*")) - before):
        total.update(by_object(dump))
    return total


def _row(label: str, counts: Counter[str], count: int, columns: list[str]) -> str:
    per = {name: counts[name] / count / 1000 for name in columns}
    cells = "".join(f"{per[name]:>12,.0f}" for name in columns)
    return f"{label:<28}{sum(counts.values()) / count / 1000:>10,.0f}{cells}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=500, help="authorize requests per target and round")
    parser.add_argument("--rounds", type=int, default=2, help="measurements per target (the spread shows the noise)")
    parser.add_argument("--smoke", action="store_true", help="20 requests, one round (for tests)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.rounds = 20, 1
    if args.n < 1 or args.rounds < 1:
        parser.error("-n and --rounds take a positive number")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        parser.error("valgrind is not installed: apt-get install -y valgrind (Debian package)")

    bench = Bench(floor_args(["--workers", "1", "--open-loop-seconds", "0"]))
    dumps = bench.workdir / "callgrind.out"
    bench.command_prefix = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={dumps}.%p"]
    results: dict[str, list[Counter[str]]] = {}
    try:
        bench.prepare()
        print(machine_summary())
        print(f"valgrind callgrind, server process only; {args.n} authorizes one at a time per round, "
              f"after {_WARMUP_REQUESTS} uncounted", flush=True)
        for name in ("authorize floor", "spendgate"):
            server = (bench.start_floor(name, "authorize") if name == "authorize floor"
                      else bench.start_spendgate(name, embedded=False))
            try:
                key = "floor" if name == "authorize floor" else bench.seed(server)
                results[name] = [measure(server, key, f"{bench.run_id}-{r}", args.n, dumps) for r in range(args.rounds)]
            finally:
                server.stop()
    finally:
        bench.close()

    everything: Counter[str] = Counter()
    for rounds in results.values():
        for counts in rounds:
            everything.update(counts)
    columns = [name for name, _ in everything.most_common(6)]
    print(f"{'k instructions per authorize':<28}{'all':>10}" + "".join(f"{name:>12}" for name in columns))
    for name, rounds in results.items():
        for number, counts in enumerate(rounds, start=1):
            print(_row(f"{name} (round {number})", counts, args.n, columns))
    floor_total = sorted(sum(c.values()) for c in results["authorize floor"])
    spendgate_total = sorted(sum(c.values()) for c in results["spendgate"])
    low, high = spendgate_total[0] / floor_total[-1], spendgate_total[-1] / floor_total[0]
    print(f"ratio spendgate / authorize floor (instructions per authorize): {low:.2f}"
          + (f" to {high:.2f}" if high - low >= 0.005 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
