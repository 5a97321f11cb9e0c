"""Does each fault test fail when the protection it tests is removed? Run the fault tests
against deliberately broken copies of the service and score, strictly, which tests catch which
breakage.

    .venv/bin/python tests/reliability/mutations.py                 # baseline + every mutation
    .venv/bin/python tests/reliability/mutations.py --only M1,M8    # baseline + some of them
    .venv/bin/python tests/reliability/mutations.py --sample cheap  # the CI sample
    .venv/bin/python tests/reliability/mutations.py --check         # seconds: still applicable?
    .venv/bin/python tests/reliability/mutations.py --list

First a baseline: the expected tests run against an unmutated copy of `service/` and must all
be present and PASSED — otherwise the suite itself is broken and nothing it "catches" means
anything (exit 2). Then, for each mutation: copy `service/` to a temporary directory, apply the
mutation THERE (the working tree is never written), run the mutation's expected tests with
SPENDGATE_TEST_SERVICE_DIR pointing at the copy (the harness makes the replicas import it and
checks they do), and read the JUnit XML.

Strict scoring: a mutation is caught only when EACH expected test is in the report and FAILED
(a `<failure>`). A test that passed, errored (setup, teardown, collection), was skipped or is
missing (renamed, deselected, the run crashed or timed out) did not catch it: that is reported
as "not caught (<status>)" and makes the exit code 1.

`--check` does not start the service: every mutation's anchors must be in the current source
exactly once (and the mutated Python must still compile), and every expected test must exist
(pytest --collect-only). Not collected by pytest (not a test_*.py file); its scoring is tested
by test_mutation_scoring.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parents[2]
TESTS = "tests/reliability/test_fault_injection.py"
#: A mutation run that takes longer than this is killed; its tests then count as missing.
RUN_TIMEOUT_SECONDS = 900

KILL = "test_replica_killed_with_sigkill_mid_load"
FLUSH = "test_redis_flushall_mid_load"
RESTART = "test_redis_killed_and_restarted_mid_load"
PGTERM = "test_postgres_connections_terminated_mid_load"
DOWN = "test_redis_unreachable_fails_closed_and_recovers"
ALL = (KILL, FLUSH, RESTART, PGTERM, DOWN)


@dataclass(frozen=True)
class Mutation:
    name: str
    protection: str
    #: Tests that must each fail with it (the run is of these tests only, unless --whole-suite).
    expected: tuple[str, ...]
    #: (file under service/spendgate, exact text, replacement), applied in order.
    edits: tuple[tuple[str, str, str], ...]


MUTATIONS = [
    Mutation(
        "M1", "record is idempotent: a retried record (same request_id, any replica) charges nothing",
        (KILL,),
        (
            ("ledger_store.py",
             "                if item.event.request_id in inserted:\n",
             "                if True:  # MUTATION: charge every record, duplicates included\n"),
            ("ledger_store.py",
             "            if item.event.request_id in inserted else None\n",
             "            if True else None  # MUTATION\n"),
        ),
    ),
    Mutation(
        "M2", "record answers 200 only after the ledger transaction committed (no write-behind buffer)",
        (KILL,),
        (
            ("decisions/record.py",
             "        recorded = await ledger_store.record(\n"
             "            event=event, ledgers=attribution.ledgers,"
             " limits={i: pair[0] for i, pair in attribution.budgets.items()}\n"
             "        )\n",
             "        async def _write_behind(event=event, ledgers=attribution.ledgers):  # MUTATION\n"
             "            await __import__('asyncio').sleep(0.5)\n"
             "            done = await ledger_store.record(\n"
             "                event=event, ledgers=ledgers,"
             " limits={i: pair[0] for i, pair in attribution.budgets.items()})\n"
             "            await _settle(counters, request.request_id, done.snapshots)\n"
             "        _PENDING.add(__import__('asyncio').ensure_future(_write_behind()))\n"
             "        return _body(RecordedSpend(event, False, ()))\n"),
            ("decisions/record.py",
             'log = logging.getLogger("spendgate.record")\n',
             'log = logging.getLogger("spendgate.record")\n_PENDING: set = set()  # MUTATION\n'),
        ),
    ),
    Mutation(
        "M3", "a missing Redis counter is rebuilt from the Postgres ledger (not restarted at zero)",
        # Only FLUSH is required: after a restart the first settle of a ledger heals a zero-seeded
        # counter, so RESTART catches this only when load reaches a tight key first (it missed in 1 of
        # 4 CI runs; strict scoring cannot rest on a coin toss).
        (FLUSH,),
        (
            ("counters/redis_counters.py",
             "        snapshots = await self._load_snapshots([ref.id for ref in refs])\n",
             "        snapshots = {}  # MUTATION: seed from zero\n"),
        ),
    ),
    Mutation(
        "M4", "settle brings a counter's spent to the committed, versioned ledger figure; it never "
        "increments (here: it adds the cost on every settle, retries included)",
        ALL,
        (
            ("counters/lua/settle.lua",
             "  apply_snapshot(KEYS[1], KEYS[i], ARGV[base + 1], ARGV[base + 2], ARGV[3])\n",
             "  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('HINCRBY', KEYS[i], 'spent', ARGV[base + 1]) end"
             "  -- MUTATION\n"),
            ("decisions/record.py",
             "    await _settle(counters, request.request_id, recorded.snapshots)\n",
             "    await _settle(counters, request.request_id, tuple(  # MUTATION: add the cost\n"
             "        s._replace(spent=recorded.event.cost) for s in recorded.snapshots))\n"),
        ),
    ),
    Mutation(
        "M4b", "as M4, but the increment is careful: only the first (non-duplicate) record adds its cost, "
        "so nothing heals a counter whose replica died between the ledger commit and the update",
        (KILL,),
        (
            ("counters/lua/settle.lua",
             "  apply_snapshot(KEYS[1], KEYS[i], ARGV[base + 1], ARGV[base + 2], ARGV[3])\n",
             "  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('HINCRBY', KEYS[i], 'spent', ARGV[base + 1]) end"
             "  -- MUTATION\n"),
            ("decisions/record.py",
             "    await _settle(counters, request.request_id, recorded.snapshots)\n",
             "    await _settle(counters, request.request_id, () if recorded.duplicate else tuple(  # MUTATION\n"
             "        s._replace(spent=recorded.event.cost) for s in recorded.snapshots))\n"),
        ),
    ),
    Mutation(
        "M5", "authorize fails closed (503) when Redis is unreachable",
        (DOWN,),
        (
            ("decisions/authorize.py",
             "            prior, figures = await counters.prior_and_read(request.request_id, refs, max_age=figures_max_age)\n",
             "            try:  # MUTATION: fail open\n"
             "                prior, figures = await counters.prior_and_read(request.request_id, refs, max_age=figures_max_age)\n"
             "            except __import__('spendgate.errors').errors.Unavailable:\n"
             "                return Authorized({'request_id': request.request_id, 'decision': 'allow', 'reasons': [],\n"
             "                                   'charges': [], 'alerts': [], 'reservation': None}, replayed=False)\n"),
        ),
    ),
    Mutation(
        "M6", "a record carrying api_key lands in Postgres while Redis is down (attributed by the policy)",
        (DOWN,),
        (
            ("decisions/record.py",
             "        elif counters_down is not None and request.api_key is None"
             " and request.principal is None:\n",
             "        elif counters_down is not None:  # MUTATION: records need Redis\n"),
        ),
    ),
    Mutation(
        "M7", "the spend event and the ledger increments commit in ONE transaction",
        (PGTERM,),
        (
            ("ledger_store.py",
             "            inserted = {row[0] for row in rows}\n",
             "            inserted = {row[0] for row in rows}\n"
             "            await connection.execute('COMMIT; BEGIN')  # MUTATION: a second transaction\n"),
        ),
    ),
    Mutation(
        "M8", "a lost database connection answers 503 `unavailable` (so the gateway retries), not 500",
        (PGTERM,),
        (
            ("db.py",
             '        raise Unavailable("database", type(exc).__name__) from exc\n',
             "        raise  # MUTATION\n"),
            ("db.py",
             '            raise Unavailable("database", "connection lost") from exc\n',
             "            raise  # MUTATION\n"),
            ("pg_direct.py",
             '                raise Unavailable("database", type(exc).__name__) from exc\n',
             "                raise  # MUTATION\n"),
        ),
    ),
    Mutation(
        "M9", "unrecorded reservations expire (the sweeper releases them)",
        ALL,
        (
            ("api/app.py",
             "            released = await runtime.counters.expire(now=runtime.clock())\n",
             "            released = 0  # MUTATION: no expiry\n"),
        ),
    ),
    Mutation(
        "M10", "the reservation re-checks room atomically in Redis (no check-then-act race)",
        ALL,
        (
            ("counters/lua/commit.lua",
             "  if limit ~= '' and not has_room(",
             "  if false and limit ~= '' and not has_room("),
        ),
    ),
    Mutation(
        "M11", "authorize is idempotent per request_id: a repeated authorize reserves nothing more",
        ALL,
        (
            ("decisions/authorize.py",
             "            if prior is not None:\n                return Authorized(prior.body, replayed=True)\n",
             "            pass  # MUTATION: no idempotency\n"),
            ("counters/lua/commit.lua",
             "if stored then\n  return {'duplicate', stored}\nend\n",
             "-- MUTATION: no idempotency\n"),
        ),
    ),
    Mutation(
        "M12", "the Redis client retries a command once on a fresh connection when its pooled one "
        "died with a restarted Redis",
        (RESTART, DOWN),
        (
            ("counters/redis_pool.py",
             "        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),\n",
             "        # MUTATION: no retry\n"),
        ),
    ),
]


#: Named subsets. `cheap` (the CI sample): every fault test catches at least one mutation, and
#: no mutation expecting ALL five tests (those run 70-180 s each; these 11-25 s). Its time, with
#: the baseline, is in tests/reliability/README.md.
SAMPLES: dict[str, tuple[str, ...]] = {
    "cheap": ("M1", "M3", "M5", "M6", "M7", "M8"),
}

# --- scoring (pure: fed synthetic reports by test_mutation_scoring.py) ----------------------

Status = Literal["failed", "passed", "errored", "skipped", "missing"]
#: When one test function has several cases (parametrized), the worst one speaks for it.
_WORST_FIRST: tuple[Status, ...] = ("missing", "errored", "skipped", "passed", "failed")


@dataclass(frozen=True)
class Verdict:
    test: str
    status: Status
    #: What the report said: the first problem of a failure or error, the reason of a skip.
    detail: str = ""


@dataclass(frozen=True)
class Score:
    verdicts: tuple[Verdict, ...]

    @property
    def caught(self) -> bool:
        """Caught only when every expected test failed (an empty expectation catches nothing)."""
        return bool(self.verdicts) and all(v.status == "failed" for v in self.verdicts)

    @property
    def not_caught(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if v.status != "failed")


def first_problem(text: str) -> str:
    """What a failure report says was wrong: its first `E` line (the next one after the
    'invariants violated:' header)."""
    errors = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
    errors = [line for line in errors if line]
    if not errors:
        return (text.strip().splitlines() or [""])[-1][:240]
    if errors[0].endswith("invariants violated:") and len(errors) > 1:
        return errors[1][:240]
    return errors[0][:240]


def _case_verdict(case: ET.Element, test: str) -> Verdict:
    for tag, status in (("error", "errored"), ("failure", "failed"), ("skipped", "skipped")):
        found = case.find(tag)
        if found is not None:
            text = found.text or found.get("message") or ""
            return Verdict(test, status, first_problem(text) if tag != "skipped" else text.strip()[:240])
    return Verdict(test, "passed")


def read_report(report: Path | None) -> dict[str, list[Verdict]]:
    """Every test case of a JUnit XML report, by test function name (parameters stripped). A
    report that is absent or unreadable (the run crashed or was killed) holds no test."""
    if report is None or not report.is_file():
        return {}
    try:
        root = ET.parse(report).getroot()
    except ET.ParseError:
        return {}
    cases: dict[str, list[Verdict]] = {}
    for case in root.iter("testcase"):
        test = case.get("name", "?").split("[")[0]
        cases.setdefault(test, []).append(_case_verdict(case, test))
    return cases


def verdict(cases: dict[str, list[Verdict]], test: str) -> Verdict:
    found = cases.get(test)
    if not found:
        return Verdict(test, "missing", "not in the report (renamed, deselected, not collected, or the run died)")
    return min(found, key=lambda v: _WORST_FIRST.index(v.status))


def score(report: Path | None, expected: Sequence[str]) -> Score:
    """How a mutation run went: each expected test's verdict; caught only if all FAILED."""
    cases = read_report(report)
    return Score(tuple(verdict(cases, test) for test in expected))


