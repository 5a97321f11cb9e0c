"""The spend report: which rollup rows a query reads, and how they are summed and bucketed.

Rows come from one entity's rollups when the query names one (`entity=`, `tag=`, `end_user=`),
from every entity's when it groups by entity, and otherwise from the `*` pseudo-entity, which
counts each recorded request once — so no report counts a request twice in the same row.
The database sums per group and bucket (SQLite: per hour, folded into days/weeks/months here).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from sqlalchemy import Table, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..db import dialect_name, execute_core, wrap_database_errors
from ..errors import InvalidRequest
from ..ledgers import ENTITY_TYPES
from ..tables import SpendRollup
from .rollups import ALL

__all__ = ["BUCKETS", "DIMENSIONS", "ReportQuery", "ReportRow", "SpendReport", "parse_query", "spend_report"]

DIMENSIONS = ("entity", "model", "key", "outcome")
BUCKETS = ("hour", "day", "week", "month")
DEFAULT_DAYS = 30
_HOUR = timedelta(hours=1)
_T: Table = SpendRollup.__table__  # type: ignore[attr-defined]
#: The rollup columns behind each dimension.
_COLUMNS = {"entity": ("entity_type", "entity_id"), "model": ("model",), "key": ("key_id",), "outcome": ("outcome",)}


@dataclass(frozen=True, slots=True)
class ReportQuery:
    start: datetime
    end: datetime
    group_by: tuple[str, ...]
    #: (entity_type, entity_id) the report is about; None: every request.
    entity: tuple[str, str] | None = None
    key: str | None = None
    model: str | None = None

    @property
    def bucket(self) -> str | None:
        return next((name for name in self.group_by if name in BUCKETS), None)


class Totals(NamedTuple):
    spend: int
    requests: int
    failures: int


class ReportRow(NamedTuple):
    #: One label per `group_by` name, in its order (None: the request had no model / key).
    groups: tuple[str | None, ...]
    totals: Totals


class SpendReport(NamedTuple):
    query: ReportQuery
    rows: list[ReportRow]
    total: Totals


def _instant(field: str, text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
        moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: an offset that moves it out of years 1..9999
        raise InvalidRequest(
            field=field, problem=f"{text!r} is not an ISO 8601 instant; use e.g. 2026-11-28 or 2026-11-28T13:00:00Z"
        ) from None
    if moment.minute or moment.second or moment.microsecond:
        raise InvalidRequest(
            field=field, problem=f"{text!r} is not a whole hour; spend is kept per UTC hour, e.g. 2026-11-28T13:00:00Z"
        )
    return moment


def _group_by(text: str | None) -> tuple[str, ...]:
    names = tuple(name.strip() for name in (text or "").split(",") if name.strip())
    known = DIMENSIONS + BUCKETS
    for name in names:
        if name not in known:
            raise InvalidRequest(field="group_by", problem=f"unknown {name!r}; use any of {', '.join(known)}")
    if len(set(names)) != len(names):
        raise InvalidRequest(field="group_by", problem="names a grouping twice")
    if sum(name in BUCKETS for name in names) > 1:
        raise InvalidRequest(field="group_by", problem=f"at most one time bucket ({', '.join(BUCKETS)})")
    return names


def _entity(entity: str | None, tag: str | None, end_user: str | None) -> tuple[str, str] | None:
    given = {name: value for name, value in (("entity", entity), ("tag", tag), ("end_user", end_user)) if value}
    if len(given) > 1:
        raise InvalidRequest(field=" and ".join(given), problem="give at most one of entity, tag, end_user")
    if tag:
        return ("tag", tag)
    if end_user:
        return ("end_user", end_user)
    if not entity:
        return None
    entity_type, sep, entity_id = entity.partition(":")
    if not sep or not entity_id or entity_type not in ENTITY_TYPES:
        raise InvalidRequest(
            field="entity", problem=f"{entity!r} is not TYPE:ID with TYPE one of {', '.join(ENTITY_TYPES)}"
        )
    return (entity_type, entity_id)


def parse_query(params: Mapping[str, str | None], *, now: datetime) -> ReportQuery:
    """A query from the route's / CLI's parameters (`from`, `to`, `group_by`, `entity`, `key`,
    `model`, `tag`, `end_user`); InvalidRequest names the parameter at fault."""
    to_text, from_text = params.get("to"), params.get("from")
    end = _instant("to", to_text) if to_text else now.replace(minute=0, second=0, microsecond=0) + _HOUR
    try:
        start = _instant("from", from_text) if from_text else end - timedelta(days=DEFAULT_DAYS)
    except OverflowError:
        raise InvalidRequest(field="to", problem="is too early to report the 30 days before it; give from") from None
    if start > end:
        raise InvalidRequest(field="from", problem=f"{start.isoformat()} is after to ({end.isoformat()})")
    return ReportQuery(
        start=start,
        end=end,
        group_by=_group_by(params.get("group_by")),
        entity=_entity(params.get("entity"), params.get("tag"), params.get("end_user")),
        key=params.get("key") or None,
        model=params.get("model") or None,
    )


def bucket_label(bucket: str | None, hour: datetime) -> str | None:
    """hour: 2026-11-28T13:00:00Z; day: 2026-11-28; week: its Monday; month: 2026-11."""
    if bucket == "hour":
        return hour.strftime("%Y-%m-%dT%H:00:00Z")
    if bucket == "day":
        return hour.date().isoformat()
    if bucket == "week":
        return (hour.date() - timedelta(days=hour.weekday())).isoformat()
    if bucket == "month":
        return hour.strftime("%Y-%m")
    return None


def _where(query: ReportQuery, entity: tuple[str, str] | None, *, every_entity: bool) -> list[Any]:
    conditions: list[Any] = [_T.c.hour >= query.start, _T.c.hour < query.end]
    if every_entity:
        conditions.append(_T.c.entity_type != ALL[0])
    else:
        target = entity or ALL
        conditions += [_T.c.entity_type == target[0], _T.c.entity_id == target[1]]
    if query.key is not None:
        conditions.append(_T.c.key_id == query.key)
    if query.model is not None:
        conditions.append(_T.c.model == query.model)
    return conditions


def _bucket_column(session: AsyncSession, bucket: str) -> Any:
    """PostgreSQL folds hours into days/weeks/months itself (30 times fewer rows to send for a
    by-day report); elsewhere the hours come back and are folded here. Both label the same."""
    if bucket != "hour" and dialect_name(session) == "postgresql":
        return func.date_trunc(bucket, func.timezone("UTC", _T.c.hour))
    return _T.c.hour


def _sums() -> list[Any]:
    return [func.sum(_T.c.spend), func.sum(_T.c.requests), func.sum(_T.c.failures)]


async def spend_report(session: AsyncSession, query: ReportQuery) -> SpendReport:
    """The report: rows per group (sorted by their labels) and the total, exact to the nano-USD."""
    every_entity = query.entity is None and "entity" in query.group_by
    dims = [name for name in query.group_by if name in DIMENSIONS]
    columns = [_T.c[column] for name in dims for column in _COLUMNS[name]]
    if query.bucket:
        columns.append(_bucket_column(session, query.bucket))
    statement = select(*columns, *_sums()).where(*_where(query, query.entity, every_entity=every_entity))
    if columns:
        statement = statement.group_by(*columns)
    async with wrap_database_errors():
        result = (await execute_core(session, statement)).all()
        sums: dict[tuple[str | None, ...], list[int]] = defaultdict(lambda: [0, 0, 0])
        for row in result:
            if row[-1] is None:  # no group and no rows: SUM over nothing
                continue
            values = list(row[: len(columns)])
            labels: dict[str, str | None] = {}
            for name in dims:
                if name == "entity":
                    labels[name] = f"{values.pop(0)}:{values.pop(0)}"
                else:
                    labels[name] = values.pop(0) or None
            if query.bucket:
                labels[query.bucket] = bucket_label(query.bucket, values.pop(0))
            row_sums = sums[tuple(labels[name] for name in query.group_by)]
            for i, value in enumerate(row[len(columns):]):
                row_sums[i] += int(value)
        if every_entity:  # the entities' rows overlap: the total counts each request once
            found = (await execute_core(session, select(*_sums()).where(*_where(query, None, every_entity=False)))).one()
            total = Totals(*(int(value or 0) for value in found))
        else:
            total = Totals(*(sum(values[i] for values in sums.values()) for i in range(3)))
    rows = [ReportRow(labels, Totals(*values)) for labels, values in sorted(sums.items(), key=_sort_key)]
    return SpendReport(query, rows, total)


def _sort_key(item: tuple[tuple[str | None, ...], list[int]]) -> tuple[tuple[bool, str], ...]:
    return tuple((label is not None, label or "") for label in item[0])

