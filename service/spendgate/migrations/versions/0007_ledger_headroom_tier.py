"""ledgers.headroom_tier: how far each ledger is from its limit, to one digit (console ranking)

Revision ID: 0007_ledger_headroom_tier
Revises: 0006_ledger_limit_at_charge
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

from spendgate.headroom import headroom_tier_sql
from spendgate.migrations.online import create_index, locked_update, outside_transaction
from spendgate.tables import UtcDateTime

revision = "0007_ledger_headroom_tier"
down_revision = "0006_ledger_limit_at_charge"
branch_labels = None
depends_on = None

_LEDGERS = sa.table(
    "ledgers",
    sa.column("ledger_id", sa.String()), sa.column("period_start", UtcDateTime()),
    sa.column("period_end", UtcDateTime()), sa.column("spent", sa.BigInteger()),
    sa.column("limit_at_charge", sa.BigInteger()), sa.column("headroom_tier", sa.Integer()),
)


def upgrade() -> None:
    # A nullable column without a default: a catalog change on PostgreSQL, a plain ADD COLUMN on
    # SQLite. The record path writes it from its next charge on (ledger_store.py).
    with op.batch_alter_table("ledgers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("headroom_tier", sa.Integer(), nullable=True))
    with outside_transaction():  # PostgreSQL: commits the column first; then short transactions
        _backfill(datetime.now(timezone.utc))
    create_index(
        "ledgers", "ix_ledgers_headroom", ["headroom_tier", "period_end", "period_start"],
        postgresql_where=sa.text("headroom_tier IS NOT NULL"), sqlite_where=sa.text("headroom_tier IS NOT NULL"),
    )


def _backfill(now: datetime) -> None:
    """The tier of every current ledger charged under a limit, so the overview ranks them from the
    first load. Each chunk locks its rows in ledger-id code-point order (COLLATE "C"), as records
    sort them in Python (never a deadlock with one), and computes the tier from the row as it is
    under that lock: a record that charged it meanwhile wrote the same value."""
    ledgers = _LEDGERS.c
    current = sa.or_(sa.and_(ledgers.period_end > now, ledgers.period_start <= now), ledgers.period_end.is_(None))
    bind = op.get_bind()
    ids = sorted(
        row[0] for row in bind.execute(
            sa.select(ledgers.ledger_id).where(current, ledgers.limit_at_charge > 0, ledgers.spent > 0)
        )
    )
    tier: sa.ColumnElement[int] = sa.literal_column(headroom_tier_sql("ledgers.spent", "ledgers.limit_at_charge"))
    locked_update(_LEDGERS, "ledger_id", ids, {"headroom_tier": tier})


def downgrade() -> None:
    with op.batch_alter_table("ledgers", schema=None) as batch_op:
        batch_op.drop_index("ix_ledgers_headroom")
        batch_op.drop_column("headroom_tier")
