"""Shared helpers of the bench scripts: paths, the test suite's service helpers, machine facts,
percentiles and per-process CPU accounting (from /proc). Nothing here is timed."""

from __future__ import annotations

import gc
import importlib.util
import os
import platform
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

__all__ = [
    "ROOT",
    "VENV_BIN",
    "services",
    "machine_summary",
    "pct",
    "fmt_ms",
    "fmt_us",
    "cpu_seconds",
    "postgres_pids",
    "machine_busy_seconds",
]

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
if str(ROOT / "service") not in sys.path:
    sys.path.insert(0, str(ROOT / "service"))


def _load_services() -> ModuleType:
    """tests/support/services.py (create/drop a database, own redis-server), imported by path."""
    path = ROOT / "tests" / "support" / "services.py"
    spec = importlib.util.spec_from_file_location("spendgate_bench_services", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


services = _load_services()


def machine_summary() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
                break
    except OSError:
        pass
    return (
        f"machine: {model}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()} ({platform.python_implementation()})"
    )


def pct(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def fmt_ms(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "-"
    ms = seconds * 1000
    return f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of the given processes (threads included), in seconds; gone processes count 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def postgres_pids() -> list[int]:
    """Every process named postgres (the machine's server: backends, walwriter, …)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == "postgres":
                    found.append(int(entry))
            except OSError:
                continue
    return found


def machine_busy_seconds() -> float:
    """CPU seconds spent not idle by the whole machine, all cores together (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICKS


@contextmanager
def collector_paused() -> Iterator[None]:
    """A load generator's step without garbage-collector pauses: a full collection over its thousands
    of pending requests took ~50 ms, which an open loop reports as the server's latency (a gc.callbacks
    probe). What exists before the step is frozen out of the collector's sight, then it is off."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()
