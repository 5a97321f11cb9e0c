"""Orgs, teams, users, end users and tags: create, read and update (deletion: `deletion.py`).

The five kinds differ only in their fields and references, so one `EntityKind` table drives
them. End users and tags are also *tracked* without being created: a request naming one
gives it a ledger, and reading such an id shows that ledger with `"created": false`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlmodel.ext.asyncio.session import AsyncSession

from ..budgets import as_windows, load_budgets, replace_budgets
from ..counters import Counters
from ..errors import Conflict, NotFound
from ..facts import FactsCache
from ..tables import Budget, EndUser, Org, Tag, Team, User, utcnow
from .audit import snapshot
from .common import admin_read, admin_write, has_ledger, new_id, require
from .ledger_view import ledger_lines, public_budget, read_ledgers
from .schemas import EndUserPublic, OrgPublic, TagPublic, TeamPublic, UserPublic

__all__ = [
    "EntityKind",
    "ORG",
    "TEAM",
    "USER",
    "END_USER",
    "TAG",
    "create_entity",
    "read_entity",
    "update_entity",
    "entity_view",
]


@dataclass(frozen=True, slots=True)
class Reference:
    """A field naming another entity that must exist (`org_id` → an org)."""

    field: str
    table: type[Any]
    kind: str


@dataclass(frozen=True, slots=True)
class EntityKind:
    #: The entity type of its budgets and ledgers ('org', 'end_user', …).
    entity_type: str
    #: How messages name it ('org', 'end user').
    label: str
    #: Its route segment (`/v1/admin/<path>`).
    path: str
    table: type[Any]
    public: type[BaseModel]
    #: Prefix of generated ids; None when the id is required (end users, tags).
    id_prefix: str | None
    references: tuple[Reference, ...] = ()
    #: Tracked without being created (end users, tags).
    tracked: bool = False


ORG = EntityKind("org", "org", "orgs", Org, OrgPublic, "org_")
TEAM = EntityKind("team", "team", "teams", Team, TeamPublic, "team_", (Reference("org_id", Org, "org"),))
USER = EntityKind("user", "user", "users", User, UserPublic, "user_", (Reference("org_id", Org, "org"),))
END_USER = EntityKind("end_user", "end user", "end-users", EndUser, EndUserPublic, None, tracked=True)
TAG = EntityKind("tag", "tag", "tags", Tag, TagPublic, None, tracked=True)


async def entity_view(
    *,
    counters: Counters,
    kind: EntityKind,
    entity_id: str,
    row: Any | None,
    budgets: Sequence[Budget],
) -> BaseModel:
    """The public shape: every field, the budget, and the current ledgers (row None: tracked only)."""
    lines = ledger_lines(entity_type=kind.entity_type, entity_id=entity_id, budgets=budgets, at=utcnow())
    ledgers = (await read_ledgers(counters=counters, groups={entity_id: lines}))[entity_id]
    fields: dict[str, Any] = (
        row.model_dump()
        if row is not None
        else {"id": entity_id, "blocked": False, "created_at": None, "created": False}
    )
    return kind.public.model_validate({**fields, "budget": public_budget(budgets), "ledgers": ledgers})


async def _check_references(session: AsyncSession, kind: EntityKind, values: dict[str, Any]) -> None:
    for ref in kind.references:
        value = values.get(ref.field)
        if value is not None:
            await require(session, ref.table, value, kind=ref.kind, hint=f"create it first or leave {ref.field} out")


async def create_entity(
    *, session: AsyncSession, counters: Counters, facts: FactsCache, kind: EntityKind, body: Any
) -> BaseModel:
    """Create an entity with its budget; 409 for a taken id, 404 for a missing reference."""
    async with admin_write(session, facts=facts) as change:
        entity_id = body.id or new_id(kind.id_prefix or f"{kind.entity_type}_")
        if await session.get(kind.table, entity_id) is not None:
            raise Conflict(f"{kind.label} {entity_id!r} already exists; choose another id or PATCH the existing one")
        fields = body.model_dump(exclude={"id", "budget"})
        await _check_references(session, kind, fields)
        row = kind.table(id=entity_id, **fields)
        session.add(row)
        budgets = await replace_budgets(session, kind.entity_type, entity_id, as_windows(body.budget), now=row.created_at)
        await session.flush()
        change.created(kind.entity_type, entity_id, snapshot(row, budgets))
        view = await entity_view(counters=counters, kind=kind, entity_id=entity_id, row=row, budgets=budgets)
    return view


async def read_entity(
    *,
    session: AsyncSession,
    counters: Counters,
    kind: EntityKind,
    entity_id: str,
    untracked_budget: Sequence[Budget] = (),
) -> BaseModel:
    """The entity, its budget and current ledgers.

    An end user or tag never created but already charged (it has a ledger row) reads as
    `"created": false` with the budget that applies to it (`untracked_budget`, e.g. the
    configured default end-user budget); any other unknown id is 404.
    """
    async with admin_read():
        row = await session.get(kind.table, entity_id)
        if row is not None:
            budgets = await load_budgets(session, kind.entity_type, entity_id)
        elif kind.tracked and await has_ledger(session, kind.entity_type, entity_id):
            budgets = list(untracked_budget)
        else:
            raise NotFound(kind=kind.label, id=entity_id)
        return await entity_view(counters=counters, kind=kind, entity_id=entity_id, row=row, budgets=budgets)


async def update_entity(
    *, session: AsyncSession, counters: Counters, facts: FactsCache, kind: EntityKind, entity_id: str, body: Any
) -> BaseModel:
    """Apply the fields present in the body; `budget` replaces every window (null: no budget).

    A window whose duration and reset stay the same keeps its period anchor, so raising a
    limit does not restart the period; a new duration starts a new period now.
    """
    async with admin_write(session, facts=facts) as change:
        hint = f"create it with POST /v1/admin/{kind.path}" if kind.tracked else ""
        row = await require(session, kind.table, entity_id, kind=kind.label, hint=hint)
        before = snapshot(row, await load_budgets(session, kind.entity_type, entity_id))
        changes = body.model_dump(include=body.model_fields_set - {"budget"})
        await _check_references(session, kind, changes)
        for name, value in changes.items():
            setattr(row, name, value)
        session.add(row)
        if "budget" in body.model_fields_set:
            budgets = await replace_budgets(session, kind.entity_type, entity_id, as_windows(body.budget))
        else:
            budgets = await load_budgets(session, kind.entity_type, entity_id)
        await session.flush()
        change.updated(kind.entity_type, entity_id, before, snapshot(row, budgets), fields=body.model_fields_set)
        view = await entity_view(counters=counters, kind=kind, entity_id=entity_id, row=row, budgets=budgets)
    return view
