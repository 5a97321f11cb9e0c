"""Tests for spendgate.periods: duration parsing and budget period arithmetic."""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spendgate import periods
from spendgate.periods import (
    EPOCH,
    Duration,
    InvalidDuration,
    Period,
    add_months,
    period_at,
)

UTC = timezone.utc
US = timedelta(microseconds=1)
ACCEPTED = "use <n>s, <n>m, <n>h, <n>d, <n>w, <n>mo or <n>y"
UNITS = ["s", "m", "h", "d", "w", "mo", "y"]
FIXED_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
ANCHOR = datetime(2024, 5, 15, 10, 20, 30, 123456, tzinfo=UTC)  # a Wednesday


def utc(*args: int) -> datetime:
    """A UTC datetime from year, month, day[, hour, minute, second, microsecond]."""
    return datetime(*args, tzinfo=UTC)


def at_anchor_plus(**delta: int) -> datetime:
    """ANCHOR shifted by a timedelta given as keyword arguments."""
    return ANCHOR + timedelta(**delta)


def anchor_time(year: int, month: int, day: int) -> datetime:
    """The anchor's time of day on another date."""
    return ANCHOR.replace(year=year, month=month, day=day)


def period(duration: str, reset: str, at: datetime, anchor: datetime = ANCHOR) -> Period:
    """period_at with the duration given as text."""
    return period_at(duration=Duration.parse(duration), reset=reset, anchor=anchor, at=at)  # type: ignore[arg-type]


def month_index(moment: datetime) -> int:
    """Months since January of year 0."""
    return moment.year * 12 + moment.month - 1


def months_later(moment: datetime, months: int) -> datetime:
    """Reference month arithmetic for the oracles: shift months, clamp the day."""
    year, month0 = divmod(moment.month - 1 + months, 12)
    year += moment.year
    last_day = calendar.monthrange(year, month0 + 1)[1]
    return moment.replace(year=year, month=month0 + 1, day=min(moment.day, last_day))


def epoch_seconds(moment: datetime) -> int:
    """Whole seconds since the Unix epoch, computed with calendar.timegm (no floats)."""
    return calendar.timegm(moment.utctimetuple())


# --- Duration.parse --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "count", "unit"),
    [
        ("30s", 30, "s"),
        ("5m", 5, "m"),
        ("1h", 1, "h"),
        ("1d", 1, "d"),
        ("7d", 7, "d"),
        ("2w", 2, "w"),
        ("1mo", 1, "mo"),
        ("3mo", 3, "mo"),
        ("1y", 1, "y"),
        ("1000000s", 1_000_000, "s"),
        ("10mo", 10, "mo"),
    ],
)
def test_duration_parse_accepts_a_positive_count_followed_by_a_unit(text: str, count: int, unit: str) -> None:
    assert Duration.parse(text) == Duration(count, unit)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5x", f"unknown duration unit 'x' in '5x'; {ACCEPTED}"),
        ("5D", f"unknown duration unit 'D' in '5D'; {ACCEPTED}"),
        ("5ms", f"unknown duration unit 'ms' in '5ms'; {ACCEPTED}"),
        ("", f"empty duration; {ACCEPTED}"),
        ("5", f"missing duration unit in '5'; {ACCEPTED}"),
        ("d", f"missing duration count in 'd'; {ACCEPTED}"),
        ("0d", f"duration count in '0d' must be at least 1; {ACCEPTED}"),
        ("00h", f"duration count in '00h' must be at least 1; {ACCEPTED}"),
        ("-5m", f"duration count in '-5m' must not have a sign; {ACCEPTED}"),
        ("+5m", f"duration count in '+5m' must not have a sign; {ACCEPTED}"),
        ("05d", f"duration count in '05d' must not have leading zeros; {ACCEPTED}"),
        ("5.5h", f"duration count '5.5' in '5.5h' is not a whole number; {ACCEPTED}"),
        ("1e3s", f"duration count '1e3' in '1e3s' is not a whole number; {ACCEPTED}"),
        ("1_000s", f"duration count '1_000' in '1_000s' is not a whole number; {ACCEPTED}"),
        ("\uff15d", f"duration count '\uff15' in '\uff15d' is not a whole number; {ACCEPTED}"),
        ("5 m", f"duration '5 m' must not contain whitespace; {ACCEPTED}"),
        (" 5m", f"duration ' 5m' must not contain whitespace; {ACCEPTED}"),
        ("5m\n", f"duration '5m\\n' must not contain whitespace; {ACCEPTED}"),
        ("1000001s", f"duration count in '1000001s' exceeds the maximum 1000000; {ACCEPTED}"),
    ],
)
def test_duration_parse_rejects_malformed_text_with_a_message_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidDuration) as caught:
        Duration.parse(text)
    assert str(caught.value) == message


