"""Candidate ledgers: every ledger a request could charge, one per budget window of every entity.

Which of them are charged is the attribution policy's call, not this module's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from ..errors import PolicyError
from ..facts import EntityFacts, RequestFacts
from ..ledgers import LedgerRef, ledger_for_budget
from ..policy import PolicyDecision

__all__ = ["Candidate", "candidate_ledgers", "charged_candidates"]


class Candidate(NamedTuple):
    ref: LedgerRef
    limit: int | None
    soft_budget: int | None


def _for_entity(entity: EntityFacts, at: datetime) -> list[Candidate]:
    if not entity.budgets:
        return [Candidate(ledger_for_budget(entity_type=entity.type, entity_id=entity.id, budget=None, at=at), None, None)]
    return [
        Candidate(
            ledger_for_budget(entity_type=entity.type, entity_id=entity.id, budget=window, at=at),
            window.max_budget,
            window.soft_budget,
        )
        for window in entity.budgets
    ]


def _compute(facts: RequestFacts, at: datetime) -> list[Candidate]:
    seen: dict[str, Candidate] = {}
    for entity in facts.entities():
        for candidate in _for_entity(entity, at):
            seen.setdefault(candidate.ref.id, candidate)
    return list(seen.values())


def candidate_ledgers(facts: RequestFacts, at: datetime) -> list[Candidate]:
    """All candidates, in a stable order (entity order of `RequestFacts.entities`, then window).

    Periods are computed once per cached facts and reused while `at` lies inside every
    candidate's period (their latest start, their earliest end): the same ledgers, exactly."""
    found = facts.derived.get("candidates")
    if found is not None:
        start, end, candidates = found
        if start <= at and (end is None or at < end):
            return list(candidates)
    candidates = _compute(facts, at)
    ends = [c.ref.period_end for c in candidates if c.ref.period_end is not None]
    start = max((c.ref.period_start for c in candidates if c.ref.period_end is not None), default=at)
    facts.derived["candidates"] = (min(start, at), min(ends) if ends else None, tuple(candidates))
    return candidates


def charged_candidates(decision: PolicyDecision, candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates the policy charges, in its order, once each — for authorize and record alike,
    so the ledgers checked are the ledgers charged (DESIGN invariant 1). A charge naming a ledger
    that was not offered is a policy bug, refused in both phases rather than dropped in one."""
    by_id = {c.ref.id: c for c in candidates}
    unknown = [ledger for ledger in decision.charges if ledger not in by_id]
    if unknown:
        raise PolicyError(f"the policy charged ledgers that were not candidates: {', '.join(unknown)}")
    return [by_id[ledger] for ledger in dict.fromkeys(decision.charges)]
