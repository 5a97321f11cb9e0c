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

from ..counters import Counters, Figures
from ..errors import InvalidRequest, RecordConflict, Unavailable
from ..facts import FactsCache
from ..ledgers import LedgerRef, LedgerSnapshot, LedgerStore, RecordedSpend, charged_refs, charges_json
from ..money import format_nanos
from ..policy import PolicyEngine
from ..tables import SpendEvent
from .candidates import candidate_ledgers
from .models import RecordRequest
from .policy_input import build_input, iso

__all__ = ["record"]

log = logging.getLogger("spendgate.record")


class _Attribution(NamedTuple):
    ledgers: tuple[LedgerRef, ...]
    key_id: str | None
    model: str | None
    revision: str | None


def _describe(cost: int, outcome: str) -> str:
    return f"cost {format_nanos(cost)} with outcome {outcome!r}"


async def _attribute(
    request: RecordRequest, *, facts_cache: FactsCache, policy: PolicyEngine, now: datetime
) -> _Attribution:
    """No authorize is known: the attribution policy names the ledgers (the rule authorize uses)."""
    if request.api_key is None:
        raise InvalidRequest(
            field="api_key",
            problem=f"no authorize is known for request_id {request.request_id!r}; send api_key "
            "(and model, end_user, tags as authorize would) so the record can be attributed",
        )
    facts = await facts_cache.load(
        api_key=request.api_key, model=request.model, end_user=request.end_user, tags=request.tags
    )
    candidates = candidate_ledgers(facts, now)
    decision = await policy.decide(
        build_input(
            request_id=request.request_id, phase="record", model=request.model, end_user=request.end_user,
            tags=request.tags, estimated_cost=None, now=now, facts=facts, candidates=candidates,
            figures={c.ref.id: Figures(0, 0) for c in candidates},
        )
    )
    by_id = {c.ref.id: c.ref for c in candidates}
    ledgers = tuple(by_id[ledger] for ledger in decision.charges if ledger in by_id)
    return _Attribution(ledgers, facts.key.id if facts.key else None, request.model, decision.revision)


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
        # The record must still land: the ledger recognises a duplicate, an api_key attributes.
        prior, counters_down = None, exc
    recorded: RecordedSpend | None = None
    if prior is not None:
        body = prior.body
        attribution = _Attribution(prior.ledgers, body.get("key_id"), body.get("model"), body.get("policy_revision"))
    else:
        # No decision in the counters: a duplicate whose decision expired or was flushed, or a
        # record with no prior authorize. The ledger knows which.
        existing = await ledger_store.find_event(request.request_id)
        if existing is not None:
            current = await ledger_store.snapshots([ref.id for ref in charged_refs(existing)])
            recorded = RecordedSpend(existing, True, tuple(current.values()))
            attribution = _Attribution((), None, None, None)
        elif counters_down is not None and request.api_key is None:
            raise counters_down  # only the unreachable counters know the authorize's ledgers; retry
        else:
            attribution = await _attribute(request, facts_cache=facts_cache, policy=policy, now=clock())
    if recorded is None:
        event = SpendEvent(
            request_id=request.request_id,
            cost=request.cost,
            outcome=request.outcome,
            key_id=attribution.key_id,
            model=attribution.model or request.model,
            charges=charges_json(attribution.ledgers),
            policy_revision=attribution.revision,
            created_at=clock(),
        )
        recorded = await ledger_store.record(event=event, ledgers=attribution.ledgers)
    first = recorded.event
    if recorded.duplicate and (first.cost, first.outcome) != (request.cost, request.outcome):
        raise RecordConflict(
            request_id=request.request_id,
            recorded=_describe(first.cost, first.outcome),
            attempted=_describe(request.cost, request.outcome),
        )
    await _settle(counters, request.request_id, recorded.snapshots)
    return _body(recorded)


async def _settle(counters: Counters, request_id: str, snapshots: tuple[LedgerSnapshot, ...]) -> None:
    """Best effort: the record is already durable. A failure here is healed by the next record of
    the same ledgers (a newer snapshot), the reservation's expiry, or `spendgate reconcile`."""
    try:
        await counters.settle(request_id=request_id, snapshots=snapshots)
    except Unavailable as exc:
        log.warning("record %s is durable but the counters were not updated: %s", request_id, exc.message)
