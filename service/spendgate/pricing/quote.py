"""Price a request's usage by asking the pricing policy (data.spendgate.pricing.result) — one engine call.

Python never computes a price: it builds the pricing input, asks, and turns an unpriced answer into
the error the caller can act on (422 unknown_price / invalid_request) or, when the policy data itself
is wrong (invalid_price, invalid_adjustment), a PolicyError.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import InvalidRequest, PolicyError, UnknownPrice
from ..ledgers import LedgerRef
from ..money import format_nanos
from ..policy.engine import PolicyEngine, PriceQuote
from .usage import RecordUsage

__all__ = ["charged_pricing_input", "decision_pricing_input", "price_usage", "priced_view", "record_cost"]


def decision_pricing_input(decision_input: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """The decision's input with `request.usage`: the policy finds the charged entities by attribution."""
    return {**decision_input, "request": {**decision_input["request"], "usage": usage}}


def charged_pricing_input(*, model: str | None, usage: dict[str, Any], charged: Iterable[LedgerRef]) -> dict[str, Any]:
    """For a request whose ledgers are already known (a record): the entities they belong to."""
    entities = {(ref.entity_type, ref.entity_id) for ref in charged}
    return {
        "request": {"model": model, "usage": usage},
        "charged": [{"type": kind, "id": entity_id} for kind, entity_id in sorted(entities)],
    }


async def price_usage(*, policy: PolicyEngine, input_doc: dict[str, Any], cost_field: str) -> PriceQuote:
    """A priced quote, or the error saying why the usage has no price (`cost_field`: what to send instead)."""
    quote = await policy.price(input_doc)
    if quote.priced:
        return quote
    message = quote.message or "no price"
    if quote.code == "unknown_price":
        raise UnknownPrice(model=quote.model, reason=message, cost_field=cost_field)
    if quote.code == "invalid_usage":
        raise InvalidRequest(field="usage", problem=message)
    raise PolicyError(f"the pricing policy refused to price ({quote.code}): {message}")


def priced_view(quote: PriceQuote) -> dict[str, Any]:
    """How a charged cost was priced, for the response (docs/api.md, `priced`)."""
    assert quote.cost is not None and quote.list_cost is not None
    return {
        "model": quote.model,
        "list_cost": format_nanos(quote.list_cost),
        "adjustment": quote.adjustment,
        "policy_revision": quote.revision,
    }


async def record_cost(
    *, policy: PolicyEngine, cost: int | None, usage: RecordUsage | None, model: str | None,
    charged: Iterable[LedgerRef],
) -> tuple[int, PriceQuote | None]:
    """The cost a record charges: an explicit `cost` wins; else `usage` priced by the policy; else 0."""
    if cost is not None or usage is None:
        return cost or 0, None
    quote = await price_usage(
        policy=policy,
        input_doc=charged_pricing_input(model=model, usage=usage.pricing_usage(), charged=charged),
        cost_field="cost",
    )
    assert quote.cost is not None  # price_usage returns priced quotes only
    return quote.cost, quote
