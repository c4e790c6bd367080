"""Outbound rows for per-key ordering and for referral events; the downstream's raw ACK.

* `outbound.order_key`: the value of a destination's `order: {per_key: PATH}` field, taken when
  the row is queued ("" for strict destinations).
* `outbound.event` / `outbound.referral_id`: a row made by a referral event (`on:` routes) rather
  than by a routed message; `message_id` is then the message that caused it, or NULL when the
  sweep did (expired, overdue).
* `deliveries.ack`: the downstream's ACK as received, for `show` and pass-through ACKs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("outbound") as batch:
        batch.alter_column("message_id", existing_type=Id, nullable=True)
        batch.add_column(sa.Column("order_key", sa.String(199), nullable=False,
                                   server_default=""))
        batch.add_column(sa.Column("event", sa.String(40), nullable=False, server_default=""))
        batch.add_column(sa.Column("referral_id", Id))
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column("message_id", existing_type=Id, nullable=True)
        batch.add_column(sa.Column("ack", sa.LargeBinary))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("ack")
    with op.batch_alter_table("outbound") as batch:
        batch.drop_column("referral_id")
        batch.drop_column("event")
        batch.drop_column("order_key")
