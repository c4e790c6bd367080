"""Browser sessions of the web console: the `web_sessions` table, opening a session for a
user, finding the user of a session id, and ending it.

A session id is 32 random bytes (URL-safe base64) that only the browser's cookie holds; the
database keeps its sha256, so a copy of the database opens no session.  A session ends at
logout, after `IDLE` without a request, and `LIFETIME` after it opened, whichever comes first.
Each session has its own CSRF token, which every form and every cookie-borne POST must carry.

Plain synchronous functions `f(connection, ...) -> plain value`, run in the web's thread pool.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    DateTime,
    Index,
    String,
    Table,
    delete,
    or_,
    select,
    update,
)

from engine.store.schema import Id, metadata, users
from engine.store.users import Principal, token_digest

IDLE = timedelta(minutes=30)  # a session unused this long has ended
LIFETIME = timedelta(hours=12)  # a session older than this has ended, used or not
SEEN_EVERY = timedelta(minutes=1)  # `seen_at` is written at most this often
SESSION_BYTES = 32

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("session_hash", String(64), nullable=False, unique=True),  # sha256 hex of the id
    Column("user_id", Id, nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", DateTime(), nullable=False),
    Column("seen_at", DateTime(), nullable=False),
    Column("ended_at", DateTime()),  # logout
    Index("ix_web_sessions_user", "user_id"),
)


@dataclass(frozen=True, slots=True)
class Session:
    """A live session: who it is, and the CSRF token its forms carry."""

    user: Principal
    csrf: str


def new_secret() -> str:
    """32 random bytes as URL-safe base64 (a session id or a CSRF token)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(SESSION_BYTES)).decode("ascii").rstrip("=")


def open_session(conn: Connection, name: str, now: datetime) -> str | None:
    """A new session for the user `name` (None if there is no such enabled user): its id,
    returned once.  Sessions that have ended are deleted on the way."""
    user_id = conn.execute(select(users.c.id).where(users.c.name == name, ~users.c.disabled)
                           ).scalar()
    if user_id is None:
        return None
    conn.execute(delete(web_sessions).where(_ended(now)))
    session_id = new_secret()
    conn.execute(web_sessions.insert().values(
        session_hash=token_digest(session_id), user_id=user_id, csrf=new_secret(),
        created_at=now, seen_at=now))
    return session_id


def _ended(now: datetime) -> ColumnElement[bool]:
    return or_(web_sessions.c.ended_at.is_not(None), web_sessions.c.seen_at <= now - IDLE,
               web_sessions.c.created_at <= now - LIFETIME)


def session_of(conn: Connection, session_id: str, now: datetime) -> Session | None:
    """The live session with this id (None when unknown, ended, expired, or its user is
    disabled or gone); notes its use in `seen_at` when the last note is a minute old."""
    row = conn.execute(
        select(web_sessions.c.id, web_sessions.c.csrf, web_sessions.c.seen_at,
               web_sessions.c.created_at, web_sessions.c.ended_at, users.c.name, users.c.role)
        .join(users, users.c.id == web_sessions.c.user_id)
        .where(web_sessions.c.session_hash == token_digest(session_id), ~users.c.disabled)
    ).first()
    if row is None or row.ended_at is not None:
        return None
    if now - row.seen_at >= IDLE or now - row.created_at >= LIFETIME:
        return None
    if now - row.seen_at >= SEEN_EVERY:
        conn.execute(update(web_sessions).where(web_sessions.c.id == row.id).values(seen_at=now))
    return Session(Principal(row.name, row.role), row.csrf)


def end_session(conn: Connection, session_id: str, now: datetime) -> str | None:
    """End a session (logout): the name of its user, or None when it was not live."""
    found = session_of(conn, session_id, now)
    if found is None:
        return None
    conn.execute(update(web_sessions).where(
        web_sessions.c.session_hash == token_digest(session_id)).values(ended_at=now))
    return found.user.name


def end_sessions(conn: Connection, user_id: int) -> None:
    """Forget every session of a user (removed, or given a new password)."""
    conn.execute(delete(web_sessions).where(web_sessions.c.user_id == user_id))