def test_duration_parse_shortens_very_long_text_in_its_error_message() -> None:
    with pytest.raises(InvalidDuration, match=r"is too long") as caught:
        Duration.parse("1" * 10_000 + "d")
    assert len(str(caught.value)) < 200


def test_duration_parse_rejects_non_strings() -> None:
    with pytest.raises(InvalidDuration, match=re.escape(f"duration must be a string, got int; {ACCEPTED}")):
        Duration.parse(5)  # type: ignore[arg-type]


def test_invalid_duration_is_a_value_error() -> None:
    assert issubclass(InvalidDuration, ValueError)


@pytest.mark.parametrize(
    ("count", "unit", "fragment"),
    [
        (0, "d", "between 1 and 1000000, got 0"),
        (-1, "d", "between 1 and 1000000, got -1"),
        (1_000_001, "s", "between 1 and 1000000, got 1000001"),
        (True, "d", "must be an int, got bool"),
        ("5", "d", "must be an int, got str"),
        (5, "x", "unknown duration unit 'x'"),
        (5, "M", "unknown duration unit 'M'"),
    ],
)
def test_duration_constructor_rejects_what_parse_would_reject(count: object, unit: object, fragment: str) -> None:
    with pytest.raises(InvalidDuration, match=re.escape(fragment)):
        Duration(count, unit)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["30s", "5m", "1h", "7d", "2w", "1mo", "12mo", "1y", "1000000y"])
def test_duration_str_is_the_canonical_text(text: str) -> None:
    assert str(Duration.parse(text)) == text


def test_durations_are_immutable_and_hashable() -> None:
    duration = Duration.parse("7d")
    with pytest.raises(AttributeError):
        duration.count = 8  # type: ignore[misc]
    assert {duration, Duration(7, "d")} == {Duration(7, "d")}


@given(count=st.integers(1, 1_000_000), unit=st.sampled_from(UNITS))
def test_duration_text_round_trips_through_parse(count: int, unit: str) -> None:
    duration = Duration(count, unit)  # type: ignore[arg-type]
    assert Duration.parse(str(duration)) == duration
    assert str(duration) == f"{count}{unit}"


# --- Period ----------------------------------------------------------------------------


def test_period_contains_its_start_but_not_its_end() -> None:
    p = Period(utc(2024, 1, 1), utc(2024, 2, 1))
    assert p.contains(utc(2024, 1, 1))
    assert p.contains(utc(2024, 2, 1) - US)
    assert not p.contains(utc(2024, 2, 1))
    assert not p.contains(utc(2024, 1, 1) - US)


def test_period_without_end_contains_everything_from_its_start() -> None:
    p = Period(EPOCH, None)
    assert p.contains(EPOCH)
    assert p.contains(utc(9999, 12, 31, 23, 59, 59, 999999))
    assert not p.contains(EPOCH - US)


def test_period_contains_compares_instants_across_timezones() -> None:
    p = Period(utc(2024, 1, 1), utc(2024, 1, 2))
    new_york = timezone(timedelta(hours=-5))
    assert p.contains(datetime(2024, 1, 1, 18, 59, tzinfo=new_york))
    assert not p.contains(datetime(2024, 1, 1, 19, 0, tzinfo=new_york))


def test_period_stores_its_bounds_in_utc() -> None:
    tokyo = timezone(timedelta(hours=9))
    p = Period(datetime(2024, 1, 1, 9, tzinfo=tokyo), datetime(2024, 1, 2, 9, tzinfo=tokyo))
    assert p.start.utcoffset() == timedelta(0) and p.start == utc(2024, 1, 1)
    assert p.end is not None and p.end.utcoffset() == timedelta(0) and p.end == utc(2024, 1, 2)


