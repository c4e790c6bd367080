"""The web face's Twisted side: the resource tree (`/healthz`, `/readyz`, `/metrics`, the
static files under `/static/`) and the `HttpService` that serves it on the engine's reactor;
`/api/` is engine.web.api's, every other path the console's pages' (engine.web.pages.site).

No request blocks the reactor: the database check of `/readyz` and the database figures of
`/metrics` run in a small thread pool of the web's own, on a database engine of its own (so a
stuck database never holds the reactor's pool, which delivery and the sweep use).  These three
paths need no login: they carry no patient data.  The API's and the pages' requests run in the
same pool.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import structlog
from prometheus_client import CONTENT_TYPE_LATEST
from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.static import File

from engine.config import Config, Http
from engine.errors import CannotListen
from engine.store import Database
from engine.store.database import open_database
from engine.tls import server_options
from engine.web.api import Api
from engine.web.health import database_state, listener_states, readiness
from engine.web.metrics import Metrics, Snapshot
from engine.web.pages.site import Pages
from engine.web.snapshot import CachedSnapshot, now_utc, read_snapshot
from engine.web.throttle import Throttle

log = structlog.get_logger("engine.web")

STATIC = Path(__file__).resolve().parent / "static"

CHECK_TIMEOUT_S = 3.0  # a database check not done by then is answered "timeout" (503)


class Writer(Protocol):
    @property
    def alive(self) -> bool: ...

    def heartbeat_age(self) -> float: ...


class EngineView(Protocol):
    """What the web reads of the running engine (engine.service.EngineService)."""

    @property
    def config(self) -> Config: ...

    @property
    def db(self) -> Database: ...

    @property
    def writer(self) -> Writer: ...

    @property
    def factories(self) -> Mapping[str, Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class CannotServe(CannotListen):
    """The web face could not bind its address."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__("http", host, port, reason)
        self.args = (f"http: cannot listen on {host}:{port} ({reason})",)


def url_of(http: Http, port: int | None = None) -> str:
    """`http://127.0.0.1:8080` (https under TLS; an IPv6 address in brackets)."""
    host = f"[{http.host}]" if ":" in http.host else http.host
    return f"{'https' if http.tls else 'http'}://{host}:{http.port if port is None else port}"


class HttpService(service.Service):
    """Serves the web face on `config.http` for the life of the service tree; `port` is the
    bound port once started."""

    def __init__(self, engine: EngineView, metrics: Metrics, reactor: Any) -> None:
        self.engine = engine
        self.metrics = metrics
        self.reactor = reactor
        self.port = 0
        self.listening: Any = None
        self.pool = ThreadPool(minthreads=0, maxthreads=4, name="engine-web")
        self.db: Database | None = None
        self.throttle = Throttle()
        self.snapshot = CachedSnapshot(self._read, self._in_thread, reactor.seconds)
        metrics.live(lambda: engine.config, self._connections, self.snapshot.current)

    def startService(self) -> None:  # noqa: N802 - Twisted's interface
        super().startService()
        http = self.engine.config.http
        assert http is not None  # make_service adds this service only with `http:`
        self.db = open_database(self.engine.db.url.render_as_string(hide_password=False),
                                migrate=False)
        self.pool.start()
        site = Site(root(self))
        site.noisy = False
        try:
            if http.tls is not None:
                self.listening = self.reactor.listenSSL(http.port, site, server_options(http.tls),
                                                        interface=http.host)
            else:
                self.listening = self.reactor.listenTCP(http.port, site, interface=http.host)
        except CannotListenError as exc:
            error = exc.socketError
            raise CannotServe(http.host, http.port,
                              getattr(error, "strerror", None) or str(error)) from exc
        self.port = self.listening.getHost().port
        log.info("http.listening", host=http.host, port=self.port, url=url_of(http, self.port))

    def stopService(self) -> Any:  # noqa: N802 - Twisted's interface
        super().stopService()
        d = defer.maybeDeferred(self.listening.stopListening) if self.listening else \
            defer.succeed(None)

        def close(_: object) -> None:
            self.pool.stop()
            if self.db is not None:
                self.db.dispose()

        return d.addBoth(close)

    def _in_thread(self, f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = deferToThreadPool(self.reactor, self.pool, f, *args)
        return d

    def _read(self) -> Snapshot:
        assert self.db is not None
        return read_snapshot(self.db, self.engine.config, now_utc())

    def _connections(self) -> dict[str, int]:
        return {name: int(f.connections) for name, f in self.engine.factories.items()}

    def ready(self) -> defer.Deferred[tuple[bool, dict[str, Any]]]:
        """Run the checks: (ready?, the JSON body)."""
        assert self.db is not None
        d = self._in_thread(database_state, self.db)
        d.addTimeout(CHECK_TIMEOUT_S, self.reactor, onTimeoutCancel=lambda *_: "timeout")

        def verdict(database: str) -> tuple[bool, dict[str, Any]]:
            engine = self.engine
            listeners = listener_states([ch.name for ch in engine.config.channels], engine)
            return readiness(database, listeners, engine.writer.alive,
                             engine.writer.heartbeat_age())

        return d.addCallback(verdict)

    def exposition(self) -> defer.Deferred[bytes]:
        """`/metrics`' body, once the database figures are at hand (cached)."""
        return self.snapshot.fresh().addCallback(lambda _: self.metrics.exposition())


def root(web: HttpService) -> Resource:
    """The resource tree.  `/api/` needs a token or a session (engine.web.api); every other
    path is a page of the console (engine.web.pages.site), which needs a login."""
    top = Root(Pages(web))
    pages: dict[bytes, Any] = {b"healthz": Healthz(), b"readyz": Readyz(web),
                               b"metrics": MetricsPage(web), b"api": Api(web),
                               b"static": Static(str(STATIC))}
    for name, page in pages.items():  # (zope interfaces: no mypy plugin here)
        top.putChild(name, page)
    return top


class Root(Resource):
    """`/`: its named children, else the pages (which route the whole path themselves)."""

    def __init__(self, pages: Resource) -> None:
        super().__init__()
        self.pages = pages

    def getChild(self, path: bytes, request: Any) -> Resource:  # noqa: N802 - Twisted's
        return self.pages

    def render(self, request: Any) -> Any:
        return self.pages.render(request)


class Static(File):
    """The console's CSS and JavaScript; a folder is 404, not a listing."""

    def directoryListing(self) -> Resource:  # noqa: N802 - Twisted's interface
        return self.childNotFound

    def render_GET(self, request: Any) -> Any:  # noqa: N802 - Twisted's interface
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"cache-control", b"no-cache")
        return super().render_GET(request)


