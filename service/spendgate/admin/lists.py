"""Admin lists: a page of entities, each as its GET shows it, in one SQL statement per page.

A page is keyset-paginated on the id (`id > last id ORDER BY id LIMIT n`), so deep pages cost what
the first does and rows inserted while a client pages are neither skipped nor repeated (see
`cursor.py`). The statement selects the page of entities and LEFT JOINs their budget windows
(a key's also its per-model windows); the current ledgers of the whole page then come from the
counters in one `read` — the same `ledger_lines` + `read_ledgers` the entity GET uses, so the
figures agree. Two round trips per page, whatever its size.

End users and tags list the ones created here; those only tracked (named in requests, never
created) are read by id. Deleted keys are not listed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Subquery, Table, and_, func, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..counters import Counters
from ..db import dialect_name, execute_core
from ..errors import NotFound
from ..tables import ApiKey, Budget, EndUser, Org, Tag, Team, TeamMember, User, utcnow
from .common import admin_read
from .cursor import decode_cursor, encode_cursor, scope_of
from .ledger_view import LedgerLine, ledger_lines, public_budget, read_ledgers
from .schemas import EndUserPublic, KeyPublic, MembershipPublic, OrgPublic, Page, TagPublic, TeamPublic, UserPublic

__all__ = ["ListFilters", "Listing", "LISTINGS", "MEMBERS", "list_page", "list_members"]

_KEY_MODEL = "key_model"


class ListFilters(NamedTuple):
    """The filters of a list request; None means not filtered."""

    org_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    blocked: bool | None = None
    id_prefix: str | None = None


def _table(model: Any) -> Table:
    return model.__table__


@dataclass(frozen=True, slots=True)
class Listing:
    """How one kind is listed: its table, key column, budget entity type and accepted filters."""

    route: str
    model: Any
    public: type[BaseModel]
    entity_type: str
    filters: frozenset[str]
    key: str = "id"

    @property
    def table(self) -> Table:
        return _table(self.model)


_COMMON = frozenset({"blocked", "id_prefix"})
LISTINGS: dict[str, Listing] = {
    listing.route: listing
    for listing in (
        Listing("orgs", Org, OrgPublic, "org", _COMMON),
        Listing("teams", Team, TeamPublic, "team", _COMMON | {"org_id"}),
        Listing("users", User, UserPublic, "user", _COMMON | {"org_id", "team_id"}),
        Listing("keys", ApiKey, KeyPublic, "key", _COMMON | {"user_id", "team_id"}),
        Listing("end-users", EndUser, EndUserPublic, "end_user", _COMMON),
        Listing("tags", Tag, TagPublic, "tag", _COMMON),
    )
}
MEMBERS = Listing("teams/{team_id}/members", TeamMember, MembershipPublic, "team_member", _COMMON, key="user_id")

#: Columns never shown in a list (nor by GET): the secret's hash, the revocation stamp.
_HIDDEN = frozenset({"key_hash", "deleted_at"})


def _conditions(listing: Listing, filters: ListFilters, after: str | None, team_id: str | None) -> list[Any]:
    t = listing.table
    key = t.c[listing.key]
    found: list[Any] = []
    if after is not None:
        found.append(key > after)
    if filters.blocked is not None:
        found.append(t.c.blocked == filters.blocked)
    if filters.id_prefix:
        prefix = filters.id_prefix
        # LIKE narrows (escaped: '%' and '_' are literal); substr makes it exact (SQLite's LIKE ignores case).
        found += [key.startswith(prefix, autoescape=True), func.substr(key, 1, len(prefix)) == prefix]
    if filters.org_id is not None:
        found.append(t.c.org_id == filters.org_id)
    if filters.user_id is not None:
        found.append(t.c.user_id == filters.user_id)
    if filters.team_id is not None:
        if listing.model is User:
            members = _table(TeamMember)
            found.append(key.in_(select(members.c.user_id).where(members.c.team_id == filters.team_id)))
        else:
            found.append(t.c.team_id == filters.team_id)
    if listing.model is ApiKey:
        found.append(t.c.deleted_at.is_(None))
    if team_id is not None:
        found.append(t.c.team_id == team_id)
    return found


def _children(column: Any, owner: Any, *, postgres: bool) -> ColumnElement[bool]:
    """`column` starts with `owner` + '/' — as an index range, byte-wise ('0' follows '/').

    PostgreSQL compares with the pattern operators, which ignore the database's collation and
    use `ix_budgets_entity_prefix` (text_pattern_ops); SQLite compares bytes anyway."""
    lower, upper = owner + "/", owner + "0"
    if postgres:
        # Grouped: PostgreSQL gives `||` and these operators one precedence, left to right.
        at_least = column.op("~>=~", is_comparison=True)(lower.self_group())
        below = column.op("~<~", is_comparison=True)(upper.self_group())
        return and_(at_least, below)
    return and_(column >= lower, column < upper)


def _statement(listing: Listing, page: Subquery, *, postgres: bool) -> Any:
    budgets = _table(Budget)
    if listing.model is TeamMember:
        owner: Any = page.c.team_id + "/" + page.c.user_id
    else:
        owner = page.c.id
    joined = and_(budgets.c.entity_type == listing.entity_type, budgets.c.entity_id == owner)
    if listing.model is ApiKey:
        joined = or_(
            joined,
            and_(budgets.c.entity_type == _KEY_MODEL, _children(budgets.c.entity_id, owner, postgres=postgres)),
        )
    return (
        select(
            page,
            budgets.c.id.label("b_id"),
            budgets.c.entity_type.label("b_entity_type"),
            budgets.c.entity_id.label("b_entity_id"),
            budgets.c.max_budget.label("b_max_budget"),
            budgets.c.soft_budget.label("b_soft_budget"),
            budgets.c.duration.label("b_duration"),
            budgets.c.reset.label("b_reset"),
            budgets.c.set_at.label("b_set_at"),
        )
        .select_from(page.outerjoin(budgets, joined))
        .order_by(page.c[listing.key], budgets.c.id)
    )


class _Entity(NamedTuple):
    fields: dict[str, Any]
    budgets: list[Budget]
    model_budgets: dict[str, list[Budget]]


def _group(listing: Listing, rows: Sequence[Any]) -> list[_Entity]:
    """Rows of (entity, budget window) in key order → one entry per entity, windows in id order."""
    columns = [c.name for c in listing.table.columns if c.name not in _HIDDEN]
    entities: list[_Entity] = []
    last: Any = object()
    for row in rows:
        data = row._mapping
        if data[listing.key] != last:
            last = data[listing.key]
            entities.append(_Entity({name: data[name] for name in columns}, [], {}))
        if data["b_id"] is None:
            continue
        entity = entities[-1]
        budget = Budget(
            id=data["b_id"],
            entity_type=data["b_entity_type"],
            entity_id=data["b_entity_id"],
            max_budget=data["b_max_budget"],
            soft_budget=data["b_soft_budget"],
            duration=data["b_duration"],
            reset=data["b_reset"],
            set_at=data["b_set_at"],
        )
        if budget.entity_type == _KEY_MODEL:
            prefix = f"{entity.fields['id']}/"
            if budget.entity_id.startswith(prefix):  # the range is byte-wise; this is exact
                entity.model_budgets.setdefault(budget.entity_id[len(prefix) :], []).append(budget)
        else:
            entity.budgets.append(budget)
    return entities


def _entity_id(listing: Listing, fields: Mapping[str, Any]) -> str:
    if listing.model is TeamMember:
        return f"{fields['team_id']}/{fields['user_id']}"
    return str(fields["id"])


async def _views(counters: Counters, listing: Listing, entities: Sequence[_Entity]) -> list[BaseModel]:
    """Every entity's public shape; one counters read for the ledgers of the whole page."""
    now = utcnow()
    groups: dict[str, list[LedgerLine]] = {}
    for index, entity in enumerate(entities):
        entity_id = _entity_id(listing, entity.fields)
        groups[f"{index}"] = ledger_lines(
            entity_type=listing.entity_type, entity_id=entity_id, budgets=entity.budgets, at=now
        )
        for model, rows in entity.model_budgets.items():
            groups[f"{index}/{model}"] = ledger_lines(
                entity_type=_KEY_MODEL, entity_id=f"{entity_id}/{model}", budgets=rows, at=now
            )
    ledgers = await read_ledgers(counters=counters, groups=groups)
    views: list[BaseModel] = []
    for index, entity in enumerate(entities):
        shown: dict[str, Any] = {
            **entity.fields,
            "id": _entity_id(listing, entity.fields),
            "budget": public_budget(entity.budgets),
            "ledgers": ledgers[f"{index}"],
        }
        if listing.model is ApiKey:
            shown["model_budgets"] = {model: public_budget(rows) for model, rows in entity.model_budgets.items()}
            shown["model_ledgers"] = {model: ledgers[f"{index}/{model}"] for model in entity.model_budgets}
        views.append(listing.public.model_validate(shown))
    return views


