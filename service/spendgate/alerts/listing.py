"""GET /v1/admin/alerts: outbox events newest first, with their delivery status."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..db import execute_core
from ..decision_store.cursor import decode_cursor, encode_cursor
from .outbox import ALERTS
from .payload import event_json, iso

__all__ = ["list_alerts", "STATUSES"]

STATUSES = ("pending", "delivered", "failed")


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return event_json(row) | {
        "status": row["status"],
        "attempts": row["attempts"],
        "last_error": row["last_error"],
        "next_attempt_at": iso(row["next_attempt_at"]) if row["status"] == "pending" else None,
        "delivered_at": iso(row["delivered_at"]),
    }


async def list_alerts(
    session: AsyncSession, *, entity: tuple[str, str] | None, status: str | None, limit: int, cursor: str | None
) -> dict[str, Any]:
    c = ALERTS.c
    query = select(ALERTS)
    if entity is not None:
        query = query.where(c.entity_type == entity[0], c.entity_id == entity[1])
    if status is not None:
        query = query.where(c.status == status)
    if cursor is not None:
        at, last = decode_cursor(cursor)
        query = query.where(or_(c.created_at < at, and_(c.created_at == at, c.id < last)))
    found = await execute_core(session, query.order_by(c.created_at.desc(), c.id.desc()).limit(limit + 1))
    rows = [dict(row._mapping) for row in found.all()]
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [_public(row) for row in rows],
        "next_cursor": encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more and rows else None,
    }
