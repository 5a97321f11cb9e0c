"""Budget periods: parse budget durations and find the period that contains an instant.

A budget with a ``duration`` resets at period boundaries. With ``reset="rolling"`` the
periods start when the budget was set (the anchor) and follow each other back to back;
with ``reset="calendar"`` they align to UTC boundaries (the epoch grid for s/m/h/d,
Monday for weeks, the 1st of the month, 1 January). Everything here is pure, integer
arithmetic and constant time per call, whatever the distance between anchor and instant.

Boundaries that fall outside what :class:`datetime.datetime` can represent (years
1..9999) are clamped: a start to :data:`datetime.min` in UTC, an end to ``None``.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Final, Literal, cast, get_args

__all__ = [
    "EPOCH",
    "MAX_COUNT",
    "Duration",
    "InvalidDuration",
    "Period",
    "Reset",
    "Unit",
    "add_months",
    "period_at",
]

Unit = Literal["s", "m", "h", "d", "w", "mo", "y"]
Reset = Literal["rolling", "calendar"]

EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
"""Start of the single, never-ending period of a budget without a duration."""

MAX_COUNT: Final = 1_000_000
"""Largest accepted duration count."""

_UNITS: Final[tuple[str, ...]] = get_args(Unit)
_RESETS: Final[tuple[str, ...]] = get_args(Reset)
_ACCEPTED: Final = "use <n>s, <n>m, <n>h, <n>d, <n>w, <n>mo or <n>y"
_MAX_TEXT: Final = 32

_US: Final = timedelta(microseconds=1)
_SECOND_US: Final = 1_000_000
_FIXED_UNIT_US: Final[dict[str, int]] = {
    "s": _SECOND_US,
    "m": 60 * _SECOND_US,
    "h": 3_600 * _SECOND_US,
    "d": 86_400 * _SECOND_US,
    "w": 7 * 86_400 * _SECOND_US,
}
_MONTHS_PER_UNIT: Final[dict[str, int]] = {"mo": 1, "y": 12}
_MONDAY_US: Final = 4 * _FIXED_UNIT_US["d"]  # 1970-01-05, the first Monday after the epoch

_MIN: Final = datetime.min.replace(tzinfo=timezone.utc)
_MIN_US: Final = (_MIN - EPOCH) // _US
_MAX_US: Final = (datetime.max.replace(tzinfo=timezone.utc) - EPOCH) // _US
_MIN_MONTH: Final = 1 * 12  # month index of January of year 1
_MAX_MONTH: Final = 9999 * 12 + 11  # month index of December 9999


class InvalidDuration(ValueError):
    """A duration text or value that is not ``<n><unit>`` with 1 <= n <= MAX_COUNT."""


@dataclass(frozen=True, slots=True)
class Duration:
    """A budget duration: ``count`` times ``unit`` (e.g. 7 days, 3 months)."""

    count: int
    unit: Unit

    def __post_init__(self) -> None:
        """Reject counts outside 1..MAX_COUNT and unknown units."""
        if type(self.count) is not int:
            raise InvalidDuration(f"duration count must be an int, got {type(self.count).__name__}")
        if not 1 <= self.count <= MAX_COUNT:
            raise InvalidDuration(f"duration count must be between 1 and {MAX_COUNT}, got {self.count}")
        if self.unit not in _UNITS:
            raise InvalidDuration(f"unknown duration unit {self.unit!r}; {_ACCEPTED}")

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse canonical duration text such as ``"30s"``, ``"7d"`` or ``"1mo"``."""
        if not isinstance(text, str):
            raise InvalidDuration(f"duration must be a string, got {type(text).__name__}; {_ACCEPTED}")
        shown = _show(text)
        if not text:
            raise InvalidDuration(f"empty duration; {_ACCEPTED}")
        if len(text) > _MAX_TEXT:
            raise InvalidDuration(f"duration {shown} is too long; {_ACCEPTED}")
        if any(char.isspace() for char in text):
            raise InvalidDuration(f"duration {shown} must not contain whitespace; {_ACCEPTED}")
        count_text, unit = _split(text)
        count = _parse_count(count_text, shown)
        if not unit:
            raise InvalidDuration(f"missing duration unit in {shown}; {_ACCEPTED}")
        if unit not in _UNITS:
            raise InvalidDuration(f"unknown duration unit {unit!r} in {shown}; {_ACCEPTED}")
        if count > MAX_COUNT:
            raise InvalidDuration(f"duration count in {shown} exceeds the maximum {MAX_COUNT}; {_ACCEPTED}")
        return cls(count, cast(Unit, unit))

    def __str__(self) -> str:
        """Canonical text, e.g. ``"7d"``; ``Duration.parse(str(d)) == d``."""
        return f"{self.count}{self.unit}"


