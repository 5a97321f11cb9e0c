"""The shipped policy tests pass whatever value an operator gives each documented knob (policies/data.json).

A test that depends on a knob pins it (`with data.spendgate.config.<knob> as …`), so a policy
author who flips a knob sees only failures of their own making.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path

import pytest

from spendgate.policy.testing import PolicyTestStatus, run_policy_tests
from spendgate.settings import DEFAULT_POLICY_DIR

POLICY_TESTS = DEFAULT_POLICY_DIR.parent / "policy_tests"
CONFIG: dict[str, object] = json.loads((DEFAULT_POLICY_DIR / "data.json").read_text())["spendgate"]["config"]
KNOBS = sorted(CONFIG)
COMBINATIONS = [dict(zip(KNOBS, values)) for values in itertools.product((False, True), repeat=len(KNOBS))]


def test_every_documented_knob_is_a_boolean_shipped_false() -> None:
    assert KNOBS == ["team_keys_charge_user", "zero_estimate_always_admitted"]
    assert all(value is False for value in CONFIG.values())


@pytest.mark.parametrize("knobs", COMBINATIONS, ids=lambda knobs: ",".join(f"{k}={v}" for k, v in knobs.items()))
def test_shipped_policy_tests_pass_under_every_knob_combination(tmp_path: Path, knobs: dict[str, bool]) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, policies)
    (policies / "data.json").write_text(json.dumps({"spendgate": {"config": knobs}}))

    report = run_policy_tests(policies, POLICY_TESTS)

    failing = [f"data.{r.id}: {r.status.value} {r.message}" for r in report.results if r.status is not PolicyTestStatus.PASS]
    assert not failing, f"with {knobs}: " + "; ".join(failing)
    assert len(report.results) > 100


@pytest.mark.parametrize("value", ["true", "false"])
@pytest.mark.parametrize("knob", KNOBS)
def test_some_policy_test_pins_each_knob_to_each_value(knob: str, value: str) -> None:
    pin = re.compile(rf"with data\.spendgate\.config\.{knob} as {value}\b")
    pinned_by = [path.name for path in POLICY_TESTS.rglob("*_test.rego") if pin.search(path.read_text())]
    assert pinned_by, f"no policy test pins {knob} to {value}"


@pytest.mark.parametrize("document", ["README.md", "INTERFACE.md"])
def test_policy_docs_describe_every_knob(document: str) -> None:
    text = (DEFAULT_POLICY_DIR / document).read_text()
    for knob in KNOBS:
        assert re.search(rf"^\| `{knob}` \| `false`", text, re.MULTILINE), f"{document} has no row for {knob}"
