"""The report's reads from indexes alone.

* `ix_referrals_report` (received_at, status, first_scheduled_at, due_at, ever_seen,
  ever_no_show, specialty, priority, source) replaces `ix_referrals_received_at`: the report
  counts the period's referrals from the index entries in `received_at` order instead of
  looking each one up in the table (a year of a million-referral ledger is a million random
  reads).  Every other look-up by `received_at` still uses it.  Writes that change one of
  these columns rewrite the referral's entry.
* `ix_appointments_referral_status` (referral_id, status) replaces `ix_appointments_referral`:
  the report's no-show rate reads each referral's appointments' status from the index.  Every
  look-up by referral still uses it.

See docs/report.md and docs/performance.md (a ledger of a million referrals).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

REPORT_COLUMNS = ["received_at", "status", "first_scheduled_at", "due_at", "ever_seen",
                  "ever_no_show", "specialty", "priority", "source"]


def upgrade() -> None:
    op.create_index("ix_referrals_report", "referrals", REPORT_COLUMNS)
    op.drop_index("ix_referrals_received_at", table_name="referrals")
    op.create_index("ix_appointments_referral_status", "appointments", ["referral_id", "status"])
    op.drop_index("ix_appointments_referral", table_name="appointments")


def downgrade() -> None:
    op.create_index("ix_appointments_referral", "appointments", ["referral_id"])
    op.drop_index("ix_appointments_referral_status", table_name="appointments")
    op.create_index("ix_referrals_received_at", "referrals", ["received_at"])
    op.drop_index("ix_referrals_report", table_name="referrals")
