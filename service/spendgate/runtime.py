"""The live dependencies of one service process, opened and closed together by the lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from .shedding import InFlightLimit
from .decision_store import BackgroundWriter
from .counters import Counters, ReplicaMemory, SqliteCounters, counters_for
from .counters.redis_pool import redis_client as redis_client_for
from .counters.sqlite_worker import SqliteWorker
from .db import SessionFactory, create_engine, database_errors, session_factory
from .errors import Unavailable
from .facts import FactsCache
from .ledger_store import LedgerStore
from .metrics import Metrics
from .migrate import upgrade
from .policy import PolicyEngine, PolicySet, load_policy_set
from .policy.embedded import EmbeddedEngine
from .policy.gate import policy_gate
from .settings import Settings
from .tables import utcnow

__all__ = ["Runtime", "open_runtime", "reaching_database", "redacted"]

log = logging.getLogger("spendgate")

#: SQLSTATE classes meaning "no usable connection": connection exception (08), authorization (28),
#: no such database (3D), server starting or shutting down (57P).
_NO_CONNECTION_SQLSTATES = ("08", "28", "3D", "57P")


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
    #: Writes recent decisions and refusal alerts off the decision path (set by the app's lifespan).
    background: BackgroundWriter | None = None
    #: SQLite: the file's one writer (the SQLite counters' thread, or with Redis counters the ledger
    #: store's own), which records and the background writer write through; None on PostgreSQL.
    sqlite_writer: SqliteWorker | None = None
    #: The ports as the decision routes call them, each stage timed (decisions/observed.py makes them once).
    timed_ports: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.authorize_slots = InFlightLimit(self.settings.max_authorize_in_flight, self.metrics.authorize_shed)


def _policy_engine(settings: Settings, policies: PolicySet) -> PolicyEngine:
    if settings.opa_url:
        from .policy.opa import OpaEngine  # imported lazily: only OPA deployments need it

        return OpaEngine(
            settings.opa_url,
            policies,
            timeout_seconds=settings.opa_timeout_seconds,
            fail_open=settings.opa_fail_over,
        )
    return EmbeddedEngine(
        policies, compiled=settings.policy_compiled, check_every=settings.policy_compiled_check_every
    )


def redacted(url: str) -> str:
    """`url` with its password, if any, shown as `***` (fit for a message or a log line)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=f"{parts.username or ''}:***@{parts.netloc.rsplit('@', 1)[1]}").geturl()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@asynccontextmanager
async def reaching_database(settings: Settings) -> AsyncIterator[None]:
    """Start-up: a database that is missing, refuses the connection or the login is `Unavailable`
    naming it (password hidden) and the driver's reason, instead of the driver's traceback."""
    try:
        yield
    except Exception as exc:
        orig = exc.orig if isinstance(exc, DBAPIError) else None
        if not isinstance(exc, database_errors) and not str(getattr(orig, "sqlstate", "")).startswith(
            _NO_CONNECTION_SQLSTATES
        ):
            raise  # the database answered: an SQL error in a migration is a bug, not an outage
        raise Unavailable(
            "database",
            f"{redacted(settings.database_url)}: {_first_line(orig or exc)}; check SPENDGATE_DATABASE_URL",
        ) from exc


@asynccontextmanager
async def _reaching_redis(url: str) -> AsyncIterator[None]:
    try:
        yield
    except (Unavailable, ValueError) as exc:  # ValueError: a URL redis-py cannot parse
        raise Unavailable(
            "redis", f"{redacted(url)}: {_first_line(exc.__cause__ or exc)}; check SPENDGATE_REDIS_URL"
        ) from exc


@asynccontextmanager
async def open_runtime(settings: Settings, *, migrate: bool = True) -> AsyncIterator[Runtime]:
    """Connect everything (migrating the schema first); close it all on the way out."""
    policies = load_policy_set(settings.policy_dir)
    # A broken policy (or, with SPENDGATE_POLICY_GATE=test, a failing policy test) stops start-up
    # before anything connects.
    await policy_gate(settings.policy_gate).check(policies)
    policy = _policy_engine(settings, policies)
    engine = create_engine(settings)
    redis_client: aioredis.Redis | None = None
    adapter: Counters | None = None
    ledgers: LedgerStore | None = None
    facts: FactsCache | None = None
    try:
        await policy.start()  # OPA: push the policies now, so one OPA refuses stops start-up too
        if migrate:
            async with reaching_database(settings):
                await upgrade(engine)
        sessions = session_factory(engine)
        ledgers = LedgerStore(
            sessions, batch_max=settings.record_batch_max, batch_concurrency=settings.record_batch_concurrency
        )
        metrics = Metrics()
        metrics.policy_compiled.set_function(lambda: float(policy.evaluator == "compiled"))
        if settings.redis_url:
            async with _reaching_redis(settings.redis_url):
                redis_client = redis_client_for(settings.redis_url, max_connections=settings.redis_max_connections)
        # The adapter is chosen by URL scheme in one place (counters/choice.py).
        counters = adapter = counters_for(
            settings, sessions=sessions, redis=redis_client, snapshots=ledgers.snapshots,
            on_rebuild=metrics.counter_rebuilds.inc,
        )
        if isinstance(adapter, SqliteCounters):
            ledgers.write_through(adapter.worker)  # one writer for the SQLite file (sqlite_statements.py)
        if settings.redis_url:
            async with _reaching_redis(settings.redis_url):
                await counters.ping()  # a Redis that cannot be reached stops start-up, as the database does
        # What this replica saw of the counters: recent decisions and figures (counters/replica_memory.py).
        counters = ReplicaMemory(counters, keep_seconds=settings.reservation_ttl)
        facts = FactsCache(sessions, ttl_seconds=settings.facts_cache_seconds, settings=settings)
        log.info(
            "spendgate ready: database=%s counters=%s policy=%s revision=%s",
            "postgresql" if settings.is_postgres else "sqlite",
            type(adapter).__name__,
            policy.evaluator if settings.opa_url else f"embedded ({policy.evaluator})",
            policy.revision,
        )
        yield Runtime(
            settings, engine, sessions, ledgers, counters, policy, facts, redis_client, metrics=metrics,
            sqlite_writer=ledgers.sqlite_writer,
        )
    finally:
        if facts is not None:
            await facts.close()  # its background reads, before the database closes
        if ledgers is not None:
            await ledgers.close()  # SQLite with Redis counters: the records' own writer
        if adapter is not None and redis_client is None:
            await adapter.close()  # SQLite: its connection and thread (Redis: the client, closed below)
        await policy.close()
        if redis_client is not None:
            await redis_client.aclose()
        await engine.dispose()
