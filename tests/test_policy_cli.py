"""`spendgate policy test | check | eval` as a policy author uses them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spendgate.cli import main
from spendgate.settings import DEFAULT_POLICY_DIR, get_settings

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


# --- SPENDGATE_POLICY_DIR and the tests beside it -----------------------------------------------


@pytest.fixture
def authored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An author's policies in SPENDGATE_POLICY_DIR: a test inside it, more in ../policy_tests."""
    policies = _write(tmp_path / "mine" / "policies", {
        "spendgate/decision/decision.rego": (
            "package spendgate.decision\n\n"
            'result := {"allow": false, "charges": [], "reasons": [{"code": "closed"}], "alerts": []}\n'
        ),
        "spendgate/decision/inside_test.rego": (
            "package spendgate.decision.inside_test\n\nimport data.spendgate.decision\n\n"
            "test_result_denies_when_closed if decision.result.allow == false\n"
        ),
    })
    _write(tmp_path / "mine" / "policy_tests", {
        "decision_test.rego": (
            "package spendgate.decision_test\n\nimport data.spendgate.decision\n\n"
            "test_result_allows_on_purpose_wrong if decision.result.allow == true\n"
        ),
    })
    monkeypatch.setenv("SPENDGATE_POLICY_DIR", str(policies))
    get_settings.cache_clear()
    return policies


def test_test_runs_the_tests_in_and_beside_spendgate_policy_dir(
    authored: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "test", "-v"]) == 1
    out = capsys.readouterr().out
    assert "data.spendgate.decision.inside_test.test_result_denies_when_closed: PASS (" in out
    assert "data.spendgate.decision_test.test_result_allows_on_purpose_wrong: FAIL (" in out
    assert out.rstrip().splitlines()[-2:] == ["PASS: 1/2", "FAIL: 1/2"]


def test_check_and_eval_use_spendgate_policy_dir(authored: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check"]) == 0
    assert f"{authored}: 2 modules compile" in capsys.readouterr().out
    (tmp_path / "input.json").write_text("{}")
    assert main(["policy", "eval", "--input", str(tmp_path / "input.json")]) == 0
    assert json.loads(capsys.readouterr().out)["reasons"] == [{"code": "closed"}]

    (authored / "spendgate" / "broken.rego").write_text("package spendgate.broken\n\nx := if {\n")
    assert main(["policy", "check"]) == 1
    assert "broken.rego:3:6: unexpected keyword `if`" in capsys.readouterr().err


def test_test_without_a_policy_tests_directory_runs_the_tests_inside(
    authored: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in (authored.parent / "policy_tests").iterdir():
        path.unlink()
    (authored.parent / "policy_tests").rmdir()
    assert main(["policy", "test"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("PASS: 1/1")


def test_policy_tools_report_an_invalid_configuration_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPENDGATE_DATABASE_URL", "mysql://db/spend")
    get_settings.cache_clear()
    for command in (["check"], ["test"], ["eval", "--input", str(FIXTURES / "team_key_input.json")]):
        assert main(["policy", *command]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"spendgate policy {command[0]}: invalid configuration (SPENDGATE_DATABASE_URL must be")
        assert "name the policy directories on the command line" in line
    assert main(["policy", "check", str(DEFAULT_POLICY_DIR)]) == 0  # explicit paths need no configuration


def test_help_states_where_policies_and_tests_are_found(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["policy", "test", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "$SPENDGATE_POLICY_DIR" in help_text
    assert "SPENDGATE_POLICY_DIR=X: X and X/../policy_tests" in help_text


# --- error paths a user can open ----------------------------------------------------------------


def _broken_policies(root: Path) -> Path:
    return _write(root, {"ok.rego": "package ok\n\nx := 1\n", "bad/b.rego": "package bad\n\ny := if {\n"})


def test_check_errors_name_an_absolute_path_from_outside_the_policies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = _broken_policies(tmp_path / "authoring" / "policies")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    assert main(["policy", "check", str(broken)]) == 1
    (first, *_) = capsys.readouterr().err.splitlines()
    path, line, column, message = first.split(":", 3)
    assert Path(path).is_absolute() and Path(path) == broken / "bad" / "b.rego"
    assert (line, column, message.strip()) == ("3", "6", "unexpected keyword `if`")


def test_check_errors_name_a_path_relative_to_the_working_directory_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _broken_policies(tmp_path / "authoring" / "policies")
    monkeypatch.chdir(tmp_path / "authoring")

    assert main(["policy", "check", "../authoring/policies"]) == 1
    assert capsys.readouterr().err.startswith("policies/bad/b.rego:3:6: unexpected keyword `if`")


def test_test_errors_and_coverage_name_paths_the_user_can_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = _write(tmp_path / "p", {"demo.rego": "package demo\n\nallow if input.ok\n"})
    tests = _write(tmp_path / "t", {"demo_test.rego": "package demo_test\n\nimport data.demo\n\ntest_fails if demo.allow\n"})
    monkeypatch.chdir(tmp_path)

    assert main(["policy", "test", "--coverage", str(policies), str(tests)]) == 1
    out = capsys.readouterr().out
    assert "t/demo_test.rego:" in out  # the failing test's file, relative to the working directory
    assert "p/demo.rego" in out and (tmp_path / "p" / "demo.rego").is_file()
