"""authorize: gather facts, ask the policy, reserve on exactly the ledgers it charges.

The policy decides; the counters' atomic reservation only guarantees that the figures the
policy saw have not been overtaken by a concurrent request. When they have, the figures are
read again and the policy asked again — so every refusal carries the policy's own reason.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from ..counters import Counters, Figures, Hold, StoredDecision
from ..errors import Unavailable
from ..facts import FactsCache
from ..money import format_nanos
from ..policy import PolicyDecision, PolicyEngine
from ..pricing.quote import decision_pricing_input, price_usage
from .candidates import Candidate, candidate_ledgers, charged_candidates
from .models import AuthorizeRequest
from .policy_input import build_input, iso

__all__ = ["Authorized", "authorize", "charge_view", "has_room"]

#: Re-evaluations after losing a race for the last room on a ledger; each one sees newer figures.
_MAX_ATTEMPTS = 8


def has_room(*, figures: Figures, limit: int | None, amount: int) -> bool:
    """The reservation guard the counters apply atomically (API.md's admission inequality)."""
    if limit is None:
        return True
    used = figures.spent + figures.reserved
    return used + amount <= limit if amount > 0 else used < limit


def charge_view(candidate: Candidate, figures: Figures) -> dict[str, Any]:
    """One entry of `charges` in the authorize response: figures before this request's reservation."""
    ref = candidate.ref
    remaining = None
    if candidate.limit is not None:
        remaining = format_nanos(max(candidate.limit - figures.spent - figures.reserved, 0))
    return {
        "entity": {"type": ref.entity_type, "id": ref.entity_id},
        "window": ref.window,
        "spent": format_nanos(figures.spent),
        "reserved": format_nanos(figures.reserved),
        "limit": format_nanos(candidate.limit) if candidate.limit is not None else None,
        "soft_budget": format_nanos(candidate.soft_budget) if candidate.soft_budget is not None else None,
        "remaining": remaining,
        "period_start": iso(ref.period_start),
        "resets_at": iso(ref.period_end),
    }


class Authorized(NamedTuple):
    """The response body, and whether it is a stored decision answered again (a retry) rather than a new one."""

    body: dict[str, Any]
    replayed: bool


def _body(
    request: AuthorizeRequest, decision: PolicyDecision, charged: list[Candidate], figures: dict[str, Figures],
    expires_at: str | None, key_id: str | None, amount: int,
) -> dict[str, Any]:
    return {
        "request_id": request.request_id,
        "decision": "allow" if decision.allow else "deny",
        "reasons": list(decision.reasons),
        "charges": [charge_view(c, figures.get(c.ref.id, Figures(0, 0))) for c in charged],
        "alerts": list(decision.alerts),
        "reservation": {"amount": format_nanos(amount), "expires_at": expires_at} if decision.allow else None,
        "policy_revision": decision.revision,
        "key_id": key_id,
        "model": request.model,
    }


async def authorize(
    *,
    request: AuthorizeRequest,
    facts_cache: FactsCache,
    counters: Counters,
    policy: PolicyEngine,
    ttl_seconds: int,
    clock: Callable[[], datetime],
) -> Authorized:
    """The authorize response body (API.md). Idempotent per request id."""
    try:
        facts = await facts_cache.load(
            api_key=request.api_key, principal=request.principal, model=request.model,
            end_user=request.end_user, tags=request.tags,
        )
    except Unavailable:
        # The database is down, but a retry of a request already decided still gets its answer.
        prior = await counters.prior_decision(request.request_id)
        if prior is not None:
            return Authorized(prior.body, replayed=True)
        raise
    # The explicit estimate wins; else `usage` is priced once, by the pricing policy, before the first
    # decision, which then sees the price as `estimated_cost`. A second query rather than pricing inside
    # the decision: the decision document (and the admission rules reading `estimated_cost`) stay as
    # they are, requests that send a cost keep one query, and record asks the very same question.
    estimate = request.estimated_cost
    for attempt in range(_MAX_ATTEMPTS):
        now = clock()
        candidates = candidate_ledgers(facts, now)
        refs = [c.ref for c in candidates]
        if attempt == 0:
            # Idempotency and the figures in one round trip: a retry returns the first decision.
            prior, figures = await counters.prior_and_read(request.request_id, refs)
            if prior is not None:
                return Authorized(prior.body, replayed=True)
        else:
            figures = await counters.read(refs)
        input_doc = build_input(
            request_id=request.request_id, phase="authorize", model=request.model,
            end_user=request.end_user, tags=request.tags, estimated_cost=estimate,
            now=now, facts=facts, candidates=candidates, figures=figures,
        )
        if estimate is None and request.usage is not None:
            quote = await price_usage(
                policy=policy, input_doc=decision_pricing_input(input_doc, request.usage.pricing_usage()),
                cost_field="estimated_cost",
            )
            estimate = quote.cost
            input_doc["request"]["estimated_cost"] = estimate or None
        amount = estimate or 0
        decision = await policy.decide(input_doc)
        charged = charged_candidates(decision, candidates)
        expires_at = iso(now + timedelta(seconds=ttl_seconds))
        stored = StoredDecision(
            request.request_id,
            _body(request, decision, charged, figures, expires_at, facts.key.id if facts.key else None, amount),
            tuple(c.ref for c in charged),
            amount if decision.allow else 0,
        )
        # A policy may admit past a limit on purpose (e.g. a zero-estimate knob): such a
        # ledger is held without a limit, since the policy has already decided about it.
        holds = [
            Hold(c.ref, c.limit if has_room(figures=figures.get(c.ref.id, Figures(0, 0)), limit=c.limit, amount=amount) else None)
            for c in charged
        ] if decision.allow else []
        outcome = await counters.commit_decision(decision=stored, holds=holds, ttl_seconds=ttl_seconds, now=now)
        if outcome.status in ("committed", "duplicate") and outcome.stored is not None:
            return Authorized(outcome.stored.body, replayed=outcome.status == "duplicate")
    # Lost every race for the last room: contention, not a broken policy — a retry may well succeed.
    raise Unavailable(
        "room on these budgets", f"request {request.request_id!r}: the ledgers it touches kept changing under it"
    )
