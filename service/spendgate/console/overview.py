"""What the console's overview shows: spend today and this month, who is near a limit, top
spenders, recent denials and alerts — from the rollups, decision-store, alert and ledger services.

Every figure is read on every load. The spend sums read the `*` rollup rows (every request once)
of an hour range from a partial covering index (migration 0005_console_indexes), index-only; "near
a limit" reads only the ledgers whose period has not ended (an index range on period_end).

"Near a limit" ranks current ledgers by committed `spent` / limit in SQL (one query, no
per-entity query), then reads the top candidates' exact `spent` and `reserved` from the counters
— the figures admin responses show — and orders them by (spent + reserved) / limit. An entity
with only reservations and no committed spend yet is not a candidate; reservations last seconds,
spend stays. The ranking (not the figures) is reused for 15 s unless an admin change (an audit
event) happened since.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Numeric, and_, cast, func, literal, or_, select
from sqlmodel import select as model_select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..admin.common import admin_read
from ..admin.ledger_view import ledger_lines, read_ledgers
from ..alerts.listing import list_alerts
from ..db import execute_core, wrap_database_errors
from ..decision_store import recent
from ..money import format_nanos, to_nanos
from ..reports.rollups import ALL
from ..runtime import Runtime
from ..tables import AuditEvent, Budget, Ledger, SpendRollup

__all__ = ["NearLimit", "Overview", "overview", "near_limit"]

_L = Ledger.__table__  # type: ignore[attr-defined]
_B = Budget.__table__  # type: ignore[attr-defined]
_R = SpendRollup.__table__  # type: ignore[attr-defined]
_A = AuditEvent.__table__  # type: ignore[attr-defined]
#: Candidates read from SQL, and rows shown.
_CANDIDATES = 25
_SHOWN = 10
#: How long the near-limit ranking is reused when no admin change was made meanwhile.
_CANDIDATES_SECONDS = 15.0
_ranked: dict[str, tuple[float, Any, list[tuple[str, str]]]] = {}


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


def _shares(ledgers: Any, budgets: Any) -> Any:
    """Current ledgers with committed spend joined to their budget window (`ledgers` already
    restricted to current periods), with their committed share of the limit."""
    used = cast(ledgers.c.spent, Numeric(38, 0)) / budgets.c.max_budget  # ordering only; shown figures are exact
    return select(ledgers.c.entity_type, ledgers.c.entity_id, used.label("used")).where(
        ledgers.c.entity_type == budgets.c.entity_type, ledgers.c.entity_id == budgets.c.entity_id,
        budgets.c.max_budget > 0, ledgers.c.spent > 0,
    )


async def _candidates(session: AsyncSession, now: datetime) -> list[tuple[str, str]]:
    """Entities whose current ledgers have the most committed spend for their limit (one SQL pass).

    Windowed ledgers are current while `period_end > now` (an index range, ix_ledgers_period_end);
    ledgers of windowless budgets never end, and are found from those few budgets rather than from
    every windowless ledger (end users and tags without a budget have one each)."""
    windowed = _shares(_L, _B).where(_L.c.period_end > now, _L.c.period_start <= now, _L.c.window == _B.c.duration)
    never = _shares(_L, _B).where(_B.c.duration.is_(None), _L.c.window.is_(None), _L.c.period_end.is_(None))
    both = windowed.union_all(never).subquery()
    statement = select(both.c.entity_type, both.c.entity_id).order_by(both.c.used.desc()).limit(_CANDIDATES)
    return list(dict.fromkeys((row[0], row[1]) for row in (await execute_core(session, statement)).all()))


async def _cached_candidates(session: AsyncSession, runtime: Runtime, now: datetime) -> list[tuple[str, str]]:
    """`_candidates`, reused for up to `_CANDIDATES_SECONDS` unless an admin change was made since.

    Even as an index range, ranking the ~130k current ledgers of 100k keys (and hashing their
    ~320k budgets) costs ~0.25-0.4 s (bench/console.py); the ranking moves slowly, and the
    figures shown are read live for every page either way.
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


async def _sums(session: AsyncSession, start: datetime, end: datetime, *, by_key: bool) -> list[Any]:
    """Sums of the `*` rollup rows (every request once) over [start, end), per key when asked.

    Filtered on entity_type alone (only the `*` entity has type `*`), written into the SQL text
    rather than bound, so that PostgreSQL reads the partial covering index ix_spend_rollups_all_hour
    (index-only) in generic plans of the prepared statement too."""
    columns = [_R.c.key_id] if by_key else []
    statement = select(*columns, func.sum(_R.c.spend), func.sum(_R.c.requests)).where(
        _R.c.entity_type == literal(ALL[0], literal_execute=True), _R.c.hour >= start, _R.c.hour < end
    )
    if by_key:
        statement = statement.group_by(_R.c.key_id)
    return list((await execute_core(session, statement)).all())


async def overview(*, session: AsyncSession, runtime: Runtime) -> Overview:
    now = runtime.clock()
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)
    async with admin_read(), wrap_database_errors():
        today = [(key_id, int(spend), int(requests))
                 for key_id, spend, requests in await _sums(session, day_start, end, by_key=True) if spend is not None]
        (month_spend, month_requests), = await _sums(session, month_start, end, by_key=False)
        top = sorted((row for row in today if row[0]), key=lambda row: row[1], reverse=True)[:_SHOWN]
        return Overview(
            spend_today=format_nanos(sum(row[1] for row in today)),
            requests_today=sum(row[2] for row in today),
            spend_month=format_nanos(int(month_spend or 0)),
            requests_month=int(month_requests or 0),
            near_limit=await near_limit(session=session, runtime=runtime, now=now),
            top_keys_today=[TopSpender(key_id, format_nanos(spend), requests) for key_id, spend, requests in top],
            denials=(await recent(session, entity=None, decision="deny", limit=10, cursor=None))["items"],
            alerts=(await list_alerts(session, entity=None, status=None, limit=10, cursor=None))["items"],
        )
