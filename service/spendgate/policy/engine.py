"""The policy-engine port: one question (the decision document), two adapters.

Both adapters must give identical decisions on the same input; both turn an undefined or
malformed result into a denial with a clear reason — never an allow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from .loader import PolicySet

__all__ = ["DECISION_QUERY", "DECISION_PATH", "PolicyDecision", "PolicyEngine", "decision_from_result"]

DECISION_PATH = ("spendgate", "decision", "result")
DECISION_QUERY = "data." + ".".join(DECISION_PATH)


class PolicyDecision(NamedTuple):
    allow: bool
    #: Ledger ids (from the input's candidate ledgers) the request charges.
    charges: tuple[str, ...]
    reasons: tuple[dict[str, Any], ...]
    alerts: tuple[dict[str, Any], ...]
    #: Content hash of the policy set that decided.
    revision: str


class PolicyEngine(Protocol):
    @property
    def revision(self) -> str: ...

    async def decide(self, input_doc: dict[str, Any]) -> PolicyDecision:
        """Evaluate `data.spendgate.decision.result` for the input document."""
        ...

    async def start(self) -> None:
        """Make the engine ready to decide (the OPA adapter pushes the policies)."""
        ...

    async def is_ready(self) -> bool: ...

    async def swap(self, policies: PolicySet) -> None:
        """Replace the live policy set atomically; on any failure the old set keeps serving."""
        ...

    async def close(self) -> None: ...


def _undefined(revision: str, why: str) -> PolicyDecision:
    reason = {
        "code": "policy_undefined",
        "entity": None,
        "message": f"the policy gave no usable decision ({why}); refusing. Check the policies with `spendgate policy check`.",
    }
    return PolicyDecision(False, (), (reason,), (), revision)


def decision_from_result(result: Any, *, revision: str) -> PolicyDecision:
    """Validate the policy's result document; anything unexpected is a denial, never an allow."""
    if not isinstance(result, dict):
        return _undefined(revision, "the result is undefined" if result is None else "the result is not an object")
    allow, charges = result.get("allow"), result.get("charges")
    reasons, alerts = result.get("reasons", []), result.get("alerts", [])
    if not isinstance(allow, bool) or not isinstance(charges, list) or not all(isinstance(c, str) for c in charges):
        return _undefined(revision, "`allow` must be a boolean and `charges` a list of ledger ids")
    if not isinstance(reasons, list) or not isinstance(alerts, list):
        return _undefined(revision, "`reasons` and `alerts` must be lists")
    if allow and reasons:
        return _undefined(revision, "it allows the request while giving reasons to refuse it")
    if not allow and not reasons:
        return _undefined(revision, "it refuses the request without a reason")
    return PolicyDecision(allow, tuple(charges), tuple(reasons), tuple(alerts), revision)
