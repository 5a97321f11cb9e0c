"""Memory per `spendgate serve` replica: after start-up, at rest after seeding, during load and after it.

Starts the same stack as `decisions.py` (fresh database, own redis-server, `--replicas` replicas,
seeded through the admin API with `decisions.py`'s seed), then reads every replica's memory from
/proc every `--interval` seconds (100 ms):

* RSS (`VmRSS` of /proc/PID/status), and from /proc/PID/smaps_rollup PSS (shared pages divided
  among the processes sharing them) and USS (private pages only: what stopping the replica frees).

Phases: `start-up` (replicas ready, nothing seeded), `at rest` (seeded, `--rest` seconds idle), then
`--steps` load steps of `--duration` seconds at `--rate` pairs/s offered (open loop, the
`decisions.py` load generator in its own process), each followed by `--rest` seconds idle. During a
step the table shows the mean and the peak of the samples; after it, the figure at the end of the
rest. The leak check compares the replica after each step: steady growth step after step (rather
than a plateau after the first) is a leak or an unbounded cache. Nothing asserts a figure.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import ROOT, machine_summary
from decisions import CpuMeter, LoadGen, Stack, Workload, run_step, seed

MiB = 1024 * 1024


@dataclass
class Mem:
    rss: int
    pss: int
    uss: int


def read_mem(pid: int) -> Mem | None:
    """RSS/PSS/USS in bytes (None if the process is gone)."""
    try:
        fields: dict[str, int] = {}
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, value, *_ = line.split()
            fields[name.rstrip(":")] = int(value) * 1024
        rss = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return None
    return Mem(rss, fields.get("Pss", 0), fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0))


@dataclass
class Sampler:
    """Samples the replicas' memory every `interval` seconds in a thread, into the current phase."""

    pids: list[int]
    interval: float
    samples: dict[int, list[Mem]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                mem = read_mem(pid)
                if mem is not None:
                    with self._lock:
                        self.samples.setdefault(pid, []).append(mem)
            self._stop.wait(self.interval)

    def phase(self) -> dict[int, list[Mem]]:
        """The samples since the last call (and start a new phase)."""
        with self._lock:
            taken, self.samples = self.samples, {}
        return taken

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


@dataclass
class Row:
    phase: str
    replica: int
    now: Mem
    mean_rss: float | None = None
    peak: Mem | None = None
    pairs: int = 0


def snapshot(sampler: Sampler, label: str, rest: float) -> list[Row]:
    """Idle for `rest` seconds, then one row per replica with the last sample."""
    sampler.phase()
    time.sleep(rest)
    rows = []
    for index, pid in enumerate(sampler.pids):
        mem = read_mem(pid)
        if mem is not None:
            rows.append(Row(label, index, mem))
    sampler.phase()
    return rows


def mib(value: float) -> str:
    return f"{value / MiB:.1f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, choices=(1, 2), default=2)
    parser.add_argument("--rate", type=float, default=40, help="offered pairs/s during each load step (all replicas)")
    parser.add_argument("--duration", type=float, default=20, help="seconds per load step")
    parser.add_argument("--steps", type=int, default=3, help="load steps (the leak check compares them)")
    parser.add_argument("--rest", type=float, default=5, help="idle seconds before each at-rest reading")
    parser.add_argument("--interval", type=float, default=0.1, help="sampling interval, seconds")
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--teams", type=int, default=4)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--end-users", type=int, default=500)
    parser.add_argument("--tags", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    # what Stack/seed of decisions.py read
    args.counters, args.policy, args.opa_url = "redis", "embedded", None
    args.server_pythonpath = None  # decisions.Stack puts this tree's service/ first on the replicas' PYTHONPATH
    return args


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stack = Stack(args)
    loadgen: LoadGen | None = None
    sampler: Sampler | None = None
    rows: list[Row] = []
    cpu_rows: list[tuple[str, dict[str, float], float, int]] = []
    try:
        stack.start()
        sampler = Sampler([r.process.pid for r in stack.replicas], args.interval)
        sampler.start()
        rows += snapshot(sampler, "start-up", 1.0)
        secrets = seed(stack.replicas[0].url, args)
        rows += snapshot(sampler, "at rest (seeded)", args.rest)
        work = Workload([r.url for r in stack.replicas], secrets, args.end_users, args.tags, args.connections,
                        args.timeout, False, args.seed)
        loadgen = LoadGen.start(work, 1, uuid.uuid4().hex[:8])
        meter = CpuMeter(stack, loadgen)
        count = int(args.rate * args.duration)
        for step in range(1, args.steps + 1):
            sampler.phase()
            message = ("open", {"start": time.monotonic() + 0.3, "rate": args.rate, "count": count, "part": 0,
                                "parts": 1, "tag": f"m{step}", "drain": args.timeout + 5})
            result = run_step(loadgen, meter, "memory", f"{args.rate:g}", [message], count)
            taken = sampler.phase()
            cpu_rows.append((f"load step {step}", result.cpu, result.achieved, result.pairs))
            errors = sum(result.errors.values()) + result.denies
            for index, pid in enumerate(sampler.pids):
                samples = taken.get(pid, [])
                if not samples:
                    continue
                peak = Mem(max(s.rss for s in samples), max(s.pss for s in samples), max(s.uss for s in samples))
                rows.append(Row(f"load step {step} ({result.pairs} pairs, {errors} errors)", index, samples[-1],
                                sum(s.rss for s in samples) / len(samples), peak, result.pairs))
            rows += snapshot(sampler, f"after step {step} (+{args.rest:g} s idle)", args.rest)
        report(args, rows, cpu_rows, len(stack.replicas))
        return 0
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if sampler is not None:
            sampler.stop()
        if loadgen is not None:
            loadgen.close()
        stack.close()


def report(args: argparse.Namespace, rows: list[Row], cpu_rows: list[tuple[str, dict[str, float], float, int]],
           replicas: int) -> None:
    print(machine_summary())
    print(f"replicas={replicas} keys={args.keys} end_users={args.end_users} tags={args.tags}; load steps: "
          f"{args.steps} × {args.duration:g} s at {args.rate:g} pairs/s offered (open loop); sampled every "
          f"{args.interval * 1000:.0f} ms; service package: {ROOT / 'service'}")
    print("MiB; during a load step: RSS mean and peak of the samples, PSS/USS peak; otherwise one reading")
    print(f"{'phase':<42} {'replica':>7} {'RSS':>7} {'PSS':>7} {'USS':>7} {'RSS mean':>9} {'RSS peak':>9} "
          f"{'USS peak':>9}")
    for row in rows:
        loaded = row.peak is not None
        print(f"{row.phase:<42} {row.replica:>7} {mib(row.now.rss):>7} {mib(row.now.pss):>7} {mib(row.now.uss):>7} "
              f"{mib(row.mean_rss) if loaded and row.mean_rss is not None else '':>9} "
              f"{mib(row.peak.rss) if row.peak else '':>9} {mib(row.peak.uss) if row.peak else '':>9}")
    print()
    print(f"{'load step':<12} {'pairs/s':>8}   CPU cores: spendgate pg redis loadgen other")
    for label, cpu, achieved, _pairs in cpu_rows:
        print(f"{label:<12} {achieved:>8.0f}   {cpu['spendgate']:>19.2f} {cpu['postgres']:>4.2f} {cpu['redis']:>5.2f} "
              f"{cpu['loadgen']:>7.2f} {cpu['other']:>5.2f}")
    print()
    print("leak check (USS after each step's rest, MiB; growth per step, and per 1,000 requests the replica served in it):")
    for replica in range(replicas):
        rest = [r for r in rows if r.replica == replica and r.phase.startswith("after step")]
        seeded = next((r for r in rows if r.replica == replica and r.phase == "at rest (seeded)"), None)
        if not rest or seeded is None:
            continue
        values = [seeded.now.uss] + [r.now.uss for r in rest]
        steps = " → ".join(mib(v) for v in values)
        growth = [b - a for a, b in zip(values, values[1:])]
        pairs_per_step = sum(r.pairs for r in rows if r.replica == replica and r.peak is not None) / max(len(rest), 1)
        per_k = [g / max(pairs_per_step / replicas * 2, 1) * 1000 for g in growth]  # each pair: 2 requests over R replicas
        print(f"  replica {replica}: {steps}  (growth per step: " + ", ".join(f"{g / MiB:+.1f}" for g in growth)
              + "; KiB per 1,000 requests: " + ", ".join(f"{k / 1024:+.0f}" for k in per_k) + ")")


if __name__ == "__main__":
    sys.exit(main())
