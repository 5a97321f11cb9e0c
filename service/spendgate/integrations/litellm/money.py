"""LiteLLM's float USD amounts as exact Decimals in Spendgate's unit.

LiteLLM computes costs as binary floats (`response_cost`, `cost_per_token`). Each is read as
the decimal its `repr` shows — the shortest decimal that is that float, so a price LiteLLM
reports as `0.000225` is recorded as exactly 0.000225, never as the float's binary expansion
(0.000224999999999999989…). Float arithmetic leaves noise far below a cent: LiteLLM reports
10 input + 20 output tokens of gpt-4o as `0.00022500000000000002`. Spendgate's ledger counts
whole nano-USD (1e-9) and refuses finer amounts, so the decimal is rounded half-even to that
unit; the noise (2e-20 here) is 11 orders of magnitude below it.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal

__all__ = ["usd", "NANO"]

NANO = Decimal("1e-9")


def usd(value: float | int | None) -> Decimal:
    """`value` (USD, as LiteLLM reports it) as an exact Decimal of whole nano-USD; None, NaN,
    infinite or negative amounts (LiteLLM had no price) are 0."""
    if value is None or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        return Decimal(0).quantize(NANO)
    return Decimal(repr(value)).quantize(NANO, rounding=ROUND_HALF_EVEN)
