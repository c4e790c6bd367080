"""The referral report's cohort: referrals by `received_at`.

* `ix_referrals_received_at`: `hl7-engine report` selects the referrals received in a period (by
  default the last 90 days) and reads their history; with the index its cost follows the period,
  not the ledger's age.  `received_at` is written once, when the referral opens, so ingest pays
  one index entry per new referral.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_referrals_received_at", "referrals", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_referrals_received_at", table_name="referrals")
