"""The mutation runner's scoring, fed synthetic JUnit reports: a mutation counts as caught only
when every expected test is in the report and FAILED; the baseline only when every one PASSED.
(No service is started: this is the "mutation of the scorer" check.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability.mutations import MUTATIONS, Mutation, baseline_problems, mutated_sources, score

CASES = {
    "passed": "",
    "failure": '<failure message="AssertionError: invariants violated">E   AssertionError: invariants violated:\n'
               "E     ledger org:acme: spent 1 != 2</failure>",
    "error": '<error message="failed on setup">E   RuntimeError: replica 0 not ready</error>',
    "skipped": '<skipped type="pytest.skip" message="no redis-server">no redis-server</skipped>',
}


def junit(path: Path, **cases: str) -> Path:
    """A pytest-style JUnit report: test name → one of CASES' kinds."""
    body = "".join(
        f'<testcase classname="reliability.test_fault_injection" name="{name}" time="1.0">{CASES[kind]}</testcase>'
        for name, kind in cases.items()
    )
    path.write_text(f'<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">{body}'
                    "</testsuite></testsuites>")
    return path


@pytest.mark.parametrize(("kind", "status"), [
    ("passed", "passed"), ("error", "errored"), ("skipped", "skipped"),
])
def test_a_mutation_is_not_caught_by_a_test_that_did_not_fail(tmp_path: Path, kind: str, status: str) -> None:
    result = score(junit(tmp_path / "r.xml", test_a="failure", test_b=kind), ["test_a", "test_b"])
    assert not result.caught
    assert [(v.test, v.status) for v in result.not_caught] == [("test_b", status)]


def test_a_mutation_is_caught_only_when_every_expected_test_failed(tmp_path: Path) -> None:
    result = score(junit(tmp_path / "r.xml", test_a="failure", test_b="failure"), ["test_a", "test_b"])
    assert result.caught
    assert result.verdicts[0].detail == "ledger org:acme: spent 1 != 2"


def test_a_missing_expected_test_does_not_catch_a_mutation(tmp_path: Path) -> None:
    result = score(junit(tmp_path / "r.xml", test_a="failure", test_renamed="failure"), ["test_a", "test_b"])
    assert not result.caught
    assert [(v.test, v.status) for v in result.not_caught] == [("test_b", "missing")]


def test_a_run_that_left_no_report_catches_nothing(tmp_path: Path) -> None:
    result = score(tmp_path / "never-written.xml", ["test_a"])
    assert not result.caught and result.not_caught[0].status == "missing"
    (tmp_path / "torn.xml").write_text("<testsuites><testsuite><testcase name=")
    assert score(tmp_path / "torn.xml", ["test_a"]).not_caught[0].status == "missing"


def test_a_parametrized_test_catches_only_if_every_case_failed(tmp_path: Path) -> None:
    report = junit(tmp_path / "r.xml", **{"test_a[one]": "failure", "test_a[two]": "passed"})
    assert score(report, ["test_a"]).not_caught[0].status == "passed"


def test_a_failure_with_an_error_in_teardown_counts_as_errored(tmp_path: Path) -> None:
    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuites><testsuite><testcase name="test_a">'
        f'{CASES["failure"]}{CASES["error"]}</testcase></testsuite></testsuites>'
    )
    assert score(report, ["test_a"]).not_caught[0].status == "errored"


def test_nothing_expected_catches_nothing(tmp_path: Path) -> None:
    assert not score(junit(tmp_path / "r.xml", test_a="failure"), []).caught


def test_the_baseline_is_broken_when_an_expected_test_is_missing_or_did_not_pass(tmp_path: Path) -> None:
    report = junit(tmp_path / "r.xml", test_a="passed", test_b="failure", test_c="error")
    problems = baseline_problems(report, ["test_a", "test_b", "test_c", "test_d"])
    assert [(v.test, v.status) for v in problems] == [
        ("test_b", "failed"), ("test_c", "errored"), ("test_d", "missing"),
    ]
    assert baseline_problems(junit(tmp_path / "ok.xml", test_a="passed"), ["test_a"]) == []


def test_a_mutation_whose_anchor_is_not_there_exactly_once_does_not_apply(tmp_path: Path) -> None:
    (tmp_path / "spendgate").mkdir()
    (tmp_path / "spendgate" / "m.py").write_text("x = 1\ny = 1\n")
    applies = Mutation("T1", "p", ("test_a",), (("m.py", "x = 1\n", "x = 2\n"), ("m.py", "x = 2\n", "x = 3\n")))
    assert mutated_sources(applies, tmp_path) == {tmp_path / "spendgate" / "m.py": "x = 3\ny = 1\n"}
    for anchor in ("z = 1\n", " = 1\n"):  # absent; twice
        with pytest.raises(ValueError, match="not once"):
            mutated_sources(Mutation("T2", "p", ("test_a",), (("m.py", anchor, "w\n"),)), tmp_path)


def test_every_shipped_mutation_applies_to_the_current_service() -> None:
    service = Path(__file__).resolve().parents[2] / "service"
    for mutation in MUTATIONS:
        assert mutated_sources(mutation, service), mutation.name