def test_period_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="start must be timezone-aware"):
        Period(datetime(2024, 1, 1), None)
    with pytest.raises(ValueError, match="end must be timezone-aware"):
        Period(utc(2024, 1, 1), datetime(2024, 1, 2))
    with pytest.raises(ValueError, match="at must be timezone-aware"):
        Period(utc(2024, 1, 1), None).contains(datetime(2024, 1, 2))


@pytest.mark.parametrize("end", [utc(2024, 1, 1), utc(2023, 12, 31)])
def test_period_rejects_an_end_that_is_not_after_its_start(end: datetime) -> None:
    with pytest.raises(ValueError, match="is not after start"):
        Period(utc(2024, 1, 1), end)


# --- period_at: argument checks and the never-resetting budget -------------------------


def test_budget_without_duration_has_one_period_from_the_epoch_that_never_ends() -> None:
    for reset in ("rolling", "calendar"):
        p = period_at(duration=None, reset=reset, anchor=ANCHOR, at=utc(2500, 1, 1))
        assert p == Period(EPOCH, None)
    assert EPOCH == datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("argument", ["anchor", "at"])
def test_period_at_rejects_naive_datetimes(argument: str) -> None:
    kwargs = {"anchor": ANCHOR, "at": ANCHOR, argument: datetime(2024, 1, 1)}
    for duration in (None, Duration(1, "d"), Duration(1, "mo")):
        with pytest.raises(ValueError, match=f"{argument} must be timezone-aware"):
            period_at(duration=duration, reset="calendar", **kwargs)


def test_period_at_rejects_an_unknown_reset() -> None:
    with pytest.raises(ValueError, match=re.escape("unknown reset 'daily'; use 'rolling' or 'calendar'")):
        period_at(duration=Duration(1, "d"), reset="daily", anchor=ANCHOR, at=ANCHOR)  # type: ignore[arg-type]


def test_period_at_rejects_duration_text_instead_of_a_duration() -> None:
    with pytest.raises(TypeError, match="duration must be a Duration or None"):
        period_at(duration="1d", reset="rolling", anchor=ANCHOR, at=ANCHOR)  # type: ignore[arg-type]


# --- period_at: worked examples for every unit -----------------------------------------


@pytest.mark.parametrize(
    ("duration", "at", "start", "end"),
    [
        ("30s", at_anchor_plus(seconds=95), at_anchor_plus(seconds=90), at_anchor_plus(seconds=120)),
        ("5m", utc(2024, 5, 15, 11), at_anchor_plus(minutes=35), at_anchor_plus(minutes=40)),
        ("1h", utc(2024, 5, 16), at_anchor_plus(hours=13), at_anchor_plus(hours=14)),
        ("1d", utc(2024, 5, 20, 9), anchor_time(2024, 5, 19), anchor_time(2024, 5, 20)),
        ("7d", utc(2024, 6, 1), anchor_time(2024, 5, 29), anchor_time(2024, 6, 5)),
        ("1w", utc(2024, 6, 1), anchor_time(2024, 5, 29), anchor_time(2024, 6, 5)),
        ("2w", utc(2024, 5, 1), anchor_time(2024, 4, 17), anchor_time(2024, 5, 1)),
        ("1mo", anchor_time(2024, 8, 15) - US, anchor_time(2024, 7, 15), anchor_time(2024, 8, 15)),
        ("3mo", utc(2025, 1, 1), anchor_time(2024, 11, 15), anchor_time(2025, 2, 15)),
        ("1y", utc(2023, 1, 1), anchor_time(2022, 5, 15), anchor_time(2023, 5, 15)),
        ("2y", anchor_time(2030, 5, 15), anchor_time(2030, 5, 15), anchor_time(2032, 5, 15)),
    ],
)
def test_rolling_period_is_the_multiple_of_the_duration_after_the_anchor_that_holds_the_instant(
    duration: str, at: datetime, start: datetime, end: datetime
) -> None:
    assert period(duration, "rolling", at) == Period(start, end)


