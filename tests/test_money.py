"""Amounts: every way a client may write one reads to the same exact nano-USD, or to the same error."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendgate import money
from spendgate.money import MAX_NANOS, to_nanos


def _by_decimal(text: str) -> int:
    """What the Decimal reading (the path for everything but plain digits) makes of `text`."""
    return to_nanos(Decimal(text))


@given(st.integers(min_value=0, max_value=MAX_NANOS))
def test_plain_digits_read_as_the_decimal_reading_does(nanos: int) -> None:
    whole, fraction = divmod(nanos, money.NANOS_PER_USD)
    for text in (f"{whole}.{fraction:09d}", f"{whole}.{fraction:09d}".rstrip("0").rstrip("."), str(whole)):
        assert money._PLAIN_AMOUNT.fullmatch(text) is not None  # read without Decimal
        assert to_nanos(text) == _by_decimal(text)


@pytest.mark.parametrize("text, nanos", [
    ("0.002", 2_000_000), ("0", 0), ("1", 1_000_000_000), ("0.000000001", 1), ("1000000000", MAX_NANOS),
    ("007.5", 7_500_000_000), (" 0.5 ", 500_000_000), ("1e-3", 1_000_000), ("0.1000000000", 100_000_000),
])
def test_amount_texts(text: str, nanos: int) -> None:
    assert to_nanos(text) == nanos


@pytest.mark.parametrize("text, message", [
    ("1000000000.000000001", "larger than the largest amount"),
    ("9999999999", "larger than the largest amount"),
    ("0.0000000001", "more than 9 decimal places"),
    ("-1", "must not be negative"),
    ("1.", None), (".5", None), ("", "is not a decimal amount"), ("1,5", "is not a decimal amount"),
    ("١٢", None),  # digits of another script: read by Decimal, as they always were, or refused by it
])
def test_what_plain_digits_do_not_cover_is_read_or_refused_as_before(text: str, message: str | None) -> None:
    try:
        expected: int | str = _by_decimal(text.strip())
    except (ValueError, ArithmeticError) as exc:
        expected = str(exc)
    try:
        got: int | str = to_nanos(text)
    except ValueError as exc:
        got = str(exc)
    if message is not None:
        assert isinstance(got, str) and message in got
    else:
        assert got == expected
