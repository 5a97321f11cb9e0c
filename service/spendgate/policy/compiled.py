"""The decision through regorus's compiled virtual machine, used only while it decides like the interpreter.

regorus compiles a policy set into a program for its virtual machine (the RVM): the decision costs
about half of what the interpreter charges (bench/policy_eval.py). The VM is younger than the
interpreter and, in gordon-to-regorus 0.13.0, still gets some Rego wrong: a body statement
`x := input.missing` whose `x` nothing reads succeeds, and a partial set rule whose head value is
undefined adds it. The shipped policies use neither (tests/test_engine_parity.py compares the VM
with OPA's own engine), but a user's policy may. So the interpreter stays the reference:

- a policy revision is decided by the VM only after the VM gave the interpreter's answer on every
  probe input (`probes.py`); otherwise the interpreter decides that revision, and a warning says so;
- every `check_every`-th decision the VM makes is evaluated by the interpreter as well, and the
  interpreter's answer is the one served; at the first disagreement the revision goes back to the
  interpreter for good, with an error in the log.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import NamedTuple

import regorus

from .. import exact_json
from .engine import DECISION_QUERY
from .loader import PolicySet
from .probes import probe_inputs

__all__ = [
    "Answer",
    "CompiledDecision",
    "NotCompiled",
    "PROBE_COUNT",
    "compile_decision",
    "compile_decision_between_requests",
    "compiled_answer",
    "interpreter_answer",
    "same_answer",
]

#: How many probe inputs a revision's compiled decision must answer as the interpreter does.
PROBE_COUNT = 256


class CompiledDecision:
    """The decision entry point of one policy set, compiled for regorus's virtual machine."""

    __slots__ = ("_vm",)

    def __init__(self, vm: regorus.Rvm) -> None:
        self._vm = vm

    def evaluate(self, input_text: str) -> str:
        """The decision as JSON text (`"<undefined>"` when undefined); RuntimeError when it fails."""
        vm = self._vm
        vm.set_input_json(input_text)
        return vm.execute_entry_point(DECISION_QUERY)


class NotCompiled(NamedTuple):
    """Why the interpreter decides a policy set: a sentence that fits "the interpreter decides …: <why>"."""

    why: str


def compile_decision(policies: PolicySet, interpreter: regorus.Engine) -> CompiledDecision | NotCompiled:
    """`policies`' decision compiled for the VM, proven to answer every probe input as `interpreter` does.

    `interpreter` holds the same policy set; its input is left set to the last probe's.
    """
    for step in _proof(policies, interpreter):
        if step is not None:
            return step
    raise AssertionError("a proof ends with its verdict")


async def compile_decision_between_requests(
    policies: PolicySet, interpreter: regorus.Engine, *, probes_per_turn: int = 8
) -> CompiledDecision | NotCompiled:
    """`compile_decision`, letting the event loop serve requests every few probes (a reload's ~0.15 s)."""
    for number, step in enumerate(_proof(policies, interpreter), start=1):
        if step is not None:
            return step
        if number % probes_per_turn == 0:
            await asyncio.sleep(0)
    raise AssertionError("a proof ends with its verdict")


def _proof(policies: PolicySet, interpreter: regorus.Engine) -> Iterator[CompiledDecision | NotCompiled | None]:
    """None after each probe passed, then the verdict."""
    try:
        data = json.dumps(policies.data)
        modules = [(policies.path_of(name), source) for name, source in policies.modules]
        program = regorus.Program.compile_from_modules(data, modules, [DECISION_QUERY])
        vm = regorus.Rvm()
        vm.load_program(program)
        vm.set_data_json(data)
    except RuntimeError as exc:
        yield NotCompiled(f"the compiled engine cannot compile it ({_first_line(exc)})")
        return
    compiled = CompiledDecision(vm)
    for number, document in enumerate(probe_inputs(PROBE_COUNT)):
        text = exact_json.dumps_text(document)
        if not same_answer(compiled_answer(compiled, text), interpreter_answer(interpreter, text)):
            yield NotCompiled(
                f"the compiled engine decides probe input {number} (spendgate.policy.probes) unlike the interpreter"
            )
            return
        yield None
    yield compiled


#: An engine's answer: the result's JSON text, or the RuntimeError the evaluation raised.
Answer = str | RuntimeError


def compiled_answer(compiled: CompiledDecision, input_text: str) -> Answer:
    try:
        return compiled.evaluate(input_text)
    except RuntimeError as exc:
        return exc


def interpreter_answer(interpreter: regorus.Engine, input_text: str, query: str = DECISION_QUERY) -> Answer:
    """The interpreter's answer to `query`, a rule path evaluated as a rule: half the cost of the same
    path as a query (bench/policy_eval.py), and integers stay exact through the 64-bit range money lives in."""
    try:
        interpreter.set_input_json(input_text)
        return interpreter.eval_rule_as_json(query)
    except RuntimeError as exc:
        return exc


def same_answer(one: Answer, other: Answer) -> bool:
    """Both failed, or both gave the same document: key order and spacing aside, but not types
    (`true` is not `1`, nor `1` `1.0`, although Python's values compare equal)."""
    if isinstance(one, RuntimeError) or isinstance(other, RuntimeError):
        return isinstance(one, RuntimeError) and isinstance(other, RuntimeError)
    return one == other or _canonical(one) == _canonical(other)


def _canonical(text: str) -> str:
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
