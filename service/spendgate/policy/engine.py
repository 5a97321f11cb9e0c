"""The policy-engine port: two questions (the decision, the price of usage), two adapters.

Both adapters must give identical answers on the same input. An undefined or malformed decision
becomes a denial with a clear reason — never an allow; an undefined or malformed price becomes a
PolicyError — never a silent 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ..errors import PolicyError

if TYPE_CHECKING:
    from .loader import PolicySet

__all__ = [
    "DECISION_QUERY",
    "DECISION_PATH",
    "PRICING_PATH",
    "PRICING_QUERY",
    "PolicyDecision",
    "PolicyEngine",
    "PriceQuote",
    "decision_from_result",
    "quote_from_result",
]

DECISION_PATH = ("spendgate", "decision", "result")
DECISION_QUERY = "data." + ".".join(DECISION_PATH)
PRICING_PATH = ("spendgate", "pricing", "result")
PRICING_QUERY = "data." + ".".join(PRICING_PATH)


class PolicyDecision(NamedTuple):
    allow: bool
    #: Ledger ids (from the input's candidate ledgers) the request charges.
    charges: tuple[str, ...]
    reasons: tuple[dict[str, Any], ...]
    alerts: tuple[dict[str, Any], ...]
    #: Content hash of the policy set that decided.
    revision: str


class PriceQuote(NamedTuple):
    """The pricing policy's answer (policies/INTERFACE.md, "Pricing")."""

    priced: bool
    #: The price-table entry used (priced), or the request's model (not priced; may be None).
    model: str | None
    #: nano-USD after the adjustment; None when not priced.
    cost: int | None
    #: nano-USD at list price; None when not priced.
    list_cost: int | None
    #: {"entity": {"type", "id"}, "basis_points"} or None.
    adjustment: dict[str, Any] | None
    #: Why it is not priced: unknown_price, invalid_usage, invalid_price, invalid_adjustment (None when priced).
    code: str | None
    message: str | None
    revision: str


class PolicyEngine(Protocol):
    @property
    def revision(self) -> str: ...

    @property
    def evaluator(self) -> str:
        """What decides the live revision: "compiled" or "interpreter" (the embedded engine), or "opa"."""
        ...

    async def decide(self, input_doc: dict[str, Any]) -> PolicyDecision:
        """Evaluate `data.spendgate.decision.result` for the input document."""
        ...

    async def price(self, input_doc: dict[str, Any]) -> PriceQuote:
        """Evaluate `data.spendgate.pricing.result` for the input document (PolicyError if malformed)."""
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


def _is_nanos(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def quote_from_result(result: Any, *, revision: str) -> PriceQuote:
    """Validate the pricing policy's result; anything undefined or malformed is a PolicyError, never a 0."""

    def bad(why: str) -> PolicyError:
        return PolicyError(
            f"the pricing policy (data.spendgate.pricing.result) gave no usable price: {why}. "
            "Check the policies with `spendgate policy check` and the price table with `spendgate prices show`."
        )

    if not isinstance(result, dict):
        raise bad("the result is undefined" if result is None else "the result is not an object")
    priced, model = result.get("priced"), result.get("model")
    if not isinstance(priced, bool) or not (model is None or isinstance(model, str)):
        raise bad("`priced` must be a boolean and `model` a string or null")
    if not priced:
        code, message = result.get("code"), result.get("message")
        if not isinstance(code, str) or not isinstance(message, str):
            raise bad("an unpriced result must carry a `code` and a `message`")
        return PriceQuote(False, model, None, None, None, code, message, revision)
    cost, list_cost, adjustment = result.get("cost"), result.get("list_cost"), result.get("adjustment")
    if not _is_nanos(cost) or not _is_nanos(list_cost) or model is None:
        raise bad("`cost` and `list_cost` must be whole nano-USD amounts and `model` a string")
    if adjustment is not None and not (
        isinstance(adjustment, dict)
        and isinstance(adjustment.get("entity"), dict)
        and isinstance(adjustment.get("basis_points"), int)
    ):
        raise bad("`adjustment` must be null or {\"entity\", \"basis_points\"}")
    return PriceQuote(True, model, cost, list_cost, adjustment, None, None, revision)
