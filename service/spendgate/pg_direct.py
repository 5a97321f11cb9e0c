"""The record path's PostgreSQL transaction, straight on asyncpg.

Why: the ledger write is the hottest statement pair in Spendgate, and through SQLAlchemy's
session and asyncio adaptation layer one record's transaction cost ~2.3 ms of CPU against
~0.6 ms on the same pooled asyncpg connection (`bench/README.md`). The connection still comes
from — and goes back to — SQLAlchemy's pool, so sizing, recycling and disposal stay in one
place; a connection that died under us is invalidated there, so the pool never hands it out
again, and the caller sees the same 503 `unavailable` as everywhere else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from .db import wrap_database_errors
from .errors import Unavailable

__all__ = ["direct_transaction", "is_connection_loss"]

#: SQLSTATE classes that mean the connection, not the statement, failed: 08 connection
#: exception, 57 operator intervention (e.g. pg_terminate_backend, shutdown).
_LOST_CLASSES = ("08", "57")


def is_connection_loss(exc: BaseException) -> bool:
    """Whether the connection, not the statement, failed — it must not be used again.

    The server's own errors name it by SQLSTATE. Client-side ones (a closed socket, or
    asyncpg's "another operation is in progress" after a connection was killed mid-query)
    leave the protocol in a state no later statement can trust."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in _LOST_CLASSES
    return isinstance(
        exc, (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError, OSError, ConnectionError, TimeoutError)
    )


@asynccontextmanager
async def direct_transaction(engine: AsyncEngine) -> AsyncIterator[Any]:
    """An asyncpg connection from the engine's pool inside a transaction (committed on exit)."""
    async with wrap_database_errors(), engine.connect() as connection:
        pooled = await connection.get_raw_connection()
        driver: Any = pooled.driver_connection
        try:
            async with driver.transaction():
                yield driver
        except BaseException as exc:
            if not isinstance(exc, asyncpg.PostgresError) or is_connection_loss(exc):
                # Only an error the server reported about a statement leaves the connection
                # reusable; after anything else (cancellation included) it is never trusted again.
                await connection.invalidate(exc)
            if is_connection_loss(exc):
                raise Unavailable("database", type(exc).__name__) from exc
            raise
