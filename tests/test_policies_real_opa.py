"""The policies and their tests under OPA's own Go engine, as `opa test policies policy_tests` runs them.

The regorus runner (spendgate.policy.testing) is what CI and `spendgate policy test` use; this proves
the same files compile under OPA v1 (parser, compiler, type checker; no unused imports, one of the
strict checks) and every test passes there too, under every value of every knob in policies/data.json.
OPA's test list is found by OPA's own parser and must equal the regorus runner's, so a test one
runner does not see cannot pass silently.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spendgate.policy import PolicySet, load_policy_set
from spendgate.policy.testing import PolicyTestStatus, PolicyTestSuite, load_test_suite
from support.opa_go import OpaGoPolicies, with_config

ROOT = Path(__file__).resolve().parents[1]
POLICY_DIR, TESTS_DIR = ROOT / "policies", ROOT / "policy_tests"

#: The knobs of data.spendgate.config as shipped: every combination of their values is tried.
SHIPPED_CONFIG: dict[str, Any] = load_policy_set(POLICY_DIR).data["spendgate"]["config"]
CONFIGS = [dict(zip(SHIPPED_CONFIG, values)) for values in itertools.product((False, True), repeat=len(SHIPPED_CONFIG))]


def _config_id(config: dict[str, Any]) -> str:
    return ",".join(f"{knob}={str(value).lower()}" for knob, value in config.items())


@pytest.fixture(scope="module")
def policies_and_tests() -> PolicySet:
    return load_policy_set(POLICY_DIR, TESTS_DIR, include_tests=True)


@pytest.fixture(scope="module", params=CONFIGS, ids=[_config_id(c) for c in CONFIGS])
def configured(request: pytest.FixtureRequest, policies_and_tests: PolicySet) -> Iterator[PolicySet]:
    yield with_config(policies_and_tests, **request.param)


def test_every_knob_is_a_boolean_so_both_values_are_covered() -> None:
    assert SHIPPED_CONFIG, "policies/data.json has no spendgate.config knobs: update this test"
    assert all(isinstance(value, bool) for value in SHIPPED_CONFIG.values()), SHIPPED_CONFIG


def test_the_shipped_policies_compile_under_opa_v1() -> None:
    compiled = OpaGoPolicies(load_policy_set(POLICY_DIR))
    try:
        assert compiled.query(("spendgate", "config")) == SHIPPED_CONFIG  # data.json mounted where OPA mounts it
    finally:
        compiled.close()


def test_no_module_imports_what_it_does_not_use(policies_and_tests: PolicySet) -> None:
    """One of `opa check --strict`'s errors, checked on OPA's AST (the Go engine has no strict compile)."""
    compiled = OpaGoPolicies(policies_and_tests)
    try:
        assert compiled.unused_imports() == []
    finally:
        compiled.close()


def test_an_unused_import_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.rego").write_text(
        "package a\n\nimport rego.v1\nimport data.b.c\nimport data.b.d as e\nimport data.b.f\n\nx := f\n"
    )
    compiled = OpaGoPolicies(load_policy_set(tmp_path))
    try:
        unused = compiled.unused_imports()
    finally:
        compiled.close()

    assert unused == [f"{tmp_path.name}/a.rego: import data.b.c", f"{tmp_path.name}/a.rego: import data.b.d as e"]


def test_opa_finds_exactly_the_tests_the_embedded_runner_finds(policies_and_tests: PolicySet) -> None:
    compiled = OpaGoPolicies(policies_and_tests)
    try:
        opa_ids = [test.id for test in compiled.tests()]
    finally:
        compiled.close()
    regorus_ids = sorted(test.id for test in load_test_suite(POLICY_DIR, TESTS_DIR).tests)

    assert len(regorus_ids) >= 100  # the suite as written: a discovery that finds nothing must not pass
    assert opa_ids == regorus_ids


def test_every_policy_test_passes_under_opa(configured: PolicySet, policies_and_tests: PolicySet) -> None:
    compiled = OpaGoPolicies(configured)
    try:
        results = compiled.run_all()
    finally:
        compiled.close()
    not_passing = [f"{r.test.id}: {r.status} {r.message}" for r in results if r.status != "PASS"]

    assert not_passing == []
    assert len(results) == len(load_test_suite(POLICY_DIR, TESTS_DIR).tests)


def test_the_opa_runner_reports_failing_erroring_and_todo_tests(tmp_path: Path) -> None:
    (tmp_path / "t_test.rego").write_text(
        "package t_test\n\n"
        "test_passes if 1 == 1\n\n"
        "test_fails if 1 == 2\n\n"
        "test_is_not_true := 7\n\n"
        "_conflict := 1\n\n_conflict := 2\n\n"
        "test_errors if _conflict == 1\n\n"
        "todo_test_later if false\n"
    )
    compiled = OpaGoPolicies(load_policy_set(tmp_path, include_tests=True))
    try:
        results = {result.test.name: result.status for result in compiled.run_all()}
    finally:
        compiled.close()

    assert results == {"test_passes": "PASS", "test_fails": "FAIL", "test_is_not_true": "FAIL",
                       "test_errors": "ERROR", "todo_test_later": "SKIPPED"}


def test_the_embedded_runner_judges_every_test_as_opa_does(configured: PolicySet) -> None:
    compiled = OpaGoPolicies(configured)
    try:
        opa = {result.test.id: result.status for result in compiled.run_all()}
    finally:
        compiled.close()
    embedded = {result.id: result.status.value for result in PolicyTestSuite(configured).run_all()}

    assert embedded == opa
    assert set(embedded.values()) <= {PolicyTestStatus.PASS.value, PolicyTestStatus.SKIPPED.value}