@pytest.mark.parametrize(
    ("duration", "start", "end"),
    [
        ("1s", utc(2024, 5, 15, 10, 20, 30), utc(2024, 5, 15, 10, 20, 31)),
        ("30s", utc(2024, 5, 15, 10, 20, 30), utc(2024, 5, 15, 10, 21)),
        ("1m", utc(2024, 5, 15, 10, 20), utc(2024, 5, 15, 10, 21)),
        ("5m", utc(2024, 5, 15, 10, 20), utc(2024, 5, 15, 10, 25)),
        ("7m", utc(2024, 5, 15, 10, 14), utc(2024, 5, 15, 10, 21)),
        ("1h", utc(2024, 5, 15, 10), utc(2024, 5, 15, 11)),
        ("6h", utc(2024, 5, 15, 6), utc(2024, 5, 15, 12)),
        ("1d", utc(2024, 5, 15), utc(2024, 5, 16)),
        ("7d", utc(2024, 5, 9), utc(2024, 5, 16)),
        ("1w", utc(2024, 5, 13), utc(2024, 5, 20)),
        ("2w", utc(2024, 5, 13), utc(2024, 5, 27)),
        ("1mo", utc(2024, 5, 1), utc(2024, 6, 1)),
        ("3mo", utc(2024, 4, 1), utc(2024, 7, 1)),
        ("6mo", utc(2024, 1, 1), utc(2024, 7, 1)),
        ("12mo", utc(2024, 1, 1), utc(2025, 1, 1)),
        ("1y", utc(2024, 1, 1), utc(2025, 1, 1)),
        ("2y", utc(2024, 1, 1), utc(2026, 1, 1)),
        ("5y", utc(2020, 1, 1), utc(2025, 1, 1)),
    ],
)
def test_calendar_period_aligns_to_utc_boundaries(duration: str, start: datetime, end: datetime) -> None:
    assert period(duration, "calendar", ANCHOR) == Period(start, end)


def test_calendar_day_period_runs_from_utc_midnight_to_midnight() -> None:
    assert period("1d", "calendar", utc(2024, 3, 10, 23, 59, 59, 999999)) == Period(utc(2024, 3, 10), utc(2024, 3, 11))
    assert period("1d", "calendar", utc(2024, 3, 11)) == Period(utc(2024, 3, 11), utc(2024, 3, 12))


def test_calendar_day_period_uses_the_utc_date_of_an_instant_given_in_another_timezone() -> None:
    late_evening_in_los_angeles = datetime(2024, 3, 10, 20, tzinfo=timezone(timedelta(hours=-8)))
    assert period("1d", "calendar", late_evening_in_los_angeles) == Period(utc(2024, 3, 11), utc(2024, 3, 12))


def test_calendar_hour_period_starts_at_the_top_of_the_hour() -> None:
    assert period("1h", "calendar", utc(2024, 5, 15, 10, 59, 59)) == Period(utc(2024, 5, 15, 10), utc(2024, 5, 15, 11))


@pytest.mark.parametrize("day", range(13, 20))
def test_calendar_week_period_starts_on_monday_midnight_utc(day: int) -> None:
    p = period("1w", "calendar", utc(2024, 5, day, 12))
    assert p == Period(utc(2024, 5, 13), utc(2024, 5, 20))
    assert p.start.strftime("%A") == "Monday"


def test_calendar_week_period_of_a_monday_midnight_starts_at_that_instant() -> None:
    assert period("1w", "calendar", utc(2024, 5, 20)) == Period(utc(2024, 5, 20), utc(2024, 5, 27))
    assert period("1w", "calendar", utc(2024, 5, 20) - US) == Period(utc(2024, 5, 13), utc(2024, 5, 20))


def test_calendar_two_week_groups_are_counted_from_monday_5_january_1970() -> None:
    assert period("2w", "calendar", utc(1970, 1, 5)) == Period(utc(1970, 1, 5), utc(1970, 1, 19))
    assert period("2w", "calendar", utc(1970, 1, 19)) == Period(utc(1970, 1, 19), utc(1970, 2, 2))
    assert period("2w", "calendar", utc(1970, 1, 4)) == Period(utc(1969, 12, 22), utc(1970, 1, 5))


def test_calendar_seven_days_follow_the_epoch_grid_unlike_one_week() -> None:
    seven_days = period("7d", "calendar", ANCHOR)
    assert seven_days.start.strftime("%A") == "Thursday"  # 1970-01-01 was a Thursday
    assert period("1w", "calendar", ANCHOR).start.strftime("%A") == "Monday"


def test_calendar_month_period_starts_on_the_first_and_ends_on_the_next_first() -> None:
    assert period("1mo", "calendar", utc(2024, 2, 29, 23)) == Period(utc(2024, 2, 1), utc(2024, 3, 1))
    assert period("1mo", "calendar", utc(2023, 12, 31, 23, 59)) == Period(utc(2023, 12, 1), utc(2024, 1, 1))


