"""What the decision path derives once per cached facts is exactly what it would derive per request.

`candidate_ledgers` keeps the candidates of the current periods with the facts, and `build_input`
keeps the facts' part of the input; `format_nanos` formats with integers. Each is compared with
a fresh derivation (new facts, nothing kept) or an exact Decimal reference.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from spendgate.counters import Figures
from spendgate.decisions.candidates import candidate_ledgers
from spendgate.decisions.policy_input import build_input
from spendgate.facts import BudgetWindow, EntityFacts, KeyFacts, RequestFacts
from spendgate.money import format_nanos

SET_AT = datetime(2026, 1, 15, 9, 30, 17, tzinfo=timezone.utc)
START = datetime(2026, 11, 28, 22, 0, tzinfo=timezone.utc)


def _facts() -> RequestFacts:
    """A key with a calendar day, a rolling 7 h window and a monthly one; a never-resetting org budget."""
    key = KeyFacts(
        id="key-1", user_id="user-1", team_id=None, blocked=False, expires_at=None, models=(),
        budgets=(
            BudgetWindow(10**10, None, "1d", "calendar", SET_AT),
            BudgetWindow(10**10, 10**9, "7h", "rolling", SET_AT),
        ),
    )
    user = EntityFacts("user", "user-1", budgets=(BudgetWindow(10**11, None, "1mo", "calendar", SET_AT),), org_id="o")
    org = EntityFacts("org", "o", budgets=(BudgetWindow(10**12, None, None, "rolling", SET_AT),))
    return RequestFacts(key=key, user=user, orgs=(org,), end_user=EntityFacts("end_user", "c", known=False))


def _ids(facts: RequestFacts, at: datetime) -> list[str]:
    return [c.ref.id for c in candidate_ledgers(facts, at)]


@settings(max_examples=300, deadline=None, database=None)
@given(steps=st.lists(st.integers(min_value=-3 * 86_400_000_000, max_value=40 * 86_400_000_000), min_size=1, max_size=12))
def test_kept_candidates_equal_fresh_ones_at_every_instant(steps: list[int]) -> None:
    """Instants in any order — across day, 7 h and month boundaries, backwards too — give the
    ledgers a fresh computation gives (a kept period used past its end would charge the old one)."""
    kept = _facts()
    for micros in steps:
        at = START + timedelta(microseconds=micros)
        assert candidate_ledgers(kept, at) == candidate_ledgers(_facts(), at)


def test_the_next_period_starts_exactly_at_the_boundary() -> None:
    kept = _facts()
    midnight = datetime(2026, 11, 29, tzinfo=timezone.utc)
    before = _ids(kept, midnight - timedelta(microseconds=1))
    after = _ids(kept, midnight)
    day = [ledger for ledger in after if ledger.startswith("key:key-1:1d:")]
    assert day == [f"key:key-1:1d:{int(midnight.timestamp())}"]
    assert day[0] not in before
    assert "candidates" in kept.derived  # the second call was answered from what the first kept, then renewed


def test_the_kept_input_part_is_never_changed_by_a_request() -> None:
    """Two requests on the same facts with different figures: each input has its own figures,
    and the first input is unchanged by building the second."""
    facts = _facts()
    candidates = candidate_ledgers(facts, START)
    first_id = candidates[0].ref.id

    def doc(spent: int) -> dict:
        return build_input(
            request_id=f"r{spent}", phase="authorize", model="m", end_user="c", tags=[], estimated_cost=5,
            now=START, facts=facts, candidates=candidates, figures={first_id: Figures(spent, 1)},
        )

    first = doc(1_500_000_000)
    snapshot = repr(first)
    second = doc(7)
    assert repr(first) == snapshot
    assert first["ledgers"][0]["spent"] == 1_500_000_000 and first["ledgers"][0]["display"]["spent"] == "1.500000"
    assert second["ledgers"][0]["spent"] == 7 and second["ledgers"][0]["display"]["spent"] == "0.000000007"
    assert second["ledgers"][0]["display"]["limit"] == "10.000000"
    assert second["ledgers"][1]["spent"] == 0  # no figures: zero
    fresh = build_input(
        request_id="r7", phase="authorize", model="m", end_user="c", tags=[], estimated_cost=5, now=START,
        facts=_facts(), candidates=candidates, figures={first_id: Figures(7, 1)},
    )
    assert second == fresh


@settings(max_examples=2000, deadline=None, database=None)
@given(nanos=st.integers(min_value=-(2**70), max_value=2**70))
def test_format_nanos_is_the_exact_decimal_with_at_least_six_places(nanos: int) -> None:
    text = format_nanos(nanos)
    whole, _, frac = text.partition(".")
    assert Decimal(text) == Decimal(nanos) / 10**9
    assert 6 <= len(frac) <= 9 and (len(frac) == 6 or not frac.endswith("0"))
    assert whole.lstrip("-").isdigit() and (nanos >= 0) == (not text.startswith("-"))
