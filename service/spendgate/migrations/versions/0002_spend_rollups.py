"""spend rollups: per entity, hour, model, key and outcome (reports)

Revision ID: 0002_spend_rollups
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_spend_rollups"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The primary key (entity_type, entity_id, hour, …) is also the report query's index: an
    # entity's range of hours is one contiguous index range.
    op.create_table(
        "spend_rollups",
        sa.Column("entity_type", sa.String(length=20), nullable=False),
        sa.Column("entity_id", sa.String(length=500), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("key_id", sa.String(length=200), nullable=False),
        sa.Column("outcome", sa.String(length=10), nullable=False),
        sa.Column("spend", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("entity_type", "entity_id", "hour", "model", "key_id", "outcome"),
    )
    _backfill()


def _backfill() -> None:
    """Roll up the spend events recorded before this migration (the same code the record path runs),
    so reports agree with ledgers from the first day. Read in pages; the rollups are summed in memory
    (one entry per entity, hour, model, key and outcome), then inserted."""
    from spendgate.reports.rollups import rollup_deltas
    from types import SimpleNamespace

    from spendgate.tables import UtcDateTime

    events = sa.table(
        "spend_events",
        *(sa.column(name) for name in ("request_id", "cost", "outcome", "key_id", "model")),
        sa.column("charges", sa.JSON()),
        sa.column("created_at", UtcDateTime()),
    )
    sums: dict[tuple, list[int]] = {}
    last = ""
    while True:  # pages in request-id order (no server-side cursor: alembic shares the connection)
        page = sa.select(events).where(events.c.request_id > last).order_by(events.c.request_id).limit(5000)
        chunk = op.get_bind().execute(page).mappings().all()
        if not chunk:
            break
        last = chunk[-1]["request_id"]
        for delta in rollup_deltas(SimpleNamespace(**row) for row in chunk):
            row_sums = sums.setdefault(tuple(delta.key), [0, 0, 0])
            for i, value in enumerate((delta.spend, delta.requests, delta.failures)):
                row_sums[i] += value
    rollups = sa.table(
        "spend_rollups",
        *(sa.column(name) for name in ("entity_type", "entity_id", "model", "key_id", "outcome")),
        sa.column("hour", UtcDateTime()),
        *(sa.column(name) for name in ("spend", "requests", "failures")),
    )
    rows = [
        dict(zip(("entity_type", "entity_id", "hour", "model", "key_id", "outcome"), key))
        | dict(zip(("spend", "requests", "failures"), values))
        for key, values in sums.items()
    ]
    for start in range(0, len(rows), 5000):
        op.get_bind().execute(rollups.insert(), rows[start:start + 5000])


def downgrade() -> None:
    op.drop_table("spend_rollups")