@pytest.mark.parametrize(
    ("month", "start", "end"),
    [
        (1, utc(2024, 1, 1), utc(2024, 4, 1)),
        (3, utc(2024, 1, 1), utc(2024, 4, 1)),
        (4, utc(2024, 4, 1), utc(2024, 7, 1)),
        (8, utc(2024, 7, 1), utc(2024, 10, 1)),
        (12, utc(2024, 10, 1), utc(2025, 1, 1)),
    ],
)
def test_calendar_three_month_periods_are_quarters(month: int, start: datetime, end: datetime) -> None:
    assert period("3mo", "calendar", utc(2024, month, 15)) == Period(start, end)


@pytest.mark.parametrize(("month", "start_month"), [(1, 1), (6, 1), (7, 7), (12, 7)])
def test_calendar_six_month_periods_are_half_years(month: int, start_month: int) -> None:
    p = period("6mo", "calendar", utc(2023, month, 2))
    assert p.start == utc(2023, start_month, 1)
    assert p.end == add_months(utc(2023, start_month, 1), 6)


def test_calendar_year_period_runs_from_1_january_to_1_january() -> None:
    assert period("1y", "calendar", utc(2023, 12, 31, 23, 59, 59)) == Period(utc(2023, 1, 1), utc(2024, 1, 1))
    assert period("1y", "calendar", utc(2024, 1, 1)) == Period(utc(2024, 1, 1), utc(2025, 1, 1))


def test_calendar_periods_ignore_the_anchor() -> None:
    for duration in ("30s", "1h", "1d", "1w", "1mo", "1y"):
        assert period(duration, "calendar", ANCHOR, anchor=utc(1999, 7, 3, 1, 2, 3)) == period(
            duration, "calendar", ANCHOR, anchor=utc(2031, 2, 28, 17)
        )


# --- month-end clamping and leap years -------------------------------------------------


def test_rolling_month_from_the_31st_clamps_to_month_end_without_drifting() -> None:
    anchor = utc(2024, 1, 31, 12)
    starts = [period("1mo", "rolling", utc(2024, m, 28, 12) + timedelta(days=3), anchor).start for m in range(1, 7)]
    assert starts == [
        utc(2024, 1, 31, 12),
        utc(2024, 2, 29, 12),
        utc(2024, 3, 31, 12),
        utc(2024, 4, 30, 12),
        utc(2024, 5, 31, 12),
        utc(2024, 6, 30, 12),
    ]


def test_rolling_month_from_the_31st_in_a_common_year_ends_february_on_the_28th() -> None:
    anchor = utc(2023, 1, 31)
    assert period("1mo", "rolling", utc(2023, 2, 15), anchor) == Period(utc(2023, 1, 31), utc(2023, 2, 28))
    assert period("1mo", "rolling", utc(2023, 3, 1), anchor) == Period(utc(2023, 2, 28), utc(2023, 3, 31))


def test_rolling_year_from_29_february_uses_28_february_until_the_next_leap_year() -> None:
    anchor = utc(2024, 2, 29)
    assert period("1y", "rolling", utc(2024, 6, 1), anchor) == Period(utc(2024, 2, 29), utc(2025, 2, 28))
    assert period("1y", "rolling", utc(2025, 6, 1), anchor) == Period(utc(2025, 2, 28), utc(2026, 2, 28))
    assert period("1y", "rolling", utc(2027, 6, 1), anchor) == Period(utc(2027, 2, 28), utc(2028, 2, 29))
    assert period("1y", "rolling", utc(2028, 2, 29), anchor) == Period(utc(2028, 2, 29), utc(2029, 2, 28))


def test_rolling_month_before_the_anchor_clamps_the_same_way() -> None:
    anchor = utc(2024, 3, 31)
    assert period("1mo", "rolling", utc(2024, 3, 1), anchor) == Period(utc(2024, 2, 29), utc(2024, 3, 31))
    assert period("1mo", "rolling", utc(2024, 2, 28), anchor) == Period(utc(2024, 1, 31), utc(2024, 2, 29))


