"""Logging in and out of the console: the login form (`GET /login`), `POST /login` (a user
name and password: a new session and its `hl7_session` cookie) and `POST /logout`.

The login form carries a CSRF token of its own, kept in the `hl7_login` cookie until there is a
session.  Failed logins are counted per user name and per client address (engine.web.throttle):
past the limit, `POST /login` answers 429 with `Retry-After`.  Logins, logouts, failed and
refused logins are audit events (`audit.login`, `audit.logout`, `audit.login_failed`,
`audit.login_throttled`) with the user name and the client's address.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from engine.logs import audit
from engine.store.sessions import end_session, new_secret, open_session
from engine.store.users import UserError, check_name, password_user
from engine.web.auth import SESSION_COOKIE, same_token
from engine.web.pages.core import ANONYMOUS, Html, Page, PageCall, Redirect, local_path
from engine.web.pages.site import LOGIN_COOKIE, NOBODY, Answer, Incoming, error_page, html

if TYPE_CHECKING:
    from engine.web.server import HttpService

log = structlog.get_logger("engine.web")

Cookies = list[tuple[bytes, str, int | None]]


def form(page: PageCall) -> Html | Redirect:
    """`GET /login`: the form (a visitor with a live session goes on to `next`)."""
    target = local_path(page.call.params.get("next"))
    if page.call.user.name:
        return Redirect(target)
    return Html("login.html", {"next": target, "error": None, "name": ""})


PAGES: tuple[Page, ...] = ((("login",), "GET", ANONYMOUS, form),)


def fresh_token(cookies: Cookies) -> str:
    """A new login-form token, set as the `hl7_login` cookie."""
    token = new_secret()
    cookies.append((LOGIN_COOKIE, token, None))
    return token


def post(web: HttpService, incoming: Incoming, now: datetime) -> Answer:
    """`POST /login` or `POST /logout` (in the thread pool)."""
    if incoming.segments == ("logout",):
        return _logout(web, incoming, now)
    token = incoming.login_token
    if token is None or not same_token(incoming.form.get("csrf"), token):
        log.warning("http.csrf_refused", path="/login", user="")
        return error_page(403, "the login form is out of date: reload it and try again",
                          NOBODY, "", now, "/login")
    name = incoming.form.get("name", "")
    shown = _loggable(name)
    keys = (f"name:{name}", f"address:{incoming.address}")
    wait = web.throttle.wait_s(keys, time.monotonic())
    if wait:
        log.warning("http.login_throttled", user=shown, address=incoming.address,
                    retry_after_s=wait)
        audit("audit.login_throttled", user=shown, address=incoming.address)
        answer = _form(429, incoming, now, token, name,
                       f"too many failed logins: try again in {wait} seconds")
        answer.retry_after = wait
        return answer
    return _check(web, incoming, now, token, keys)


def _check(web: HttpService, incoming: Incoming, now: datetime, token: str,
           keys: tuple[str, str]) -> Answer:
    name, password = incoming.form.get("name", ""), incoming.form.get("password", "")
    assert web.db is not None
    with web.db.begin() as conn:
        user = password_user(conn, name, password) if name and password else None
        session = open_session(conn, user.name, now) if user is not None else None
        if session is not None and incoming.session is not None:
            end_session(conn, incoming.session, now)  # the browser's old one, if any
    if user is None or session is None:
        web.throttle.failed(keys, time.monotonic())
        audit("audit.login_failed", user=_loggable(name), address=incoming.address)
        return _form(401, incoming, now, token, name, "wrong user name or password")
    web.throttle.forget(keys[0])
    audit("audit.login", user=user.name, address=incoming.address, role=user.role)
    target = local_path(incoming.form.get("next"))
    return Answer(303, location=target, cookies=[(SESSION_COOKIE, session, None),
                                                 (LOGIN_COOKIE, "", 0)])


def _form(status: int, incoming: Incoming, now: datetime, token: str, name: str,
          error: str) -> Answer:
    context = {"next": local_path(incoming.form.get("next")), "error": error,
               "name": _loggable(name) if name else ""}
    return html(status, "login.html", context, NOBODY, token, now, "/login")


def _loggable(name: str) -> str:
    """A user name as logs may show it: a name that is not a valid user name (it might be a
    password typed in the wrong field) is not shown."""
    try:
        return check_name(name)
    except UserError:
        return "(not a user name)"


def _logout(web: HttpService, incoming: Incoming, now: datetime) -> Answer:
    """`POST /logout`: end the session (with its CSRF token) and clear the cookie."""
    from engine.store.sessions import session_of

    assert web.db is not None
    gone = Answer(303, location="/login", cookies=[(SESSION_COOKIE, "", 0)])
    if incoming.session is None:
        return gone
    with web.db.begin() as conn:
        session = session_of(conn, incoming.session, now)
        if session is None:
            return gone
        if not same_token(incoming.form.get("csrf") or incoming.csrf_header, session.csrf):
            log.warning("http.csrf_refused", path="/logout", user=session.user.name)
            return error_page(403, "the form is out of date: reload the page and try again",
                              session.user, session.csrf, now, incoming.path)
        end_session(conn, incoming.session, now)
    audit("audit.logout", user=session.user.name, address=incoming.address)
    return gone