def baseline_problems(report: Path | None, expected: Iterable[str]) -> list[Verdict]:
    """The unmutated run: every expected test must be present and PASSED, else the suite itself
    is broken. Returns the tests that were not."""
    cases = read_report(report)
    return [v for v in (verdict(cases, test) for test in dict.fromkeys(expected)) if v.status != "passed"]


# --- applying -------------------------------------------------------------------------------


def mutated_sources(mutation: Mutation, service: Path) -> dict[Path, str]:
    """The files a mutation changes (path → new text), computed in memory from `service/`.
    Raises ValueError if an anchor is not in the current source exactly once."""
    texts: dict[Path, str] = {}
    for relative, old, new in mutation.edits:
        path = service / "spendgate" / relative
        text = texts.get(path) or path.read_text()
        if text.count(old) != 1:
            raise ValueError(
                f"{mutation.name}: the text to mutate in {relative} is there {text.count(old)} times, not once; "
                "update the mutation"
            )
        texts[path] = text.replace(old, new)
    return texts


#: What a run copies from the checkout: the service, its policies, the tests and their config.
SNAPSHOT = ("service", "policies", "tests", "pyproject.toml")


def copy_checkout(source: Path, target: Path, mutation: Mutation | None = None) -> Path:
    """A copy of SNAPSHOT from `source` into `target`, with the mutation applied to the copy's
    service. A run snapshots the checkout once and derives the baseline and every mutant from
    that snapshot, and pytest runs inside the copy: edits to a shared checkout meanwhile (the
    service, a policy, the harness) cannot leak into one run and not another."""
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")
    for part in SNAPSHOT:
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part, ignore=skip)
        else:
            shutil.copy2(source / part, target / part)
    if mutation is not None:
        for path, text in mutated_sources(mutation, source / "service").items():
            (target / path.relative_to(source)).write_text(text)
    return target


