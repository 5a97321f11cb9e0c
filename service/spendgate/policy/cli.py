"""`spendgate policy test | check | eval` — the policy author's tools, on the embedded engine.

`test` prints what `opa test` prints (`-v`: every test with PASS/FAIL/ERROR/SKIPPED and its
duration; always a `PASS: n/m` summary), so authors can switch between the two freely.

Without explicit paths every command works on the policies the service would load,
SPENDGATE_POLICY_DIR (read through `Settings`, so `.env` counts too), and `test` on the tests
beside them (`testing.policy_test_roots`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from ..errors import PolicyError
from ..settings import DEFAULT_POLICY_DIR, get_settings
from .compiled import PROBE_COUNT, NotCompiled, compile_decision
from .embedded import clean_engine_message, compile_policy_set
from .engine import DECISION_QUERY
from .loader import PolicySet, display_path, load_policy_set
from .testing import PolicyTestReport, PolicyTestResult, PolicyTestStatus, policy_test_roots, run_policy_tests

__all__ = ["add_policy_commands"]

_RULE = "-" * 80
_DIR_RULE = "Without paths: the policies in $SPENDGATE_POLICY_DIR (default: the shipped policies, {default})"
_TEST_RULE = (
    ", and their tests: every *_test.rego under that directory plus the directory policy_tests/ beside it, "
    "when it exists (SPENDGATE_POLICY_DIR=X: X and X/../policy_tests)."
)


def _configured_policy_dir() -> Path:
    """SPENDGATE_POLICY_DIR as the service reads it; a bad configuration is reported in one line."""
    try:
        return get_settings().policy_dir
    except ValidationError as exc:
        problems = "; ".join(_problem(error["loc"], str(error["msg"])) for error in exc.errors())
        raise PolicyError(
            f"invalid configuration ({problems}); fix it, or name the policy directories on the command line"
        ) from exc


def _problem(loc: tuple[int | str, ...], message: str) -> str:
    """One setting's problem, naming its variable once (validator messages usually name it already)."""
    message = message.removeprefix("Value error, ")
    name = "SPENDGATE_" + "_".join(str(part) for part in loc).upper() if loc else ""
    return message if not name or name in message else f"{name}: {message}"


def _default_paths(*, with_tests: bool) -> list[Path]:
    policy_dir = _configured_policy_dir()
    return list(policy_test_roots(policy_dir)) if with_tests else [policy_dir]


def _duration(ns: int) -> str:
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:.3f}s"
    if ns >= 1_000_000:
        return f"{ns / 1e6:.3f}ms"
    return f"{ns / 1e3:.3f}µs"


def _line(result: PolicyTestResult) -> str:
    return f"data.{result.id}: {result.status.value} ({_duration(result.duration_ns)})"


def _print_pretty(report: PolicyTestReport, *, verbose: bool, out: TextIO) -> None:
    failed = [r for r in report.results if r.status in (PolicyTestStatus.FAIL, PolicyTestStatus.ERROR)]
    if failed and not verbose:
        print("FAILURES", _RULE, sep="\n", file=out)
        for result in failed:
            print(_line(result), file=out)
            if result.message:
                print(f"  {result.message}", file=out)
        print("\nSUMMARY", _RULE, sep="\n", file=out)
    by_file: dict[str, list[PolicyTestResult]] = {}
    for result in report.results:
        by_file.setdefault(result.file, []).append(result)
    if verbose or failed:
        for file, results in by_file.items():
            print(f"{file}:", file=out)
            for result in results:
                if verbose or result in failed:
                    print(_line(result), file=out)
                    if verbose and result.message and result.status is not PolicyTestStatus.PASS:
                        print(f"  {result.message}", file=out)
            print(file=out)
    print(_RULE, file=out)
    total = len(report.results)
    for status in PolicyTestStatus:
        count = report.count(status)
        if count or status is PolicyTestStatus.PASS:
            print(f"{status.value}: {count}/{total}", file=out)


def _print_coverage(report: PolicyTestReport, out: TextIO) -> float:
    covered = sum(len(f.covered) for f in report.coverage)
    total = covered + sum(len(f.not_covered) for f in report.coverage)
    percent = 100.0 if total == 0 else 100.0 * covered / total
    print("\nCOVERAGE", _RULE, sep="\n", file=out)
    for file in report.coverage:
        missing = f"  not covered: {', '.join(map(str, file.not_covered))}" if file.not_covered else ""
        print(f"{file.percent:6.1f}%  {file.path}{missing}", file=out)
    print(f"{percent:6.1f}%  total", file=out)
    return percent


