"""bench/floor.py in its smoke mode (a second of load per target), so the script cannot rot unseen.

It starts real servers (the floor apps, `spendgate serve` on PostgreSQL + Redis and on SQLite) and drives
them with wrk; only that it ran and printed its rows is asserted — numbers belong to bench/README.md.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    shutil.which("wrk") is None or shutil.which("redis-server") is None,
    reason="bench/floor.py needs wrk and redis-server (Debian packages wrk, redis-server)",
)


def test_floor_smoke_run_prints_a_row_and_a_ratio_for_every_target() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "floor.py"), "--smoke", "--kept-decisions", "1000", "--denials"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line.split() for line in run.stdout.splitlines()]
    for target, mode in (("http floor", "authorize"), ("authorize floor", "authorize"), ("pair floor", "pair"),
                         ("spendgate", "authorize"), ("spendgate", "pair"), ("spendgate sqlite", "authorize"),
                         ("spendgate", "deny"), ("spendgate sqlite", "deny")):
        words = target.split()
        assert any(row[: len(words) + 1] == [*words, mode] for row in rows), f"no {target} {mode} row:\n{run.stdout}"
    assert "(1,000 settled decisions of the last day put in the embedded database)" in run.stdout, run.stdout
    assert run.stdout.count("every authorize is a budget denial") == 2, run.stdout
    ratios = [line for line in run.stdout.splitlines() if line.startswith("ratio ")]
    for comparison in ("spendgate authorize / http floor", "spendgate authorize / authorize floor",
                       "spendgate pairs / pair floor", "sqlite authorize / pg+redis authorize",
                       "spendgate denials / spendgate authorize", "sqlite denials / sqlite authorize"):
        assert any(comparison in line and "%" in line for line in ratios), f"no ratio for {comparison}:\n{run.stdout}"
    assert not [row for row in rows if len(row) > 6 and row[0] in ("http", "authorize", "pair", "spendgate")
                and row[-2].isdigit() and int(row[-2]) > 0], f"a target answered with errors:\n{run.stdout}"
