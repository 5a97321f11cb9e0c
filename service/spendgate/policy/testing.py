"""Run Rego policy tests through the embedded engine (regorus), the way `opa test` would.

The policies and their tests are loaded together (every `*.rego` file and every `data.json`
document, mounted at its directory as OPA does — see `loader.py`). A test is a rule named
`test_*` in a package whose name ends in `_test`; it passes when it evaluates to `true`, fails
when it is undefined or has any other value, and is an error when evaluation fails. Rules
named `todo_test_*` are reported as skipped. Optional line coverage of the policy files comes
from regorus' coverage report. This module prints nothing: pytest and the CLI present results.

One difference from `opa test`: a test name defined twice is an ERROR here (OPA runs each
definition as its own test; one engine query cannot, and together one would hide the other).

Where the tests of a policy directory X are (`policy_test_roots`, used by the CLI and the
service's test gate): the `*_test.rego` files under X itself, plus every file under a sibling
directory `policy_tests/` (X/../policy_tests) when there is one.
"""

from __future__ import annotations

import enum
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PolicyError
from .embedded import clean_engine_message, compile_policy_set
from .loader import PolicySet, combine_policy_sets, load_policy_set

__all__ = [
    "FileCoverage",
    "PolicyTest",
    "PolicyTestReport",
    "PolicyTestResult",
    "PolicyTestStatus",
    "PolicyTestSuite",
    "load_test_suite",
    "policy_test_roots",
    "run_policy_tests",
    "with_tests",
]

#: The directory beside a policy directory that holds its tests (policies/ → policy_tests/).
TESTS_DIR_NAME = "policy_tests"

_TEST_PREFIX = "test_"
_TODO_PREFIX = "todo_test_"
_PACKAGE_LINE = re.compile(r"^package\s+([A-Za-z_][\w.]*)", re.MULTILINE)
# A rule head at the start of a line, not a function (no "(" right after the name).
_TEST_HEAD = re.compile(r"^((?:todo_)?test_\w+)\b(?!\s*\()", re.MULTILINE)


class PolicyTestStatus(str, enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"
    SKIPPED = "SKIPPED"


@dataclass(frozen=True)
class PolicyTest:
    """One test rule: `data.<package>.<name>`, defined in `file` at `lines` (one per definition)."""

    package: str
    name: str
    file: str
    lines: tuple[int, ...]

    @property
    def id(self) -> str:
        return f"{self.package}.{self.name}"

    @property
    def query(self) -> str:
        return f"data.{self.package}.{self.name}"

    @property
    def is_todo(self) -> bool:
        return self.name.startswith(_TODO_PREFIX)


@dataclass(frozen=True)
class PolicyTestResult:
    package: str
    name: str
    status: PolicyTestStatus
    duration_ns: int
    #: Why it did not pass (empty on PASS).
    message: str = ""
    file: str = ""
    line: int = 0
    #: Output of `print` calls made while it ran (tests should leave none behind).
    output: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.package}.{self.name}"


@dataclass(frozen=True)
class FileCoverage:
    """Lines of one policy file that the tests evaluated, and those they never reached."""

    path: str
    covered: tuple[int, ...]
    not_covered: tuple[int, ...]

    @property
    def percent(self) -> float:
        """Share of covered lines; 0.0 for a file no test reached (the engine reports no lines for it)."""
        total = len(self.covered) + len(self.not_covered)
        return 0.0 if total == 0 else 100.0 * len(self.covered) / total


@dataclass(frozen=True)
class PolicyTestReport:
    results: tuple[PolicyTestResult, ...]
    #: Per policy file (test modules excluded); empty unless coverage was asked for.
    coverage: tuple[FileCoverage, ...] = field(default=())

    def count(self, status: PolicyTestStatus) -> int:
        return sum(1 for result in self.results if result.status is status)

    @property
    def ok(self) -> bool:
        return all(r.status in (PolicyTestStatus.PASS, PolicyTestStatus.SKIPPED) for r in self.results)


