"""Apply the schema migrations — safe when several replicas start at the same moment.

On PostgreSQL the upgrade runs under a session-level advisory lock, so concurrent starters
queue behind the first and then find nothing left to do. Each revision commits on its own, and
index builds and backfills run outside any transaction (`migrations/online.py`: CREATE INDEX
CONCURRENTLY must). Starters wait by polling `pg_try_advisory_lock` with no transaction open:
a starter blocked inside `pg_advisory_lock` would hold a snapshot, which a concurrent index build
waits for — a deadlock. SQLite is a single machine's file: its write lock serialises the upgrade,
which runs in one transaction.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["upgrade", "alembic_config", "MIGRATIONS_DIR"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: Arbitrary constant naming Spendgate's migration lock among the database's advisory locks.
_ADVISORY_LOCK_ID = 0x5E4D6A7E
#: How often a starter retries the migration lock while another process holds it.
_LOCK_POLL_SECONDS = 0.1


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade_sync(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the database to the newest schema (idempotent)."""
    if engine.dialect.name != "postgresql":
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_sync)
        return
    async with engine.connect() as connection:
        lock = text("SELECT pg_try_advisory_lock(:id)").bindparams(id=_ADVISORY_LOCK_ID)
        while not (await connection.execute(lock)).scalar():
            await connection.rollback()
            await asyncio.sleep(_LOCK_POLL_SECONDS)
        await connection.commit()  # the lock is the session's: alembic now begins and commits each revision
        try:
            await connection.run_sync(_upgrade_sync)
        finally:
            try:
                await connection.rollback()
                await connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _ADVISORY_LOCK_ID})
                await connection.commit()
            except Exception:
                await connection.invalidate()  # closing the session releases its lock
                raise
