"""What the console's overview shows: spend today and this month, who is near a limit, top
spenders, recent denials and alerts — from the rollups, decision-store, alert and ledger services.

The spend sums read the `*` rollup rows (every request once) of an hour range from a partial
covering index (migration 0005_console_indexes), index-only: the month's and today's totals in one
pass, today's top keys grouped and cut in SQL.

"Near a limit" ranks current ledgers by committed `spent` / `limit_at_charge` — the hard limit in
force at each ledger's last charge, written by the record path (migration 0006) — over ledgers
alone, no join to budgets. Only the ledgers in the lowest headroom tiers are read (migration 0007,
spendgate/headroom.py): a tier is `limit_at_charge / spent` to one significant digit, indexed, and
every ledger outside the lowest tiers holding `_RANKED` ledgers has used less of its limit than
every ledger inside them, so the top of the ranking is exact while ~100 heap rows are read, not
every current ledger's (~130k at 100k keys: 0.15-0.26 s before, ~10-20 ms now; bench/README.md,
"Console overview"). It then reads the top candidates' budgets, and their exact `spent` and
`reserved` from the counters — the figures admin responses show — and orders them by
(spent + reserved) / limit. A stale `limit_at_charge` or tier (a limit changed since the last
charge, a budget or entity removed) can only move an entity up or down among the candidates, or
out of them: every figure and limit shown is read from budgets. Candidates whose budgets no
longer show a limit are skipped, and the next ones read (up to `_RANKED`). An entity with only
reservations and no committed spend yet is not a candidate: reservations last seconds, spend
stays. Everything is read on every load.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Double, and_, bindparam, cast, func, literal, or_, select
from sqlmodel import select as model_select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..admin.common import admin_read
from ..admin.ledger_view import LedgerLine, default_end_user_budget, ledger_lines, read_ledgers
from ..alerts.listing import list_alerts
from ..db import execute_core, wrap_database_errors
from ..headroom import TIERS
from ..decision_store import recent
from ..money import format_nanos, to_nanos
from ..reports.rollups import ALL
from ..runtime import Runtime
from ..tables import Budget, EndUser, Ledger, SpendRollup

__all__ = ["NearLimit", "Overview", "overview", "near_limit"]

_L = Ledger.__table__  # type: ignore[attr-defined]
_B = Budget.__table__  # type: ignore[attr-defined]
_R = SpendRollup.__table__  # type: ignore[attr-defined]
_E = EndUser.__table__  # type: ignore[attr-defined]
#: Ranked ledgers read from SQL (the top-N sort costs the same for 25 or 100), entities whose
#: figures are read per round, and rows shown.
_RANKED = 100
_ROUND = 25
_SHOWN = 10


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


def _shares(*current: Any) -> Any:
    """Ledgers with committed spend under a limit, with their committed share of it.

    The share is a double-precision ratio: an ordering key only, never shown or summed (the shares
    shown are integer basis points of exact nanos). Dividing as numeric cost ~55 ms more over the
    ~130k current ledgers of bench/console.py; a ratio's 53-bit precision cannot reorder any
    two entities a person could tell apart."""
    used = cast(_L.c.spent, Double).op("/", return_type=Double)(cast(_L.c.limit_at_charge, Double))
    return select(_L.c.entity_type, _L.c.entity_id, used.label("used")).where(
        *current, _L.c.spent > 0, _L.c.limit_at_charge > 0
    )


def _current(now: datetime) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Current ledgers: windowed ones while `period_start <= now < period_end`, and never-ending
    ones charged under a limit (not the many budget-less end-user and tag ledgers)."""
    return (_L.c.period_end > now, _L.c.period_start <= now), (_L.c.period_end.is_(None), _L.c.limit_at_charge.is_not(None))


def _in_tiers(upto: int | None = None) -> Any:
    """`headroom_tier IN (every tier up to `upto`)`, the list written into the SQL.

    With the tiers listed, PostgreSQL descends ix_ledgers_headroom once per tier straight to the
    current periods (an `= ANY` index condition), instead of walking the past periods' entries of
    every tier below — which grow with history, the current ones with the keys alone."""
    tiers = [tier for tier in TIERS if upto is None or tier <= upto]
    return _L.c.headroom_tier.in_(bindparam("tiers", tiers, expanding=True, literal_execute=True))


async def _tier_threshold(session: AsyncSession, now: datetime) -> int | None:
    """The headroom tier of the `_RANKED`-th current ledger nearest its limit by tier
    (spendgate/headroom.py), or None when fewer are tiered: every ledger beyond it has used less
    of its limit than every ledger at or below it. Read from ix_ledgers_headroom alone, lowest
    tiers first, the period conditions checked in the index."""
    lowest = [
        select(_L.c.headroom_tier).where(_in_tiers(), *conditions)
        .order_by(_L.c.headroom_tier).limit(_RANKED).subquery()
        for conditions in _current(now)
    ]
    both = select(lowest[0].c.headroom_tier).union_all(select(lowest[1].c.headroom_tier)).subquery()
    statement = select(both.c.headroom_tier).order_by(both.c.headroom_tier).offset(_RANKED - 1).limit(1)
    return (await execute_core(session, statement)).scalar()


async def _candidates(session: AsyncSession, now: datetime) -> list[tuple[str, str]]:
    """Entities whose current ledgers have the most committed spend for their limit, most first
    (over ledgers alone, no join).

    Only the current ledgers in the lowest headroom tiers are read (from ix_ledgers_headroom) and
    ordered by their exact share; with fewer than `_RANKED` tiered ledgers, every current one is.
    The two statements see two moments: should a charge in between have moved ledgers out of those
    tiers (a raised limit), fewer than `_RANKED` come back, and every current ledger is ranked.

    "Exact" is in the order the SQL sorts by, a double: two shares within one part in 2^53 of each
    other can tie, and a ledger just outside the tiers read could then have won the tie-break by
    name. The shares shown are exact either way."""
    threshold = await _tier_threshold(session, now)
    rows = await _ranked(session, now, threshold)
    if threshold is not None and len(rows) < _RANKED:
        rows = await _ranked(session, now, None)
    return list(dict.fromkeys((row[0], row[1]) for row in rows))


