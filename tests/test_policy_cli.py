"""`spendgate policy test | check | eval` as a policy author uses them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spendgate.cli import main

FIXTURES = Path(__file__).parent / "fixtures"


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def small_suite(tmp_path: Path) -> tuple[Path, Path]:
    policies = _write(tmp_path / "policies", {
        "demo/demo.rego": "package demo\n\nallow if input.ok\n",
        "other/other.rego": "package other\n\n# never tested\nbig if input.n > 10\n",
    })
    tests = _write(tmp_path / "policy_tests", {
        "demo/demo_test.rego": (
            "package demo_test\n\nimport data.demo\n\n"
            "test_allow_when_ok if demo.allow with input as {\"ok\": true}\n\n"
            "test_allow_fails_on_purpose if demo.allow with input as {\"ok\": false}\n\n"
            "todo_test_later if false\n"
        ),
    })
    return policies, tests


def test_shipped_policy_tests_pass_with_full_coverage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "test", "--coverage", "--threshold", "90"]) == 0
    out = capsys.readouterr().out
    passed = [line for line in out.splitlines() if line.startswith("PASS: ")]
    total = passed[0].removeprefix("PASS: ").split("/")
    assert total[0] == total[1] and int(total[0]) > 50
    assert "100.0%  total" in out


def test_verbose_lists_every_test_like_opa_test(small_suite: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["policy", "test", "-v", *map(str, small_suite)])
    out = capsys.readouterr().out
    assert code == 1
    assert "data.demo_test.test_allow_when_ok: PASS (" in out
    assert "data.demo_test.test_allow_fails_on_purpose: FAIL (" in out
    assert "data.demo_test.todo_test_later: SKIPPED (" in out
    assert out.rstrip().splitlines()[-3:] == ["PASS: 1/3", "FAIL: 1/3", "SKIPPED: 1/3"]


def test_run_selects_tests_by_regular_expression(small_suite: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "test", "--run", "when_ok$", *map(str, small_suite)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("PASS: 1/1")


def test_no_tests_found_is_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policies = _write(tmp_path / "p", {"a.rego": "package a\n\nx := 1\n"})
    assert main(["policy", "test", str(policies)]) == 1
    assert "no tests found" in capsys.readouterr().err


def test_coverage_below_the_threshold_fails(small_suite: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["policy", "test", "--run", "when_ok", "--threshold", "90", *map(str, small_suite)])
    captured = capsys.readouterr()
    assert code == 2
    assert "below the threshold 90" in captured.err
    assert "not covered: 4" in captured.out  # no test reaches package other


def test_check_reports_file_line_and_column_of_a_broken_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = _write(tmp_path / "p", {"ok.rego": "package ok\n\nx := 1\n", "bad/b.rego": "package bad\n\ny := if {\n"})
    assert main(["policy", "check", str(broken)]) == 1
    assert "p/bad/b.rego:3:6: unexpected keyword `if`" in capsys.readouterr().err


def test_check_accepts_the_shipped_policies(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check"]) == 0
    assert "modules compile" in capsys.readouterr().out


def test_eval_prints_the_decision_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "eval", "--input", str(FIXTURES / "team_key_input.json")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["allow"] is True
    assert "team_member:t1/u1:1d:1795392000" in result["charges"]
    assert not any(charge.startswith("user:") for charge in result["charges"])


def test_eval_explain_names_the_rule_behind_each_charge_and_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = json.loads((FIXTURES / "team_key_input.json").read_text())
    document["key"]["blocked"] = True
    (tmp_path / "input.json").write_text(json.dumps(document))

    assert main(["policy", "eval", "--input", str(tmp_path / "input.json"), "--explain"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("decision: deny")
    assert "team_member:t1/u1:1d:1795392000" in out and "attribution.rego:" in out
    assert "key_blocked:" in out and "admission.rego:" in out
