"""The embedded adapter: policies compiled in-process by regorus (no server needed)."""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, NamedTuple

# regorus captures a Rust backtrace for every error when RUST_BACKTRACE is set (~50 ms each,
# and a policy error is an ordinary event here); library backtraces are never shown anyway.
os.environ.setdefault("RUST_LIB_BACKTRACE", "0")

import regorus  # noqa: E402  (after the environment it reads)

from .. import exact_json
from ..errors import PolicyError
from .compiled import (
    Answer,
    CompiledDecision,
    NotCompiled,
    compile_decision,
    compile_decision_between_requests,
    compiled_answer,
    interpreter_answer,
    same_answer,
)
from .engine import PRICING_QUERY, PolicyDecision, PriceQuote, decision_from_result, quote_from_result
from .loader import PolicySet

__all__ = ["EmbeddedEngine", "compile_policy_set", "clean_engine_message"]

log = logging.getLogger("spendgate.policy")

#: What regorus answers for a rule that is defined but undefined for this input.
_UNDEFINED = '"<undefined>"'
#: What regorus raises for a rule path no module defines.
_NO_RULE = "not a valid rule path"


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


class _Compiled(NamedTuple):
    """One policy set as the engine evaluates it, swapped as a whole."""

    interpreter: regorus.Engine
    #: The decision compiled for regorus's VM, or None while the interpreter decides (compiled.py).
    decision: CompiledDecision | None
    revision: str


class EmbeddedEngine:
    """Evaluates the decision in-process. Swapping `policies` replaces the compiled set atomically.

    With `compiled` (the default), decisions go through regorus's virtual machine while it decides
    like the interpreter (see compiled.py); every `check_every`-th of them is also evaluated by the
    interpreter, whose answer is served (0: none is). Pricing always uses the interpreter.
    """

    def __init__(self, policies: PolicySet, *, compiled: bool = True, check_every: int = 100) -> None:
        if check_every < 0:
            raise ValueError("check_every must be 0 (never) or a positive number of decisions")
        self._use_compiled = compiled
        self._check_every = check_every
        self._until_check = check_every
        self._current = self._compile(policies)

    def _compile(self, policies: PolicySet) -> _Compiled:
        interpreter = compile_policy_set(policies)
        decision = compile_decision(policies, interpreter) if self._use_compiled else None
        return self._compiled(policies, interpreter, decision)

    async def _compile_between_requests(self, policies: PolicySet) -> _Compiled:
        interpreter = compile_policy_set(policies)
        decision = await compile_decision_between_requests(policies, interpreter) if self._use_compiled else None
        return self._compiled(policies, interpreter, decision)

    @staticmethod
    def _compiled(
        policies: PolicySet, interpreter: regorus.Engine, decision: CompiledDecision | NotCompiled | None
    ) -> _Compiled:
        if isinstance(decision, NotCompiled):
            log.warning("policy revision %s: %s; the interpreter decides this revision", policies.revision, decision.why)
            decision = None
        return _Compiled(interpreter, decision, policies.revision)

    @property
    def revision(self) -> str:
        return self._current.revision

    @property
    def compiled(self) -> bool:
        """Whether the current revision's decisions go through the compiled VM."""
        return self._current.decision is not None

    @property
    def evaluator(self) -> str:
        return "compiled" if self.compiled else "interpreter"

    async def swap(self, policies: PolicySet) -> None:
        """Compile the new set fully, then replace the old one (a failure leaves the old one serving).

        The old one serves the requests that arrive while the new one's compiled decision is proven."""
        self._current = await self._compile_between_requests(policies)

    async def decide(self, input_doc: dict[str, Any]) -> PolicyDecision:
        current = self._current
        text = exact_json.dumps_text(input_doc)
        if current.decision is None:
            value = _value(interpreter_answer(current.interpreter, text))
        elif self._until_check != 1 or not self._check_every:
            self._until_check -= 1
            try:
                value = _value(current.decision.evaluate(text))
            except RuntimeError:  # the interpreter says what went wrong, or decides
                value = self._checked(current, text, input_doc)
        else:
            self._until_check = self._check_every
            value = self._checked(current, text, input_doc)
        return decision_from_result(value, revision=current.revision)

    def _checked(self, current: _Compiled, text: str, input_doc: dict[str, Any]) -> Any:
        """The interpreter's decision, after comparing the compiled one with it."""
        assert current.decision is not None
        compiled = compiled_answer(current.decision, text)
        reference = interpreter_answer(current.interpreter, text)
        if not same_answer(compiled, reference):
            request = input_doc.get("request")
            log.error(
                "policy revision %s: the compiled engine decided request %s unlike the interpreter; the "
                "interpreter decides this revision from now on (docs/operations.md, \"The compiled policy engine\")",
                current.revision,
                request.get("request_id") if isinstance(request, dict) else None,
            )
            if self._current is current:
                self._current = current._replace(decision=None)
        return _value(reference)

    async def price(self, input_doc: dict[str, Any]) -> PriceQuote:
        current = self._current
        value = _value(interpreter_answer(current.interpreter, exact_json.dumps_text(input_doc), PRICING_QUERY))
        return quote_from_result(value, revision=current.revision)

    async def start(self) -> None:
        return None

    async def is_ready(self) -> bool:
        return True

    async def close(self) -> None:
        # regorus engines and VMs are unsendable: drop ours here, on the loop's thread. Left to the
        # cyclic garbage collector (a stopped app is cyclic garbage) they may be dropped on a worker
        # thread, which regorus reports as "Engine is unsendable, but is being dropped on another thread".
        vars(self).pop("_current", None)


def _value(answer: Answer) -> Any:
    """The document an engine answered (None when undefined); PolicyError when the evaluation failed."""
    if isinstance(answer, RuntimeError):
        if _NO_RULE in str(answer):
            return None  # no module defines the rule: undefined, as OPA answers
        raise PolicyError(f"policy evaluation failed: {clean_engine_message(answer)}") from answer
    return None if answer == _UNDEFINED else exact_json.loads(answer)
