"""The pages' Twisted side: the resource that serves every path the other children of `/` do
not (/healthz, /readyz, /metrics, /api/, /static/), and the steps every page request takes.

Each request is read on the reactor (path, query, form fields, cookies, the client's address)
and handled in one job in the web's thread pool: the session is looked up; a visitor without
one is sent to `/login?next=PATH` (before any 404, so no path is confirmed to a stranger); the
path and method are routed (engine.web.pages.routes; 404 and 405 pages); a role too low gets a
403 page; a POST must carry the session's CSRF token (a `csrf` form field or an `X-CSRF-Token`
header), else 403; then the handler runs and its template is rendered.  Every page is sent with
a strict Content-Security-Policy (no inline script or style), `X-Frame-Options: DENY`,
`Referrer-Policy: same-origin` and `Cache-Control: no-store`.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from twisted.web.resource import Resource

from engine.store.sessions import Session, session_of
from engine.store.users import Principal
from engine.web.api import MethodNotAllowed, match
from engine.web.auth import SESSION_COOKIE, ApiError, cookie_of, same_token
from engine.web.endpoints import Call
from engine.web.pages.core import ANONYMOUS, PageCall, Redirect, local_path
from engine.web.pages.render import render
from engine.web.snapshot import now_utc

if TYPE_CHECKING:
    from engine.web.server import HttpService

log = structlog.get_logger("engine.web")

LOGIN_COOKIE = b"hl7_login"  # the login form's CSRF token, before there is a session
MAX_FORM = 64 * 1024
HEADERS = ((b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; "
                                        b"form-action 'self'; base-uri 'none'"),
           (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin"),
           (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"))
NOBODY = Principal("", ANONYMOUS)
PLAIN = b"text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Incoming:
    """A page request as read on the reactor."""

    method: str
    segments: tuple[str, ...]
    path: str  # the path and query, as asked for (for `next=`)
    params: dict[str, str]
    form: dict[str, str]
    session: str | None  # the `hl7_session` cookie
    login_token: str | None  # the `hl7_login` cookie
    csrf_header: str | None
    address: str
    tls: bool
    connections: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Answer:
    """What the reactor writes back: a status, an HTML body or a redirect, cookies to set
    (name, value, max-age: None for a browser-session cookie, 0 to clear one)."""

    status: int
    body: bytes = b""
    location: str | None = None
    cookies: list[tuple[bytes, str, int | None]] = field(default_factory=list)
    retry_after: int | None = None
    allow: str | None = None
    kind: bytes = b"text/html; charset=utf-8"


def read_request(request: Any, connections: dict[str, int]) -> Incoming | None:
    """The request's parts (None when its path or form is not UTF-8 or too large)."""
    try:
        path = request.path.decode("utf-8")
        segments = tuple(urllib.parse.unquote(s, errors="strict")
                         for s in path.strip("/").split("/") if s)
        query = request.uri.partition(b"?")[2].decode("utf-8")
        raw = request.content.read(MAX_FORM + 1) if request.content is not None else b""
        if len(raw) > MAX_FORM:
            return None
        form = _fields(raw.decode("utf-8")) if request.method == b"POST" else {}
    except (UnicodeDecodeError, ValueError):
        return None
    header = request.getHeader(b"x-csrf-token")
    return Incoming(request.method.decode("ascii", "replace"), segments,
                    path + (f"?{query}" if query else ""), _fields(query), form,
                    cookie_of(request, SESSION_COOKIE), cookie_of(request, LOGIN_COOKIE),
                    header.decode("latin-1") if isinstance(header, bytes) else header,
                    str(getattr(request.getClientAddress(), "host", "")),
                    bool(request.isSecure()), connections)


def _fields(text: str) -> dict[str, str]:
    """`a=1&b=2` as a dict, the last value of each name."""
    return dict(urllib.parse.parse_qsl(text, keep_blank_values=True, errors="strict"))


def html(status: int, template: str, context: dict[str, Any], user: Principal, csrf: str,
         now: datetime, path: str) -> Answer:
    """An HTML answer: `template` rendered."""
    text = render(template, context, user=user, csrf=csrf, now=now, path=path)
    return Answer(status, text.encode("utf-8"))


def error_page(status: int, detail: str, user: Principal, csrf: str, now: datetime,
               path: str) -> Answer:
    """The error page: its status and a sentence (never patient data)."""
    return html(status, "error.html", {"status": status, "detail": detail}, user, csrf, now,
                path)


def to_login(incoming: Incoming) -> Answer:
    """302 to the login form, coming back to this page (a GET) after it."""
    target = incoming.path if incoming.method == "GET" else "/"
    return Answer(302, location="/login?" + urllib.parse.urlencode({"next": target}))


