"""Database engine and sessions (SQLModel on asyncpg, or aiosqlite for the embedded default)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Unpack
from urllib.parse import urlencode

from sqlalchemy import Executable, Result, Row, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from . import exact_json
from .errors import Unavailable
from .settings import Settings

__all__ = [
    "JSON_CODEC",
    "create_engine",
    "session_factory",
    "SessionFactory",
    "database_errors",
    "wrap_database_errors",
    "execute_core",
    "execute_many",
    "dialect_name",
    "SQLITE_PRAGMAS",
    "sqlite_file",
]

SessionFactory = async_sessionmaker[AsyncSession]

#: Errors that mean "the database is not reachable / the connection died", not "your SQL is wrong".
database_errors: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, OSError, ConnectionError)

#: Every SQLite connection's settings — the engine's and the SQLite counters' own
#: (counters/sqlite_counters.py): WAL so readers never block the writer, and a busy timeout so a
#: writer waits for the file's one write lock instead of failing.
SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON", "PRAGMA busy_timeout=30000")


#: How JSON columns are written and read, by the engines and by `sqlite_statements.py`.
JSON_CODEC: dict[str, Any] = {"json_serializer": exact_json.dumps_text, "json_deserializer": exact_json.loads}


def create_engine(settings: Settings) -> AsyncEngine:
    """An engine for the configured URL; SQLite gets WAL and a busy timeout so readers never block writers.
    JSON columns are written and read by `exact_json` (orjson, exact past 64 bits) where SQLAlchemy's `JSON`
    type would call the stdlib's `json` (2 % of the event loop in a storm of refusals, each written with its
    decision body; bench/README.md, thirteenth round)."""
    if settings.is_postgres:
        return create_async_engine(
            settings.database_url,
            **JSON_CODEC,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_pool_size,
            # No ping per checkout (it cost ~12% of the event loop under load): a connection found
            # dead is invalidated by SQLAlchemy, the request answers 503 and the retry gets a new one.
            pool_pre_ping=False,
            pool_recycle=1800,
        )
    engine = create_async_engine(settings.database_url, connect_args={"timeout": 30}, **JSON_CODEC)
    # aiosqlite logs every statement with its parameters at DEBUG — key hashes included: never let it.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    return engine


def sqlite_file(url: str) -> tuple[str, bool]:
    """The database a `sqlite+aiosqlite:///…` URL names, as `sqlite3.connect` takes it: (name, uri).

    An in-memory database is refused: every connection would get a database of its own."""
    parsed = make_url(url)
    name = parsed.database
    if not name or name == ":memory:" or parsed.query.get("mode") == "memory":
        raise ValueError(f"{url!r} is an in-memory SQLite database: give it a file")
    query = {key: value for key, value in parsed.query.items() if key != "uri"}
    if str(parsed.query.get("uri", "")).lower() in ("1", "true"):
        return (f"{name}?{urlencode(query, doseq=True)}" if query else name), True
    return name, False


def session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


@asynccontextmanager
async def wrap_database_errors() -> AsyncIterator[None]:
    """Turn a lost or refused database connection into 503 `unavailable` naming the database."""
    try:
        yield
    except database_errors as exc:
        raise Unavailable("database", type(exc).__name__) from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise Unavailable("database", "connection lost") from exc
        raise


async def execute_core(
    session: AsyncSession, statement: Executable, params: Mapping[str, Any] | None = None
) -> Result[Unpack[tuple[Any, ...]]]:
    """Run a Core statement (raw SQL, table-level select) in the session's transaction.

    SQLModel's `exec` is typed for ORM statements only; Core goes through the connection.
    """
    connection = await session.connection()
    return await connection.execute(statement, dict(params or {}))


async def execute_many(
    session: AsyncSession, statement: Executable, rows: Sequence[Mapping[str, Any]]
) -> list[Row[Unpack[tuple[Any, ...]]]]:
    """Run a Core statement for every row (an executemany) in the session's transaction; no rows, no
    call. Answers what it returns (RETURNING), else nothing.

    The statement does not change with the number of rows, so SQLAlchemy compiles it once (for one row,
    and once for several) and takes it from its cache after that, where `insert().values([...])` is a new
    statement for every batch size. Inserts go out as batched multi-row INSERTs ("insertmanyvalues")."""
    if not rows:
        return []
    connection = await session.connection()
    result = await connection.execute(statement, [dict(row) for row in rows])
    return list(result.all()) if result.returns_rows else []


def dialect_name(session: AsyncSession) -> str:
    bind = session.bind
    if bind is None:
        raise RuntimeError("session is not bound to an engine")
    return bind.dialect.name
