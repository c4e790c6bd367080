"""Retention: when a message's body, or an outbound row's payload, was purged.

* `messages.purged_at` / `outbound.purged_at`: NULL while the bytes are kept; once set, `raw`
  (or `payload`) is empty and every other column (digest, size, status, ACK codes, history
  references) stays as it was (`engine/store/retention.py`).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("purged_at", sa.DateTime()))
    with op.batch_alter_table("outbound") as batch:
        batch.add_column(sa.Column("purged_at", sa.DateTime()))


def downgrade() -> None:
    with op.batch_alter_table("outbound") as batch:
        batch.drop_column("purged_at")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("purged_at")