class Pages(Resource):
    """Every path of the console."""

    isLeaf = True

    def __init__(self, web: HttpService) -> None:
        super().__init__()
        self.web = web

    def render(self, request: Any) -> Any:
        from engine.web.server import _later

        incoming = read_request(request, self.web._connections())
        if incoming is None:
            answer = Answer(400, b"bad request: the path or form is not valid UTF-8 or too large",
                            kind=PLAIN)
            return write(request, answer, False)
        d = self.web._in_thread(self._job, incoming, now_utc())
        d.addErrback(self._failed, request)
        return _later(request, d.addCallback(lambda a: write(request, a, incoming.tls)))

    def _failed(self, failure: Any, request: Any) -> Answer:
        log.error("http.page_failed", path=request.path.decode("ascii", "replace"),
                  error=failure.type.__name__)
        return Answer(500, b"internal error (see the engine's log)", kind=PLAIN)

    def _job(self, incoming: Incoming, now: datetime) -> Answer:
        """In the thread pool: the whole request (module docstring)."""
        from engine.web.pages import login

        db = self.web.db
        assert db is not None
        if incoming.segments in (("login",), ("logout",)) and incoming.method == "POST":
            return login.post(self.web, incoming, now)
        with db.begin() as conn:
            session = session_of(conn, incoming.session, now) if incoming.session else None
        try:
            return self._page(incoming, session, now)
        except ApiError as exc:
            user, csrf = (session.user, session.csrf) if session else (NOBODY, "")
            answer = error_page(exc.status, exc.detail, user, csrf, now, incoming.path)
            if isinstance(exc, MethodNotAllowed):
                answer.allow = exc.allow
            return answer

    def _page(self, incoming: Incoming, session: Session | None, now: datetime) -> Answer:
        from engine.web.pages import login

        anonymous = _anonymous(incoming)
        if session is None and not anonymous:
            return to_login(incoming)
        role, handler, args = _route(incoming)
        cookies: list[tuple[bytes, str, int | None]] = []
        if session is None:
            user, csrf = NOBODY, incoming.login_token or login.fresh_token(cookies)
        else:
            user, csrf = session.user, session.csrf
        if role != ANONYMOUS and not user.may(role):
            raise ApiError(403, "forbidden", f"this page needs the role {role} or above "
                                             f"(you are {user.role})")
        if incoming.method == "POST" and not same_token(
                incoming.form.get("csrf") or incoming.csrf_header, csrf):
            log.warning("http.csrf_refused", path=incoming.path.split("?")[0], user=user.name)
            raise ApiError(403, "csrf", "the form is out of date or not from this site: "
                                        "reload the page and try again")
        assert self.web.db is not None
        call = Call(self.web.db, self.web.engine.config, user, incoming.params, args, now,
                    dict(incoming.form), via="console")
        outcome = handler(PageCall(call, csrf, incoming.connections))
        if isinstance(outcome, Redirect):
            status = 303 if incoming.method == "POST" else 302
            answer = Answer(status, location=local_path(outcome.location))
        else:
            answer = html(outcome.status, outcome.template, outcome.context, user, csrf, now,
                          incoming.path)
        answer.cookies.extend(cookies)
        return answer


def _route(incoming: Incoming) -> tuple[str, Any, list[str]]:
    """The page's lowest role, handler and `*` segments; ApiError 404 (no such page) or 405."""
    from engine.web.pages.routes import ROUTES

    try:
        return match(list(incoming.segments), incoming.method, ROUTES)
    except MethodNotAllowed:
        raise
    except ApiError as exc:
        raise ApiError(exc.status, exc.error, "there is no such page") from None


def _anonymous(incoming: Incoming) -> bool:
    """Is this a page that needs no login (the login form)?"""
    from engine.web.pages.routes import ROUTES

    return any(pattern == incoming.segments and role == ANONYMOUS
               for pattern, _method, role, _handler in ROUTES)


def write(request: Any, answer: Answer, tls: bool) -> bytes:
    """Write an answer's status, headers and cookies; its body."""
    request.setResponseCode(answer.status)
    for name, value in HEADERS:
        request.setHeader(name, value)
    if answer.location is not None:
        request.setHeader(b"location", answer.location.encode("utf-8"))
    if answer.retry_after is not None:
        request.setHeader(b"retry-after", str(answer.retry_after).encode("ascii"))
    if answer.allow is not None:
        request.setHeader(b"allow", answer.allow.encode("ascii"))
    for name, text, max_age in answer.cookies:
        request.addCookie(name, text.encode("ascii"), path=b"/", httpOnly=True, secure=tls,
                          sameSite=b"Strict",
                          max_age=None if max_age is None else str(max_age).encode("ascii"))
    request.setHeader(b"content-type", answer.kind)
    return answer.body


