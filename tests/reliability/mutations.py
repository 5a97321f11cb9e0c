"""Does each fault test fail when the protection it tests is removed? Run the suite against
deliberately broken copies of the service and see which tests catch which breakage.

    .venv/bin/python tests/reliability/mutations.py            # every mutation
    .venv/bin/python tests/reliability/mutations.py M2 M5      # some of them
    .venv/bin/python tests/reliability/mutations.py --list

For each mutation: copy `service/` to a temporary directory, apply the mutation THERE (the
working tree is never written), run `tests/reliability` with SPENDGATE_TEST_SERVICE_DIR
pointing at the copy (the harness makes the replicas import it and checks they do), and report
which tests failed and the first problem each one named. Exits non-zero if a test expected to
catch a mutation passed, or if a mutation no longer applies to the code (update it then).

Not collected by pytest (not a test_*.py file); takes ~2 minutes per mutation.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

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
    #: Tests that must fail with it (others may fail too; the report shows them).
    expected: tuple[str, ...]
    #: (file under service/spendgate, exact text, replacement), applied in order.
    edits: tuple[tuple[str, str, str], ...]


MUTATIONS = [
    Mutation(
        "M1", "record is idempotent: a retried record (same request_id, any replica) charges nothing",
        (KILL,),
        (
            ("ledgers.py",
             "                if item.event.request_id in inserted:\n",
             "                if True:  # MUTATION: charge every record, duplicates included\n"),
            ("ledgers.py",
             "            if item.event.request_id in inserted else None\n",
             "            if True else None  # MUTATION\n"),
        ),
    ),
    Mutation(
        "M2", "record answers 200 only after the ledger transaction committed (no write-behind buffer)",
        (KILL,),
        (
            ("decisions/record.py",
             "        recorded = await ledger_store.record(event=event, ledgers=attribution.ledgers)\n",
             "        async def _write_behind(event=event, ledgers=attribution.ledgers):  # MUTATION\n"
             "            await __import__('asyncio').sleep(0.5)\n"
             "            done = await ledger_store.record(event=event, ledgers=ledgers)\n"
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
        (FLUSH, RESTART),
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
             "            prior, figures = await counters.prior_and_read(request.request_id, refs)\n",
             "            try:  # MUTATION: fail open\n"
             "                prior, figures = await counters.prior_and_read(request.request_id, refs)\n"
             "            except __import__('spendgate.errors').errors.Unavailable:\n"
             "                return {'request_id': request.request_id, 'decision': 'allow', 'reasons': [], 'charges': [],\n"
             "                        'alerts': [], 'reservation': None}\n"),
        ),
    ),
    Mutation(
        "M6", "a record carrying api_key lands in Postgres while Redis is down (attributed by the policy)",
        (DOWN,),
        (
            ("decisions/record.py",
             "        elif counters_down is not None and request.api_key is None:\n",
             "        elif counters_down is not None:  # MUTATION: records need Redis\n"),
        ),
    ),
    Mutation(
        "M7", "the spend event and the ledger increments commit in ONE transaction",
        (PGTERM,),
        (
            ("ledgers.py",
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
             "            if prior is not None:\n                return prior.body\n",
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
            ("runtime.py",
             "                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),\n",
             "                # MUTATION: no retry\n"),
        ),
    ),
]


def apply(mutation: Mutation, target: Path) -> None:
    for relative, old, new in mutation.edits:
        path = target / "spendgate" / relative
        text = path.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"{mutation.name}: the text to mutate in {relative} is not there exactly once; update the mutation")
        path.write_text(text.replace(old, new))


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


def check() -> int:
    """Does every mutation still apply to the current code?"""
    broken = 0
    for mutation in MUTATIONS:
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "service"
            shutil.copytree(REPO / "service", copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            try:
                apply(mutation, copy)
                print(f"{mutation.name}: applies")
            except SystemExit as exc:
                broken += 1
                print(exc)
    return 1 if broken else 0


def run(mutation: Mutation, pytest_args: list[str]) -> tuple[dict[str, str], list[str]]:
    with tempfile.TemporaryDirectory(prefix=f"spendgate-{mutation.name}-") as tmp:
        copy = Path(tmp) / "service"
        shutil.copytree(REPO / "service", copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        apply(mutation, copy)
        report = Path(tmp) / "report.xml"
        env = {**os.environ, "SPENDGATE_TEST_SERVICE_DIR": str(copy)}
        subprocess.run(
            [sys.executable, "-m", "pytest", str(REPO / "tests" / "reliability"), "-q", "-p", "no:cacheprovider",
             f"--junitxml={report}", *pytest_args],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
        )
        results: dict[str, str] = {}
        for case in ET.parse(report).getroot().iter("testcase"):
            failure = case.find("failure")
            if failure is None:
                failure = case.find("error")
            results[case.get("name", "?").split("[")[0]] = "passed" if failure is None else first_problem(
                failure.text or failure.get("message") or ""
            )
    missed = [test for test in mutation.expected if results.get(test) == "passed"]
    return results, missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--check", action="store_true", help="only check that every mutation still applies")
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments, e.g. '-k flushall'")
    args = parser.parse_args()
    if args.check:
        return check()
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.protection} — expected to be caught by {', '.join(m.expected)}")
        return 0
    failures = 0
    for mutation in chosen:
        print(f"== {mutation.name}: remove '{mutation.protection}'", flush=True)
        results, missed = run(mutation, args.pytest_args.split())
        for test, result in results.items():
            mark = "caught " if result != "passed" else "passed "
            print(f"   {mark} {test}" + (f": {result}" if result != "passed" else ""), flush=True)
        if missed:
            failures += 1
            print(f"   !! expected to be caught by {', '.join(missed)}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