def test_rolling_month_in_the_anchor_month_but_before_the_anchor_day_is_the_previous_period() -> None:
    anchor = utc(2024, 5, 20, 8)
    assert period("1mo", "rolling", utc(2024, 7, 3), anchor) == Period(utc(2024, 6, 20, 8), utc(2024, 7, 20, 8))
    assert period("1mo", "rolling", utc(2024, 7, 20, 8), anchor) == Period(utc(2024, 7, 20, 8), utc(2024, 8, 20, 8))


def test_rolling_month_arithmetic_happens_in_utc() -> None:
    eastern = timezone(timedelta(hours=-5))
    anchor = datetime(2024, 1, 31, 22, tzinfo=eastern)  # 2024-02-01T03:00Z
    p = period("1mo", "rolling", utc(2024, 2, 15), anchor)
    assert p == Period(utc(2024, 2, 1, 3), utc(2024, 3, 1, 3))


@pytest.mark.parametrize(
    ("moment", "months", "expected"),
    [
        (utc(2024, 1, 31), 1, utc(2024, 2, 29)),
        (utc(2023, 1, 31), 1, utc(2023, 2, 28)),
        (utc(2024, 1, 31), 2, utc(2024, 3, 31)),
        (utc(2024, 3, 31), -1, utc(2024, 2, 29)),
        (utc(2024, 11, 30, 5, 6, 7, 8), 3, utc(2025, 2, 28, 5, 6, 7, 8)),
        (utc(2024, 2, 29), 12, utc(2025, 2, 28)),
        (utc(2024, 2, 29), 48, utc(2028, 2, 29)),
        (utc(2024, 5, 15), -29, utc(2021, 12, 15)),
        (utc(2024, 5, 15), 0, utc(2024, 5, 15)),
    ],
)
def test_add_months_clamps_the_day_to_the_end_of_the_target_month(
    moment: datetime, months: int, expected: datetime
) -> None:
    assert add_months(moment, months) == expected


def test_add_months_outside_years_1_to_9999_raises_overflow_error() -> None:
    with pytest.raises(OverflowError):
        add_months(utc(9999, 12, 1), 1)
    with pytest.raises(OverflowError):
        add_months(utc(1, 1, 1), -1)


# --- boundaries ------------------------------------------------------------------------


@pytest.mark.parametrize("reset", ["rolling", "calendar"])
@pytest.mark.parametrize("duration", ["30s", "5m", "1h", "1d", "7d", "2w", "1mo", "3mo", "1y"])
def test_instant_equal_to_a_period_start_is_inside_and_equal_to_its_end_is_in_the_next(
    duration: str, reset: str
) -> None:
    p = period(duration, reset, ANCHOR)
    assert p.end is not None
    assert period(duration, reset, p.start) == p
    assert period(duration, reset, p.end - US) == p
    following = period(duration, reset, p.end)
    assert following.start == p.end and following != p
    assert period(duration, reset, p.start - US).end == p.start


def test_rolling_period_at_the_anchor_starts_at_the_anchor() -> None:
    for duration in ("30s", "1d", "1w", "1mo", "1y"):
        assert period(duration, "rolling", ANCHOR).start == ANCHOR


def test_rolling_period_just_before_the_anchor_ends_at_the_anchor() -> None:
    for duration in ("30s", "1d", "1w", "1mo", "1y"):
        assert period(duration, "rolling", ANCHOR - US).end == ANCHOR


def test_periods_far_from_the_anchor_are_computed_directly() -> None:
    # A loop stepping from the anchor would take ~3e11 iterations here.
    anchor = utc(1, 1, 1, 0, 0, 1)
    at = utc(9999, 6, 1, 12, 30, 45, 500)
    assert period("1s", "rolling", at, anchor) == Period(utc(9999, 6, 1, 12, 30, 45), utc(9999, 6, 1, 12, 30, 46))
    assert period("1mo", "rolling", at, utc(1, 1, 31)) == Period(utc(9999, 5, 31), utc(9999, 6, 30))


# --- the edges of datetime's range -----------------------------------------------------


def test_period_ending_after_year_9999_never_ends() -> None:
    assert period("1y", "calendar", utc(9999, 7, 1)) == Period(utc(9999, 1, 1), None)
    assert period("1d", "calendar", utc(9999, 12, 31, 12)) == Period(utc(9999, 12, 31), None)
    assert period("1000000y", "rolling", ANCHOR) == Period(ANCHOR, None)


