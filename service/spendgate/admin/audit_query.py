"""The audit trail's read side: `GET /v1/admin/audit`, newest first, keyset-paginated on the row id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..errors import InvalidRequest
from ..tables import AuditEvent
from .audit import AUDIT_ENTITY_TYPES
from .common import admin_read
from .cursor import decode_cursor, encode_cursor, scope_of

__all__ = ["AuditEntity", "AuditEntryPublic", "AuditPage", "EntityFilter", "parse_entity", "list_audit"]


class AuditEntity(BaseModel):
    type: str
    id: str


class AuditEntryPublic(BaseModel):
    at: datetime
    #: The token class that made the change: 'admin'.
    actor: str
    #: create, update, block, unblock, delete; revoke for a key.
    action: str
    entity: AuditEntity
    #: The entity before the change (null for a create); an update shows only the fields it named.
    before: dict[str, Any] | None
    #: The entity after the change (null for a delete or revoke).
    after: dict[str, Any] | None


class AuditPage(BaseModel):
    items: list[AuditEntryPublic]
    next_cursor: str | None


class EntityFilter(BaseModel):
    type: str
    id: str | None


def parse_entity(text: str | None) -> EntityFilter | None:
    """`team:search` (one entity) or `team` (every team); 422 naming the known types otherwise."""
    if text is None:
        return None
    entity_type, colon, entity_id = text.partition(":")
    if entity_type not in AUDIT_ENTITY_TYPES or (colon and not entity_id):
        raise InvalidRequest(
            field="entity",
            problem=f"must be <type>:<id> or <type>, with <type> one of {', '.join(AUDIT_ENTITY_TYPES)} "
            "(e.g. team:search, team_member:search/u1)",
        )
    return EntityFilter(type=entity_type, id=entity_id if colon else None)


def _aware(name: str, value: datetime | None) -> datetime | None:
    if value is not None and value.utcoffset() is None:
        raise InvalidRequest(field=name, problem="must carry a time zone, e.g. 2026-11-28T00:00:00Z")
    return value


async def list_audit(
    *,
    session: AsyncSession,
    entity: EntityFilter | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
) -> AuditPage:
    """Audit rows matching the filters, newest first; `since` inclusive, `until` exclusive."""
    since, until = _aware("from", since), _aware("to", until)
    filters = {
        "entity": entity.model_dump() if entity else None,
        "from": since.isoformat() if since else None,
        "to": until.isoformat() if until else None,
    }
    scope = scope_of("audit", filters)
    before_id = decode_cursor(cursor, scope, kind=int)
    query = select(AuditEvent)
    if entity is not None:
        query = query.where(col(AuditEvent.entity_type) == entity.type)
        if entity.id is not None:
            query = query.where(col(AuditEvent.entity_id) == entity.id)
    if since is not None:
        query = query.where(col(AuditEvent.at) >= since)
    if until is not None:
        query = query.where(col(AuditEvent.at) < until)
    if before_id is not None:
        query = query.where(col(AuditEvent.id) < before_id)
    async with admin_read():
        rows = list((await session.exec(query.order_by(col(AuditEvent.id).desc()).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        AuditEntryPublic(
            at=row.at,
            actor=row.actor,
            action=row.action,
            entity=AuditEntity(type=row.entity_type, id=row.entity_id),
            before=row.before,
            after=row.after,
        )
        for row in rows
    ]
    last = rows[-1].id if more and rows else None
    return AuditPage(items=items, next_cursor=encode_cursor(last, scope) if last is not None else None)
