"""What the console's overview shows: spend today and this month, who is near a limit, top
spenders, recent denials and alerts — from the reports, decision-store, alert and ledger services.

The spend sums read the hourly rollups. Whole past hours are summed once and kept for a minute
(`_past_hours`), keyed by the current hour: a record is rolled up into the hour it is recorded
in, so those rows no longer change — the current hour is always read live. At 1M spend events a
month-to-date sum is ~1M rollup rows; this keeps the overview from re-summing them each load.

"Near a limit" ranks current ledgers by committed `spent` / limit in SQL (one pass over the
ledgers that have a budget window, no per-entity query), then reads the top candidates' exact
`spent` and `reserved` from the counters — the figures admin responses show — and orders them by
(spent + reserved) / limit. An entity with only reservations and no committed spend yet is not a
candidate; reservations last seconds, spend stays. The ranking is reused for 15 s unless an admin
change (an audit event) happened since; the figures are read live on every load.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Numeric, and_, cast, func, literal, or_, select
from sqlmodel import select as model_select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..admin.common import admin_read
from ..admin.ledger_view import ledger_lines, read_ledgers
from ..alerts.listing import list_alerts
from ..db import execute_core
from ..decision_store import recent
from ..money import format_nanos, to_nanos
from ..reports.query import ReportQuery, ReportRow, SpendReport, Totals, spend_report
from ..runtime import Runtime
from ..tables import AuditEvent, Budget, Ledger

__all__ = ["NearLimit", "Overview", "overview", "near_limit"]

_L = Ledger.__table__  # type: ignore[attr-defined]
_B = Budget.__table__  # type: ignore[attr-defined]
_A = AuditEvent.__table__  # type: ignore[attr-defined]
#: Candidates read from SQL, and rows shown.
_CANDIDATES = 25
_SHOWN = 10
#: How long sums of whole past hours are reused (bounds how late a record to a past hour shows).
_PAST_SECONDS = 60.0
#: How long the near-limit ranking is reused when no admin change was made meanwhile.
_CANDIDATES_SECONDS = 15.0
_ranked: dict[str, tuple[float, Any, list[tuple[str, str]]]] = {}
_past: dict[tuple[Any, ...], tuple[float, SpendReport]] = {}


class NearLimit(NamedTuple):
    entity_type: str
    entity_id: str
    window: str | None
    spent: str
    reserved: str
    limit: str
    #: Used share of the limit in basis points (integer: spent+reserved over limit).
    used_bp: int
    resets_at: datetime | None


class TopSpender(NamedTuple):
    key_id: str
    spend: str
    requests: int


class Overview(NamedTuple):
    spend_today: str
    requests_today: int
    spend_month: str
    requests_month: int
    near_limit: list[NearLimit]
    top_keys_today: list[TopSpender]
    denials: list[dict[str, Any]]
    alerts: list[dict[str, Any]]


def _hour(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


async def _candidates(session: AsyncSession, now: datetime) -> list[tuple[str, str]]:
    """Entities whose current ledgers have the most committed spend for their limit (one SQL pass)."""
    current = or_(_L.c.period_end.is_(None), _L.c.period_end > now)
    same_window = func.coalesce(_L.c.window, literal("-")) == func.coalesce(_B.c.duration, literal("-"))
    used = cast(_L.c.spent, Numeric(38, 0)) / _B.c.max_budget  # ordering only; shown figures are exact
    statement = (
        select(_L.c.entity_type, _L.c.entity_id)
        .select_from(_L.join(_B, and_(_L.c.entity_type == _B.c.entity_type, _L.c.entity_id == _B.c.entity_id, same_window)))
        .where(current, _L.c.period_start <= now, _B.c.max_budget > 0, _L.c.spent > 0)
        .order_by(used.desc())
        .limit(_CANDIDATES)
    )
    return list(dict.fromkeys((row[0], row[1]) for row in (await execute_core(session, statement)).all()))


async def _cached_candidates(session: AsyncSession, runtime: Runtime, now: datetime) -> list[tuple[str, str]]:
    """`_candidates`, reused for up to `_CANDIDATES_SECONDS` unless an admin change was made since.

    Scanning every current ledger costs ~0.4 s at 2M ledgers (bench/console.py); the ranking moves
    slowly, and the figures shown are read live for every page either way.
    """
    marker = (await execute_core(session, select(func.max(_A.c.id)))).scalar()
    key = runtime.settings.database_url
    found = _ranked.get(key)
    if found is not None and found[1] == marker and time.monotonic() - found[0] < _CANDIDATES_SECONDS:
        return found[2]
    candidates = await _candidates(session, now)
    _ranked[key] = (time.monotonic(), marker, candidates)
    return candidates


async def near_limit(*, session: AsyncSession, runtime: Runtime, now: datetime, cached: bool = True) -> list[NearLimit]:
    """Entities whose current ledger is closest to its hard limit, most used first."""
    entities = await (_cached_candidates(session, runtime, now) if cached else _candidates(session, now))
    budgets: dict[tuple[str, str], list[Budget]] = {entity: [] for entity in entities}
    if entities:  # one query for every candidate's windows, in the order load_budgets reads them
        wanted = or_(*(and_(_B.c.entity_type == t, _B.c.entity_id == i) for t, i in entities))
        rows = await session.exec(model_select(Budget).where(wanted).order_by(_B.c.entity_type, _B.c.entity_id, _B.c.id))
        for row in rows.all():
            budgets[(row.entity_type, row.entity_id)].append(row)
    groups = {
        f"{entity_type}:{entity_id}": ledger_lines(
            entity_type=entity_type, entity_id=entity_id, budgets=budgets[(entity_type, entity_id)], at=now
        )
        for entity_type, entity_id in entities
    }
    shown = await read_ledgers(counters=runtime.counters, groups=groups)
    found: list[NearLimit] = []
    for name, ledgers in shown.items():
        entity_type, _, entity_id = name.partition(":")
        for ledger in ledgers:
            if ledger.limit is None or to_nanos(ledger.limit) <= 0:
                continue
            used_nanos = to_nanos(ledger.spent) + to_nanos(ledger.reserved)
            found.append(NearLimit(
                entity_type, entity_id, ledger.window, ledger.spent, ledger.reserved, ledger.limit,
                used_nanos * 10_000 // to_nanos(ledger.limit), ledger.resets_at,
            ))
    found.sort(key=lambda item: item.used_bp, reverse=True)
    return found[:_SHOWN]


async def _past_hours(session: AsyncSession, runtime: Runtime, query: ReportQuery) -> SpendReport:
    """`spend_report` of whole past hours (query.end is the current hour), reused for a minute."""
    key = (runtime.settings.database_url, query)
    found = _past.get(key)
    if found is not None and time.monotonic() - found[0] < _PAST_SECONDS:
        return found[1]
    report = await spend_report(session, query)
    for stale in [k for k in _past if k[0] == key[0] and k[1].end != query.end]:
        del _past[stale]
    _past[key] = (time.monotonic(), report)
    return report


def _merged(*reports: SpendReport) -> tuple[list[ReportRow], Totals]:
    sums: dict[tuple[str | None, ...], list[int]] = defaultdict(lambda: [0, 0, 0])
    for report in reports:
        for row in report.rows:
            for i, value in enumerate(row.totals):
                sums[row.groups][i] += value
    rows = [ReportRow(groups, Totals(*values)) for groups, values in sums.items()]
    return rows, Totals(*(sum(report.total[i] for report in reports) for i in range(3)))


async def overview(*, session: AsyncSession, runtime: Runtime) -> Overview:
    now = runtime.clock()
    hour = _hour(now)
    end = hour + timedelta(hours=1)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)
    async with admin_read():
        this_hour = await spend_report(session, ReportQuery(start=hour, end=end, group_by=("key",)))
        today_rows, today_total = _merged(
            await _past_hours(session, runtime, ReportQuery(start=day_start, end=hour, group_by=("key",))), this_hour
        )
        month_past = await _past_hours(session, runtime, ReportQuery(start=month_start, end=hour, group_by=()))
        month_total = Totals(*(month_past.total[i] + this_hour.total[i] for i in range(3)))
        top = sorted(
            (row for row in today_rows if row.groups[0] is not None), key=lambda row: row.totals.spend, reverse=True
        )[:_SHOWN]
        return Overview(
            spend_today=format_nanos(today_total.spend),
            requests_today=today_total.requests,
            spend_month=format_nanos(month_total.spend),
            requests_month=month_total.requests,
            near_limit=await near_limit(session=session, runtime=runtime, now=now),
            top_keys_today=[TopSpender(str(row.groups[0]), format_nanos(row.totals.spend), row.totals.requests)
                            for row in top],
            denials=(await recent(session, entity=None, decision="deny", limit=10, cursor=None))["items"],
            alerts=(await list_alerts(session, entity=None, status=None, limit=10, cursor=None))["items"],
        )
