"""Build the policy's input document (policies/INTERFACE.md) from facts and counter figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from ..counters import Figures
from ..facts import EntityFacts, RequestFacts
from ..money import format_nanos
from .candidates import Candidate

__all__ = ["build_input", "iso", "ledger_static", "ns"]

_ZERO = Figures(0, 0)


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def ns(value: datetime | None) -> int | None:
    """Nanoseconds since the epoch, exact (no float on the way)."""
    if value is None:
        return None
    delta = value - datetime(1970, 1, 1, tzinfo=value.tzinfo)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _entity(entity: EntityFacts | None, **extra: Any) -> dict[str, Any] | None:
    if entity is None:
        return None
    return {"id": entity.id, "blocked": entity.blocked, **extra}


class _Static(NamedTuple):
    """What a request's input takes from its facts alone, built once per cached facts."""

    parts: dict[str, Any]
    #: Per candidate ledger id: its input entry without the four figures that change per call.
    ledgers: dict[str, dict[str, Any]]


def _ledger_static(candidate: Candidate) -> dict[str, Any]:
    ref = candidate.ref
    return {
        "id": ref.id,
        "entity": {"type": ref.entity_type, "id": ref.entity_id},
        "window": ref.window,
        "limit": candidate.limit,
        "soft_budget": candidate.soft_budget,
        "period_start": iso(ref.period_start),
        "resets_at": iso(ref.period_end),
        "display": {
            "limit": format_nanos(candidate.limit) if candidate.limit is not None else None,
            "soft_budget": format_nanos(candidate.soft_budget) if candidate.soft_budget is not None else None,
        },
    }


def _ledger(static: dict[str, Any], figures: Figures) -> dict[str, Any]:
    return {
        **static,
        "spent": figures.spent,
        "reserved": figures.reserved,
        "display": {
            **static["display"],
            "spent": format_nanos(figures.spent),
            "reserved": format_nanos(figures.reserved),
        },
    }


def _entity_parts(facts: RequestFacts) -> dict[str, Any]:
    key = facts.key
    member = facts.team_member
    return {
        # A fact, not a policy: "api_key" (a Spendgate secret) or "gateway" (a principal it asserted).
        "identity": {"source": facts.identity_source},
        "key": None
        if key is None
        else {
            "id": key.id,
            "user_id": key.user_id,
            "team_id": key.team_id,
            "blocked": key.blocked,
            "expires_at": iso(key.expires_at),
            "expires_at_ns": ns(key.expires_at),
            "models": list(key.models),
        },
        "user": _entity(facts.user, org_id=facts.user.org_id if facts.user else None),
        "team": _entity(facts.team, org_id=facts.team.org_id if facts.team else None),
        "team_member": None
        if member is None
        else {"id": member.id, "team_id": member.id.split("/", 1)[0], "user_id": member.id.split("/", 1)[1],
              "blocked": member.blocked},
        "orgs": {org.id: {"id": org.id, "blocked": org.blocked} for org in facts.orgs},
        "end_user": _entity(facts.end_user, known=facts.end_user.known if facts.end_user else None),
        "tags": [_entity(tag, known=tag.known) for tag in facts.tags],
    }


def ledger_static(facts: RequestFacts, candidate: Candidate) -> dict[str, Any]:
    """A candidate's input entry without its figures, as kept with the facts (shared: read only)."""
    return _static(facts, (candidate,)).ledgers[candidate.ref.id]


def _static(facts: RequestFacts, candidates: Sequence[Candidate]) -> _Static:
    """The facts' part of the input, kept with the facts (shared, never mutated: build_input
    copies what it changes)."""
    found: _Static | None = facts.derived.get("input")
    if found is None:
        found = _Static(_entity_parts(facts), {})
        facts.derived["input"] = found
    for candidate in candidates:
        if candidate.ref.id not in found.ledgers:
            found.ledgers[candidate.ref.id] = _ledger_static(candidate)
    return found


def build_input(
    *,
    request_id: str,
    phase: str,
    model: str | None,
    end_user: str | None,
    tags: Sequence[str],
    estimated_cost: int | None,
    now: datetime,
    facts: RequestFacts,
    candidates: Sequence[Candidate],
    figures: Mapping[str, Figures],
) -> dict[str, Any]:
    static = _static(facts, candidates)
    return {
        "request": {
            "request_id": request_id,
            "phase": phase,
            "model": model,
            "end_user": end_user,
            "tags": list(tags),
            "estimated_cost": estimated_cost or None,
            "now": iso(now),
            "now_ns": ns(now),
        },
        **static.parts,
        "ledgers": [_ledger(static.ledgers[c.ref.id], figures.get(c.ref.id, _ZERO)) for c in candidates],
    }
