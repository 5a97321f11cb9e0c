"""bench/floor.py (and bench/instructions.py, bench/ab.py) in smoke mode (a second of load per target), so the scripts
cannot rot unseen.

They start real servers (the floor apps, `spendgate serve` on PostgreSQL + Redis and on SQLite) and drive
them with wrk (instructions.py: under valgrind, with its own client); only that they ran and printed their
rows is asserted — numbers belong to bench/README.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
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
                         ("spendgate sqlite", "pair"), ("spendgate", "deny"), ("spendgate sqlite", "deny")):
        words = target.split()
        assert any(row[: len(words) + 1] == [*words, mode] for row in rows), f"no {target} {mode} row:\n{run.stdout}"
    assert "(1,000 settled decisions of the last day put in the embedded database)" in run.stdout, run.stdout
    assert run.stdout.count("every authorize is a budget denial") == 2, run.stdout
    ratios = [line for line in run.stdout.splitlines() if line.startswith("ratio ")]
    for comparison in ("spendgate authorize / http floor", "spendgate authorize / authorize floor",
                       "spendgate pairs / pair floor", "sqlite authorize / pg+redis authorize",
                       "sqlite pairs / pg+redis pairs", "spendgate denials / spendgate authorize", "sqlite denials / sqlite authorize"):
        assert any(comparison in line and "%" in line for line in ratios), f"no ratio for {comparison}:\n{run.stdout}"
    assert not [row for row in rows if len(row) > 6 and row[0] in ("http", "authorize", "pair", "spendgate")
                and row[-2].isdigit() and int(row[-2]) > 0], f"a target answered with errors:\n{run.stdout}"


def test_alternating_run_measures_both_targets_each_round_and_prints_the_median_ratio() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "floor.py"), "--alternate", "2", "--connections", "4",
         "--duration", "1", "--warmup", "0"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rounds = [line.split() for line in run.stdout.splitlines() if line.startswith("round ")]
    # round N, then the target's row: each round measures the floor and Spendgate, in swapped order
    assert [(row[1], row[2]) for row in rounds] == [("1", "authorize"), ("1", "spendgate"),
                                                    ("2", "spendgate"), ("2", "authorize")], run.stdout
    assert all(row[-2] == "0" for row in rounds), f"a target answered with errors:\n{run.stdout}"
    by_round = next(line for line in run.stdout.splitlines() if line.startswith("ratio by round"))
    assert by_round.count("%") == 2, run.stdout
    assert any(line.startswith("ratio median    conns    4") and "2 rounds" in line
               for line in run.stdout.splitlines()), run.stdout


@pytest.mark.skipif(shutil.which("callgrind_control") is None, reason="needs valgrind (Debian package valgrind)")
def test_instruction_count_run_prints_both_targets_by_object_and_their_ratio() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "instructions.py"), "--smoke"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    header = next(line.split() for line in lines if line.startswith("k instructions per authorize"))
    assert "libpython" in header and "regorus" in header, run.stdout
    rows = {line.split(" (round")[0]: line.split(")")[1].split() for line in lines if " (round 1)" in line}
    assert set(rows) == {"authorize floor", "spendgate"}, run.stdout
    totals = {name: int(cells[0].replace(",", "")) for name, cells in rows.items()}
    regorus = header.index("regorus") - 4  # the row's cells line up with the header's words after its title
    assert totals["authorize floor"] > 0 and int(rows["authorize floor"][regorus].replace(",", "")) == 0, run.stdout
    assert int(rows["spendgate"][regorus].replace(",", "")) > 0, run.stdout  # only Spendgate asks the policy
    assert any(line.startswith("ratio spendgate / authorize floor") for line in lines), run.stdout


def _commit_with_another_policy_revision() -> str:
    """A commit (on no branch; the work tree and index untouched) whose policies differ from HEAD's by a comment."""
    identity = {"GIT_AUTHOR_NAME": "bench test", "GIT_AUTHOR_EMAIL": "bench@test.invalid",
                "GIT_COMMITTER_NAME": "bench test", "GIT_COMMITTER_EMAIL": "bench@test.invalid"}

    def git(*args: str, stdin: str | None = None, **env: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], input=stdin, capture_output=True, text=True,
                              check=True, env={**os.environ, **identity, **env}).stdout.strip()

    policy = "policies/spendgate/decision/decision.rego"
    blob = git("hash-object", "-w", "--stdin", stdin=(ROOT / policy).read_text() + "\n# bench/ab.py test\n")
    with tempfile.TemporaryDirectory() as scratch:
        index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        git("read-tree", "HEAD", **index)
        git("update-index", "--cacheinfo", f"100644,{blob},{policy}", **index)
        tree = git("write-tree", **index)
    return git("commit-tree", tree, "-p", "HEAD", "-m", "bench/ab.py test: another policy revision")


def test_ab_run_serves_each_side_from_its_own_commit_and_measures_both_in_turns() -> None:
    ref = _commit_with_another_policy_revision()
    ab = subprocess.Popen([sys.executable, str(ROOT / "bench" / "ab.py"), ref, "--smoke", "--embedded"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        stdout, stderr = ab.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        ab.terminate()  # SIGTERM: ab.py stops its servers and removes its worktree on the way out
        stdout, stderr = ab.communicate(timeout=120)
    worktrees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True,
                               check=True).stdout
    assert "spendgate-ab-" not in worktrees, f"the temporary worktree was left behind:\n{worktrees}"
    assert ab.returncode == 0, stdout + stderr
    lines = stdout.splitlines()
    revisions = {line.split(":")[0].strip("( "): line.rsplit("policy revision ", 1)[1].rstrip(")")
                 for line in lines if "policy revision" in line}
    # A imports the other commit's service and serves its policies; B this checkout's
    assert sorted(name.split()[0] for name in revisions) == ["A", "B"], stdout
    assert len(set(revisions.values())) == 2, f"both sides serve one policy revision:\n{stdout}"
    assert sum(line.startswith("round ") for line in lines) == 2, stdout
    assert any(line.startswith("median B/A ") for line in lines), stdout