def collected_tests() -> set[str]:
    """Test function names pytest collects from the fault tests (no service is started)."""
    found = subprocess.run(
        [sys.executable, "-m", "pytest", TESTS, "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    return {line.split("::", 1)[1].split("[")[0] for line in found.stdout.splitlines() if "::" in line}


def check(mutations: Sequence[Mutation]) -> int:
    """Does every mutation still apply to the current code, and does every expected test exist?"""
    broken = 0
    for mutation in mutations:
        try:
            for path, text in mutated_sources(mutation, REPO / "service").items():
                if path.suffix == ".py":
                    compile(text, str(path), "exec")
            print(f"{mutation.name}: applies")
        except (ValueError, SyntaxError) as exc:
            broken += 1
            print(f"{mutation.name}: does not apply: {exc}")
    collected = collected_tests()
    for test in sorted({test for mutation in mutations for test in mutation.expected}):
        if test not in collected:
            broken += 1
            print(f"expected test {test} is not collected from {TESTS}")
    print("check: " + ("FAILED" if broken else f"{len(mutations)} mutations apply, expected tests exist"))
    return 1 if broken else 0


# --- running --------------------------------------------------------------------------------


def run_tests(root: Path, tests: Sequence[str], report: Path, log: Path) -> None:
    """pytest on those fault tests inside the copy `root`, the replicas (and pytest itself)
    importing its service; the JUnit XML to `report`."""
    service = root / "service"
    env = {
        **os.environ,
        "SPENDGATE_TEST_SERVICE_DIR": str(service),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(service), os.environ.get("PYTHONPATH")])),
    }
    node_ids = [f"{TESTS}::{test}" for test in tests] if tests else [TESTS]
    report.unlink(missing_ok=True)  # a stale report must never stand in for a run that died
    with log.open("w") as out:
        try:
            subprocess.run(
                [sys.executable, "-m", "pytest", *node_ids, "-q", "-p", "no:cacheprovider", f"--junitxml={report}"],
                cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=RUN_TIMEOUT_SECONDS,
            )
        except subprocess.TimeoutExpired:
            out.write(f"\n(killed after {RUN_TIMEOUT_SECONDS}s)\n")


