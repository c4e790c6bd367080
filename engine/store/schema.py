"""Tables, as SQLAlchemy Core metadata.  Alembic migrations in `engine/migrations/` create them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
Id = BigInteger().with_variant(Integer(), "sqlite")

messages = Table(
    "messages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("channel", String(64), nullable=False),
    Column("received_at", DateTime(), nullable=False),  # UTC
    Column("peer", String(128), nullable=False, server_default=""),
    Column("sending_application", String(227), nullable=False, server_default=""),  # MSH-3
    Column("sending_facility", String(227), nullable=False, server_default=""),  # MSH-4
    Column("control_id", String(199), nullable=False, server_default=""),  # MSH-10
    Column("dedupe_key", String(700)),  # MSH-3|MSH-4|MSH-10, NULL when MSH-10 is unreadable
    Column("message_type", String(40), nullable=False, server_default=""),  # MSH-9.1^MSH-9.2
    Column("version", String(16), nullable=False, server_default=""),  # MSH-12.1
    Column("processing_id", String(8), nullable=False, server_default=""),  # MSH-11.1
    Column("size", Integer, nullable=False),
    Column("digest", String(64), nullable=False),  # sha256 of the raw bytes
    Column("raw", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),  # accepted | errored | rejected
    Column("stage", String(16), nullable=False),  # header | content
    Column("error_code", String(8), nullable=False, server_default=""),  # table 0357
    Column("error_location", String(40), nullable=False, server_default=""),
    Column("error_text", Text, nullable=False, server_default=""),
    Column("ack_codes", String(16), nullable=False, server_default=""),  # MSA-1s sent: "AA", "CA AA", ""
    Column("control_id_reused", Boolean, nullable=False, server_default="0"),
    Column("retransmissions", Integer, nullable=False, server_default="0"),
    Column("last_retransmission_at", DateTime()),
    Index("ix_messages_dedupe_key", "dedupe_key"),
    Index("ix_messages_received_at", "received_at"),
)
