"""Delivery attempts and the downstream's ACK codes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("outbound_id", Id, nullable=False),
        sa.Column("message_id", Id, nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("ack_code", sa.String(8), nullable=False, server_default=""),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("ms", sa.Integer),
    )
    op.create_index("ix_deliveries_message", "deliveries", ["message_id"])


def downgrade() -> None:
    op.drop_table("deliveries")
