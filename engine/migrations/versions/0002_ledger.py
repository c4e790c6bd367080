"""The referral ledger: referrals, their keys and patients, appointments, history.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("ledger_effect", sa.Text, nullable=False, server_default=""))
    op.create_table(
        "referrals",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("key_id", sa.String(199), nullable=False),
        sa.Column("key_authority", sa.String(199), nullable=False, server_default=""),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("owner", sa.String(227), nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.String(8), nullable=False, server_default=""),
        sa.Column("specialty", sa.String(64), nullable=False, server_default=""),
        sa.Column("window_start", sa.DateTime()),
        sa.Column("window_end", sa.DateTime()),
        sa.Column("providers", sa.Text, nullable=False, server_default="[]"),
        sa.Column("diagnoses", sa.Text, nullable=False, server_default="[]"),
        sa.Column("review", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("due_at", sa.DateTime()),
    )
    op.create_index("ix_referrals_status", "referrals", ["status"])
    op.create_table(
        "referral_keys",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("referral_id", Id, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("key_id", sa.String(199), nullable=False),
        sa.Column("key_authority", sa.String(199), nullable=False, server_default=""),
    )
    op.create_index("ix_referral_keys_key", "referral_keys", ["key_id"])
    op.create_index("ix_referral_keys_referral", "referral_keys", ["referral_id"])
    op.create_table(
        "referral_patients",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("referral_id", Id, nullable=False),
        sa.Column("patient_id", sa.String(199), nullable=False),
        sa.Column("authority", sa.String(199), nullable=False, server_default=""),
    )
    op.create_index("ix_referral_patients_patient", "referral_patients",
                    ["patient_id", "authority"])
    op.create_index("ix_referral_patients_referral", "referral_patients", ["referral_id"])
    op.create_table(
        "appointments",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("key_id", sa.String(199), nullable=False),
        sa.Column("key_authority", sa.String(199), nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("filler_status", sa.String(64), nullable=False, server_default=""),
        sa.Column("start", sa.DateTime()),
        sa.Column("duration_min", sa.Integer),
        sa.Column("specialty", sa.String(64), nullable=False, server_default=""),
        sa.Column("patient_ids", sa.Text, nullable=False, server_default="[]"),
        sa.Column("match", sa.String(16), nullable=False),
        sa.Column("referral_id", Id),
        sa.Column("via", sa.String(16)),
        sa.Column("candidates", sa.Text, nullable=False, server_default="[]"),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_appointments_key", "appointments", ["key_id"])
    op.create_index("ix_appointments_referral", "appointments", ["referral_id"])
    op.create_index("ix_appointments_match", "appointments", ["match"])
    op.create_table(
        "appointment_keys",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("appointment_id", Id, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("key_id", sa.String(199), nullable=False),
        sa.Column("key_authority", sa.String(199), nullable=False, server_default=""),
    )
    op.create_index("ix_appointment_keys_key", "appointment_keys", ["key_id"])
    op.create_table(
        "referral_events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("referral_id", Id),
        sa.Column("appointment_id", Id),
        sa.Column("message_id", Id),
        sa.Column("control_id", sa.String(199), nullable=False, server_default=""),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("status_before", sa.String(16)),
        sa.Column("status_after", sa.String(16)),
        sa.Column("rule", sa.String(200), nullable=False, server_default=""),
    )
    op.create_index("ix_referral_events_referral", "referral_events", ["referral_id"])
    op.create_index("ix_referral_events_message", "referral_events", ["message_id"])


def downgrade() -> None:
    for table in ("referral_events", "appointment_keys", "appointments", "referral_patients",
                  "referral_keys", "referrals"):
        op.drop_table(table)
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("ledger_effect")