def run_one(snapshot: Path, name: str, mutation: Mutation | None, tests: Sequence[str], keep: Path) -> Path:
    """Run the tests against a (mutated) copy; returns the JUnit report (kept with the log)."""
    with tempfile.TemporaryDirectory(prefix=f"spendgate-{name}-") as tmp:
        root = copy_checkout(snapshot, Path(tmp), mutation)
        run_tests(root, tests, keep / f"{name}.xml", keep / f"{name}.log")
    return keep / f"{name}.xml"


def report_mutation(mutation: Mutation, result: Score, seconds: float) -> None:
    for v in result.verdicts:
        mark = "caught" if v.status == "failed" else f"NOT caught ({v.status})"
        print(f"   {mark} by {v.test}" + (f": {v.detail}" if v.detail else ""), flush=True)
    print(f"   {mutation.name}: {'caught' if result.caught else 'NOT CAUGHT'} ({seconds:.0f} s)", flush=True)


def choose(args: argparse.Namespace) -> list[Mutation]:
    names: list[str] = []
    if args.only:
        names += [name.strip() for name in args.only.split(",") if name.strip()]
    if args.sample:
        names += SAMPLES[args.sample]
    if not names:
        return list(MUTATIONS)
    known = {m.name: m for m in MUTATIONS}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown mutations: {', '.join(unknown)} (see --list)")
    return [known[name] for name in dict.fromkeys(names)]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated mutations, e.g. M1,M8")
    parser.add_argument("--sample", choices=sorted(SAMPLES), help="a named subset (cheap: the CI sample)")
    parser.add_argument("--list", action="store_true", help="list the mutations and what catches them")
    parser.add_argument("--check", action="store_true", help="only check that mutations apply and tests exist")
    parser.add_argument("--whole-suite", action="store_true",
                        help="run every fault test per mutation (the report shows extra catches)")
    parser.add_argument("--keep", type=Path, help="directory for each run's JUnit XML and log (default: a temp dir)")
    args = parser.parse_args()
    chosen = choose(args)
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.protection} — expected to be caught by {', '.join(m.expected)}")
        return 0
    if args.check:
        return check(chosen)
    keep = args.keep or Path(tempfile.mkdtemp(prefix="spendgate-mutations-"))
    keep.mkdir(parents=True, exist_ok=True)
    print(f"reports and logs in {keep}", flush=True)

    expected = list(dict.fromkeys(test for m in chosen for test in m.expected))
    snapshot = Path(tempfile.mkdtemp(prefix="spendgate-snapshot-"))
    try:
        return run_all(args, chosen, expected, copy_checkout(REPO, snapshot), keep)
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)


