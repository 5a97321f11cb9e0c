"""audit trail of admin changes; indexes for keyset-paged admin lists

Revision ID: 0003_audit
Revises: 0002_spend_rollups
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_audit"
down_revision = "0002_spend_rollups"
branch_labels = None
depends_on = None

#: (index, table, columns): a filter column then the id, so a filtered list page is one index range.
_LIST_INDEXES = (
    ("ix_teams_org_id_id", "teams", ["org_id", "id"]),
    ("ix_users_org_id_id", "users", ["org_id", "id"]),
    ("ix_keys_team_id_id", "keys", ["team_id", "id"]),
    ("ix_keys_user_id_id", "keys", ["user_id", "id"]),
)


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=40), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("entity_type", sa.String(length=20), nullable=False),
        sa.Column("entity_id", sa.String(length=500), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_entity", ["entity_type", "entity_id", "id"], unique=False)
        batch_op.create_index("ix_audit_events_at", ["at"], unique=False)
    for name, table, columns in _LIST_INDEXES:
        op.create_index(name, table, columns, unique=False)
    # A key's model budgets ('<key_id>/<model>') are found by id prefix; text_pattern_ops makes that
    # prefix range an index range on PostgreSQL whatever the database's collation (SQLite compares bytes).
    op.create_index(
        "ix_budgets_entity_prefix",
        "budgets",
        ["entity_type", "entity_id"],
        unique=False,
        postgresql_ops={"entity_id": "text_pattern_ops"},
    )


def downgrade() -> None:
    op.drop_index("ix_budgets_entity_prefix", table_name="budgets")
    for name, table, _columns in reversed(_LIST_INDEXES):
        op.drop_index(name, table_name=table)
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_at")
        batch_op.drop_index("ix_audit_events_entity")
    op.drop_table("audit_events")
