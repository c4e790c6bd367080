"""Users and their API tokens: who may call the web face's API, in which role.

Passwords are kept as argon2id hashes (argon2-cffi, its default parameters); a token is 32
random bytes shown once as URL-safe base64 and kept only as its sha256, so a copy of the
database opens nothing.  A token is named by its first `PREFIX_CHARS` characters (`token
revoke`), which say nothing useful about the rest.

Plain synchronous functions `f(connection, ...) -> plain value` (STYLE.md rule 9): the CLI runs
them in its own process, the web in its thread pool.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, delete, func, select, update

from engine.errors import EngineError
from engine.store.schema import api_tokens, users
from engine.timestamps import utc_text

ROLES = ("viewer", "coordinator", "operator", "admin")  # each may do what those before it may
TOKEN_BYTES = 32
PREFIX_CHARS = 8
MIN_PREFIX_CHARS = 6  # `token revoke PREFIX`: shorter would name tokens by chance
LAST_USED_EVERY = timedelta(minutes=1)  # `last_used_at` is written at most this often
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")

_hasher = PasswordHasher()


class UserError(EngineError):
    """A user command that cannot be done: the text says why (never a password)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: the user's name and role."""

    name: str
    role: str

    def may(self, role: str) -> bool:
        """Is this user's role `role` or above?"""
        return rank(self.role) >= rank(role)


def rank(role: str) -> int:
    """A role's place in ROLES (-1 for a role not there, which may do nothing)."""
    return ROLES.index(role) if role in ROLES else -1


def check_name(name: str) -> str:
    """`name` if it is a user name: 1-64 letters, digits and `._@-`, starting with a letter or
    digit (it could otherwise be taken for an option or a token prefix)."""
    if not _NAME.fullmatch(name):
        raise UserError(f"not a user name: {name!r} (1-64 letters, digits, '.', '_', '@', '-')")
    return name


def hash_password(password: str) -> str:
    """The argon2id hash (PHC string) of a password, which must not be empty."""
    if not password:
        raise UserError("the password is empty")
    return _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    """Does `password` match the stored hash?"""
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def password_user(conn: Connection, name: str, password: str) -> Principal | None:
    """The enabled user `name` if `password` is theirs, else None.  An unknown name costs one
    hash check too, so the time taken does not tell which names exist."""
    row = conn.execute(select(users.c.name, users.c.role, users.c.password_hash)
                       .where(users.c.name == name, ~users.c.disabled)).first()
    if row is None:
        verify_password(_decoy(), password)
        return None
    return Principal(row.name, row.role) if verify_password(row.password_hash, password) else None


_decoys: list[str] = []


def _decoy() -> str:
    if not _decoys:
        _decoys.append(_hasher.hash(secrets.token_hex(8)))
    return _decoys[0]


def token_digest(token: str) -> str:
    """The sha256 (hex) under which a token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_user(conn: Connection, name: str, role: str, password: str, now: datetime) -> None:
    """A new user; UserError for a name taken, an unknown role or an empty password."""
    check_name(name)
    if role not in ROLES:
        raise UserError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    digest = hash_password(password)
    if _user_id(conn, name) is not None:
        raise UserError(f"user {name} exists already")
    conn.execute(users.insert().values(name=name, role=role, password_hash=digest,
                                       created_at=now, disabled=False))


def _user_id(conn: Connection, name: str) -> int | None:
    found = conn.execute(select(users.c.id).where(users.c.name == name)).scalar()
    return None if found is None else int(found)


def list_users(conn: Connection) -> list[dict[str, Any]]:
    """Every user by name, with how many live tokens they hold and when one was last used."""
    live = (select(api_tokens.c.user_id, func.count().label("tokens"),
                   func.max(api_tokens.c.last_used_at).label("last_used_at"))
            .where(api_tokens.c.revoked_at.is_(None)).group_by(api_tokens.c.user_id).subquery())
    q = (select(users.c.name, users.c.role, users.c.created_at, users.c.disabled,
                live.c.tokens, live.c.last_used_at)
         .outerjoin(live, live.c.user_id == users.c.id).order_by(users.c.name))
    return [{"name": r.name, "role": r.role, "created_at": utc_text(r.created_at),
             "disabled": bool(r.disabled), "tokens": int(r.tokens or 0),
             "last_used_at": utc_text(r.last_used_at)} for r in conn.execute(q)]


def remove_user(conn: Connection, name: str) -> bool:
    """Remove a user, every token and every console session of theirs; False when there is no
    such user."""
    user_id = _user_id(conn, name)
    if user_id is None:
        return False
    from engine.store.sessions import end_sessions

    end_sessions(conn, user_id)
    conn.execute(delete(api_tokens).where(api_tokens.c.user_id == user_id))
    conn.execute(delete(users).where(users.c.id == user_id))
    return True


def set_password(conn: Connection, name: str, password: str) -> bool:
    """A user's new password, which ends their console sessions; False when there is no such
    user."""
    from engine.store.sessions import end_sessions

    digest = hash_password(password)
    user_id = _user_id(conn, name)
    if user_id is None:
        return False
    conn.execute(update(users).where(users.c.id == user_id).values(password_hash=digest))
    end_sessions(conn, user_id)
    return True


def create_token(conn: Connection, name: str, now: datetime) -> str | None:
    """A new token for a user (None when there is no such user): returned once, kept hashed."""
    user_id = _user_id(conn, name)
    if user_id is None:
        return None
    token = _new_token()
    conn.execute(api_tokens.insert().values(user_id=user_id, prefix=token[:PREFIX_CHARS],
                                            token_hash=token_digest(token), created_at=now))
    return token


def _new_token() -> str:
    """A random token that does not start with `-`: its prefix, given to `token revoke`, would
    be taken for an option (one draw in 64 is drawn again)."""
    while True:
        token = base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).decode("ascii")
        if not token.startswith("-"):
            return token.rstrip("=")


def revoke_tokens(conn: Connection, which: str, now: datetime) -> int:
    """Revoke every live token of the user named `which`, else the live tokens whose prefix
    `which` begins (at least MIN_PREFIX_CHARS characters); how many were revoked."""
    user_id = _user_id(conn, which)
    live = api_tokens.c.revoked_at.is_(None)
    if user_id is not None:
        chosen = api_tokens.c.user_id == user_id
    elif len(which) >= MIN_PREFIX_CHARS:
        chosen = api_tokens.c.prefix == which[:PREFIX_CHARS]
        if len(which) > PREFIX_CHARS:  # the whole token, or more of it than the prefix
            chosen = chosen & (api_tokens.c.token_hash == token_digest(which))
    else:
        return 0
    return int(conn.execute(update(api_tokens).where(chosen, live).values(revoked_at=now))
               .rowcount)


def token_user(conn: Connection, token: str, now: datetime) -> Principal | None:
    """The user a live token belongs to (None for an unknown or revoked token, or a disabled
    user); notes its use in `last_used_at` when the last note is a minute old or more."""
    row = conn.execute(
        select(api_tokens.c.id, api_tokens.c.last_used_at, users.c.name, users.c.role)
        .join(users, users.c.id == api_tokens.c.user_id)
        .where(api_tokens.c.token_hash == token_digest(token), api_tokens.c.revoked_at.is_(None),
               ~users.c.disabled)).first()
    if row is None:
        return None
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
        conn.execute(update(api_tokens).where(api_tokens.c.id == row.id)
                     .values(last_used_at=now))
    return Principal(row.name, row.role)
