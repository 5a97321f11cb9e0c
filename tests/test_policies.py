"""The Rego policies: every policy test through the embedded engine, the test runner, one real decision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spendgate.money import format_nanos
from spendgate.policy.embedded import compile_policy_set
from spendgate.policy.loader import load_policy_set
from spendgate.policy.testing import (
    PolicyTest,
    PolicyTestStatus,
    PolicyTestSuite,
    load_test_suite,
    run_policy_tests,
)

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "policies"
POLICY_TESTS = ROOT / "policy_tests"

# Compiled once at collection: each Rego test becomes one pytest case.
SUITE = load_test_suite(POLICIES, POLICY_TESTS)


@pytest.mark.parametrize("rego_test", SUITE.tests, ids=lambda test: test.id)
def test_rego(rego_test: PolicyTest) -> None:
    result = SUITE.run(rego_test)
    if result.status is PolicyTestStatus.SKIPPED:
        pytest.skip(f"{result.file}:{result.line}: {result.message}")
    where = f"{result.file}:{result.line}"
    assert result.status is PolicyTestStatus.PASS, f"{where}: {result.status.value}: {result.message}"


def test_there_are_policy_tests_for_every_package() -> None:
    packages = {test.package for test in SUITE.tests}
    assert packages >= {
        "spendgate.lib_test",
        "spendgate.attribution_test",
        "spendgate.admission_test",
        "spendgate.decision_test",
        "spendgate.pricing_test",
    }


def test_policy_tests_reach_every_line_of_the_policies() -> None:
    report = run_policy_tests(POLICIES, POLICY_TESTS, coverage=True)
    assert report.ok
    files = {Path(c.path).name for c in report.coverage}
    assert files == {"lib.rego", "attribution.rego", "admission.rego", "decision.rego", "pricing.rego"}
    uncovered = {c.path: c.not_covered for c in report.coverage if c.percent < 100.0}
    assert not uncovered, f"policy lines no test reaches: {uncovered}"


# ---- the runner itself, on small policies of its own -------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@pytest.fixture
def demo(tmp_path: Path) -> tuple[Path, Path]:
    policies, tests = tmp_path / "policies", tmp_path / "tests"
    _write(policies, {
        "demo/demo.rego": "package demo\n\nallow if input.x == 1\n",
        # In its own package: regorus evaluates every rule of a package reached through `import data.demo`.
        "broken/broken.rego": "package broken\n\nvalue := object.get(input.x, \"a\", 0)\n",
        "data.json": json.dumps({"limits": {"default": 5}}),
        "demo/data.json": json.dumps({"levels": ["low", "high"]}),
    })
    _write(tests, {
        "demo/demo_test.rego": "\n".join([
            "package demo_test",
            "",
            "import data.demo",
            "",
            "test_allow_passes if demo.allow with input as {\"x\": 1}",
            "",
            "test_allow_fails if demo.allow with input as {\"x\": 2}",
            "",
            "test_value_is_not_true := 1",
            "",
            "test_explicit_false := false",
            "",
            "test_broken_errors if data.broken.value == 0 with input as {\"x\": 1}",
            "",
            "todo_test_later if false",
            "",
            "test_helper(x) := x",
            "",
            "test_data_is_mounted_at_its_directory if {",
            "\tdata.limits.default == 5",
            "\tdata.demo.levels == [\"low\", \"high\"]",
            "}",
            "",
        ]),
        "demo/other.rego": "package demo_helpers\n\ntest_not_in_a_test_package := false\n",
    })
    return policies, tests


def _statuses(suite: PolicyTestSuite) -> dict[str, PolicyTestStatus]:
    return {result.name: result.status for result in suite.run_all()}


def test_runner_reports_pass_fail_error_and_skipped(demo: tuple[Path, Path]) -> None:
    assert _statuses(load_test_suite(*demo)) == {
        "test_allow_passes": PolicyTestStatus.PASS,
        "test_allow_fails": PolicyTestStatus.FAIL,
        "test_value_is_not_true": PolicyTestStatus.FAIL,
        "test_explicit_false": PolicyTestStatus.FAIL,
        "test_broken_errors": PolicyTestStatus.ERROR,
        "todo_test_later": PolicyTestStatus.SKIPPED,
        "test_data_is_mounted_at_its_directory": PolicyTestStatus.PASS,
    }


def test_runner_explains_failures_and_errors(demo: tuple[Path, Path]) -> None:
    results = {result.name: result for result in load_test_suite(*demo).run_all()}
    assert "undefined" in results["test_allow_fails"].message
    assert "evaluated to 1" in results["test_value_is_not_true"].message
    assert "object.get" in results["test_broken_errors"].message
    assert "Stack backtrace" not in results["test_broken_errors"].message
    failed = results["test_allow_fails"]
    assert failed.file.endswith("demo/demo_test.rego") and failed.line == 7
    assert failed.duration_ns > 0 and results["todo_test_later"].duration_ns == 0


def test_runner_selects_tests_by_id(demo: tuple[Path, Path]) -> None:
    results = load_test_suite(*demo).run_all("allow")
    assert [result.name for result in results] == ["test_allow_passes", "test_allow_fails"]


def test_runner_refuses_a_test_defined_twice(tmp_path: Path) -> None:
    _write(tmp_path / "p", {"p.rego": "package p\n\nx := 1\n"})
    _write(tmp_path / "t", {"p_test.rego": "package p_test\n\ntest_twice if true\n\ntest_twice if false\n"})
    (result,) = load_test_suite(tmp_path / "p", tmp_path / "t").run_all()
    assert result.status is PolicyTestStatus.ERROR
    assert "defined 2 times (lines 3, 5)" in result.message


def test_runner_reports_line_coverage_of_policy_files_only(demo: tuple[Path, Path]) -> None:
    report = run_policy_tests(*demo, coverage=True, match="allow")
    assert not report.ok
    assert report.count(PolicyTestStatus.PASS) == 1 and report.count(PolicyTestStatus.FAIL) == 1
    coverage = {Path(c.path).name: c for c in report.coverage}
    assert set(coverage) == {"demo.rego", "broken.rego"}
    assert coverage["demo.rego"].covered == (3,) and coverage["demo.rego"].percent == 100.0
    assert coverage["broken.rego"].covered == () and coverage["broken.rego"].percent == 0.0


def test_runner_finds_the_same_tests_from_source_as_from_the_ast() -> None:
    from spendgate.policy.testing import _module_from_source

    policy_set = load_policy_set(POLICIES, POLICY_TESTS, include_tests=True)
    from_source = {
        (package, name)
        for path, source in policy_set.modules
        for _, package, rules in [_module_from_source(path, source)]
        if package.endswith("_test")
        for name, _ in rules
    }
    assert from_source == {(test.package, test.name) for test in SUITE.tests}


# ---- one realistic decision through the shipped policies --------------------------------------


def _ledger(
    entity_type: str,
    entity_id: str,
    *,
    window: str | None = "1d",
    limit: int | None = 10_000_000_000,
    spent: int = 1_250_000_000,
    reserved: int = 20_000_000,
) -> dict[str, Any]:
    """A candidate ledger as the service builds it, display strings included."""

    def usd(nanos: int | None) -> str | None:
        return None if nanos is None else format_nanos(nanos)

    return {
        "id": f"{entity_type}:{entity_id}:{window or '-'}:1795392000",
        "entity": {"type": entity_type, "id": entity_id},
        "window": window,
        "limit": limit,
        "soft_budget": None,
        "spent": spent,
        "reserved": reserved,
        "period_start": "2026-11-23T00:00:00Z" if window else None,
        "resets_at": "2026-11-24T00:00:00Z" if window else None,
        "display": {"spent": usd(spent), "reserved": usd(reserved), "limit": usd(limit), "soft_budget": None},
    }


TEAM_KEY_INPUT: dict[str, Any] = {
    "request": {
        "request_id": "req-1", "phase": "authorize", "model": "gpt-4o", "end_user": "cust-9",
        "tags": ["search", "beta"], "estimated_cost": 20_000_000,
        "now": "2026-11-23T03:00:00Z", "now_ns": 1_795_402_800_000_000_000,
    },
    "key": {
        "id": "k1", "user_id": "u1", "team_id": "t1", "blocked": False,
        "expires_at": "2026-12-01T00:00:00Z", "expires_at_ns": 1_796_083_200_000_000_000, "models": ["gpt-4o"],
    },
    "user": {"id": "u1", "org_id": "o2", "blocked": False},
    "team": {"id": "t1", "org_id": "o1", "blocked": False},
    "team_member": {"id": "t1/u1", "team_id": "t1", "user_id": "u1", "blocked": False},
    "orgs": {"o1": {"id": "o1", "blocked": False}, "o2": {"id": "o2", "blocked": False}},
    "end_user": {"id": "cust-9", "blocked": False, "known": True},
    "tags": [{"id": "search", "blocked": False, "known": True}, {"id": "beta", "blocked": False, "known": False}],
    "ledgers": [
        _ledger("key", "k1"),
        _ledger("key_model", "k1/gpt-4o"),
        _ledger("team", "t1"),
        _ledger("team", "t1", window="1mo", limit=100_000_000_000),
        _ledger("team_member", "t1/u1"),
        _ledger("org", "o1", window=None, limit=None),
        _ledger("end_user", "cust-9", limit=None),
        _ledger("tag", "search", window=None, limit=None),
        _ledger("tag", "beta", window=None, limit=None),
        # The user's own budget is exhausted: a team key must neither check nor charge it.
        _ledger("user", "u1", spent=10_000_000_000),
        _ledger("org", "o2", window=None, limit=None),
    ],
}


def test_team_key_decision_charges_team_ledgers_and_never_the_users_own() -> None:
    engine = compile_policy_set(load_policy_set(POLICIES))
    engine.set_input_json(json.dumps(TEAM_KEY_INPUT))
    raw = engine.eval_rule_as_json("data.spendgate.decision.result")
    result = json.loads(raw)
    assert result["charges"] == [
        "end_user:cust-9:1d:1795392000",
        "key:k1:1d:1795392000",
        "key_model:k1/gpt-4o:1d:1795392000",
        "org:o1:-:1795392000",
        "tag:beta:-:1795392000",
        "tag:search:-:1795392000",
        "team:t1:1d:1795392000",
        "team:t1:1mo:1795392000",
        "team_member:t1/u1:1d:1795392000",
    ]
    assert result == {"allow": True, "charges": result["charges"], "reasons": [], "alerts": []}
    engine.set_input_json(json.dumps(TEAM_KEY_INPUT))
    assert engine.eval_rule_as_json("data.spendgate.decision.result") == raw


def test_team_key_decision_refuses_on_the_team_budget_and_says_why() -> None:
    engine = compile_policy_set(load_policy_set(POLICIES))
    weekly = _ledger("team", "t1", window="1w", spent=9_990_000_000)
    over = {**TEAM_KEY_INPUT, "ledgers": [*TEAM_KEY_INPUT["ledgers"], weekly]}
    engine.set_input_json(json.dumps(over))
    result = json.loads(engine.eval_rule_as_json("data.spendgate.decision.result"))
    assert result["allow"] is False
    assert "team:t1:1w:1795392000" in result["charges"]
    assert result["reasons"] == [{
        "code": "budget_exceeded",
        "entity": {"type": "team", "id": "t1"},
        "ledger": "team:t1:1w:1795392000",
        "message": "team t1 has spent $9.990000 (plus $0.020000 reserved) of its $10.000000 1w budget, "
                   "so this request's estimated $0.020000 would exceed it; it resets at 2026-11-24T00:00:00Z",
        "spent": "9.990000",
        "limit": "10.000000",
        "resets_at": "2026-11-24T00:00:00Z",
    }]