class Healthz(Resource):
    """200 `ok` while the process runs (and its reactor answers)."""

    def render_GET(self, request: Any) -> bytes:  # noqa: N802 - Twisted's interface
        _headers(request, b"text/plain; charset=utf-8")
        return b"ok\n"


class Readyz(Resource):
    """200 when every check passes, else 503; the body names each check."""

    def __init__(self, web: HttpService) -> None:
        super().__init__()
        self.web = web

    def render_GET(self, request: Any) -> Any:  # noqa: N802 - Twisted's interface
        def answer(outcome: tuple[bool, dict[str, Any]]) -> bytes:
            ready, body = outcome
            request.setResponseCode(200 if ready else 503)
            _headers(request, b"application/json")
            return json.dumps(body, sort_keys=True).encode() + b"\n"

        return _later(request, self.web.ready().addCallback(answer))


class MetricsPage(Resource):
    """The Prometheus text format."""

    def __init__(self, web: HttpService) -> None:
        super().__init__()
        self.web = web

    def render_GET(self, request: Any) -> Any:  # noqa: N802 - Twisted's interface
        def answer(body: bytes) -> bytes:
            _headers(request, CONTENT_TYPE_LATEST.encode())
            return body

        return _later(request, self.web.exposition().addCallback(answer))


def _headers(request: Any, content_type: bytes) -> None:
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-store")


def _later(request: Any, d: defer.Deferred[bytes]) -> Any:
    """Answer with `d`'s body when it comes (500 if it fails), unless the client left."""
    gone: list[bool] = []
    request.notifyFinish().addErrback(lambda _: gone.append(True))

    def failed(failure: Any) -> bytes:
        log.error("http.request_failed", path=request.path.decode("ascii", "replace"),
                  error=failure.type.__name__)
        request.setResponseCode(500)
        _headers(request, b"text/plain; charset=utf-8")
        return b"internal error\n"

    def write(body: bytes) -> None:
        if not gone:
            request.write(body)
            request.finish()

    d.addErrback(failed).addCallback(write)
    return NOT_DONE_YET


def announce(config_path: str) -> None:
    """`make run`'s lines: where the console, the metrics and health endpoints are (nothing
    without `http:`)."""
    from engine.config import load_config

    http = load_config(config_path).http
    if http is not None:
        print(f"web console: {url_of(http)}/ (docs/console.md)")
        print(f"metrics and health: {url_of(http)}/metrics (/healthz, /readyz)")
