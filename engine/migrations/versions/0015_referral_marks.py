"""What a referral's history says, kept on its row for the report.

* `referrals.first_scheduled_at`: the time of its first history row with status `scheduled`;
  `ever_seen`: it ever reached `completed` or `closed`; `ever_no_show`: it ever reached
  `no_show`.  The ledger's rules set them as they write those history rows; this migration fills
  them from the history already stored.  The report then reads one table through its
  `received_at` index instead of joining every referral of the period to its history.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("referrals") as batch:
        batch.add_column(sa.Column("first_scheduled_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("ever_seen", sa.Boolean(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("ever_no_show", sa.Boolean(), nullable=False,
                                   server_default="0"))
    op.execute(
        "UPDATE referrals SET "
        "first_scheduled_at = (SELECT min(e.at) FROM referral_events e "
        "WHERE e.referral_id = referrals.id AND e.status_after = 'scheduled'), "
        "ever_seen = EXISTS (SELECT 1 FROM referral_events e WHERE e.referral_id = referrals.id "
        "AND e.status_after IN ('completed', 'closed')), "
        "ever_no_show = EXISTS (SELECT 1 FROM referral_events e "
        "WHERE e.referral_id = referrals.id AND e.status_after = 'no_show')")


def downgrade() -> None:
    with op.batch_alter_table("referrals") as batch:
        batch.drop_column("ever_no_show")
        batch.drop_column("ever_seen")
        batch.drop_column("first_scheduled_at")
