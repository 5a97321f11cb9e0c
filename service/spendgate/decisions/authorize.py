"""authorize: gather facts, ask the policy, reserve on exactly the ledgers it charges.

The policy decides; the counters' atomic reservation only guarantees that the figures the
policy saw have not been overtaken by a concurrent request. When they have, the figures are
read again and the policy asked again — so every refusal carries the policy's own reason.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from ..counters import Counters, Figures, Hold, StoredDecision
from ..errors import PolicyError, Unavailable
from ..facts import FactsCache
from ..money import format_nanos
from ..policy import PolicyDecision, PolicyEngine
from .candidates import Candidate, candidate_ledgers
from .models import AuthorizeRequest
from .policy_input import build_input, iso

__all__ = ["authorize", "charge_view", "has_room"]

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
        "remaining": remaining,
        "period_start": iso(ref.period_start),
        "resets_at": iso(ref.period_end),
    }


def _charged(decision: PolicyDecision, candidates: list[Candidate]) -> list[Candidate]:
    by_id = {c.ref.id: c for c in candidates}
    unknown = [ledger for ledger in decision.charges if ledger not in by_id]
    if unknown:
        raise PolicyError(f"the policy charged ledgers that were not candidates: {', '.join(unknown)}")
    return [by_id[ledger] for ledger in dict.fromkeys(decision.charges)]


def _body(
    request: AuthorizeRequest, decision: PolicyDecision, charged: list[Candidate], figures: dict[str, Figures],
    expires_at: str | None, key_id: str | None,
) -> dict[str, Any]:
    amount = request.estimated_cost or 0
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
) -> dict[str, Any]:
    """The authorize response body (API.md). Idempotent per request id."""
    try:
        facts = await facts_cache.load(
            api_key=request.api_key, model=request.model, end_user=request.end_user, tags=request.tags
        )
    except Unavailable:
        # The database is down, but a retry of a request already decided still gets its answer.
        prior = await counters.prior_decision(request.request_id)
        if prior is not None:
            return prior.body
        raise
    amount = request.estimated_cost or 0
    for attempt in range(_MAX_ATTEMPTS):
        now = clock()
        candidates = candidate_ledgers(facts, now)
        refs = [c.ref for c in candidates]
        if attempt == 0:
            # Idempotency and the figures in one round trip: a retry returns the first decision.
            prior, figures = await counters.prior_and_read(request.request_id, refs)
            if prior is not None:
                return prior.body
        else:
            figures = await counters.read(refs)
        decision = await policy.decide(
            build_input(
                request_id=request.request_id, phase="authorize", model=request.model,
                end_user=request.end_user, tags=request.tags, estimated_cost=request.estimated_cost,
                now=now, facts=facts, candidates=candidates, figures=figures,
            )
        )
        charged = _charged(decision, candidates)
        expires_at = iso(now + timedelta(seconds=ttl_seconds))
        stored = StoredDecision(
            request.request_id,
            _body(request, decision, charged, figures, expires_at, facts.key.id if facts.key else None),
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
            return outcome.stored.body
    raise PolicyError(
        f"request {request.request_id!r}: the budgets it touches kept changing under it; retry the authorize"
    )
