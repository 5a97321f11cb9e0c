"""Alembic environment: runs on the connection that `spendgate.migrate` hands over."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from spendgate import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    # PostgreSQL (spendgate.migrate hands over a connection outside a transaction): one transaction
    # per revision, so a revision can step outside it (CREATE INDEX CONCURRENTLY). SQLite's
    # connection is already in spendgate.migrate's transaction, which alembic then leaves alone.
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