async def _ranked(session: AsyncSession, now: datetime, threshold: int | None) -> Sequence[Any]:
    """The first `_RANKED` current ledgers by committed share, of the tiers up to `threshold` (None: all)."""
    tiered = () if threshold is None else (_in_tiers(threshold),)
    windowed, never = (_shares(*conditions, *tiered) for conditions in _current(now))
    both = windowed.union_all(never).subquery()
    statement = (
        select(both.c.entity_type, both.c.entity_id)
        .order_by(both.c.used.desc(), both.c.entity_type, both.c.entity_id)
        .limit(_RANKED)
    )
    return (await execute_core(session, statement)).all()


async def _lines(
    session: AsyncSession, runtime: Runtime, entities: Sequence[tuple[str, str]], now: datetime
) -> dict[str, list[LedgerLine]]:
    """The current ledger lines of `entities` — their budgets as the decision path applies them."""
    budgets: dict[tuple[str, str], list[Budget]] = {entity: [] for entity in entities}
    wanted = or_(*(and_(_B.c.entity_type == t, _B.c.entity_id == i) for t, i in entities))
    rows = await session.exec(model_select(Budget).where(wanted).order_by(_B.c.entity_type, _B.c.entity_id, _B.c.id))
    for row in rows.all():  # in the order load_budgets reads them
        budgets[(row.entity_type, row.entity_id)].append(row)
    untracked = [i for t, i in entities if t == "end_user" and not budgets[(t, i)]]
    if untracked and runtime.settings.default_end_user_budget:  # end users never created: the default budget
        known = set((await execute_core(session, select(_E.c.id).where(_E.c.id.in_(untracked)))).scalars())
        for entity_id in set(untracked) - known:
            budgets[("end_user", entity_id)] = default_end_user_budget(runtime.settings, entity_id)
    return {
        f"{entity_type}:{entity_id}": ledger_lines(
            entity_type=entity_type, entity_id=entity_id, budgets=budgets[(entity_type, entity_id)], at=now
        )
        for entity_type, entity_id in entities
    }


async def near_limit(*, session: AsyncSession, runtime: Runtime, now: datetime) -> list[NearLimit]:
    """Entities whose current ledger is closest to its hard limit, most used first."""
    candidates = await _candidates(session, now)
    found: list[NearLimit] = []
    for start in range(0, len(candidates), _ROUND):  # one round unless stale candidates showed nothing
        shown = await read_ledgers(
            counters=runtime.counters,
            groups=await _lines(session, runtime, candidates[start : start + _ROUND], now),
        )
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
        if len(found) >= _SHOWN:
            break
    found.sort(key=lambda item: item.used_bp, reverse=True)
    return found[:_SHOWN]


def _all_rows(start: datetime, end: datetime) -> Any:
    """The `*` rollup rows (every request once) of the hours in [start, end).

    Filtered on entity_type alone (only the `*` entity has type `*`), written into the SQL text
    rather than bound, so that PostgreSQL reads the partial covering index ix_spend_rollups_all_hour
    (index-only) in generic plans of the prepared statement too."""
    return and_(_R.c.entity_type == literal(ALL[0], literal_execute=True), _R.c.hour >= start, _R.c.hour < end)


async def _totals(session: AsyncSession, month_start: datetime, day_start: datetime, end: datetime) -> Any:
    """(spend, requests) of the month and of today, in one pass over the month's hours."""
    today = _R.c.hour >= day_start
    statement = select(
        func.sum(_R.c.spend), func.sum(_R.c.requests),
        func.sum(_R.c.spend).filter(today), func.sum(_R.c.requests).filter(today),
    ).where(_all_rows(month_start, end))
    return (await execute_core(session, statement)).one()


async def _top_keys(session: AsyncSession, day_start: datetime, end: datetime) -> list[TopSpender]:
    """Today's biggest keys, grouped and cut in SQL: ~20k keys spend on a busy day, and
    carrying them all to Python cost more than the query (bench/console.py)."""
    spend = func.sum(_R.c.spend)
    statement = (
        select(_R.c.key_id, spend, func.sum(_R.c.requests))
        .where(_all_rows(day_start, end), _R.c.key_id != "")
        .group_by(_R.c.key_id)
        .order_by(spend.desc(), _R.c.key_id)
        .limit(_SHOWN)
    )
    rows = (await execute_core(session, statement)).all()
    return [TopSpender(key_id, format_nanos(int(total)), int(requests)) for key_id, total, requests in rows]


async def overview(*, session: AsyncSession, runtime: Runtime) -> Overview:
    now = runtime.clock()
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)
    async with admin_read(), wrap_database_errors():
        month_spend, month_requests, today_spend, today_requests = await _totals(session, month_start, day_start, end)
        return Overview(
            spend_today=format_nanos(int(today_spend or 0)),
            requests_today=int(today_requests or 0),
            spend_month=format_nanos(int(month_spend or 0)),
            requests_month=int(month_requests or 0),
            near_limit=await near_limit(session=session, runtime=runtime, now=now),
            top_keys_today=await _top_keys(session, day_start, end),
            denials=(await recent(session, entity=None, decision="deny", limit=10, cursor=None))["items"],
            alerts=(await list_alerts(session, entity=None, status=None, limit=10, cursor=None))["items"],
        )
