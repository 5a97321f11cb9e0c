"""OPA's own Go engine, in-process, for tests: a policy set loaded into it, decisions and `opa test`-style runs.

The engine is `github.com/open-policy-agent/opa/v1/rego` as a c-shared library with a ctypes wrapper
(PyPI `opa-golib-python-bindings`, module `opa_bindings`, pinned in requirements/opa-engine.txt). It
is what makes "both engines decide alike" a comparison of regorus with OPA rather than with itself.
Modules are added under their policy-set names (`policies/spendgate/lib/lib.rego`) and the data is
the set's merged document (each `data.json` mounted at its directory, see `loader.merge_data`), so
OPA sees exactly what the embedded engine and the OPA adapter's push see.

Tests are found by OPA's own parser (`rego.parse_module`), not by the regorus runner's discovery, so
the two can be compared: a test rule is any rule (not a function, not a default) named `test_*` in
any package, and passes when `data.<package>.<name>` is `true` — what `opa test` does.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from spendgate.policy.engine import DECISION_PATH
from spendgate.policy.loader import PolicySet

__all__ = [
    "INSTALL_COMMAND",
    "OpaGoPolicies",
    "OpaTest",
    "OpaTestResult",
    "opa_bindings_missing",
    "ref",
    "require_opa_bindings",
    "with_config",
]

INSTALL_COMMAND = (
    ".venv/bin/pip install --no-deps --ignore-requires-python --require-hashes -r requirements/opa-engine.txt"
)
_TEST_PREFIXES = ("test_", "todo_test_")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def opa_bindings_missing() -> str | None:
    """Why OPA's Go engine cannot be used here (with the command that fixes it), or None when it can."""
    try:
        import opa_bindings  # noqa: F401
    except ImportError:
        return f"OPA's Go engine (module opa_bindings) is not installed; install it with: {INSTALL_COMMAND}"
    return None


def require_opa_bindings() -> Any:
    """The `opa_bindings` module; a clear error naming the install command when it is missing (never a skip)."""
    if (why := opa_bindings_missing()) is not None:
        raise RuntimeError(why)
    import opa_bindings

    return opa_bindings


def with_config(policies: PolicySet, **knobs: Any) -> PolicySet:
    """`policies` with `data.spendgate.config` knobs set (the revision is left as it was)."""
    data = copy.deepcopy(policies.data)
    data.setdefault("spendgate", {}).setdefault("config", {}).update(knobs)
    return replace(policies, data=data)


def ref(path: tuple[str, ...] | list[str]) -> str:
    """`data.a.b["c-d"]`: a reference to the document at `path`."""
    return "data" + "".join(f".{p}" if _IDENT.match(p) else f"[{json.dumps(p)}]" for p in path)


def _terms(node: Any) -> Iterator[dict[str, Any]]:
    """Every `{"type", "value"}` term anywhere in an AST node."""
    if isinstance(node, dict):
        if "type" in node and "value" in node:
            yield node
        for value in node.values():
            yield from _terms(value)
    elif isinstance(node, list):
        for item in node:
            yield from _terms(item)


@dataclass(frozen=True)
class OpaTest:
    package: str
    name: str
    file: str

    @property
    def id(self) -> str:
        return f"{self.package}.{self.name}"


@dataclass(frozen=True)
class OpaTestResult:
    test: OpaTest
    #: "PASS", "FAIL", "ERROR" or "SKIPPED" (todo_test_*), as `opa test` reports them.
    status: str
    message: str = ""


