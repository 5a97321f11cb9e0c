"""What a policy set must pass before it goes live (SPENDGATE_POLICY_GATE), at start-up and on reload.

`compile`: nothing more than compiling, which every engine does when it loads a set.
`test`: also the policy tests found beside the set (`testing.policy_test_roots`); any FAIL or
ERROR — or no test at all, since a gate that runs nothing guards nothing — refuses the set
with `PolicyTestsFailed`.

The tests run on a worker thread (the shipped suite takes ~100 ms, too long to hold the event
loop). regorus engines must stay on the thread that made them, so the suite is built, run and
dropped inside that thread and only plain results come back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal, NamedTuple

from ..errors import PolicyError, PolicyTestsFailed
from .loader import PolicySet, display_path
from .testing import PolicyTestStatus, PolicyTestSuite, policy_test_roots, with_tests

__all__ = ["GATES", "PolicyGate", "policy_gate"]


class PolicyGate(NamedTuple):
    #: Raises PolicyError (PolicyTestsFailed for failing tests) when the set may not go live.
    check: Callable[[PolicySet], Awaitable[None]]
    #: Whether the verdict also depends on the tests beside the policies.
    reads_tests: bool

    def watched(self, policy_dir: Path) -> tuple[Path, ...]:
        """The directories whose changes can change this gate's verdict (the reloader polls them)."""
        return policy_test_roots(policy_dir) if self.reads_tests else (policy_dir,)


class _Outcome(NamedTuple):
    failing: tuple[str, ...] = ()
    problem: str = ""


async def _compiles(policies: PolicySet) -> None:
    """The engine compiles the set when it loads it; nothing to add."""


def _run_tests(policies: PolicySet) -> _Outcome:
    """On the worker thread: load, run, and drop the suite here; return only plain data."""
    try:
        suite = PolicyTestSuite(with_tests(policies))
    except PolicyError as exc:
        first_line = (exc.message.splitlines() or [""])[0]  # file:line:col: message, without the source excerpt
        return _Outcome(problem=f"the policies and their tests do not load: {first_line}")
    except Exception as exc:  # noqa: BLE001 — its traceback holds the engine: it must end on this thread
        return _Outcome(problem=f"the policy tests could not run: {type(exc).__name__}: {exc}")
    if not suite.tests:
        return _Outcome(problem=f"no policy tests found beside {display_path(policies.root)} (*_test.rego there or in ../policy_tests)")
    results = suite.run_all()
    del suite
    failing = tuple(
        f"data.{r.id} ({r.file}:{r.line} {r.status.value})"
        for r in results
        if r.status in (PolicyTestStatus.FAIL, PolicyTestStatus.ERROR)
    )
    return _Outcome(failing=failing)


async def _tests_pass(policies: PolicySet) -> None:
    outcome = await asyncio.to_thread(_run_tests, policies)
    if outcome.failing or outcome.problem:
        raise PolicyTestsFailed(revision=policies.revision, failing=outcome.failing, problem=outcome.problem)


GATES: dict[str, PolicyGate] = {
    "compile": PolicyGate(_compiles, reads_tests=False),
    "test": PolicyGate(_tests_pass, reads_tests=True),
}


def policy_gate(name: Literal["compile", "test"]) -> PolicyGate:
    """The gate SPENDGATE_POLICY_GATE names."""
    return GATES[name]