def test_period_starting_before_year_1_starts_at_datetime_min() -> None:
    start_of_time = datetime.min.replace(tzinfo=UTC)
    assert period("1000000y", "calendar", ANCHOR) == Period(start_of_time, None)
    assert period("1w", "calendar", utc(1, 1, 1)) == Period(start_of_time, utc(1, 1, 8))
    assert period("1000000d", "rolling", ANCHOR - US) == Period(start_of_time, ANCHOR)
    assert period("13mo", "calendar", utc(1, 1, 1)) == Period(start_of_time, utc(1, 2, 1))  # group 0 = Jan of year 0


# --- properties ------------------------------------------------------------------------

TIMEZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)), timezone(timedelta(hours=14))]
)
INSTANTS = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 12, 31), timezones=TIMEZONES)
COUNTS = st.one_of(st.integers(1, 3), st.integers(1, 100))
DURATIONS = st.builds(Duration, count=COUNTS, unit=st.sampled_from(UNITS))
RESETS = st.sampled_from(["rolling", "calendar"])
bounded = settings(max_examples=200, deadline=None)


@bounded
@given(duration=st.one_of(st.none(), DURATIONS), reset=RESETS, anchor=INSTANTS, at=INSTANTS)
def test_every_period_contains_the_instant_it_was_computed_for(
    duration: Duration | None, reset: str, anchor: datetime, at: datetime
) -> None:
    p = period_at(duration=duration, reset=reset, anchor=anchor, at=at)  # type: ignore[arg-type]
    if at >= EPOCH or duration is not None:  # the never-resetting period starts at the epoch
        assert p.contains(at)
    assert p.start.tzinfo == UTC and (p.end is None or p.end.tzinfo == UTC)


@bounded
@given(duration=DURATIONS, reset=RESETS, anchor=INSTANTS, at=INSTANTS)
def test_consecutive_periods_meet_without_gap_or_overlap(
    duration: Duration, reset: str, anchor: datetime, at: datetime
) -> None:
    p = period_at(duration=duration, reset=reset, anchor=anchor, at=at)  # type: ignore[arg-type]
    assert p.end is not None
    following = period_at(duration=duration, reset=reset, anchor=anchor, at=p.end)  # type: ignore[arg-type]
    preceding = period_at(duration=duration, reset=reset, anchor=anchor, at=p.start - US)  # type: ignore[arg-type]
    assert following.start == p.end
    assert preceding.end == p.start


