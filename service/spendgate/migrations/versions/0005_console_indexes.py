"""console overview indexes: current ledgers by period end, catch-all rollups by hour

Revision ID: 0005_console_indexes
Revises: 0004_alerts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from spendgate.migrations.online import create_index

revision = "0005_console_indexes"
down_revision = "0004_alerts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Built CONCURRENTLY on PostgreSQL (migrations/online.py): a plain CREATE INDEX would hold up
    # every record for the whole build on a big table.
    # The overview's "closest to a limit" reads the ledgers whose period has not ended: an index
    # range on period_end instead of a scan of every past period. Only period_end (never updated)
    # is indexed, so recording spend stays a HOT update of the ledger row.
    create_index("ledgers", "ix_ledgers_period_end", ["period_end"])
    # Month-to-date and today-by-key sums of the `*` rows: on PostgreSQL an index-only range
    # (spend, requests, failures and key_id carried in the index), not ~1M heap fetches.
    create_index(
        "spend_rollups",
        "ix_spend_rollups_all_hour",
        ["hour"],
        postgresql_include=["key_id", "spend", "requests", "failures"],
        postgresql_where=sa.text("entity_type = '*'"),
        sqlite_where=sa.text("entity_type = '*'"),
    )


def downgrade() -> None:
    with op.batch_alter_table("spend_rollups", schema=None) as batch_op:
        batch_op.drop_index("ix_spend_rollups_all_hour")
    with op.batch_alter_table("ledgers", schema=None) as batch_op:
        batch_op.drop_index("ix_ledgers_period_end")
