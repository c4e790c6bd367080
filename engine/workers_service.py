"""The Twisted services of ingest workers (`workers:` > 1, see `engine/workers.py`): the main
process's acceptors and worker pool, and a worker's end of its socket pair."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Sequence
from typing import Any

import structlog
from twisted.application import service
from twisted.internet import task
from twisted.internet.threads import deferToThreadPool

from engine.config import Channel
from engine.control import stop_once
from engine.errors import CannotListen
from engine.mllp.server import listening_factory
from engine.tls import TLSFileError
from engine.web.metrics import Metrics
from engine.workers import (
    CLOSED,
    Acceptor,
    Dispatch,
    LinkReader,
    Worker,
    adopt,
    listening_socket,
    spawn,
)

log = structlog.get_logger("engine.workers")

METRICS_EVERY_S = 1.0  # how often a worker sends its metrics to the main process


class AcceptorService(service.Service):
    """The main process's listener for one channel when there are workers; the connections it
    keeps are adopted under TLS with `listen.tls`, as a worker's are (LinkService)."""

    def __init__(self, channel: Channel, factory: Any, reactor: Any, dispatch: Dispatch) -> None:
        self.channel = channel
        self.factory = factory
        self.reactor = reactor
        self.dispatch = dispatch
        self.acceptor: Acceptor | None = None
        self.port = 0

    def startService(self) -> None:  # noqa: N802 - Twisted's interface
        super().startService()
        try:
            serving = listening_factory(self.factory)
            sock = listening_socket(self.channel.host, self.channel.port)
        except TLSFileError as exc:  # changed since the configuration was checked
            raise CannotListen(self.channel.name, self.channel.host, self.channel.port,
                               str(exc)) from exc
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            raise CannotListen(self.channel.name, self.channel.host, self.channel.port,
                               reason) from exc
        self.port = int(sock.getsockname()[1])
        self.acceptor = Acceptor(
            self.reactor, sock, self.channel.name, self.channel.limits.max_connections,
            adopt(self.reactor, serving), lambda: int(self.factory.connections),
            self.dispatch, local_only=bool(self.channel.ack.passthrough))
        self.reactor.addReader(self.acceptor)
        log.info("mllp.listening", channel=self.channel.name, host=self.channel.host,
                 port=self.port, workers=len(self.dispatch.workers) + 1)

    def stopService(self) -> Any:  # noqa: N802 - Twisted's interface
        super().stopService()
        if self.acceptor is not None:
            self.acceptor.stop()
        return None


class WorkerPool(service.Service):
    """Starts the worker processes, restarts one that dies, and stops them with the engine."""

    def __init__(self, count: int, argv: Sequence[str], dispatch: Dispatch, reactor: Any) -> None:
        self.count = count
        self.argv = list(argv)
        self.dispatch = dispatch
        self.reactor = reactor
        self.readers: dict[int, LinkReader] = {}

    def startService(self) -> None:  # noqa: N802 - Twisted's interface
        super().startService()
        for index in range(1, self.count + 1):
            self._start(index)

    def _start(self, index: int) -> None:
        worker = spawn(index, self.argv)
        self.dispatch.workers = [w for w in self.dispatch.workers if w.index != index] + [worker]
        reader = LinkReader(worker.link, lambda data, _fds: self.dispatch.note(worker, data),
                            lambda: self._lost(worker))
        self.readers[index] = reader
        self.reactor.addReader(reader)
        log.info("worker.started", worker=index, pid=worker.process.pid)

    def _lost(self, worker: Worker) -> None:
        if not worker.alive and worker.index not in self.readers:
            return
        worker.alive = False
        self.dispatch.forget(worker)
        reader = self.readers.pop(worker.index, None)
        if reader is not None:
            self.reactor.removeReader(reader)
        worker.link.close()
        if self.running:
            log.error("worker.exited", worker=worker.index, code=worker.process.poll())
            self.reactor.callLater(1.0, self._restart, worker.index)

    def _restart(self, index: int) -> None:
        if self.running:
            self._start(index)

    def stopService(self) -> Any:  # noqa: N802 - Twisted's interface
        super().stopService()
        workers = list(self.dispatch.workers)
        for worker in workers:
            reader = self.readers.pop(worker.index, None)
            if reader is not None:
                self.reactor.removeReader(reader)
            worker.alive = False
            worker.link.close()  # end of file: the worker drains its writer and exits
            with contextlib.suppress(OSError):
                worker.process.send_signal(signal.SIGTERM)

        def wait() -> None:
            for worker in workers:
                try:
                    worker.process.wait(30)
                except subprocess.TimeoutExpired:
                    worker.process.kill()
                    worker.process.wait()

        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), wait)


class LinkService(service.Service):
    """A worker's end of its socket pair: takes handed-over connections, reports closes and,
    with `metrics`, this process's metrics once a second and when it stops; and stops the
    worker when the main process is gone."""

    def __init__(self, link: socket.socket, factories: dict[str, Any], reactor: Any,
                 metrics: Metrics | None = None) -> None:
        self.link = link
        self.metrics = metrics
        self.sending: task.LoopingCall | None = None
        self.factories = factories
        # what a handed-over connection is given: under TLS for a `listen.tls` channel
        self.serving = {name: listening_factory(f) for name, f in factories.items()}
        self.reactor = reactor
        self.reader: LinkReader | None = None
        link.setblocking(False)
        for name, factory in factories.items():
            factory.on_close = lambda name=name: self._report(name)

    def startService(self) -> None:  # noqa: N802 - Twisted's interface
        super().startService()
        self.reader = LinkReader(self.link, self._take, self._gone)
        self.reactor.addReader(self.reader)
        if self.metrics is not None:
            self.sending = task.LoopingCall(self._send_metrics)
            self.sending.clock = self.reactor
            self.sending.start(METRICS_EVERY_S, now=False)

    def _send_metrics(self) -> None:
        assert self.metrics is not None
        for datagram in self.metrics.worker_datagrams():
            try:
                self.link.send(datagram)
            except BlockingIOError:
                return  # the main process is behind: the next round sends the totals again
            except OSError:
                return

    def _take(self, data: bytes, fds: list[int]) -> None:
        factory = self.serving.get(data.decode(errors="replace"))
        for fd in fds:
            sock = socket.socket(fileno=fd)
            if factory is not None:
                self.reactor.adoptStreamConnection(sock.fileno(), sock.family, factory)
            else:
                self._report(data.decode(errors="replace"))
            sock.close()

    def _report(self, channel: str) -> None:
        with contextlib.suppress(OSError):
            self.link.send(CLOSED + channel.encode())

    def _gone(self) -> None:
        if self.reader is not None:
            self.reactor.removeReader(self.reader)
            self.reader = None
            log.info("worker.parent_gone")
            # The main process also sends SIGTERM: stop once.
            stop_once(self.reactor)

    def stopService(self) -> Any:  # noqa: N802 - Twisted's interface
        super().stopService()
        if self.sending is not None:
            self.sending.stop()
            self.sending = None
            self._send_metrics()
        if self.reader is not None:
            self.reactor.removeReader(self.reader)
            self.reader = None
        return None
