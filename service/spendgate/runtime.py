"""The live dependencies of one service process, opened and closed together by the lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.ext.asyncio import AsyncEngine

from .shedding import InFlightLimit
from .counters import Counters, RedisCounters, SqlCounters
from .db import SessionFactory, create_engine, session_factory, wrap_database_errors
from .facts import FactsCache
from .ledgers import LedgerStore
from .metrics import Metrics
from .migrate import upgrade
from .policy import PolicyEngine, load_policy_set
from .policy.embedded import EmbeddedEngine
from .settings import Settings
from .tables import utcnow

__all__ = ["Runtime", "open_runtime"]

log = logging.getLogger("spendgate")


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    ledgers: LedgerStore
    counters: Counters
    policy: PolicyEngine
    facts: FactsCache
    redis: aioredis.Redis | None = None
    #: The service's notion of "now" (budget periods, expiry); tests may move it.
    clock: Callable[[], datetime] = utcnow
    #: This process's metrics (its own registry: several apps may share a process).
    metrics: Metrics = field(default_factory=Metrics)
    #: Bounds the authorizes in flight (load shedding); set from the settings after construction.
    authorize_slots: InFlightLimit = field(init=False)

    def __post_init__(self) -> None:
        self.authorize_slots = InFlightLimit(self.settings.max_authorize_in_flight, self.metrics.authorize_shed)


def _policy_engine(settings: Settings) -> PolicyEngine:
    if settings.opa_url:
        from .policy.opa import OpaEngine  # imported lazily: only OPA deployments need it

        return OpaEngine(
            settings.opa_url,
            load_policy_set(settings.policy_dir),
            timeout_seconds=settings.opa_timeout_seconds,
            fail_open=settings.opa_fail_over,
        )
    return EmbeddedEngine(load_policy_set(settings.policy_dir))


@asynccontextmanager
async def open_runtime(settings: Settings, *, migrate: bool = True) -> AsyncIterator[Runtime]:
    """Connect everything (migrating the schema first); close it all on the way out."""
    policy = _policy_engine(settings)  # a broken policy stops start-up before anything connects
    engine = create_engine(settings)
    redis_client: aioredis.Redis | None = None
    try:
        await policy.start()  # OPA: push the policies now, so one OPA refuses stops start-up too
        if migrate:
            async with wrap_database_errors():
                await upgrade(engine)
        sessions = session_factory(engine)
        ledgers = LedgerStore(
            sessions, batch_max=settings.record_batch_max, batch_concurrency=settings.record_batch_concurrency
        )
        metrics = Metrics()
        counters: Counters
        if settings.redis_url:
            redis_client = aioredis.from_url(
                settings.redis_url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=10,
                # Pooled connections die with a restarted Redis; without a retry each one fails its
                # next command (a skipped counter update after a record). One immediate retry on a
                # fresh connection is safe: every script is idempotent per request id / version.
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            )
            counters = RedisCounters(redis_client, ledgers.snapshots, on_rebuild=metrics.counter_rebuilds.inc)
        else:
            counters = SqlCounters(sessions)
        facts = FactsCache(sessions, ttl_seconds=settings.facts_cache_seconds, settings=settings)
        log.info(
            "spendgate ready: database=%s counters=%s policy=%s revision=%s",
            "postgresql" if settings.is_postgres else "sqlite",
            "redis" if redis_client is not None else "sql",
            "opa" if settings.opa_url else "embedded",
            policy.revision,
        )
        yield Runtime(settings, engine, sessions, ledgers, counters, policy, facts, redis_client, metrics=metrics)
    finally:
        await policy.close()
        if redis_client is not None:
            await redis_client.aclose()
        await engine.dispose()
