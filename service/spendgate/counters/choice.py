"""Which counters adapter a deployment uses — chosen here, and only here, by URL scheme.

| configured                         | counters         | reconciled by (`reconcile.reconciler_for`) |
|------------------------------------|------------------|--------------------------------------------|
| `SPENDGATE_REDIS_URL` (redis://…)  | `RedisCounters`  | `RedisReconciler` (hashes vs ledger rows)  |
| SQLite database, no Redis          | `SqliteCounters` | `SqlReconciler` (the same tables)          |
| PostgreSQL database, no Redis      | `SqlCounters`    | `SqlReconciler`                            |

A Redis URL wins: Redis counters are what several replicas share. Without one, the counters live
in the ledger database itself, and its scheme picks the adapter (the registry is `_BY_SCHEME`, as
the `limits` library keys its storages by scheme).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import redis.asyncio as aioredis

from ..db import SessionFactory
from ..settings import Settings
from .base import Counters, SnapshotLoader
from .redis_counters import RedisCounters
from .sql_counters import SqlCounters
from .sqlite_counters import SqliteCounters

__all__ = ["counters_for"]


class _Wiring(NamedTuple):
    """What the adapters are built from (each takes what it needs)."""

    settings: Settings
    sessions: SessionFactory
    redis: aioredis.Redis | None
    snapshots: SnapshotLoader
    on_rebuild: Callable[[int], None] | None


def _redis(wiring: _Wiring) -> Counters:
    if wiring.redis is None:
        raise ValueError("Redis counters need the Redis client of SPENDGATE_REDIS_URL")
    return RedisCounters(wiring.redis, wiring.snapshots, on_rebuild=wiring.on_rebuild)


def _sqlite(wiring: _Wiring) -> Counters:
    return SqliteCounters.for_url(wiring.settings.database_url)


def _sql(wiring: _Wiring) -> Counters:
    return SqlCounters(wiring.sessions)


#: URL scheme (before any `+driver`) -> the adapter.
_BY_SCHEME: dict[str, Callable[[_Wiring], Counters]] = {
    "redis": _redis,
    "rediss": _redis,
    "unix": _redis,
    "sqlite": _sqlite,
    "postgresql": _sql,
}


def counters_for(
    settings: Settings,
    *,
    sessions: SessionFactory,
    redis: aioredis.Redis | None,
    snapshots: SnapshotLoader,
    on_rebuild: Callable[[int], None] | None = None,
) -> Counters:
    """The counters adapter of these settings (not yet wrapped in `ReplicaMemory`)."""
    url = settings.redis_url or settings.database_url
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    build = _BY_SCHEME.get(scheme)
    if build is None:
        raise ValueError(f"no counters adapter for {scheme!r} URLs")
    return build(_Wiring(settings, sessions, redis, snapshots, on_rebuild))