class PolicyTestSuite:
    """Policies and tests compiled into one engine; run the tests one by one or all at once."""

    def __init__(self, policies: PolicySet, *, coverage: bool = False) -> None:
        self._engine = compile_policy_set(policies)
        self._engine.set_gather_prints(True)
        if coverage:
            self._engine.set_enable_coverage(True)
        self._coverage = coverage
        self._sources = {policies.path_of(name): source for name, source in policies.modules}
        self._test_files: set[str] = set()
        self.tests = self._discover(policies)
        self._policy_files = _policy_files(policies, self._test_files)

    def run(self, test: PolicyTest) -> PolicyTestResult:
        """Evaluate one test rule on its own."""
        if test.is_todo:
            return _result(test, PolicyTestStatus.SKIPPED, 0, "todo")
        if len(test.lines) > 1:
            return _result(test, PolicyTestStatus.ERROR, 0, (
                f"{test.name} is defined {len(test.lines)} times (lines {', '.join(map(str, test.lines))}); "
                "its definitions would be evaluated together and one passing would hide the others failing: "
                "give each test its own name"
            ))
        started = time.perf_counter_ns()
        try:
            raw = self._engine.eval_query_as_json(test.query)
        except RuntimeError as exc:
            duration = time.perf_counter_ns() - started
            return _result(test, PolicyTestStatus.ERROR, duration, clean_engine_message(exc), self._prints())
        duration = time.perf_counter_ns() - started
        status, message = _judge(json.loads(raw))
        return _result(test, status, duration, message, self._prints())

    def run_all(self, match: str | Callable[[PolicyTest], bool] | None = None) -> tuple[PolicyTestResult, ...]:
        """Run every test (or those whose id contains `match`, or for which `match(test)` is true)."""
        if isinstance(match, str):
            return tuple(self.run(test) for test in self.tests if match in test.id)
        return tuple(self.run(test) for test in self.tests if match is None or match(test))

    def coverage(self) -> tuple[FileCoverage, ...]:
        """Line coverage of the policy files by the tests run so far.

        Policy files are the modules under the directories that hold no tests (`policies/`, not
        `policy_tests/` with its fixtures); when every directory holds tests, the modules of the
        first directory that are not test modules. A file no test reached has every line of code
        not covered.
        """
        if not self._coverage:
            raise PolicyError("coverage was not enabled for this test suite; load it with coverage=True")
        report = json.loads(self._engine.get_coverage_report_as_json())
        reached = {entry["path"]: entry for entry in report.get("files", ())}
        return tuple(
            FileCoverage(
                path,
                tuple(reached[path].get("covered", ())),
                tuple(reached[path].get("not_covered", ())),
            )
            if path in reached
            else FileCoverage(path, (), _code_lines(self._sources.get(path, "")))
            for path in sorted(self._policy_files)
        )

    def _prints(self) -> tuple[str, ...]:
        return tuple(self._engine.take_prints())

    def _discover(self, policies: PolicySet) -> tuple[PolicyTest, ...]:
        try:
            modules = _modules_from_ast(json.loads(self._engine.get_ast_as_json()))
        except (KeyError, TypeError, ValueError, IndexError):
            # An AST shape this code does not know (another regorus version): read the sources instead.
            modules = [_module_from_source(policies.path_of(name), source) for name, source in policies.modules]
        tests: dict[tuple[str, str], PolicyTest] = {}
        for path, package, rules in modules:
            if not package.endswith("_test"):
                continue
            self._test_files.add(path)
            for name, line in rules:
                if not name.startswith((_TEST_PREFIX, _TODO_PREFIX)):
                    continue
                known = tests.get((package, name))
                lines = (*known.lines, line) if known else (line,)
                tests[(package, name)] = PolicyTest(package, name, known.file if known else path, lines)
        return tuple(sorted(tests.values(), key=lambda test: (test.package, test.lines[0], test.name)))


def load_test_suite(*paths: str | Path, coverage: bool = False) -> PolicyTestSuite:
    """Load the policies and tests under the directories `paths` (e.g. `policies`, `policy_tests`)."""
    return PolicyTestSuite(load_policy_set(*(Path(p) for p in paths), include_tests=True), coverage=coverage)


def policy_test_roots(policy_dir: Path) -> tuple[Path, ...]:
    """The directories to load to test the policies in `policy_dir`: itself, and `../policy_tests` if present."""
    sibling = policy_dir.parent / TESTS_DIR_NAME
    if sibling.is_dir() and sibling.resolve() != policy_dir.resolve():
        return policy_dir, sibling
    return (policy_dir,)


