"""Appointment keys by appointment.

* `ix_appointment_keys_appointment_id`: an SIU for an appointment already stored replaces its
  keys (`DELETE FROM appointment_keys WHERE appointment_id = ?`); without the index that
  statement reads the whole table, so every update cost more as the ledger grew.  A new
  appointment pays one index entry per key (SCH-26, SCH-27, link fields).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_appointment_keys_appointment_id", "appointment_keys", ["appointment_id"])


def downgrade() -> None:
    op.drop_index("ix_appointment_keys_appointment_id", table_name="appointment_keys")
