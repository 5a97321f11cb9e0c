"""ledgers.limit_at_charge: the hard limit in force at a ledger's last charge (console ranking)

Revision ID: 0006_ledger_limit_at_charge
Revises: 0005_console_indexes
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

from spendgate.migrations.online import create_index, locked_update, outside_transaction
from spendgate.tables import UtcDateTime

revision = "0006_ledger_limit_at_charge"
down_revision = "0005_console_indexes"
branch_labels = None
depends_on = None

_LEDGERS = sa.table(
    "ledgers",
    sa.column("ledger_id", sa.String()), sa.column("entity_type", sa.String()), sa.column("entity_id", sa.String()),
    sa.column("window", sa.String()), sa.column("period_start", UtcDateTime()), sa.column("period_end", UtcDateTime()),
    sa.column("spent", sa.BigInteger()), sa.column("limit_at_charge", sa.BigInteger()),
)
_BUDGETS = sa.table(
    "budgets",
    sa.column("entity_type", sa.String()), sa.column("entity_id", sa.String()), sa.column("duration", sa.String()),
    sa.column("max_budget", sa.BigInteger()),
)


def upgrade() -> None:
    # A nullable column without a default: a catalog change on PostgreSQL (no table rewrite), a
    # plain ADD COLUMN on SQLite. The record path writes it from its next charge on (ledger_store.py).
    with op.batch_alter_table("ledgers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("limit_at_charge", sa.BigInteger(), nullable=True))
    with outside_transaction():  # PostgreSQL: commits the column first; then short transactions
        _backfill(datetime.now(timezone.utc))
    create_index(
        "ledgers", "ix_ledgers_never_ending_limited", ["entity_type"],
        postgresql_where=sa.text("period_end IS NULL AND limit_at_charge IS NOT NULL"),
        sqlite_where=sa.text("period_end IS NULL AND limit_at_charge IS NOT NULL"),
    )


def _backfill(now: datetime) -> None:
    """The current limit on every current ledger with spend, so the overview ranks them from the
    first load (an entity at its limit is refused, and may not be charged again this period).

    Current: windowed ledgers whose period contains `now`, and the never-ending ledgers of entities
    with a windowless budget. The limit is the entity's budget of the ledger's window (the tightest,
    should there be several) — what the next charge would write. Rows a record has written
    meanwhile are left alone (`limit_at_charge IS NULL`). On PostgreSQL each chunk is its own
    transaction and locks its rows in ledger-id code-point order (COLLATE "C"), as records sort them
    in Python, so it never deadlocks one."""
    ledgers, budgets = _LEDGERS.c, _BUDGETS.c
    windowed = sa.select(ledgers.ledger_id).where(
        ledgers.period_end > now, ledgers.period_start <= now, ledgers.spent > 0
    )
    never = sa.select(ledgers.ledger_id).join(
        _BUDGETS, sa.and_(budgets.entity_type == ledgers.entity_type, budgets.entity_id == ledgers.entity_id)
    ).where(budgets.duration.is_(None), ledgers.window.is_(None), ledgers.period_end.is_(None), ledgers.spent > 0)
    bind = op.get_bind()
    ids = sorted({row[0] for statement in (windowed, never) for row in bind.execute(statement)})
    limit = (
        sa.select(sa.func.min(budgets.max_budget))
        .where(
            budgets.entity_type == ledgers.entity_type, budgets.entity_id == ledgers.entity_id,
            budgets.duration.is_not_distinct_from(ledgers.window),
        )
        .scalar_subquery()
    )
    locked_update(_LEDGERS, "ledger_id", ids, {"limit_at_charge": limit}, where=[ledgers.limit_at_charge.is_(None)])


def downgrade() -> None:
    with op.batch_alter_table("ledgers", schema=None) as batch_op:
        batch_op.drop_index("ix_ledgers_never_ending_limited")
        batch_op.drop_column("limit_at_charge")