def _test(args: argparse.Namespace) -> int:
    try:
        paths = [Path(p) for p in args.paths] or _default_paths(with_tests=True)
    except PolicyError as exc:
        print(f"spendgate policy test: {exc.message}", file=sys.stderr)
        return 2
    try:
        pattern = re.compile(args.run_pattern) if args.run_pattern else None
    except re.error as exc:
        print(f"spendgate policy test: --run is not a valid regular expression: {exc}", file=sys.stderr)
        return 2
    try:
        report = run_policy_tests(
            *paths,
            coverage=args.coverage or args.threshold is not None,
            match=(lambda test: bool(pattern.search(f"data.{test.id}"))) if pattern else None,
        )
    except PolicyError as exc:
        print(f"spendgate policy test: {exc.message}", file=sys.stderr)
        return 2
    if args.format == "json":
        json.dump(
            {
                "results": [
                    {"package": r.package, "name": r.name, "status": r.status.value, "duration_ns": r.duration_ns,
                     "message": r.message, "file": r.file, "line": r.line}
                    for r in report.results
                ],
                "coverage": [
                    {"file": f.path, "percent": round(f.percent, 2), "not_covered": list(f.not_covered)}
                    for f in report.coverage
                ],
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        _print_pretty(report, verbose=args.verbose, out=sys.stdout)
    if not report.results:
        print("spendgate policy test: no tests found (test rules are named test_* in *_test packages)", file=sys.stderr)
        return 1
    code = 0 if report.ok else 1
    if report.coverage and args.format != "json":
        percent = _print_coverage(report, sys.stdout)
        if args.threshold is not None and percent < args.threshold:
            print(f"spendgate policy test: coverage {percent:.1f}% is below the threshold {args.threshold}%", file=sys.stderr)
            code = code or 2
    return code


def _check(args: argparse.Namespace) -> int:
    try:
        paths = [Path(p) for p in args.paths] or _default_paths(with_tests=False)
    except PolicyError as exc:
        print(f"spendgate policy check: {exc.message}", file=sys.stderr)
        return 2
    failures = 0
    for root in paths:
        try:
            policies = load_policy_set(root, include_tests=True)
        except PolicyError as exc:
            print(exc.message, file=sys.stderr)
            failures += 1
            continue
        for name, source in policies.modules:
            try:
                compile_policy_set(PolicySet(policies.root, ((name, source),), files=policies.files))
            except PolicyError as exc:
                failures += 1
                print(exc.message.split(" does not compile: ", 1)[-1], file=sys.stderr)
        try:
            compile_policy_set(policies)  # the whole set: conflicts between modules
        except PolicyError as exc:
            if not failures:
                failures += 1
                print(exc.message, file=sys.stderr)
        if not failures:
            print(f"{display_path(root)}: {len(policies.modules)} modules compile (revision {policies.revision})")
            verdict = _compiled_verdict(root)
            if verdict:
                print(f"{display_path(root)}: {verdict}")
    return 1 if failures else 0


def _compiled_verdict(root: Path) -> str | None:
    """Which embedded engine would decide the policies under `root` (None: they define no decision)."""
    try:
        policies = load_policy_set(root)  # as the service loads them: without tests
        interpreter = compile_policy_set(policies)
    except PolicyError:
        return None  # only tests
    if DECISION_QUERY.rsplit(".", 1)[0] not in interpreter.get_packages():
        return None  # no decision package: e.g. a library of rules
    verdict = compile_decision(policies, interpreter)
    if isinstance(verdict, NotCompiled):
        return f"the interpreter decides them: {verdict.why} (docs/operations.md, \"The compiled policy engine\")"
    return f"the compiled engine decides them (it answered all {PROBE_COUNT} probe inputs as the interpreter does)"


def _locate(policies: PolicySet, pattern: str) -> str:
    """file:line of every rule head whose text matches `pattern` (for --explain)."""
    regex = re.compile(pattern)
    found = [
        f"{policies.path_of(name)}:{number}"
        for name, source in policies.modules
        for number, line in enumerate(source.splitlines(), start=1)
        if regex.search(line)
    ]
    return " or ".join(found) or "no rule found by name"


def _eval(args: argparse.Namespace) -> int:
    try:
        policy_dir = Path(args.policy_dir) if args.policy_dir else _configured_policy_dir()
    except PolicyError as exc:
        print(f"spendgate policy eval: {exc.message}", file=sys.stderr)
        return 2
    try:
        input_doc = json.loads(Path(args.input).read_text(encoding="utf-8")) if args.input != "-" else json.load(sys.stdin)
    except (OSError, json.JSONDecodeError) as exc:
        print(f"spendgate policy eval: cannot read the input document: {exc}", file=sys.stderr)
        return 2
    try:
        policies = load_policy_set(policy_dir)
        engine = compile_policy_set(policies)
        engine.set_input_json(json.dumps(input_doc))
        raw = json.loads(engine.eval_query_as_json(args.query))
    except PolicyError as exc:
        print(f"spendgate policy eval: {exc.message}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"spendgate policy eval: {clean_engine_message(exc)}", file=sys.stderr)
        return 2
    rows = raw.get("result") or []
    value: Any = rows[0]["expressions"][0]["value"] if rows else None
    if not args.explain:
        json.dump(value, sys.stdout, indent=2)
        print()
        return 0 if rows else 1
    _explain(value, input_doc, policies)
    return 0


def _explain(result: Any, input_doc: dict[str, Any], policies: PolicySet) -> None:
    if not isinstance(result, dict):
        print("undefined: the policy gave no decision — the service refuses such a request")
        return
    ledgers = {ledger["id"]: ledger for ledger in input_doc.get("ledgers", [])}
    print(f"decision: {'allow' if result.get('allow') else 'deny'}\n\ncharges:")
    for ledger_id in result.get("charges", []):
        ledger = ledgers.get(ledger_id, {})
        entity = ledger.get("entity", {})
        rule = _locate(policies, rf'entities contains \{{"type": "{re.escape(str(entity.get("type")))}"')
        limit = ledger.get("display", {}).get("limit") or "no limit"
        print(f"  {ledger_id}  ({entity.get('type')} {entity.get('id')}, window {ledger.get('window') or '-'}, "
              f"spent {ledger.get('display', {}).get('spent')}, limit {limit})  ← {rule}")
    print("\nreasons:" if result.get("reasons") else "\nreasons: none")
    for reason in result.get("reasons", []):
        rule = _locate(policies, rf'"code": "{re.escape(str(reason.get("code")))}"')
        print(f"  {reason.get('code')}: {reason.get('message')}  ← {rule}")
    if result.get("alerts"):
        print("\nalerts:")
        for alert in result["alerts"]:
            rule = _locate(policies, rf'"code": "{re.escape(str(alert.get("code")))}"')
            print(f"  {alert.get('code')}: {alert.get('entity')} spent {alert.get('spent')} of soft budget "
                  f"{alert.get('soft_budget')}  ← {rule}")


def add_policy_commands(commands: Any) -> None:
    dir_rule = _DIR_RULE.format(default=DEFAULT_POLICY_DIR)
    policy = commands.add_parser(
        "policy", help="test, check and evaluate Rego policies", description=dir_rule + "; `test` adds their tests" + _TEST_RULE
    )
    sub = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")

    test = sub.add_parser(
        "test", help="run *_test.rego test_ rules (like `opa test`)",
        description="Run the test_ rules of *_test.rego files, as `opa test` does. " + dir_rule + _TEST_RULE,
    )
    test.add_argument("paths", nargs="*", help="policy and test directories (default: see above)")
    test.add_argument("-v", "--verbose", action="store_true", help="list every test with its result and duration")
    test.add_argument("--run", "-r", dest="run_pattern", help="only tests whose data.<package>.<name> matches this regular expression")
    test.add_argument("--coverage", "-c", action="store_true", help="report line coverage per policy file")
    test.add_argument("--threshold", type=float, help="fail when total coverage is below this percentage")
    test.add_argument("--format", choices=["pretty", "json"], default="pretty")
    test.set_defaults(run=_test)

    check = sub.add_parser(
        "check", help="parse and compile every policy; report file:line:col errors",
        description="Parse and compile every .rego file (tests included) of each directory; errors are "
        "path:line:col, the path relative to the current directory when the file is under it. " + dir_rule + ".",
    )
    check.add_argument("paths", nargs="*", help="policy directories (default: $SPENDGATE_POLICY_DIR)")
    check.set_defaults(run=_check)

    evaluate = sub.add_parser(
        "eval", help="evaluate a decision for an input document",
        description="Evaluate a query (default: the decision document) for an input document. " + dir_rule + ".",
    )
    evaluate.add_argument("query", nargs="?", default=DECISION_QUERY)
    evaluate.add_argument("--input", "-i", required=True, help="input document (JSON file, or - for stdin)")
    evaluate.add_argument("--policy-dir", help="policies to load (default: $SPENDGATE_POLICY_DIR)")
    evaluate.add_argument("--explain", action="store_true", help="show every charge and reason with the rule behind it")
    evaluate.set_defaults(run=_eval)
