"""Create what a gateway's principal names on first sight, each with its type's default budget.

INSERT … ON CONFLICT DO NOTHING makes this idempotent under any concurrency, on PostgreSQL and
SQLite: concurrent first requests wait for one another on the primary key, and only the insert
that created a row adds its budgets, so an entity gets its default budget exactly once. Existing
rows are never changed. A key created here has no secret: its `key_hash` is a sentinel that no
SHA-256 hex digest equals, so no `api_key` can ever match it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel.ext.asyncio.session import AsyncSession

from .db import dialect_name, execute_core
from .identity import DefaultBudgets, Principal
from .tables import ApiKey, Budget, Org, Team, TeamMember, User

__all__ = ["create_on_first_sight", "no_secret_hash"]


def no_secret_hash(key_id: str) -> str:
    """The `key_hash` of a key created from a principal: unique per key, never a SHA-256 hex digest
    (it contains ':'), so no secret can ever match it."""
    return "gateway:" + hashlib.sha256(key_id.encode("utf-8")).hexdigest()[:56]


def _rows(principal: Principal, now: datetime) -> list[tuple[str, str, Table, dict[str, Any]]]:
    """(entity type, entity id, table, values) of every entity the principal names, references first."""
    found: list[tuple[str, str, Table, dict[str, Any]]] = []
    if principal.org:
        found.append(("org", principal.org, _table(Org), {"id": principal.org, "name": principal.org}))
    if principal.team:
        found.append(("team", principal.team, _table(Team),
                      {"id": principal.team, "name": principal.team, "org_id": principal.team_org}))
    if principal.user:
        found.append(("user", principal.user, _table(User), {"id": principal.user, "org_id": principal.user_org}))
    if principal.team and principal.user and principal.member:
        found.append(("team_member", principal.member, _table(TeamMember),
                      {"team_id": principal.team, "user_id": principal.user}))
    found.append(("key", principal.key, _table(ApiKey), {
        "id": principal.key, "key_hash": no_secret_hash(principal.key), "key_prefix": "",
        "user_id": principal.user, "team_id": principal.team, "models": [],
    }))
    for _type, _id, _tbl, values in found:
        values.update(blocked=False, created_at=now)
    return found


def _table(model: type[Any]) -> Table:
    table: Table = model.__table__
    return table


async def create_on_first_sight(
    *, session: AsyncSession, principal: Principal, defaults: DefaultBudgets, now: datetime
) -> list[tuple[str, str]]:
    """Create the principal's entities that do not exist yet, each with its type's default budget,
    in the caller's transaction; returns the (type, id) of those this call created.

    An existing row is never changed (a key stays with the team and user it was created with).
    """
    insert_for = pg_insert if dialect_name(session) == "postgresql" else sqlite_insert
    created: list[tuple[str, str]] = []
    for entity_type, entity_id, table, values in _rows(principal, now):
        first_column = next(iter(table.primary_key.columns))
        statement = insert_for(table).values(**values).on_conflict_do_nothing().returning(first_column)
        if (await execute_core(session, statement)).first() is None:
            continue  # seen before (or created by a concurrent request, which added the budgets)
        created.append((entity_type, entity_id))
        windows = defaults.get(entity_type, ())
        if windows:
            await execute_core(session, insert(_table(Budget)).values([
                {"entity_type": entity_type, "entity_id": entity_id, "max_budget": w.max_budget,
                 "soft_budget": w.soft_budget, "duration": w.duration, "reset": w.reset, "set_at": now}
                for w in windows
            ]))
    return created
