"""Build the policy's input document (policies/INTERFACE.md) from facts and counter figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..counters import Figures
from ..facts import EntityFacts, RequestFacts
from ..money import format_nanos
from .candidates import Candidate

__all__ = ["build_input", "iso", "ns"]


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


def _ledger(candidate: Candidate, figures: Figures) -> dict[str, Any]:
    ref = candidate.ref
    return {
        "id": ref.id,
        "entity": {"type": ref.entity_type, "id": ref.entity_id},
        "window": ref.window,
        "limit": candidate.limit,
        "soft_budget": candidate.soft_budget,
        "spent": figures.spent,
        "reserved": figures.reserved,
        "period_start": iso(ref.period_start),
        "resets_at": iso(ref.period_end),
        "display": {
            "spent": format_nanos(figures.spent),
            "reserved": format_nanos(figures.reserved),
            "limit": format_nanos(candidate.limit) if candidate.limit is not None else None,
            "soft_budget": format_nanos(candidate.soft_budget) if candidate.soft_budget is not None else None,
        },
    }


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
    key = facts.key
    member = facts.team_member
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
        "ledgers": [_ledger(c, figures.get(c.ref.id, Figures(0, 0))) for c in candidates],
    }
