"""alert outbox and the recent-decisions store

Revision ID: 0004_alerts
Revises: 0003_audit
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_alerts"
down_revision = "0003_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("dedupe_key", sa.String(length=800), nullable=False),
        sa.Column("event", sa.String(length=40), nullable=False),
        sa.Column("entity_type", sa.String(length=20), nullable=False),
        sa.Column("entity_id", sa.String(length=500), nullable=False),
        sa.Column("ledger_id", sa.String(length=700), nullable=False),
        sa.Column("window", sa.String(length=20), nullable=True),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.Column("limit", sa.BigInteger(), nullable=True),
        sa.Column("soft_budget", sa.BigInteger(), nullable=True),
        sa.Column("threshold", sa.Integer(), nullable=True),
        sa.Column("resets_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim", sa.String(length=40), nullable=True),
        sa.Column("delivered_to", sa.JSON(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    with op.batch_alter_table("alert_events", schema=None) as batch_op:
        batch_op.create_index("ix_alert_events_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index("ix_alert_events_entity", ["entity_type", "entity_id", "created_at"], unique=False)

    op.create_table(
        "decision_records",
        sa.Column("decision_id", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=500), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decision", sa.String(length=10), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("charges", sa.JSON(), nullable=False),
        sa.Column("alerts", sa.JSON(), nullable=False),
        sa.Column("policy_revision", sa.String(length=80), nullable=True),
        sa.PrimaryKeyConstraint("decision_id"),
    )
    with op.batch_alter_table("decision_records", schema=None) as batch_op:
        batch_op.create_index("ix_decision_records_at", ["at", "decision_id"], unique=False)

    op.create_table(
        "decision_record_entities",
        sa.Column("decision_id", sa.String(length=40), nullable=False),
        sa.Column("entity_type", sa.String(length=20), nullable=False),
        sa.Column("entity_id", sa.String(length=500), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("decision_id", "entity_type", "entity_id"),
    )
    with op.batch_alter_table("decision_record_entities", schema=None) as batch_op:
        batch_op.create_index(
            "ix_decision_record_entities_entity", ["entity_type", "entity_id", "at", "decision_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("decision_record_entities", schema=None) as batch_op:
        batch_op.drop_index("ix_decision_record_entities_entity")
    op.drop_table("decision_record_entities")
    with op.batch_alter_table("decision_records", schema=None) as batch_op:
        batch_op.drop_index("ix_decision_records_at")
    op.drop_table("decision_records")
    with op.batch_alter_table("alert_events", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_events_entity")
        batch_op.drop_index("ix_alert_events_due")
    op.drop_table("alert_events")