def with_tests(policies: PolicySet) -> PolicySet:
    """`policies` exactly as given (not re-read), with the tests found beside them (`policy_test_roots`)."""
    root, *siblings = policy_test_roots(policies.root)
    return combine_policy_sets(
        policies,
        load_policy_set(root, only_tests=True),
        *(load_policy_set(sibling, include_tests=True) for sibling in siblings),
    )


def run_policy_tests(
    *paths: str | Path, coverage: bool = False, match: str | Callable[[PolicyTest], bool] | None = None
) -> PolicyTestReport:
    """Load the policies and tests under `paths` and run every test; PolicyError if they do not compile."""
    suite = load_test_suite(*paths, coverage=coverage)
    results = suite.run_all(match)
    return PolicyTestReport(results, suite.coverage() if coverage else ())


def _code_lines(source: str) -> tuple[int, ...]:
    """Lines that hold Rego code (not blank, comment, package or import lines)."""
    return tuple(
        number
        for number, line in enumerate(source.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith(("#", "package ", "import "))
    )


def _policy_files(policies: PolicySet, test_files: set[str]) -> frozenset[str]:
    """Paths of the modules under a root directory without tests (else: the first root's non-test modules)."""
    modules = [
        (file.path, file.root) if (file := policies.files.get(name)) else (name, Path(name.split("/", 1)[0]))
        for name, _ in policies.modules
    ]
    roots_with_tests = {root for path, root in modules if path in test_files}
    policy_files = [path for path, root in modules if root not in roots_with_tests]
    first_root = [path for path, root in modules if root == policies.root and path not in test_files]
    return frozenset(policy_files or first_root or [path for path, _ in modules if path not in test_files])


def _result(
    test: PolicyTest, status: PolicyTestStatus, duration_ns: int, message: str, output: tuple[str, ...] = ()
) -> PolicyTestResult:
    return PolicyTestResult(
        test.package, test.name, status, duration_ns, message, file=test.file, line=test.lines[0], output=output
    )


def _judge(response: dict[str, Any]) -> tuple[PolicyTestStatus, str]:
    results = response.get("result") or []
    if not results:
        return PolicyTestStatus.FAIL, "the test is undefined: one of its conditions did not hold"
    value = results[0]["expressions"][0]["value"]
    if value is True:
        return PolicyTestStatus.PASS, ""
    return PolicyTestStatus.FAIL, f"the test evaluated to {json.dumps(value)}, not true"


# ---- finding packages and rules -------------------------------------------------------------

_Module = tuple[str, str, list[tuple[str, int]]]  # (path, package, [(rule name, line)])


def _modules_from_ast(policies: Iterable[dict[str, Any]]) -> list[_Module]:
    modules = []
    for policy in policies:
        ast = policy["ast"]
        package = ".".join(_ref_parts(ast["package"]["refr"]))
        rules = [named for rule in ast.get("rules", ()) if (named := _rule_name(rule)) is not None]
        modules.append((policy["source"]["file"], package, rules))
    return modules


def _ref_parts(ref: dict[str, Any]) -> list[str]:
    """`a.b.c` as regorus' AST nests it (RefDot of RefDot of Var) → ["a", "b", "c"]."""
    (kind, node), = ref.items()
    if kind == "Var":
        return [node["value"]]
    if kind == "RefDot":
        return [*_ref_parts(node["refr"]), node["field"][1]]
    if kind == "RefBrack" and "String" in node["index"]:
        return [*_ref_parts(node["refr"]), node["index"]["String"]["value"]]
    raise ValueError(f"unexpected reference node {kind}")


def _rule_name(rule: dict[str, Any]) -> tuple[str, int] | None:
    """(name, line) of a rule whose head is a plain name; None for functions, defaults and ref heads."""
    if "Spec" not in rule:
        return None
    (kind, head), = rule["Spec"]["head"].items()
    if kind == "Func" or "Var" not in head["refr"]:
        return None
    var = head["refr"]["Var"]
    return var["value"], var["span"]["line"]


def _module_from_source(path: str, source: str) -> _Module:
    found = _PACKAGE_LINE.search(source)
    package = found.group(1) if found else ""
    rules = [(m.group(1), source.count("\n", 0, m.start()) + 1) for m in _TEST_HEAD.finditer(source)]
    return path, package, rules

