"""The engine's reactor (engine/mllp/reactor.py): Twisted's epoll reactor without the per-event
log context, serving real sockets, logging an event that raises and going on with the poll."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import pytest
from twisted.internet.protocol import Factory, Protocol
from twisted.python import log

from engine.mllp import reactor as engine_reactor
from engine.mllp.reactor import EngineReactor
from engine.mllp.server import END, START

pytestmark = pytest.mark.skipif(engine_reactor.EPollReactor is object, reason="no epoll")


class _Echo(Protocol):
    """Answers each read with its bytes; a close is counted on the factory."""

    factory: Any

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's interface
        self.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 - Twisted's interface
        self.factory.closed += 1


def _run(reactor: Any, test: Any, seconds: float = 10.0) -> None:
    """Run `reactor` (not the global one) until `test` calls stop, failing after `seconds`."""
    timer = reactor.callLater(seconds, reactor.stop)
    reactor.callWhenRunning(test)
    reactor.run(installSignalHandlers=False)
    assert timer.active(), "the reactor ran out of time"
    timer.cancel()


def test_serves_reads_writes_and_closes_of_real_connections() -> None:
    reactor: Any = EngineReactor()  # type: ignore[no-untyped-call]
    factory = Factory.forProtocol(_Echo)
    factory.closed = 0  # type: ignore[attr-defined]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    answers: list[bytes] = []

    def client() -> None:
        with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5) as sock:
            for n in range(3):
                payload = START + b"MSH|%d" % n + END
                sock.sendall(payload)
                got = b""
                while len(got) < len(payload):
                    got += sock.recv(100)
                answers.append(got)
        reactor.callFromThread(wait_for_close)

    def wait_for_close() -> None:
        if factory.closed:  # type: ignore[attr-defined]
            reactor.stop()
        else:
            reactor.callLater(0.01, wait_for_close)

    _run(reactor, lambda: reactor.callInThread(client))
    assert answers == [START + b"MSH|%d" % n + END for n in range(3)]
    assert factory.closed == 1  # type: ignore[attr-defined]


def test_an_event_that_raises_is_logged_and_the_poll_goes_on() -> None:
    """What Twisted's `callWithLogger` did around each event: a failure escaping the event's
    handling (here a connectionLost that raises) is logged, and the other events still run."""

    class Raising(EngineReactor):
        def _doReadOrWrite(self, selectable: Any, fd: int, event: int) -> None:
            if getattr(selectable, "explode", False):
                raise RuntimeError("boom")
            super()._doReadOrWrite(selectable, fd, event)  # type: ignore[no-untyped-call]

    reactor: Any = Raising()  # type: ignore[no-untyped-call]
    logged: list[dict[str, Any]] = []
    log.addObserver(logged.append)
    left, right = socket.socketpair()
    try:
        from twisted.internet.abstract import FileDescriptor

        class Reader(FileDescriptor):
            explode = False

            def __init__(self, sock: socket.socket, explode: bool) -> None:
                super().__init__(reactor)  # type: ignore[no-untyped-call]
                self.sock, self.explode, self.reads = sock, explode, 0

            def fileno(self) -> int:
                return self.sock.fileno()

            def doRead(self) -> None:  # noqa: N802 - Twisted's interface
                self.sock.recv(10)
                self.reads += 1

        exploding, reading = Reader(left, True), Reader(right, False)
        reactor.addReader(exploding)
        reactor.addReader(reading)
        left.send(b"x")
        right.send(b"y")  # both ends readable: one poll returns both events
        reactor.doPoll(1.0)
        assert reading.reads == 1
        assert [e for e in logged if e.get("isError")], "the failure was not logged"
    finally:
        log.removeObserver(logged.append)
        left.close()
        right.close()


def test_install_leaves_a_reactor_already_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "twisted.internet.reactor", object())
    assert engine_reactor.install() is False


def test_the_cli_leaves_run_free_to_install_it() -> None:
    """`hl7-engine run` imports the CLI before `install`: if any of it imported Twisted's global
    reactor first, the engine would silently run on the default one."""
    script = ("import sys, engine.cli, engine.cli.run\n"
              "from engine.mllp.reactor import EngineReactor, install\n"
              "assert install(), 'a reactor was installed before run'\n"
              "from twisted.internet import reactor\n"
              "print(type(reactor) is EngineReactor)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
