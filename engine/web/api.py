"""`/api/...`: the JSON API's Twisted side: routing, authentication, the thread pool, JSON
bodies, answers and errors.

Every request is handled in one job in the web's thread pool (never on the reactor): the
credentials are looked up (engine.web.auth), the path and method are routed, the role is
checked against the endpoint's, a POST's body is checked (JSON object, `Content-Type:
application/json`), then the endpoint (engine.web.endpoints for reads, engine.web.actions for
writes: plain functions over a `Call`) runs.  Answers are JSON; every error is
`{"error": code, "detail": sentence}` with its status (400, 401, 403, 404, 405, 409, 410, 415,
500).  Endpoints that return patient data or a body, and every write, write an audit event with
the API user's name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from twisted.web.resource import Resource

from engine.web import actions as act
from engine.web import endpoints as ep
from engine.web.auth import ApiError, Credentials, authenticate, credentials_of, require
from engine.web.snapshot import now_utc

if TYPE_CHECKING:
    from engine.web.server import HttpService

log = structlog.get_logger("engine.web")

Handler = Callable[[ep.Call], Any]

# (path, with `*` for one URL-encoded segment; the method; the lowest role; the endpoint)
ROUTES: tuple[tuple[tuple[str, ...], str, str, Handler], ...] = (
    (("referrals",), "GET", "coordinator", ep.referrals),
    (("referrals", "*"), "GET", "coordinator", ep.referral),
    (("appointments",), "GET", "coordinator", ep.appointments),
    (("appointments", "*", "link"), "POST", "coordinator", act.link),
    (("worklist",), "GET", "coordinator", ep.worklist),
    (("report",), "GET", "viewer", ep.report),
    (("queue",), "GET", "viewer", ep.queue),
    (("destinations", "*", "pause"), "POST", "operator", act.pause),
    (("destinations", "*", "resume"), "POST", "operator", act.resume),
    (("destinations", "*", "retry"), "POST", "operator", act.retry),
    (("destinations", "*", "release"), "POST", "operator", act.release),
    (("messages",), "GET", "operator", ep.messages),
    (("messages", "*"), "GET", "operator", ep.message),
    (("messages", "*", "raw"), "GET", "operator", ep.message_raw),
    (("messages", "*", "replay"), "POST", "operator", act.replay),
)
MAX_BODY = 64 * 1024


def match(segments: list[str], method: str, routes: tuple[tuple[tuple[str, ...], str, str, Any],
                                                          ...] = ROUTES
          ) -> tuple[str, Any, list[str]]:
    """The route of a path below /api/ (or in another table of the same shape, the pages') and
    a method (its role, handler and `*` segments); 404 if no path matches, 405 (with the
    allowed method) if the method does not."""
    allowed: list[str] = []
    for pattern, wanted, role, handler in routes:
        if len(pattern) == len(segments) and all(
                p in ("*", s) for p, s in zip(pattern, segments, strict=True)):
            if method == wanted or (method == "HEAD" and wanted == "GET"):
                args = [s for p, s in zip(pattern, segments, strict=True) if p == "*"]
                return role, handler, args
            allowed.append(wanted)
    if allowed:
        methods = "GET, HEAD" if allowed == ["GET"] else ", ".join(allowed)
        raise MethodNotAllowed(methods)
    raise ApiError(404, "not_found", "no such endpoint (see docs/api.md)")


class MethodNotAllowed(ApiError):
    """405, with the methods the path takes (the `Allow` header)."""

    def __init__(self, allow: str) -> None:
        super().__init__(405, "method_not_allowed", f"this path takes {allow} only")
        self.allow = allow


def parse_body(content_type: str | None, raw: bytes) -> dict[str, Any]:
    """A POST's JSON body (an object; empty without a body); 415 without `Content-Type:
    application/json`, 400 for anything but a JSON object."""
    if not raw.strip():
        return {}
    if content_type is None or content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       "a request body must be JSON, sent with Content-Type: application/json")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return body


class Api(Resource):
    """Every path under /api/."""

    isLeaf = True

    def __init__(self, web: HttpService) -> None:
        super().__init__()
        self.web = web

    def render(self, request: Any) -> Any:
        from engine.web.server import _later

        method = request.method.decode("ascii", "replace")
        try:
            segments = [s.decode("utf-8") for s in request.postpath]
        except UnicodeDecodeError:
            return _answer(request, ApiError(404, "not_found", "no such endpoint"))
        if segments and segments[-1] == "":  # a trailing slash
            segments.pop()
        params = {k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace")
                  for k, v in request.args.items() if v}
        credentials = credentials_of(request)
        raw = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        header = request.getHeader(b"content-type")
        content_type = header.decode("latin-1") if isinstance(header, bytes) else header
        d = self.web._in_thread(self._job, segments, method, params, credentials, now_utc(),
                                content_type, raw)
        d.addErrback(_failure_to_error, request)
        return _later(request, d.addCallback(lambda outcome: _answer_body(request, outcome)))

    def _job(self, segments: list[str], method: str, params: dict[str, str],
             credentials: Credentials, now: datetime, content_type: str | None,
             raw: bytes) -> Any:
        """In the thread pool: authenticate, route, check the role and the body, run the
        endpoint; an ApiError is returned (not raised) so that the reactor side writes it."""
        db = self.web.db
        assert db is not None
        try:
            with db.begin() as conn:
                principal = authenticate(conn, credentials, now)
            if principal is None:  # 401 before 404: no path is confirmed to a stranger
                require(principal, credentials, "viewer")
            role, handler, args = match(segments, method)
            user = require(principal, credentials, role)
            if len(raw) > MAX_BODY:
                raise ApiError(413, "too_large", f"a request body is at most {MAX_BODY} bytes")
            body = parse_body(content_type, raw) if method == "POST" else {}
            return handler(ep.Call(db, self.web.engine.config, user, params, args, now, body))
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
        if isinstance(outcome, MethodNotAllowed):
            request.setHeader(b"allow", outcome.allow.encode("ascii"))
        body: Any = {"error": outcome.error, "detail": outcome.detail}
    else:
        body = outcome
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body).encode("utf-8") + b"\n"


def _answer(request: Any, error: ApiError) -> bytes:
    return _answer_body(request, error)
