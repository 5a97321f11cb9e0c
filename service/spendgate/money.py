"""Exact money: amounts are integers of nano-USD inside Spendgate, decimal strings outside.

JSON numbers and decimal strings are both accepted; both are read as decimals (never
binary floats), must be finite and non-negative, and may carry at most nine decimal
places — the ledger's unit. Output always has at least six decimal places ("0.000150").
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

__all__ = ["NANOS_PER_USD", "to_nanos", "format_nanos", "Nanos", "MAX_NANOS"]

NANOS_PER_USD = 1_000_000_000
#: Largest amount accepted (USD 1e9 = 1e18 nanos): sums of such amounts stay inside the signed
#: 64-bit columns and Redis integers (2^63 - 1 ≈ 9.2e18 nanos) for any realistic ledger.
MAX_NANOS = 10**9 * NANOS_PER_USD
_MAX_USD = Decimal(MAX_NANOS) / NANOS_PER_USD
_NANO = Decimal("1e-9")
#: The common amount: plain digits with at most 9 decimals, read without Decimal (every authorize has one).
_PLAIN_AMOUNT = re.compile(r"([0-9]{1,10})(?:\.([0-9]{1,9}))?")


def to_nanos(value: Any) -> int:
    """Parse a JSON number or decimal string into nano-USD; ValueError says what is wrong."""
    if type(value) is str:
        plain = _PLAIN_AMOUNT.fullmatch(value)
        if plain is not None:
            whole, fraction = plain.groups()
            nanos = int(whole) * NANOS_PER_USD + (int(fraction.ljust(9, "0")) if fraction else 0)
            if nanos <= MAX_NANOS:
                return nanos  # anything else is read below, which also says what is wrong
    if isinstance(value, bool) or value is None:
        raise ValueError("must be a decimal amount in USD, e.g. \"0.02\"")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        # JSON numbers arrive as floats; their shortest repr is the decimal the client wrote.
        amount = Decimal(repr(value))
    elif isinstance(value, (str, Decimal)):
        try:
            amount = Decimal(value.strip() if isinstance(value, str) else value)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal amount in USD, e.g. \"0.02\"") from None
    else:
        raise ValueError("must be a decimal amount in USD, e.g. \"0.02\"")
    if not amount.is_finite():
        raise ValueError("must be a finite amount")
    if amount < 0:
        raise ValueError("must not be negative")
    # Checked on the digits, before any arithmetic: scaling "1e999999" would overflow the decimal
    # context, and one with over 28 digits ("0.1000000000000000000000000001") would be rounded.
    if amount > _MAX_USD:
        raise ValueError("is larger than the largest amount Spendgate accepts (1,000,000,000 USD)")
    digits, exponent = amount.as_tuple()[1:]
    if isinstance(exponent, int) and exponent < -9 and any(digits[exponent + 9:]):
        shown = str(value) if len(str(value)) <= 40 else f"{str(value)[:40]}…"
        raise ValueError(f"{shown} has more than 9 decimal places; the ledger counts in units of 1e-9 USD")
    return int(amount.scaleb(9))


@lru_cache(maxsize=4096)  # the same figures are formatted over and over on the decision path
def format_nanos(nanos: int) -> str:
    """nano-USD → decimal string with at least six decimals: 150_000 → "0.000150"."""
    whole, frac = divmod(-nanos if nanos < 0 else nanos, 1_000_000_000)  # integers only: exact, and cheap
    return f"{'-' if nanos < 0 else ''}{whole}.{f'{frac:09d}'.rstrip('0').ljust(6, '0')}"


#: An amount field: accepts number or decimal string, holds nano-USD, serialises as a decimal string.
Nanos = Annotated[
    int,
    BeforeValidator(to_nanos),
    PlainSerializer(format_nanos, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["0.02"], "description": "USD amount (decimal string or number)"}),
]
