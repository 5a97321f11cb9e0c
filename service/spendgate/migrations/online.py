"""Migration steps that must not block the record path on a large PostgreSQL table.

A plain CREATE INDEX holds a SHARE lock on its table for the whole build — every record's ledger
update waits behind it (minutes on a production `ledgers` or `spend_rollups`). On PostgreSQL these
steps run outside the migration's transaction (`autocommit_block`, which commits the migration's
work so far): CREATE INDEX CONCURRENTLY, and backfills written in short transactions of their own.
`spendgate.migrate` holds its session-level lock meanwhile, so one process migrates at a time.
SQLite (one machine's file) runs the plain statements in the migration's transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import sqlalchemy as sa
from alembic import op

__all__ = ["create_index", "is_postgresql", "locked_update", "outside_transaction"]


def is_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


@contextmanager
def outside_transaction() -> Iterator[None]:
    """PostgreSQL: autocommit (each statement its own transaction); SQLite: the migration's transaction."""
    with op.get_context().autocommit_block() if is_postgresql() else nullcontext():
        yield


def create_index(table: str, name: str, columns: Sequence[str], **options: Any) -> None:
    """CREATE INDEX — CONCURRENTLY on PostgreSQL.

    A concurrent build that failed or was interrupted leaves an INVALID index of that name (and the
    revision unapplied): it is dropped and built again. A valid one (built by hand ahead of the
    upgrade, as operations.md suggests for big tables) is kept."""
    if not is_postgresql():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(name, list(columns), unique=False, **options)
        return
    with op.get_context().autocommit_block():
        valid = op.get_bind().execute(
            sa.text(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = :name AND pg_catalog.pg_table_is_visible(c.oid)"
            ),
            {"name": name},
        ).scalar()
        if valid is True:
            return
        if valid is False:
            op.drop_index(name, table_name=table, postgresql_concurrently=True)
        op.create_index(name, table, list(columns), unique=False, postgresql_concurrently=True, **options)



def locked_update(
    table: sa.TableClause, key: str, ids: Sequence[Any], values: Mapping[str, Any], *,
    where: Sequence[Any] = (), chunk: int = 1000,
) -> None:
    """UPDATE `table` SET `values` on the rows whose `key` is in `ids` (and match `where`), `chunk`
    rows per statement — inside `outside_transaction()` on PostgreSQL each its own short transaction.

    Each statement locks its rows first in code-point order of `key` (COLLATE "C" on PostgreSQL):
    the order the record path sorts ledger ids in, in Python, so a backfill never deadlocks a record."""
    column = table.c[key]
    order = column.collate("C") if is_postgresql() else column
    bind = op.get_bind()
    for start in range(0, len(ids), chunk):
        locked = (
            sa.select(column).where(column.in_(ids[start : start + chunk]), *where)
            .order_by(order).with_for_update().cte("locked")
        )
        bind.execute(sa.update(table).where(column.in_(sa.select(locked.c[key]))).values(**values).add_cte(locked))
