"""Realistic decision inputs for the micro-benchmarks, built the way the service builds them.

`request_facts()` is what `FactsCache.load` returns for a team key (user, team, membership, org),
a per-model budget, an end user and two tags — daily and monthly windows — and `decision_inputs()`
turns it into candidate ledgers, counter figures and the policy input document exactly as
`spendgate.decisions.authorize` does (`candidate_ledgers` + `build_input`).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import _common  # noqa: F401  (puts service/ on sys.path)
from spendgate.counters import Figures
from spendgate.decisions.candidates import Candidate, candidate_ledgers
from spendgate.decisions.policy_input import build_input
from spendgate.facts import BudgetWindow, EntityFacts, KeyFacts, RequestFacts

__all__ = ["NANOS", "request_facts", "decision_inputs"]

NANOS = 1_000_000_000
SET_AT = datetime(2026, 1, 15, 9, 30, tzinfo=timezone.utc)


def _day(limit_usd: int, soft: bool = False) -> BudgetWindow:
    return BudgetWindow(limit_usd * NANOS, (limit_usd * NANOS * 9) // 10 if soft else None, "1d", "calendar", SET_AT)


def _month(limit_usd: int) -> BudgetWindow:
    return BudgetWindow(limit_usd * NANOS, None, "1mo", "rolling", SET_AT)


def request_facts(*, team_key: bool = True) -> RequestFacts:
    """A team key (or a personal key) with two windows, a gpt-4o budget, an end user and two tags."""
    key = KeyFacts(
        id="key-7", user_id="user-3", team_id="team-1" if team_key else None, blocked=False,
        expires_at=datetime(2027, 1, 1, tzinfo=timezone.utc), models=(),
        budgets=(_day(100_000, soft=True), _month(1_000_000)),
    )
    user = EntityFacts("user", "user-3", budgets=(_day(100_000),), org_id="bench-org")
    team = EntityFacts("team", "team-1", budgets=(_day(100_000, soft=True),), org_id="bench-org") if team_key else None
    member = EntityFacts("team_member", "team-1/user-3", budgets=(_day(100_000),)) if team_key else None
    org = EntityFacts("org", "bench-org", budgets=(_month(1_000_000), BudgetWindow(5_000_000 * NANOS, None, None,
                                                                                 "rolling", SET_AT)))
    return RequestFacts(
        key=key, user=user, team=team, team_member=member, orgs=(org,),
        key_model=EntityFacts("key_model", "key-7/gpt-4o", budgets=(_day(20_000),)),
        end_user=EntityFacts("end_user", "cust-40", known=True, budgets=(_day(1_000),)),
        tags=(EntityFacts("tag", "tag-2", budgets=(_month(100_000),)), EntityFacts("tag", "tag-5", known=False)),
    )


def decision_inputs(
    *, team_key: bool = True, now: datetime | None = None
) -> tuple[RequestFacts, list[Candidate], dict[str, Figures], dict[str, Any]]:
    """(facts, candidates, figures, policy input) for one authorize of an estimated $0.02."""
    now = now or datetime.now(timezone.utc).replace(microsecond=0) + timedelta(microseconds=123_456)
    facts = request_facts(team_key=team_key)
    candidates = candidate_ledgers(facts, now)
    figures = {
        c.ref.id: Figures(spent=(i + 1) * 1_234_567_890, reserved=(i % 3) * 20_000_000)
        for i, c in enumerate(candidates)
    }
    doc = build_input(
        request_id="req-0001", phase="authorize", model="gpt-4o", end_user="cust-40", tags=["tag-2", "tag-5"],
        estimated_cost=20_000_000, now=now, facts=facts, candidates=candidates, figures=figures,
    )
    return facts, candidates, figures, doc