@dataclass(frozen=True, slots=True)
class Period:
    """The half-open interval ``[start, end)`` in UTC; ``end=None`` never ends."""

    start: datetime
    end: datetime | None

    def __post_init__(self) -> None:
        """Require aware datetimes, store them in UTC, and require ``end > start``."""
        object.__setattr__(self, "start", _utc(self.start, "start"))
        if self.end is not None:
            object.__setattr__(self, "end", _utc(self.end, "end"))
            if self.end <= self.start:
                raise ValueError(f"period end {self.end.isoformat()} is not after start {self.start.isoformat()}")

    def contains(self, at: datetime) -> bool:
        """Whether ``start <= at < end`` (``at`` must be aware)."""
        at = _utc(at, "at")
        return self.start <= at and (self.end is None or at < self.end)


def add_months(moment: datetime, months: int) -> datetime:
    """``moment`` shifted by whole months, day clamped to the month end (Jan 31 + 1 -> Feb 28/29).

    Raises OverflowError if the result is outside years 1..9999.
    """
    shifted = _shift_months(moment, months)
    if shifted is None:
        raise OverflowError(f"{moment.isoformat()} plus {months} months is outside years 1..9999")
    return shifted


def period_at(*, duration: Duration | None, reset: Reset, anchor: datetime, at: datetime) -> Period:
    """The budget period that contains ``at``.

    ``duration=None`` means the budget never resets: ``[EPOCH, None)``. ``rolling``
    periods tile time from ``anchor`` (before it too); ``calendar`` periods align to UTC
    boundaries and ignore ``anchor``. Raises ValueError for naive datetimes or an
    unknown ``reset``.
    """
    anchor = _utc(anchor, "anchor")
    at = _utc(at, "at")
    if reset not in _RESETS:
        raise ValueError(f"unknown reset {reset!r}; use 'rolling' or 'calendar'")
    if duration is None:
        return Period(EPOCH, None)
    if not isinstance(duration, Duration):
        raise TypeError(f"duration must be a Duration or None, got {type(duration).__name__}")
    if duration.unit in _MONTHS_PER_UNIT:
        months = duration.count * _MONTHS_PER_UNIT[duration.unit]
        if reset == "rolling":
            return _rolling_months(months, anchor, at)
        return _calendar_months(months, at)
    length_us = duration.count * _FIXED_UNIT_US[duration.unit]
    origin_us = _to_us(anchor) if reset == "rolling" else _calendar_origin_us(duration.unit)
    return _fixed_period(length_us, origin_us, _to_us(at))


# --- parsing helpers -------------------------------------------------------------------


def _show(text: str) -> str:
    """``repr`` of user text, shortened so error messages stay small."""
    return repr(text) if len(text) <= _MAX_TEXT else repr(text[:_MAX_TEXT]) + "..."


def _split(text: str) -> tuple[str, str]:
    """Split ``text`` into everything before its trailing ASCII letters, and those letters."""
    match = re.fullmatch(r"(.*?)([A-Za-z]*)", text, flags=re.DOTALL)
    assert match is not None  # the pattern matches every string
    return match.group(1), match.group(2)


