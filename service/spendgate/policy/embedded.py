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

from ..errors import PolicyError
from .engine import DECISION_QUERY, PolicyDecision, decision_from_result
from .loader import PolicySet

__all__ = ["EmbeddedEngine", "compile_policy_set", "clean_engine_message"]


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
        engine, revision = self._engine, self._revision
        try:
            engine.set_input_json(json.dumps(input_doc))
            # A query, not eval_rule: that raises "not a valid rule path" when no module defines the
            # rule at all, where OPA (and the port) answer undefined, i.e. a denial.
            raw = engine.eval_query_as_json(DECISION_QUERY)
        except RuntimeError as exc:
            raise PolicyError(f"policy evaluation failed: {clean_engine_message(exc)}") from exc
        rows = json.loads(raw).get("result") or []
        return decision_from_result(rows[0]["expressions"][0]["value"] if rows else None, revision=revision)

    async def start(self) -> None:
        return None

    async def is_ready(self) -> bool:
        return True

    async def close(self) -> None:
        # regorus engines are unsendable: drop ours here, on the loop's thread. Left to the cyclic
        # garbage collector (a stopped app is cyclic garbage) it may be dropped on a worker thread,
        # which regorus reports as "Engine is unsendable, but is being dropped on another thread".
        vars(self).pop("_engine", None)
