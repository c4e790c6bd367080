"""The engine's reactor (engine/mllp/reactor.py): Twisted's epoll reactor without the per-event
log context, serving real sockets, logging an event that raises and going on with the poll."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
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


def test_around_polls_runs_before_each_poll_and_after_its_events() -> None:
    reactor: Any = EngineReactor()  # type: ignore[no-untyped-call]
    assert engine_reactor.around_polls(object(), lambda: None) is False
    left, right = socket.socketpair()
    reads: list[int] = []
    seen: list[int] = []
    try:
        from twisted.internet.abstract import FileDescriptor

        class Reader(FileDescriptor):
            def fileno(self) -> int:
                return left.fileno()

            def doRead(self) -> None:  # noqa: N802 - Twisted's interface
                left.recv(10)
                reads.append(1)

        reactor.addReader(Reader(reactor))  # type: ignore[no-untyped-call]
        assert engine_reactor.around_polls(reactor, lambda: seen.append(len(reads))) is True
        right.send(b"x")
        reactor.doPoll(1.0)
        assert seen == [0, 1]  # before the poll, then after its event
    finally:
        left.close()
        right.close()


def test_frames_of_several_connections_go_to_the_writer_after_each_poll() -> None:
    """The listener, handler and writer as the engine wires them on this reactor: each frame
    is held until its poll's events are handled, then answered in order on its connection."""
    from engine.ack import ACCEPTED
    from engine.config import parse_config
    from engine.ingest import frame_handler
    from engine.mllp.server import MLLPServerFactory
    from engine.pipeline import Job, Result
    from engine.service import listener_options
    from engine.store.writer import GroupCommitWriter

    def work(jobs: list[Job]) -> list[Result]:
        return [Result([b"MSA|AA|" + job.raw], ACCEPTED, 1, "", "REF^I12", "0" * 64)
                for job in jobs]

    reactor: Any = EngineReactor()  # type: ignore[no-untyped-call]
    channel = parse_config({"channels": [{"name": "held", "listen": {"port": 1},
                                          "accept": ["REF^I12"]}]}).channels[0]
    writer: GroupCommitWriter[Job, Result] = GroupCommitWriter(
        work, reactor.callFromThread, lambda job, _exc: work([job])[0])
    writer.hand_over_after_polls(lambda call: engine_reactor.around_polls(reactor, call))
    factory = MLLPServerFactory(listener_options(channel), frame_handler(channel, writer),
                                reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    answers: dict[int, list[bytes]] = {}

    def client(n: int) -> None:
        with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5) as sock:
            got = b""
            for k in range(3):
                sock.sendall(START + b"MSH|%d.%d" % (n, k) + END)
                while not got.endswith(END):
                    got += sock.recv(100)
                answers.setdefault(n, []).append(got)
                got = b""

    def clients() -> None:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        reactor.callFromThread(reactor.stop)

    writer.start()
    try:
        _run(reactor, lambda: reactor.callInThread(clients))
    finally:
        writer.stop(timeout=10)
    assert answers == {n: [START + b"MSA|AA|MSH|%d.%d" % (n, k) + END for k in range(3)]
                       for n in range(4)}
