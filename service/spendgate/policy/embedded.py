"""The embedded adapter: policies compiled in-process by regorus (no server needed)."""

from __future__ import annotations

import json
import os
import re
from typing import Any

# regorus captures a Rust backtrace for every error when RUST_BACKTRACE is set (~50 ms each,
# and a policy error is an ordinary event here); library backtraces are never shown anyway.
os.environ.setdefault("RUST_LIB_BACKTRACE", "0")

import regorus  # noqa: E402  (after the environment it reads)

from .. import exact_json
from ..errors import PolicyError
from .engine import DECISION_QUERY, PRICING_QUERY, PolicyDecision, PriceQuote, decision_from_result, quote_from_result
from .loader import PolicySet

__all__ = ["EmbeddedEngine", "compile_policy_set", "clean_engine_message"]

#: What regorus answers for a rule that is defined but undefined for this input.
_UNDEFINED = '"<undefined>"'
#: What regorus raises for a rule path no module defines.
_NO_RULE = "not a valid rule path"


def _input_json(input_doc: dict[str, Any]) -> str:
    """The per-call input's text (exact_json: orjson, the stdlib for an integer past 64 bits)."""
    return exact_json.dumps(input_doc).decode()


_LOCATION = re.compile(r"-->\s*(?P<where>\S+:\d+:\d+)")
_ERROR = re.compile(r"^error:\s*(?P<message>.+)$", re.MULTILINE)


def clean_engine_message(exc: BaseException) -> str:
    """regorus errors carry a Rust backtrace; keep `file:line:col: message` and the source excerpt."""
    text = str(exc).split("Stack backtrace:", 1)[0].strip()
    where, error = _LOCATION.search(text), _ERROR.search(text)
    if where and error:
        excerpt = "\n".join(
            line for line in text.splitlines() if line.strip() and not _LOCATION.search(line) and not _ERROR.match(line)
        )
        return f"{where['where']}: {error['message']}" + (f"\n{excerpt}" if excerpt else "")
    return text or type(exc).__name__


def compile_policy_set(policies: PolicySet) -> regorus.Engine:
    """A regorus engine with every module and data document loaded; PolicyError names the file and line.

    Modules are registered under the path a user can open (`PolicySet.path_of`), so compile errors,
    test results and coverage all point at the file.
    """
    engine = regorus.Engine()
    for name, source in policies.modules:
        path = policies.path_of(name)
        try:
            engine.add_policy(path, source)
        except RuntimeError as exc:
            raise PolicyError(f"policy {path} does not compile: {clean_engine_message(exc)}") from exc
    if policies.data:
        engine.add_data_json(json.dumps(policies.data))
    return engine


class EmbeddedEngine:
    """Evaluates the decision in-process. Swapping `policies` replaces the compiled set atomically."""

    def __init__(self, policies: PolicySet) -> None:
        self._engine = compile_policy_set(policies)
        self._revision = policies.revision

    @property
    def revision(self) -> str:
        return self._revision

    async def swap(self, policies: PolicySet) -> None:
        """Compile the new set fully, then replace the old one (a failure leaves the old one serving)."""
        engine = compile_policy_set(policies)
        self._engine, self._revision = engine, policies.revision

    async def decide(self, input_doc: dict[str, Any]) -> PolicyDecision:
        value, revision = self._evaluate(DECISION_QUERY, input_doc)
        return decision_from_result(value, revision=revision)

    async def price(self, input_doc: dict[str, Any]) -> PriceQuote:
        value, revision = self._evaluate(PRICING_QUERY, input_doc)
        return quote_from_result(value, revision=revision)

    def _evaluate(self, query: str, input_doc: dict[str, Any]) -> tuple[Any, str]:
        """The query's value (None when undefined) and the revision that gave it.

        The query is a rule path, evaluated as a rule: half the cost of the same path as a query
        (bench/policy_eval.py), and integers stay exact through the 64-bit range money lives in."""
        engine, revision = self._engine, self._revision
        try:
            engine.set_input_json(_input_json(input_doc))
            raw = engine.eval_rule_as_json(query)
        except RuntimeError as exc:
            if _NO_RULE in str(exc):
                return None, revision  # no module defines the rule: undefined, as OPA answers
            raise PolicyError(f"policy evaluation failed: {clean_engine_message(exc)}") from exc
        return (None if raw == _UNDEFINED else json.loads(raw)), revision

    async def start(self) -> None:
        return None

    async def is_ready(self) -> bool:
        return True

    async def close(self) -> None:
        # regorus engines are unsendable: drop ours here, on the loop's thread. Left to the cyclic
        # garbage collector (a stopped app is cyclic garbage) it may be dropped on a worker thread,
        # which regorus reports as "Engine is unsendable, but is being dropped on another thread".
        vars(self).pop("_engine", None)
