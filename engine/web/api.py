"""`/api/...`: the read-only JSON API's Twisted side: routing, authentication, the thread pool,
JSON answers and errors.

Every request is handled in one job in the web's thread pool (never on the reactor): the
credentials are looked up (engine.web.auth), the role is checked against the endpoint's, then
the endpoint (engine.web.endpoints: plain functions over a `Call`) reads the database.  Answers
are JSON; every error is `{"error": code, "detail": sentence}` with its status (400, 401, 403,
404, 405, 410, 500).  Endpoints that return patient data or a body write an audit event with
the API user's name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from twisted.web.resource import Resource

from engine.web import endpoints as ep
from engine.web.auth import ApiError, Credentials, authenticate, credentials_of, require
from engine.web.snapshot import now_utc

if TYPE_CHECKING:
    from engine.web.server import HttpService

log = structlog.get_logger("engine.web")

Handler = Callable[[ep.Call], Any]

# (path, with `*` for one URL-encoded segment; the lowest role; the endpoint)
ROUTES: tuple[tuple[tuple[str, ...], str, Handler], ...] = (
    (("referrals",), "coordinator", ep.referrals),
    (("referrals", "*"), "coordinator", ep.referral),
    (("appointments",), "coordinator", ep.appointments),
    (("worklist",), "coordinator", ep.worklist),
    (("report",), "viewer", ep.report),
    (("queue",), "viewer", ep.queue),
    (("messages",), "operator", ep.messages),
    (("messages", "*"), "operator", ep.message),
    (("messages", "*", "raw"), "operator", ep.message_raw),
)


def match(segments: list[str]) -> tuple[str, Handler, list[str]]:
    """The route of a path below /api/ (its role, endpoint and `*` segments); 404 if none."""
    for pattern, role, handler in ROUTES:
        if len(pattern) == len(segments) and all(
                p in ("*", s) for p, s in zip(pattern, segments, strict=True)):
            return role, handler, [s for p, s in zip(pattern, segments, strict=True) if p == "*"]
    raise ApiError(404, "not_found", "no such endpoint (see docs/api.md)")


class Api(Resource):
    """Every path under /api/."""

    isLeaf = True

    def __init__(self, web: HttpService) -> None:
        super().__init__()
        self.web = web

    def render(self, request: Any) -> Any:
        from engine.web.server import _later

        method = request.method
        if method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return _answer(request, ApiError(405, "method_not_allowed",
                                             "this API is read-only: GET only"))
        try:
            segments = [s.decode("utf-8") for s in request.postpath]
        except UnicodeDecodeError:
            return _answer(request, ApiError(404, "not_found", "no such endpoint"))
        if segments and segments[-1] == "":  # a trailing slash
            segments.pop()
        params = {k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace")
                  for k, v in request.args.items() if v}
        credentials = credentials_of(request)
        d = self.web._in_thread(self._job, segments, params, credentials, now_utc())
        d.addErrback(_failure_to_error, request)
        return _later(request, d.addCallback(lambda outcome: _answer_body(request, outcome)))

    def _job(self, segments: list[str], params: dict[str, str], credentials: Credentials,
             now: datetime) -> Any:
        """In the thread pool: authenticate, check the role, run the endpoint; an ApiError is
        returned (not raised) so that the reactor side writes it."""
        db = self.web.db
        assert db is not None
        try:
            with db.begin() as conn:
                principal = authenticate(conn, credentials, now)
            if principal is None:  # 401 before 404: no path is confirmed to a stranger
                require(principal, credentials, "viewer")
            role, handler, args = match(segments)
            user = require(principal, credentials, role)
            return handler(ep.Call(db, self.web.engine.config, user, params, args, now))
        except ApiError as exc:
            return exc


def _failure_to_error(failure: Any, request: Any) -> ApiError:
    """An unexpected failure: logged by type only (no patient data), answered 500."""
    log.error("http.api_failed", path=request.path.decode("ascii", "replace"),
              error=failure.type.__name__)
    return ApiError(500, "internal", "internal error (see the engine's log)")


def _answer_body(request: Any, outcome: Any) -> bytes:
    if isinstance(outcome, ApiError):
        request.setResponseCode(outcome.status)
        if outcome.status == 401:
            request.setHeader(b"www-authenticate", b'Bearer realm="hl7-engine"')
        body: Any = {"error": outcome.error, "detail": outcome.detail}
    else:
        body = outcome
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body).encode("utf-8") + b"\n"


def _answer(request: Any, error: ApiError) -> bytes:
    return _answer_body(request, error)
