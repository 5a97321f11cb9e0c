"""Apply the schema migrations — safe when several replicas start at the same moment.

On PostgreSQL the upgrade runs under a transaction-level advisory lock, so concurrent
starters queue behind the first and then find nothing left to do. SQLite is a single
machine's file: its write lock serialises the upgrade.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["upgrade", "alembic_config", "MIGRATIONS_DIR"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: Arbitrary constant naming Spendgate's migration lock among the database's advisory locks.
_ADVISORY_LOCK_ID = 0x5E4D6A7E


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade_sync(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
    command.upgrade(alembic_config(connection), "head")


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the database to the newest schema (idempotent)."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade_sync)
