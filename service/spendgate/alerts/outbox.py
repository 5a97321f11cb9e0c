"""The alert outbox (`alert_events`): inserting events at most once, and the delivery bookkeeping.

Inserts are `ON CONFLICT (dedupe_key) DO NOTHING`: the unique constraint, not a replica, decides
that an event happens once per ledger period, kind and threshold. Delivery claims due events
with `FOR UPDATE SKIP LOCKED` (PostgreSQL; SQLite has one writer and ignores it) and a lease
(`locked_until`, `claim`): while one worker delivers an event no other takes it; if that worker
dies, the lease runs out and another delivers it again — at least once. Every later update names
the claim, so a worker whose lease was taken over cannot overwrite the new owner's result.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel.ext.asyncio.session import AsyncSession

from ..db import dialect_name, execute_core, execute_many
from ..sqlite_statements import SqliteStatement
from ..tables import AlertEvent
from .events import AlertDraft

__all__ = [
    "ALERTS", "row_values", "insert_core", "insert_postgres", "insert_sqlite", "claim_due", "finish", "new_claim",
]

ALERTS: Table = AlertEvent.__table__  # type: ignore[attr-defined]


def row_values(draft: AlertDraft) -> dict[str, Any]:
    ref = draft.ledger
    return {
        "id": uuid.uuid4().hex,
        "dedupe_key": draft.dedupe_key,
        "event": draft.event,
        "entity_type": ref.entity_type,
        "entity_id": ref.entity_id,
        "ledger_id": ref.id,
        "window": ref.window,
        "spent": draft.spent,
        "limit": draft.limit,
        "soft_budget": draft.soft_budget,
        "threshold": draft.threshold,
        "resets_at": ref.period_end,
        "details": draft.details,
        "status": "pending",
        "attempts": 0,
        "last_error": None,
        "next_attempt_at": draft.at,
        "locked_until": None,
        "claim": None,
        "delivered_to": [],
        "delivered_at": None,
        "created_at": draft.at,
    }


async def insert_core(session: AsyncSession, drafts: Sequence[AlertDraft]) -> int:
    """Insert through SQLAlchemy (either dialect) in the session's transaction; returns how many were new."""
    if not drafts:
        return 0
    insert = pg_insert if dialect_name(session) == "postgresql" else sqlite_insert
    statement = insert(ALERTS).on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(ALERTS.c.id)
    rows = [row_values(d) for d in sorted(drafts, key=lambda d: d.dedupe_key)]
    return len(await execute_many(session, statement, rows))


_COLUMNS = [
    "id", "dedupe_key", "event", "entity_type", "entity_id", "ledger_id", "window", "spent", "limit",
    "soft_budget", "threshold", "resets_at", "details", "status", "attempts", "last_error", "next_attempt_at",
    "locked_until", "claim", "delivered_to", "delivered_at", "created_at",
]
_PG_INSERT = (
    f"INSERT INTO alert_events ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in _COLUMNS)}) "
    f"VALUES ({', '.join(f'${i + 1}' for i in range(len(_COLUMNS)))}) ON CONFLICT (dedupe_key) DO NOTHING"
)
_JSON_COLUMNS = {"details", "delivered_to"}
_SQLITE_INSERT = SqliteStatement(
    sqlite_insert(ALERTS).on_conflict_do_nothing(index_elements=["dedupe_key"]), [c.name for c in ALERTS.c]
)


def insert_sqlite(db: sqlite3.Connection, drafts: Sequence[AlertDraft]) -> None:
    """Insert on the embedded database's one writer (`sqlite_statements.py`), in its transaction."""
    if drafts:
        db.executemany(_SQLITE_INSERT.sql, _SQLITE_INSERT.many(
            [row_values(d) for d in sorted(drafts, key=lambda d: d.dedupe_key)]
        ))


async def insert_postgres(connection: Any, drafts: Sequence[AlertDraft]) -> None:
    """Insert on a raw asyncpg connection (the record batch's), in its transaction."""
    rows = []
    for draft in sorted(drafts, key=lambda d: d.dedupe_key):  # a fixed order: concurrent batches lock alike
        values = row_values(draft)
        rows.append([json.dumps(values[c]) if c in _JSON_COLUMNS else values[c] for c in _COLUMNS])
    await connection.executemany(_PG_INSERT, rows)


def new_claim() -> str:
    """A lease owner: this process' pid (operators — and tests — can tell who holds an event) and a nonce."""
    return f"{os.getpid()}:{uuid.uuid4().hex}"[:40]


async def claim_due(
    session: AsyncSession, *, now: datetime, lease_seconds: float, claim: str, limit: int = 20
) -> list[dict[str, Any]]:
    """Lease up to `limit` due pending events to `claim` (one attempt each); returns their rows."""
    c = ALERTS.c
    async with session.begin():
        due = (
            select(c.id)
            .where(c.status == "pending", c.next_attempt_at <= now, or_(c.locked_until.is_(None), c.locked_until < now))
            .order_by(c.next_attempt_at, c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = [row[0] for row in (await execute_core(session, due)).all()]
        if not ids:
            return []
        leased = (
            update(ALERTS)
            .where(c.id.in_(ids))
            .values(locked_until=now + timedelta(seconds=lease_seconds), claim=claim, attempts=c.attempts + 1)
            .returning(*c)
        )
        return [dict(row._mapping) for row in (await execute_core(session, leased)).all()]


async def finish(session: AsyncSession, *, event_id: str, claim: str, values: dict[str, Any]) -> bool:
    """Write a delivery's result, only if `claim` still owns the event; releases the lease."""
    c = ALERTS.c
    async with session.begin():
        done = await execute_core(
            session,
            update(ALERTS)
            .where(c.id == event_id, c.claim == claim)
            .values(**values, locked_until=None, claim=None)
            .returning(c.id),
        )
        return done.first() is not None