async def _page(
    *,
    session: AsyncSession,
    counters: Counters,
    listing: Listing,
    filters: ListFilters,
    limit: int,
    cursor: str | None,
    team_id: str | None = None,
) -> Page[Any]:
    scope = scope_of(listing.route, {**filters._asdict(), "team": team_id})
    after = decode_cursor(cursor, scope)
    postgres = dialect_name(session) == "postgresql"
    t = listing.table
    page = (
        select(t)
        .where(*_conditions(listing, filters, after, team_id))
        .order_by(t.c[listing.key])
        .limit(limit + 1)
        .subquery("page")
    )
    rows = (await execute_core(session, _statement(listing, page, postgres=postgres))).all()
    entities = _group(listing, rows)
    more = len(entities) > limit
    entities = entities[:limit]
    next_cursor = encode_cursor(entities[-1].fields[listing.key], scope) if more else None
    return Page[Any](items=await _views(counters, listing, entities), next_cursor=next_cursor)


async def list_page(
    *, session: AsyncSession, counters: Counters, route: str, filters: ListFilters, limit: int, cursor: str | None
) -> Page[Any]:
    """One page of orgs, teams, users, keys, end users or tags (`route` is the path segment)."""
    async with admin_read():
        return await _page(
            session=session, counters=counters, listing=LISTINGS[route], filters=filters, limit=limit, cursor=cursor
        )


async def list_members(
    *,
    session: AsyncSession,
    counters: Counters,
    team_id: str,
    filters: ListFilters,
    limit: int,
    cursor: str | None,
) -> Page[Any]:
    """One page of a team's memberships, by user id; 404 when the team does not exist."""
    async with admin_read():
        found = await _page(
            session=session,
            counters=counters,
            listing=MEMBERS,
            filters=filters,
            limit=limit,
            cursor=cursor,
            team_id=team_id,
        )
        if not found.items and await session.get(Team, team_id) is None:
            raise NotFound(kind="team", id=team_id)
        return found
