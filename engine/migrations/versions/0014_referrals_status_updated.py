"""Referrals by status, then by when they last changed.

* `ix_referrals_status_updated` (status, updated_at, id) replaces `ix_referrals_status`: every
  look-up by status still uses it, and the worklist's no-shows (`status = 'no_show' ORDER BY
  updated_at, id LIMIT n`) read their first rows straight from it instead of sorting every
  no-show of the ledger (tens of thousands in a ledger of a million referrals).  Writes pay the
  same: one index entry replaced by another.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_referrals_status_updated", "referrals", ["status", "updated_at", "id"])
    op.drop_index("ix_referrals_status", table_name="referrals")


def downgrade() -> None:
    op.create_index("ix_referrals_status", "referrals", ["status"])
    op.drop_index("ix_referrals_status_updated", table_name="referrals")