def run_all(args: argparse.Namespace, chosen: Sequence[Mutation], expected: Sequence[str], snapshot: Path,
            keep: Path) -> int:
    """The baseline, then each mutation, all from one snapshot of the checkout."""
    stale = []
    for mutation in chosen:
        try:
            mutated_sources(mutation, snapshot / "service")
        except ValueError as exc:
            stale.append(str(exc))
    if stale:
        print("\n".join(stale))
        return 1
    started = time.monotonic()
    print(f"== baseline: {', '.join(expected)} against the unmutated service", flush=True)
    problems = baseline_problems(
        run_one(snapshot, "baseline", None, () if args.whole_suite else expected, keep), expected
    )
    if problems:
        for v in problems:
            print(f"   {v.test}: {v.status}" + (f": {v.detail}" if v.detail else ""), flush=True)
        print(f"the suite itself is broken: not every expected test passes unmutated (log: {keep}/baseline.log)")
        return 2
    print(f"   every expected test passed ({time.monotonic() - started:.0f} s)", flush=True)

    missed = []
    for mutation in chosen:
        print(f"== {mutation.name}: remove '{mutation.protection}'", flush=True)
        began = time.monotonic()
        report = run_one(snapshot, mutation.name, mutation, () if args.whole_suite else mutation.expected, keep)
        result = score(report, mutation.expected)
        report_mutation(mutation, result, time.monotonic() - began)
        if args.whole_suite:
            extra = [v for tests in read_report(report).values() for v in tests
                     if v.test not in mutation.expected and v.status == "failed"]
            for v in extra:
                print(f"   also failed: {v.test}: {v.detail}", flush=True)
        if not result.caught:
            missed.append(mutation.name)
    total = time.monotonic() - started
    print(f"== {len(chosen) - len(missed)}/{len(chosen)} caught in {total:.0f} s"
          + (f"; NOT caught: {', '.join(missed)}" if missed else ""), flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
