"""Pass-through ACKs: every ACK relayed from a downstream system to a sender.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "relayed_acks",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("message_id", Id, nullable=False),
        sa.Column("outbound_id", Id),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("code", sa.String(8), nullable=False),
        sa.Column("downstream_code", sa.String(8), nullable=False, server_default=""),
        sa.Column("ack", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_relayed_acks_message", "relayed_acks", ["message_id"])


def downgrade() -> None:
    op.drop_table("relayed_acks")
