"""The entity kinds the console shows, each wired to the admin service functions the API routes call.

Reads and changes go through `spendgate.admin` (the same functions `api/routes_admin.py` calls),
so the console validates exactly as the API does and answers the same messages.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import BaseModel
from sqlmodel.ext.asyncio.session import AsyncSession

from ..admin import END_USER, ORG, TAG, TEAM, USER, EntityKind
from ..admin.entities import read_entity, update_entity
from ..admin.keys import read_key, update_key
from ..admin.ledger_view import default_end_user_budget
from ..admin.schemas import KeyUpdate, OrgUpdate, TeamUpdate, TrackedUpdate, UserUpdate
from ..errors import NotFound
from ..runtime import Runtime

__all__ = ["ConsoleKind", "KINDS", "kind_of", "read_view", "update_view"]


class ConsoleKind(NamedTuple):
    #: The URL segment and the ledger entity type ('team', 'end_user', 'key').
    name: str
    #: How pages name it.
    label: str
    #: The admin list route segment (`admin.lists.LISTINGS`).
    route: str
    update_model: type[BaseModel]
    #: The admin entity kind; None for keys, which have their own services.
    entity: EntityKind | None


KINDS: dict[str, ConsoleKind] = {
    kind.name: kind
    for kind in (
        ConsoleKind("org", "Org", "orgs", OrgUpdate, ORG),
        ConsoleKind("team", "Team", "teams", TeamUpdate, TEAM),
        ConsoleKind("user", "User", "users", UserUpdate, USER),
        ConsoleKind("key", "Key", "keys", KeyUpdate, None),
        ConsoleKind("end_user", "End user", "end-users", TrackedUpdate, END_USER),
        ConsoleKind("tag", "Tag", "tags", TrackedUpdate, TAG),
    )
}


def kind_of(name: str) -> ConsoleKind:
    found = KINDS.get(name)
    if found is None:
        raise NotFound(kind="entity kind", id=name, hint=f"use one of {', '.join(KINDS)}")
    return found


async def read_view(*, session: AsyncSession, runtime: Runtime, kind: ConsoleKind, entity_id: str) -> Any:
    """The entity as `GET /v1/admin/<kind>/<id>` answers it."""
    if kind.entity is None:
        return await read_key(session=session, counters=runtime.counters, key_id=entity_id)
    untracked = default_end_user_budget(runtime.settings, entity_id) if kind.entity is END_USER else ()
    return await read_entity(
        session=session, counters=runtime.counters, kind=kind.entity, entity_id=entity_id, untracked_budget=untracked
    )


async def update_view(
    *, session: AsyncSession, runtime: Runtime, kind: ConsoleKind, entity_id: str, body: BaseModel
) -> Any:
    """`PATCH /v1/admin/<kind>/<id>` with an already validated body."""
    if kind.entity is None:
        assert isinstance(body, KeyUpdate)
        return await update_key(
            session=session, counters=runtime.counters, facts=runtime.facts, key_id=entity_id, body=body
        )
    return await update_entity(
        session=session, counters=runtime.counters, facts=runtime.facts, kind=kind.entity, entity_id=entity_id, body=body
    )
