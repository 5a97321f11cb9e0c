"""Helpers every admin service shares: generated ids, reference checks, one write transaction."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..db import wrap_database_errors
from ..errors import Conflict, NotFound
from ..facts import FactsCache
from ..tables import Ledger
from .audit import Change

__all__ = ["new_id", "require", "admin_write", "admin_read", "has_ledger", "listing"]


def new_id(prefix: str) -> str:
    """A fresh id such as 'org_3kTq…' (16 random bytes, URL-safe, no '/')."""
    return prefix + secrets.token_urlsafe(16)


async def require(session: AsyncSession, table: type[Any], entity_id: str, *, kind: str, hint: str = "") -> Any:
    """The row with this id, or 404 `not_found` naming the missing entity."""
    row = await session.get(table, entity_id)
    if row is None:
        raise NotFound(kind=kind, id=entity_id, hint=hint)
    return row


async def has_ledger(session: AsyncSession, entity_type: str, entity_id: str) -> bool:
    """Whether any ledger row exists for the entity (it was charged at least once)."""
    found = await session.exec(
        select(Ledger.ledger_id)
        .where(col(Ledger.entity_type) == entity_type, col(Ledger.entity_id) == entity_id)
        .limit(1)
    )
    return found.first() is not None


def listing(ids: Sequence[str], noun: str, *, limit: int = 5) -> str:
    """'2 teams (t1, t2)' — how a conflict names what is in the way."""
    shown = ", ".join(repr(i) for i in ids[:limit]) + (", …" if len(ids) > limit else "")
    return f"{len(ids)} {noun}{'' if len(ids) == 1 else 's'} ({shown})"


@asynccontextmanager
async def admin_read() -> AsyncIterator[None]:
    """A read: a lost database is 503 naming it."""
    async with wrap_database_errors():
        yield


@asynccontextmanager
async def admin_write(session: AsyncSession, *, facts: FactsCache) -> AsyncIterator[Change]:
    """One admin change: commit at the end, then make this replica's facts cache forget at once.

    It yields the change's audit record (`audit.Change`): its rows commit with the change or not at all.

    A uniqueness or foreign-key violation at commit means another request changed the same
    entities in between (the checks before it passed): 409, retry.
    """
    async with wrap_database_errors():
        try:
            yield Change(session)
            await session.commit()
        except IntegrityError as exc:
            await session.rollback()
            raise Conflict(
                "another admin request changed the same entities at the same moment; read them again and retry"
            ) from exc
    facts.invalidate()
