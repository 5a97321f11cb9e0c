"""What an entity page shows besides the entity itself: budget bars, spend by day and model,
recent spend events, denials and alerts, and the entities it owns.

Spend comes from `reports.spend_report` (the rollups), denials from the decision store, alerts
from the alert outbox, owned entities from `admin.lists` — the services behind the API's routes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..admin.common import admin_read
from ..admin.lists import ListFilters, list_members, list_page
from ..alerts.listing import list_alerts
from ..db import execute_core
from ..decision_store import recent
from ..money import format_nanos, to_nanos
from ..reports.query import ReportQuery, spend_report
from ..runtime import Runtime
from ..tables import ApiKey, SpendEvent
from .kinds import ConsoleKind

__all__ = ["CHART_DAYS", "Bar", "EntityExtras", "bars", "entity_extras", "request_detail"]

#: Days the spend chart and the per-model table cover, today included.
CHART_DAYS = 30
_EVENTS = 20
_SE = SpendEvent.__table__  # type: ignore[attr-defined]
_K = ApiKey.__table__  # type: ignore[attr-defined]


class Bar(NamedTuple):
    """One budget window's current ledger; `*_nanos` are for the bar's length only."""

    window: str | None
    spent: str
    reserved: str
    limit: str | None
    soft_budget: str | None
    remaining: str | None
    used_nanos: int
    limit_nanos: int
    resets_at: datetime | None


def bars(ledgers: list[Any]) -> list[Bar]:
    shown = []
    for ledger in ledgers:
        used = to_nanos(ledger.spent) + to_nanos(ledger.reserved)
        limit = to_nanos(ledger.limit) if ledger.limit is not None else None
        remaining = None if limit is None else format_nanos(max(limit - used, 0))
        shown.append(Bar(
            ledger.window, ledger.spent, ledger.reserved, ledger.limit, ledger.soft_budget, remaining,
            used, limit or 0, ledger.resets_at,
        ))
    return shown


class EntityExtras(NamedTuple):
    #: {"days": [...], "models": [...], "series": {model: [spend per day, decimal strings]}}
    chart: dict[str, Any]
    #: (model, spend, requests, failures) over the chart's days.
    models: list[tuple[str, str, int, int]]
    spend_total: str
    events: list[dict[str, Any]]
    denials: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    #: (title, console kind, items) of entities this one owns (a team's members and keys …).
    owned: list[tuple[str, str, list[Any]]]


async def _events(session: AsyncSession, kind: ConsoleKind, entity_id: str) -> list[dict[str, Any]]:
    """Recent spend events of a key, or of the keys a team or user owns (by the indexed key columns)."""
    owner = {"team": _K.c.team_id, "user": _K.c.user_id}.get(kind.name)
    query = select(_SE.c.request_id, _SE.c.cost, _SE.c.outcome, _SE.c.key_id, _SE.c.model, _SE.c.created_at)
    if kind.name == "key":
        query = query.where(_SE.c.key_id == entity_id)
    elif owner is not None:
        query = query.where(_SE.c.key_id.in_(select(_K.c.id).where(owner == entity_id)))
    else:
        return []
    rows = (await execute_core(session, query.order_by(_SE.c.created_at.desc()).limit(_EVENTS))).all()
    return [dict(row._mapping) | {"cost": format_nanos(row.cost)} for row in rows]


async def _owned(
    session: AsyncSession, runtime: Runtime, kind: ConsoleKind, entity_id: str
) -> list[tuple[str, str, list[Any]]]:
    def page(route: str, filters: ListFilters) -> Any:
        return list_page(session=session, counters=runtime.counters, route=route, filters=filters, limit=50, cursor=None)

    if kind.name == "org":
        return [("Teams", "team", (await page("teams", ListFilters(org_id=entity_id))).items),
                ("Users", "user", (await page("users", ListFilters(org_id=entity_id))).items)]
    if kind.name == "team":
        members = await list_members(
            session=session, counters=runtime.counters, team_id=entity_id, filters=ListFilters(), limit=50, cursor=None
        )
        return [("Members", "user", members.items), ("Keys", "key", (await page("keys", ListFilters(team_id=entity_id))).items)]
    if kind.name == "user":
        return [("Keys", "key", (await page("keys", ListFilters(user_id=entity_id))).items)]
    return []


async def entity_extras(*, session: AsyncSession, runtime: Runtime, kind: ConsoleKind, entity_id: str) -> EntityExtras:
    now = runtime.clock()
    first = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=CHART_DAYS - 1)
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    target = (kind.name, entity_id)
    days = [(first + timedelta(days=i)).date().isoformat() for i in range(CHART_DAYS)]
    async with admin_read():
        by_day = await spend_report(session, ReportQuery(start=first, end=end, group_by=("day", "model"), entity=target))
        by_model = await spend_report(session, ReportQuery(start=first, end=end, group_by=("model",), entity=target))
        cells: dict[str, dict[str, int]] = {}
        for row in by_day.rows:
            day, model = row.groups
            cells.setdefault(model or "(none)", {})[str(day)] = row.totals.spend
        chart = {
            "days": days,
            "models": sorted(cells),
            "series": {model: [format_nanos(cells[model].get(day, 0)) for day in days] for model in sorted(cells)},
        }
        return EntityExtras(
            chart=chart,
            models=[(row.groups[0] or "(none)", format_nanos(row.totals.spend), row.totals.requests, row.totals.failures)
                    for row in sorted(by_model.rows, key=lambda r: r.totals.spend, reverse=True)],
            spend_total=format_nanos(by_model.total.spend),
            events=await _events(session, kind, entity_id),
            denials=(await recent(session, entity=target, decision="deny", limit=10, cursor=None))["items"],
            alerts=(await list_alerts(session, entity=target, status=None, limit=10, cursor=None))["items"],
            owned=await _owned(session, runtime, kind, entity_id),
        )


async def request_detail(*, session: AsyncSession, request_id: str) -> dict[str, Any] | None:
    """One recorded request: its cost, outcome and the ledgers it charged."""
    async with admin_read():
        row = (await execute_core(session, select(_SE).where(_SE.c.request_id == request_id))).first()
    if row is None:
        return None
    found = dict(row._mapping)
    return found | {"cost": format_nanos(found["cost"])}
