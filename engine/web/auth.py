"""Who a web request acts as, and whether its role may see what it asks for.

A request presents `Credentials`, read from its headers on the reactor; `authenticate` looks
them up in the database (a blocking call, run in the web's thread pool) and gives the
`Principal` or None.  A credential is a bearer token (`Authorization: Bearer TOKEN`,
engine.store.users) or a browser's session cookie (`hl7_session`, engine.store.sessions); a POST
that a cookie authenticates must also carry the session's CSRF token in `X-CSRF-Token` (a
bearer token is never sent by a browser on its own, so it needs none).

`require` turns the outcome into the answer: 401 without a user, 403 when the role is below the
one the endpoint needs.  Roles rank viewer < coordinator < operator < admin.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.errors import EngineError
from engine.store import Connection
from engine.store.sessions import session_of
from engine.store.users import Principal, token_user

__all__ = ["ApiError", "Credentials", "Principal", "authenticate", "credentials_of", "require",
           "SESSION_COOKIE", "cookie_of", "same_token"]

SESSION_COOKIE = b"hl7_session"


class ApiError(EngineError):
    """An answer other than 200: its HTTP status, a short code and a sentence (never patient
    data); the API writes it as `{"error": code, "detail": detail}`."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presents to say who it is."""

    bearer: str | None = None  # `Authorization: Bearer TOKEN`
    malformed: bool = False  # an Authorization header that is not `Bearer TOKEN`
    session: str | None = None  # the `hl7_session` cookie (when there is no bearer token)
    csrf: str | None = None  # `X-CSRF-Token`
    post: bool = False  # a request that changes something: a cookie needs the CSRF token


def cookie_of(request: Any, name: bytes) -> str | None:
    """A cookie's value (ASCII), or None."""
    value = request.getCookie(name)
    return value.decode("ascii", "replace") if value else None


def same_token(given: str | None, expected: str) -> bool:
    """Is `given` the token `expected` (compared in constant time)?"""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def credentials_of(request: Any) -> Credentials:
    """The request's credentials, read from its headers (on the reactor: no database)."""
    header = request.getHeader(b"authorization")
    if header is None:
        csrf = request.getHeader(b"x-csrf-token")
        return Credentials(session=cookie_of(request, SESSION_COOKIE),
                           csrf=csrf.decode("latin-1") if isinstance(csrf, bytes) else csrf,
                           post=request.method not in (b"GET", b"HEAD"))
    text = header.decode("latin-1") if isinstance(header, bytes) else str(header)
    scheme, _, token = text.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return Credentials(malformed=True)
    return Credentials(bearer=token)


def authenticate(conn: Connection, credentials: Credentials, now: datetime) -> Principal | None:
    """The user the credentials belong to, or None (a blocking call: run it in a thread).  A
    token's use is noted at most once a minute (`engine.store.users.token_user`).  A cookie's
    POST without its session's CSRF token is ApiError 403."""
    if credentials.bearer is not None:
        return token_user(conn, credentials.bearer, now)
    if credentials.session is None:
        return None
    session = session_of(conn, credentials.session, now)
    if session is None:
        return None
    if credentials.post and not same_token(credentials.csrf, session.csrf):
        raise ApiError(403, "csrf", "a POST with the session cookie needs the session's "
                                    "X-CSRF-Token header")
    return session.user


def require(principal: Principal | None, credentials: Credentials, role: str) -> Principal:
    """The principal, if its role is `role` or above; else ApiError 401 (no or a bad
    credential) or 403 (a role too low)."""
    if principal is None:
        if credentials.malformed:
            detail = "the Authorization header must be `Bearer TOKEN`"
        elif credentials.session is not None:
            detail = "the session has ended: log in again"
        elif credentials.bearer is None:
            detail = "this endpoint needs a token: Authorization: Bearer TOKEN"
        else:
            detail = "the token is unknown or revoked, or its user is disabled"
        raise ApiError(401, "unauthorized", detail)
    if not principal.may(role):
        raise ApiError(403, "forbidden", f"this endpoint needs the role {role} or above "
                                         f"(this user is {principal.role})")
    return principal
