"""record: charge a finished request's real cost to exactly the ledgers authorize checked — once.

The spend event and the ledger increments commit in one database transaction before the
answer (durable); the counters are then brought up to the committed figures and the
reservation released. A retry finds the spend event, charges nothing, and heals the counters
in case the first attempt died between the two steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from ..alerts.events import annotate_charges, denial_codes, ref_of_charge_view
from ..counters import Counters, Figures
from ..errors import InvalidRequest, RecordConflict, Unavailable
from ..facts import FactsCache
from ..ledger_store import LedgerStore, RecordedSpend
from ..ledgers import LedgerRef, LedgerSnapshot, charged_refs, charges_json
from ..money import format_nanos, to_nanos
from ..policy import PolicyEngine
from ..pricing.quote import priced_view, record_cost
from ..tables import SpendEvent
from .candidates import candidate_ledgers, charged_candidates
from .models import RecordRequest
from .policy_input import build_input, iso

__all__ = ["record"]

log = logging.getLogger("spendgate.record")


class _Attribution(NamedTuple):
    ledgers: tuple[LedgerRef, ...]
    key_id: str | None
    model: str | None
    revision: str | None
    #: Per ledger id: (limit, soft budget) in force when it was decided — what alerts compare with.
    budgets: dict[str, tuple[int | None, int | None]] = {}
    #: The reason codes of the authorize denial this record ignores (None: it was not denied).
    denied: list[str] | None = None


def _amount(value: Any) -> int | None:
    return None if value is None else to_nanos(value)


def _from_prior(body: dict[str, Any], ledgers: tuple[LedgerRef, ...]) -> _Attribution:
    """The attribution an authorize stored. After a denial the request is still charged — the
    money is spent — to the ledgers the denying decision named in `charges` (the policy's
    attribution, which it computes for a denial as for an allow): so the ledgers checked at
    authorize are the ledgers charged (DESIGN invariant 1), and the record is flagged."""
    views = {ref_of_charge_view(c).id: c for c in body.get("charges") or ()}
    denied = body.get("decision") == "deny"
    if denied:
        ledgers = tuple(ref_of_charge_view(c) for c in body.get("charges") or ())
    budgets = {
        ledger_id: (_amount(view.get("limit")), _amount(view.get("soft_budget"))) for ledger_id, view in views.items()
    }
    codes = [str(r.get("code")) for r in body.get("reasons") or ()] if denied else None
    return _Attribution(ledgers, body.get("key_id"), body.get("model"), body.get("policy_revision"), budgets, codes)


def _describe(cost: int, outcome: str) -> str:
    return f"cost {format_nanos(cost)} with outcome {outcome!r}"


async def _attribute(
    request: RecordRequest, *, facts_cache: FactsCache, policy: PolicyEngine, clock: Callable[[], datetime]
) -> _Attribution:
    """No authorize is known: the attribution policy names the ledgers (the rule authorize uses)."""
    if request.api_key is None and request.principal is None:
        raise InvalidRequest(
            field="api_key",
            problem=f"no authorize is known for request_id {request.request_id!r}; send api_key or principal "
            "(and model, end_user, tags as authorize would) so the record can be attributed",
        )
    facts = await facts_cache.load(
        api_key=request.api_key, principal=request.principal, model=request.model,
        end_user=request.end_user, tags=request.tags,
    )
    now = clock()  # after the facts: budgets created on first sight start their periods before it
    candidates = candidate_ledgers(facts, now)
    decision = await policy.decide(
        build_input(
            request_id=request.request_id, phase="record", model=request.model, end_user=request.end_user,
            tags=request.tags, estimated_cost=None, now=now, facts=facts, candidates=candidates,
            figures={c.ref.id: Figures(0, 0) for c in candidates},
        )
    )
    charged = charged_candidates(decision, candidates)
    return _Attribution(
        tuple(c.ref for c in charged), facts.key.id if facts.key else None, request.model, decision.revision,
        {c.ref.id: (c.limit, c.soft_budget) for c in charged},
    )


def _body(recorded: RecordedSpend) -> dict[str, Any]:
    event = recorded.event
    spent = {snap.ledger_id: snap.spent for snap in recorded.snapshots}
    return {
        "request_id": event.request_id,
        "recorded": True,
        "duplicate": recorded.duplicate,
        "cost": format_nanos(event.cost),
        "outcome": event.outcome,
        "charges": [
            {
                "entity": {"type": ref.entity_type, "id": ref.entity_id},
                "window": ref.window,
                "amount": format_nanos(event.cost),
                "spent": format_nanos(spent[ref.id]) if ref.id in spent else None,
                "period_start": iso(ref.period_start),
                "resets_at": iso(ref.period_end),
            }
            for ref in charged_refs(event)
        ],
        "policy_revision": event.policy_revision,
        "after_denial": denial_codes(event) is not None,
    }


async def record(
    *,
    request: RecordRequest,
    facts_cache: FactsCache,
    counters: Counters,
    policy: PolicyEngine,
    ledger_store: LedgerStore,
    clock: Callable[[], datetime],
) -> dict[str, Any]:
    """The record response body (API.md); raises RecordConflict for a retry with other figures."""
    counters_down: Unavailable | None = None
    try:
        prior = await counters.prior_decision(request.request_id)
    except Unavailable as exc:
        # The record must still land: the ledger recognises a duplicate, an api_key or principal attributes.
        prior, counters_down = None, exc
    recorded: RecordedSpend | None = None
    if prior is not None:
        attribution = _from_prior(prior.body, prior.ledgers)
    else:
        # No decision in the counters: a duplicate whose decision expired or was flushed, or a
        # record with no prior authorize. The ledger knows which.
        existing = await ledger_store.find_event(request.request_id)
        if existing is not None:
            current = await ledger_store.snapshots([ref.id for ref in charged_refs(existing)])
            recorded = RecordedSpend(existing, True, tuple(current.values()))
            attribution = _Attribution((), None, None, None)
        elif counters_down is not None and request.api_key is None and request.principal is None:
            raise counters_down  # only the unreachable counters know the authorize's ledgers; retry
        else:
            attribution = await _attribute(request, facts_cache=facts_cache, policy=policy, clock=clock)
    cost, quote = await record_cost(
        policy=policy, cost=request.cost, usage=request.usage,
        model=recorded.event.model if recorded is not None else attribution.model or request.model,
        charged=charged_refs(recorded.event) if recorded is not None else attribution.ledgers,
    )
    if recorded is None:
        event = SpendEvent(
            request_id=request.request_id,
            cost=cost,
            outcome=request.outcome,
            key_id=attribution.key_id,
            model=attribution.model or request.model,
            charges=annotate_charges(charges_json(attribution.ledgers), attribution.budgets, attribution.denied),
            policy_revision=attribution.revision,
            created_at=clock(),
        )
        recorded = await ledger_store.record(
            event=event, ledgers=attribution.ledgers, limits={i: pair[0] for i, pair in attribution.budgets.items()}
        )
    first = recorded.event
    if recorded.duplicate and (first.cost, first.outcome) != (cost, request.outcome):
        raise RecordConflict(
            request_id=request.request_id,
            recorded=_describe(first.cost, first.outcome),
            attempted=_describe(cost, request.outcome),
        )
    await _settle(counters, request.request_id, recorded.snapshots)
    return {**_body(recorded), "priced": priced_view(quote) if quote is not None else None}


async def _settle(counters: Counters, request_id: str, snapshots: tuple[LedgerSnapshot, ...]) -> None:
    """Best effort: the record is already durable. A failure here is healed by the next record of
    the same ledgers (a newer snapshot), the reservation's expiry, or `spendgate reconcile`."""
    try:
        await counters.settle(request_id=request_id, snapshots=snapshots)
    except Unavailable as exc:
        log.warning("record %s is durable but the counters were not updated: %s", request_id, exc.message)
