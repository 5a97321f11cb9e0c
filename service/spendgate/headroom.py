"""A ledger's headroom tier: how far its committed spend is from its limit, to one significant digit.

The console's "near a limit" ranking orders current ledgers by spent / limit. Reading every
current ledger's `spent` costs a heap row each (~130k rows at 100k keys), and no index may hold
`spent`: it changes on every record, and an indexed column that changes makes the update non-HOT.
The tier changes far less often, so it can be indexed (ix_ledgers_headroom): the ranking reads the
lowest tiers from the index and the exact ratio only for the rows in them.

    tier = 10 × (digits of q) + (leading digit of q),   q = floor(limit / spent)

Lower is closer to the limit: q = 0 (over the limit) is tier 10, q = 1 (over half, up to all) 11, …,
q = 9 is 19, q = 10..19 is 21, and so on. It is NULL without a limit or without spend.

Ordering: tier(a) < tier(b) implies q(a) < q(b), hence limit_a/spent_a < limit_b/spent_b, so `a`
has used strictly more of its limit than `b`. Every ledger outside the lowest tiers therefore ranks
below every ledger inside them, and the top of the ranking is exact. As spend grows, q shrinks:
the tier moves when q loses a digit or its leading digit changes (or when a raised limit grows q),
at most ~9 times per tenfold growth of spend — a few dozen times in a ledger's period — so the
record path's ledger updates stay HOT almost always.

The same formula is written twice — here for tests and checks, and as SQL that the record path,
migration 0007 and the bench seed embed — and `tests/test_headroom.py` holds them equal on both
engines.
"""

from __future__ import annotations

__all__ = ["TIERS", "headroom_tier", "headroom_tier_sql"]

#: Every tier a bigint limit and spend can give, lowest first: 10-19 (q of one digit, 0-9), then
#: 10 × digits + leading digit 1-9 for q up to 19 digits (2^63 - 1 has 19).
TIERS: tuple[int, ...] = tuple(range(10, 20)) + tuple(10 * digits + lead for digits in range(2, 20) for lead in range(1, 10))


def headroom_tier(spent: int, limit: int | None) -> int | None:
    if limit is None or limit <= 0 or spent <= 0:
        return None
    quotient = str(limit // spent)
    return len(quotient) * 10 + int(quotient[0])


def headroom_tier_sql(spent: str, limit: str) -> str:
    """The tier as a SQL expression of two integer SQL expressions; the same text on PostgreSQL and
    SQLite (integer division, text length and substring mean the same on both)."""
    quotient = f"CAST(({limit}) / ({spent}) AS TEXT)"
    return (
        f"CASE WHEN ({limit}) > 0 AND ({spent}) > 0 "
        f"THEN length({quotient}) * 10 + CAST(substr({quotient}, 1, 1) AS INTEGER) END"
    )
