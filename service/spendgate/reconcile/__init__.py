"""`spendgate reconcile`: compare every hot counter with the authoritative ledger, and repair it.

Redis counters (`RedisReconciler`): each ledger hash's `spent`/`version` against the ledger
row, its `reserved` against the open holds naming it. SQL counters (`SqlReconciler`): each
ledger's `reserved` column against its open reservations. Both find suspects without locking
and confirm or repair each atomically (a Lua script; a transaction holding the row locks), so
running it — by hand or every `reconcile_interval_seconds` inside the service — is safe
under live traffic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

import redis.asyncio as aioredis

from ..db import SessionFactory, create_engine, session_factory
from ..settings import Settings
from .redis_side import RedisReconciler
from .report import LedgerDrift, ReconcileReport, render_json, render_text
from .sql_side import SqlReconciler

__all__ = [
    "Reconciler",
    "RedisReconciler",
    "SqlReconciler",
    "LedgerDrift",
    "ReconcileReport",
    "reconciler_for",
    "open_reconciler",
    "render_text",
    "render_json",
]


class Reconciler(Protocol):
    async def run(self, *, fix: bool, fix_ahead: bool = False) -> ReconcileReport: ...


def reconciler_for(*, sessions: SessionFactory, redis: aioredis.Redis | None) -> Reconciler:
    """The reconciler of the configured counters: Redis when there is a Redis, else SQL."""
    if redis is not None:
        return RedisReconciler(redis, sessions)
    return SqlReconciler(sessions)


@asynccontextmanager
async def open_reconciler(settings: Settings) -> AsyncIterator[Reconciler]:
    """Connect to the ledger database (and Redis) for a one-off run, as the CLI does."""
    engine = create_engine(settings)
    client = (
        aioredis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=2)
        if settings.redis_url
        else None
    )
    try:
        yield reconciler_for(sessions=session_factory(engine), redis=client)
    finally:
        if client is not None:
            await client.aclose()
        await engine.dispose()