def _parse_count(count_text: str, shown: str) -> int:
    """Parse the count part: ASCII digits, no sign, no leading zero, at least 1."""
    if not count_text:
        raise InvalidDuration(f"missing duration count in {shown}; {_ACCEPTED}")
    if count_text[0] in "+-":
        raise InvalidDuration(f"duration count in {shown} must not have a sign; {_ACCEPTED}")
    if not re.fullmatch(r"[0-9]+", count_text):
        raise InvalidDuration(f"duration count {count_text!r} in {shown} is not a whole number; {_ACCEPTED}")
    if int(count_text) == 0:
        raise InvalidDuration(f"duration count in {shown} must be at least 1; {_ACCEPTED}")
    if count_text[0] == "0":
        raise InvalidDuration(f"duration count in {shown} must not have leading zeros; {_ACCEPTED}")
    return int(count_text)


# --- time helpers ----------------------------------------------------------------------


def _utc(moment: datetime, name: str) -> datetime:
    """``moment`` converted to UTC; ValueError if it is naive."""
    if not isinstance(moment, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(timezone.utc)


def _to_us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    return (moment - EPOCH) // _US


def _start_from_us(us: int) -> datetime:
    """The UTC datetime ``us`` microseconds after the epoch, clamped up to datetime.min."""
    return _MIN if us < _MIN_US else EPOCH + timedelta(microseconds=us)


def _end_from_us(us: int) -> datetime | None:
    """The UTC datetime ``us`` microseconds after the epoch, or None beyond datetime.max."""
    return None if us > _MAX_US else EPOCH + timedelta(microseconds=us)


def _calendar_origin_us(unit: str) -> int:
    """Where the calendar grid of a fixed-length unit starts: the epoch, or Monday for weeks."""
    return _MONDAY_US if unit == "w" else 0


def _fixed_period(length_us: int, origin_us: int, at_us: int) -> Period:
    """The period of ``length_us`` on the grid through ``origin_us`` that contains ``at_us``."""
    start_us = origin_us + (at_us - origin_us) // length_us * length_us
    return Period(_start_from_us(start_us), _end_from_us(start_us + length_us))


def _month_index(moment: datetime) -> int:
    """Months since January of year 0 (``year * 12 + month - 1``)."""
    return moment.year * 12 + moment.month - 1


def _shift_months(moment: datetime, months: int) -> datetime | None:
    """``moment`` plus ``months`` with the day clamped, or None outside years 1..9999."""
    index = _month_index(moment) + months
    if not _MIN_MONTH <= index <= _MAX_MONTH:
        return None
    year, month0 = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month0 + 1)[1])
    return moment.replace(year=year, month=month0 + 1, day=day)


def _month_start(index: int) -> datetime | None:
    """Midnight UTC on the 1st of month ``index``, or None outside years 1..9999."""
    if not _MIN_MONTH <= index <= _MAX_MONTH:
        return None
    year, month0 = divmod(index, 12)
    return datetime(year, month0 + 1, 1, tzinfo=timezone.utc)


def _rolling_months(months: int, anchor: datetime, at: datetime) -> Period:
    """Rolling period of ``months`` months; boundary k is ``add_months(anchor, k * months)``."""
    k = (_month_index(at) - _month_index(anchor)) // months
    start = _shift_months(anchor, k * months)
    if start is not None and start > at:  # same month as ``at`` but later in it
        k -= 1
        start = _shift_months(anchor, k * months)
    return Period(start or _MIN, _shift_months(anchor, (k + 1) * months))


def _calendar_months(months: int, at: datetime) -> Period:
    """Calendar period of ``months`` months, grouped from January of year 0."""
    start_index = _month_index(at) // months * months
    return Period(_month_start(start_index) or _MIN, _month_start(start_index + months))
