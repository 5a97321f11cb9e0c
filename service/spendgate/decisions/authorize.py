"""authorize: gather facts, ask the policy, reserve on exactly the ledgers it charges.

The policy decides; the counters' atomic reservation only guarantees that the figures the
policy saw have not been overtaken by a concurrent request. When they have, the policy is asked
again on the figures the reservation found — so every refusal carries the policy's own reason.

The first attempt may decide on figures this replica saw up to `figures_max_age` seconds ago
(counters/replica_memory.py): the common path is then one counters round trip, the commit. A refusal
is never given on such figures alone: the commit stores it only if they are still the current ones,
and otherwise answers the current ones, on which the policy is asked again — the check adds no round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from ..counters import Counters, Figures, Hold, SeenFigures, StoredDecision
from ..counters.holds import has_room as room_under
from ..errors import Unavailable
from ..facts import FactsCache, RequestFacts
from ..money import format_nanos
from ..policy import PolicyDecision, PolicyEngine
from ..pricing.quote import decision_pricing_input, price_usage
from .candidates import Candidate, candidate_ledgers, charged_candidates
from .models import AuthorizeRequest
from .policy_input import build_input, iso, ledger_static

__all__ = ["Authorized", "authorize", "charge_view", "has_room"]

#: Re-evaluations after losing a race for the last room on a ledger; each one sees newer figures.
_MAX_ATTEMPTS = 8
_ZERO = Figures(0, 0)


def has_room(*, figures: Figures, limit: int | None, amount: int) -> bool:
    """The reservation guard the counters apply atomically (API.md's admission inequality)."""
    return limit is None or room_under(spent=figures.spent, reserved=figures.reserved, limit=limit, amount=amount)


def charge_view(candidate: Candidate, figures: Figures, static: dict[str, Any]) -> dict[str, Any]:
    """One entry of `charges` in the authorize response: figures before this request's reservation.
    `static` is the candidate's policy-input entry (policy_input.ledger_static): its text forms."""
    ref = candidate.ref
    remaining = None
    if candidate.limit is not None:
        remaining = format_nanos(max(candidate.limit - figures.spent - figures.reserved, 0))
    return {
        "entity": {"type": ref.entity_type, "id": ref.entity_id},
        "window": ref.window,
        "spent": format_nanos(figures.spent),
        "reserved": format_nanos(figures.reserved),
        "limit": static["display"]["limit"],
        "soft_budget": static["display"]["soft_budget"],
        "remaining": remaining,
        "period_start": static["period_start"],
        "resets_at": static["resets_at"],
    }


class Authorized(NamedTuple):
    """The response body, and whether it is a stored decision answered again (a retry) rather than a new one."""

    body: dict[str, Any]
    replayed: bool


def _body(
    request: AuthorizeRequest, decision: PolicyDecision, facts: RequestFacts, charged: list[Candidate],
    figures: dict[str, Figures], expires_at: str | None, amount: int,
) -> dict[str, Any]:
    return {
        "request_id": request.request_id,
        "decision": "allow" if decision.allow else "deny",
        "reasons": list(decision.reasons),
        "charges": [
            charge_view(c, figures.get(c.ref.id, _ZERO), ledger_static(facts, c)) for c in charged
        ],
        "alerts": list(decision.alerts),
        "reservation": {"amount": format_nanos(amount), "expires_at": expires_at} if decision.allow else None,
        "policy_revision": decision.revision,
        "key_id": facts.key.id if facts.key else None,
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
    figures_max_age: float = 0.0,
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
    known: dict[str, Figures] | None = None  # figures a commit found, to decide on again
    for attempt in range(_MAX_ATTEMPTS):
        now = clock()
        candidates = candidate_ledgers(facts, now)
        refs = [c.ref for c in candidates]
        if attempt == 0:
            # Idempotency and the figures in one round trip (or none): a retry returns the first decision.
            prior, figures = await counters.prior_and_read(request.request_id, refs, max_age=figures_max_age)
            if prior is not None:
                return Authorized(prior.body, replayed=True)
        elif known is not None and all(ref.id in known for ref in refs):
            figures = known
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
        # Refused on remembered figures: refuse only on current ones. The commit stores the refusal only
        # while they are current, in its one round trip; else it answers what it found, decided on again.
        unchanged = figures if not decision.allow and isinstance(figures, SeenFigures) else None
        charged = charged_candidates(decision, candidates)
        expires_at = iso(now + timedelta(seconds=ttl_seconds))
        stored = StoredDecision(
            request.request_id,
            _body(request, decision, facts, charged, figures, expires_at, amount),
            tuple(c.ref for c in charged),
            amount if decision.allow else 0,
        )
        # A policy may admit past a limit on purpose (e.g. a zero-estimate knob): such a
        # ledger is held without a limit, since the policy has already decided about it.
        holds = [
            Hold(c.ref, c.limit if has_room(figures=figures.get(c.ref.id, _ZERO), limit=c.limit, amount=amount) else None)
            for c in charged
        ] if decision.allow else []
        outcome = await counters.commit_decision(
            decision=stored, holds=holds, ttl_seconds=ttl_seconds, now=now, unless_changed=unchanged
        )
        if outcome.status in ("committed", "duplicate") and outcome.stored is not None:
            return Authorized(outcome.stored.body, replayed=outcome.status == "duplicate")
        known = dict(outcome.figures) or None  # no room, or changed: decide again on the figures the commit found
    # Lost every race for the last room: contention, not a broken policy — a retry may well succeed.
    raise Unavailable(
        "room on these budgets", f"request {request.request_id!r}: the ledgers it touches kept changing under it"
    )
