"""The message store.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("peer", sa.String(128), nullable=False, server_default=""),
        sa.Column("sending_application", sa.String(227), nullable=False, server_default=""),
        sa.Column("sending_facility", sa.String(227), nullable=False, server_default=""),
        sa.Column("control_id", sa.String(199), nullable=False, server_default=""),
        sa.Column("dedupe_key", sa.String(700)),
        sa.Column("message_type", sa.String(40), nullable=False, server_default=""),
        sa.Column("version", sa.String(16), nullable=False, server_default=""),
        sa.Column("processing_id", sa.String(8), nullable=False, server_default=""),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(8), nullable=False, server_default=""),
        sa.Column("error_location", sa.String(40), nullable=False, server_default=""),
        sa.Column("error_text", sa.Text, nullable=False, server_default=""),
        sa.Column("ack_codes", sa.String(16), nullable=False, server_default=""),
        sa.Column("control_id_reused", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("retransmissions", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_retransmission_at", sa.DateTime()),
    )
    op.create_index("ix_messages_dedupe_key", "messages", ["dedupe_key"])
    op.create_index("ix_messages_received_at", "messages", ["received_at"])


def downgrade() -> None:
    op.drop_table("messages")