class OpaGoPolicies:
    """A policy set compiled by OPA's Go engine. Compile errors (type errors included) raise `OpaError`."""

    def __init__(self, policies: PolicySet) -> None:
        bindings = require_opa_bindings()
        self.OpaError: type[Exception] = bindings.OpaError
        self._engine = bindings.OpaEngine()
        self._modules = policies.modules
        for name, source in policies.modules:
            self._engine.add_policy(name, source)
        self._engine.add_data(policies.data)
        self._engine.eval_query("true")  # compiles every module now, so errors surface here, not at first use

    def close(self) -> None:
        self._engine.close()

    def query(self, path: tuple[str, ...] | list[str], input_doc: Any = None) -> Any:
        """The document at `data.<path>` (None when undefined); `OpaError` on an evaluation error."""
        rows = self._engine.eval_query(f"value := {ref(path)}", input=input_doc)
        return rows[0]["value"] if rows else None

    def decide(self, input_doc: dict[str, Any]) -> Any:
        """`data.spendgate.decision.result` for `input_doc` (None when undefined)."""
        return self.query(DECISION_PATH, input_doc)

    def parsed(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(module name, OPA's AST of it) for every module, as `rego.parse_module` gives it."""
        for name, source in self._modules:
            rows = self._engine.eval_query(
                "ast := rego.parse_module(input.file, input.source)", input={"file": name, "source": source}
            )
            yield name, rows[0]["ast"]

    def unused_imports(self) -> list[str]:
        """`module: import data.x.y` for each import no rule refers to — an error of `opa check --strict`
        (the Go engine offers no strict compile, so this one strict check is made on OPA's own AST)."""
        unused = []
        for name, ast in self.parsed():
            used = {term["value"] for term in _terms(ast.get("rules", ())) if term.get("type") == "var"}
            for imported in ast.get("imports", ()):
                path = imported["path"]["value"]
                if path[0]["value"] in ("rego", "future"):  # keyword imports (`import rego.v1`) are never unused
                    continue
                alias = imported.get("alias") or str(path[-1]["value"])
                if alias not in used:
                    dotted = ".".join(str(part["value"]) for part in path)
                    unused.append(f"{name}: import {dotted}" + (f" as {alias}" if imported.get("alias") else ""))
        return unused

    def tests(self) -> tuple[OpaTest, ...]:
        """Every test rule of the set, found by OPA's parser; a name defined twice in a package counts once."""
        found: dict[tuple[str, str], OpaTest] = {}
        for name, ast in self.parsed():
            package = ".".join(str(term["value"]) for term in ast["package"]["path"][1:])
            for rule in ast.get("rules", ()):
                head = rule["head"]
                rule_name = head.get("name", "")
                if rule_name.startswith(_TEST_PREFIXES) and not head.get("args") and not rule.get("default"):
                    found.setdefault((package, rule_name), OpaTest(package, rule_name, name))
        return tuple(sorted(found.values(), key=lambda test: test.id))

    def run(self, test: OpaTest) -> OpaTestResult:
        if test.name.startswith("todo_"):
            return OpaTestResult(test, "SKIPPED", "todo")
        try:
            value = self.query((*test.package.split("."), test.name))
        except self.OpaError as exc:
            return OpaTestResult(test, "ERROR", str(exc))
        if value is True:
            return OpaTestResult(test, "PASS")
        why = "undefined" if value is None else f"{json.dumps(value)}, not true"
        return OpaTestResult(test, "FAIL", f"the test is {why}")

    def run_all(self) -> tuple[OpaTestResult, ...]:
        """Every test, judged as `run` judges it. One query per package (each distinct query is compiled
        afresh, ~40 ms here, so 108 queries took 4 s); a package whose document fails to evaluate is run
        test by test, so an error is pinned on the test that raised it."""
        by_package: dict[str, list[OpaTest]] = {}
        for test in self.tests():
            by_package.setdefault(test.package, []).append(test)
        results: list[OpaTestResult] = []
        for package, tests in by_package.items():
            try:
                document = self.query(package.split("."))
            except self.OpaError:
                results.extend(self.run(test) for test in tests)
                continue
            for test in tests:
                value = document.get(test.name) if isinstance(document, dict) else None
                if test.name.startswith("todo_") or value is not True:
                    results.append(self.run(test))  # said apart: the rule's own query tells why
                else:
                    results.append(OpaTestResult(test, "PASS"))
        return tuple(sorted(results, key=lambda result: result.test.id))