@bounded
@given(duration=DURATIONS, reset=RESETS, anchor=INSTANTS, at=INSTANTS, data=st.data())
def test_every_instant_inside_a_period_selects_that_same_period(
    duration: Duration, reset: str, anchor: datetime, at: datetime, data: st.DataObject
) -> None:
    p = period_at(duration=duration, reset=reset, anchor=anchor, at=at)  # type: ignore[arg-type]
    assert p.end is not None
    offset = data.draw(st.integers(0, (p.end - p.start) // US - 1), label="offset_us")
    inside = (p.start + offset * US).astimezone(data.draw(TIMEZONES, label="timezone"))
    assert period_at(duration=duration, reset=reset, anchor=anchor, at=inside) == p  # type: ignore[arg-type]


@bounded
@given(count=COUNTS, unit=st.sampled_from(["s", "m", "h", "d", "w"]), anchor=INSTANTS, at=INSTANTS)
def test_rolling_fixed_length_period_is_a_whole_number_of_durations_from_the_anchor(
    count: int, unit: str, anchor: datetime, at: datetime
) -> None:
    length = timedelta(seconds=count * FIXED_SECONDS[unit])
    p = period_at(duration=Duration(count, unit), reset="rolling", anchor=anchor, at=at)  # type: ignore[arg-type]
    assert p.end is not None
    assert p.end - p.start == length
    assert (p.start - anchor) % length == timedelta(0)
    assert p.start <= at < p.end


@bounded
@given(count=COUNTS, unit=st.sampled_from(["mo", "y"]), anchor=INSTANTS, at=INSTANTS)
def test_rolling_month_period_bounds_are_month_multiples_of_the_anchor(
    count: int, unit: str, anchor: datetime, at: datetime
) -> None:
    months = count * (12 if unit == "y" else 1)
    p = period_at(duration=Duration(count, unit), reset="rolling", anchor=anchor, at=at)  # type: ignore[arg-type]
    utc_anchor = anchor.astimezone(UTC)
    k, remainder = divmod(month_index(p.start) - month_index(utc_anchor), months)
    assert remainder == 0
    assert p.start == months_later(utc_anchor, k * months)
    assert p.end == months_later(utc_anchor, (k + 1) * months)
    assert p.start <= at < p.end


@bounded
@given(at=INSTANTS, anchor=INSTANTS)
def test_calendar_month_periods_are_exactly_one_calendar_month(at: datetime, anchor: datetime) -> None:
    p = period_at(duration=Duration(1, "mo"), reset="calendar", anchor=anchor, at=at)
    utc_at = at.astimezone(UTC)
    assert p.start == utc(utc_at.year, utc_at.month, 1)
    assert p.end == (utc(utc_at.year + 1, 1, 1) if utc_at.month == 12 else utc(utc_at.year, utc_at.month + 1, 1))


@bounded
@given(count=COUNTS, unit=st.sampled_from(["mo", "y"]), at=INSTANTS, anchor=INSTANTS)
def test_calendar_n_month_periods_start_on_a_first_in_a_month_group_and_last_n_months(
    count: int, unit: str, at: datetime, anchor: datetime
) -> None:
    months = count * (12 if unit == "y" else 1)
    p = period_at(duration=Duration(count, unit), reset="calendar", anchor=anchor, at=at)  # type: ignore[arg-type]
    assert p.end is not None
    assert (p.start.day, p.start.time()) == (1, datetime.min.time())
    assert month_index(p.start) % months == 0
    assert month_index(p.end) - month_index(p.start) == months and p.end.day == 1
    if unit == "y":
        assert p.start.month == 1 and p.start.year % count == 0
    assert p.start <= at < p.end


@bounded
@given(count=COUNTS, unit=st.sampled_from(["s", "m", "h", "d", "w"]), at=INSTANTS, anchor=INSTANTS)
def test_calendar_fixed_length_periods_align_to_the_utc_grid(
    count: int, unit: str, at: datetime, anchor: datetime
) -> None:
    length = count * FIXED_SECONDS[unit]
    origin = epoch_seconds(utc(1970, 1, 5)) if unit == "w" else 0
    p = period_at(duration=Duration(count, unit), reset="calendar", anchor=anchor, at=at)  # type: ignore[arg-type]
    assert p.end is not None
    assert p.start.microsecond == 0
    assert (epoch_seconds(p.start) - origin) % length == 0
    assert epoch_seconds(p.end) - epoch_seconds(p.start) == length
    assert p.start <= at < p.end
    if unit == "w":
        assert p.start.weekday() == 0 and p.start.time() == datetime.min.time()


@bounded
@given(at=INSTANTS, anchor=INSTANTS)
def test_calendar_single_unit_periods_match_truncating_the_utc_time(at: datetime, anchor: datetime) -> None:
    u = at.astimezone(UTC)
    midnight = utc(u.year, u.month, u.day)
    expected = {
        "1s": u.replace(microsecond=0),
        "1m": u.replace(second=0, microsecond=0),
        "1h": u.replace(minute=0, second=0, microsecond=0),
        "1d": midnight,
        "1w": midnight - timedelta(days=u.weekday()),
        "1y": utc(u.year, 1, 1),
    }
    for text, start in expected.items():
        assert period(text, "calendar", at, anchor).start == start


@bounded
@given(duration=DURATIONS, reset=RESETS, anchor=INSTANTS, at=INSTANTS, zone=TIMEZONES)
def test_the_timezone_of_the_inputs_does_not_change_the_period(
    duration: Duration, reset: str, anchor: datetime, at: datetime, zone: timezone
) -> None:
    p = period_at(duration=duration, reset=reset, anchor=anchor, at=at)  # type: ignore[arg-type]
    moved = period_at(duration=duration, reset=reset, anchor=anchor.astimezone(zone), at=at.astimezone(zone))  # type: ignore[arg-type]
    assert moved == p
    assert (p.start.tzinfo, p.start.utcoffset()) == (UTC, timedelta(0))


def test_module_exports_its_public_names() -> None:
    assert set(periods.__all__) >= {"EPOCH", "Duration", "InvalidDuration", "Period", "Reset", "Unit", "period_at"}
    assert all(hasattr(periods, name) for name in periods.__all__)
    assert date(1970, 1, 5).weekday() == 0  # the calendar-week origin is a Monday
