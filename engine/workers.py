"""Ingest workers: several processes take MLLP connections, so ingest uses more than one core.

One Python process runs on one core at a time (the GIL), and parsing, mapping and the ledger are
Python.  With `workers: N` the main process accepts every connection on its own listening
sockets and hands each new one, in turn, to itself or to one of N-1 worker processes, over a
UNIX socket pair (the descriptor travels as SCM_RIGHTS).  A worker runs the same listener and
group-commit writer on the same database; it binds no port and runs no delivery or sweep.
Batches of all processes take turns on SQLite (`engine/store/lock.py`) and lock the keys they
touch on PostgreSQL (`engine/store/keylocks.py`), so duplicate detection and the ledger's checks
always see what every process committed.

* Order: a connection lives in one process, so its messages are still handled in arrival order.
* `max_connections` counts every process's connections: a worker reports each close back.
* Pass-through channels (`ack: {mode: downstream}`) stay in the main process, where the
  delivery workers are.
* A worker that dies is started again; its connections drop, as any engine's would, and the
  senders resend what was not acknowledged (nothing acknowledged is lost: it was committed).
  Workers end with the main process (PR_SET_PDEATHSIG, and the socket pair's end of file).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger("engine.workers")

CLOSED = b"c:"  # worker → main: one connection of this channel closed
METRICS = b"m:"  # worker → main: its metrics (engine.web.workers)
LINK_READ = 65536  # the largest note a worker sends


@dataclass(slots=True)
class Worker:
    """The main process's end of one worker."""

    index: int
    link: socket.socket
    process: subprocess.Popen[bytes]
    alive: bool = True
    open: dict[str, int] = field(default_factory=dict)  # its connections, by channel


@dataclass(slots=True)
class Dispatch:
    """Where the main process sends each new connection: round robin over itself (None) and the
    live workers, with a count of every process's open connections per channel."""

    workers: list[Worker] = field(default_factory=list)
    turn: int = 0
    local_share: bool = True  # False: the main process only delivers (see `make_service`)
    # a worker's metrics datagram (worker index, bytes), and a worker gone (engine.web.workers)
    on_metrics: Callable[[int, bytes], None] | None = None
    on_gone: Callable[[int], None] | None = None

    def choose(self, local_only: bool) -> Worker | None:
        live = [w for w in self.workers if w.alive]
        if local_only or not live:
            return None
        if not self.local_share:
            self.turn = (self.turn + 1) % len(live)
            return live[self.turn]
        self.turn = (self.turn + 1) % (len(live) + 1)
        return live[self.turn - 1] if self.turn else None

    def send(self, worker: Worker, channel: str, sock: socket.socket) -> bool:
        """Hand the connection over; False (and the worker marked dead) when it cannot take it."""
        try:
            socket.send_fds(worker.link, [channel.encode()], [sock.fileno()])
        except OSError:
            worker.alive = False
            return False
        worker.open[channel] = worker.open.get(channel, 0) + 1
        return True

    def note(self, worker: Worker, data: bytes) -> None:
        """A worker's note: one of its connections closed, or its metrics."""
        if data.startswith(METRICS):
            if self.on_metrics is not None:
                self.on_metrics(worker.index, data)
        elif data.startswith(CLOSED):
            channel = data[len(CLOSED):].decode(errors="replace")
            if worker.open.get(channel, 0) > 0:
                worker.open[channel] -= 1

    def forget(self, worker: Worker) -> None:
        """A worker died: its connections died with it."""
        worker.open.clear()
        if self.on_gone is not None:
            self.on_gone(worker.index)

    def remote_open(self, channel: str) -> int:
        """The workers' open connections of this channel."""
        return sum(w.open.get(channel, 0) for w in self.workers)


class Acceptor:
    """A listening socket in the reactor (an IReadDescriptor): accepts and dispatches."""

    def __init__(self, reactor: Any, sock: socket.socket, channel: str, limit: int,
                 local: Callable[[socket.socket], None], local_open: Callable[[], int],
                 dispatch: Dispatch, local_only: bool) -> None:
        self.reactor = reactor
        self.sock = sock
        self.channel = channel
        self.limit = limit
        self.local = local
        self.local_open = local_open
        self.dispatch = dispatch
        self.local_only = local_only
        sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:  # noqa: N802 - Twisted's interface
        return f"acceptor-{self.channel}"

    def doRead(self) -> None:  # noqa: N802 - Twisted's interface
        for _ in range(64):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: keep listening
                log.error("mllp.accept_failed", channel=self.channel, error=exc.strerror)
                return
            self._place(conn)

    def _place(self, conn: socket.socket) -> None:
        if self.local_open() + self.dispatch.remote_open(self.channel) >= self.limit:
            log.warning("mllp.connection_refused", channel=self.channel,
                        reason="max_connections", limit=self.limit)
            conn.close()
            return
        worker = self.dispatch.choose(self.local_only)
        if worker is None or not self.dispatch.send(worker, self.channel, conn):
            self.local(conn)
        conn.close()  # the receiver holds its own descriptor now

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 - Twisted's interface
        self.sock.close()

    def stop(self) -> None:
        self.reactor.removeReader(self)
        self.sock.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket for a channel (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)


def adopt(reactor: Any, factory: Any) -> Callable[[socket.socket], None]:
    """Put an accepted connection in this process's reactor, with the channel's protocol."""

    def take(conn: socket.socket) -> None:
        reactor.adoptStreamConnection(conn.fileno(), conn.family, factory)

    return take


def spawn(index: int, argv: Sequence[str]) -> Worker:
    """Start worker `index`: `python -m engine worker --link-fd N ... argv`."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    command = [sys.executable, "-m", "engine", "worker", "--index", str(index),
               "--link-fd", str(theirs.fileno()), *argv]
    process = subprocess.Popen(command, pass_fds=[theirs.fileno()])  # noqa: S603 - our own argv
    theirs.close()
    ours.setblocking(False)
    return Worker(index, ours, process)


class LinkReader:
    """A socket pair's end in the reactor: the main process reads close and metrics notes, a worker reads
    handed-over connections.  `on_eof` runs when the other side is gone."""

    def __init__(self, sock: socket.socket, on_message: Callable[[bytes, list[int]], None],
                 on_eof: Callable[[], None]) -> None:
        self.sock = sock
        self.on_message = on_message
        self.on_eof = on_eof

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:  # noqa: N802 - Twisted's interface
        return "worker-link"

    def doRead(self) -> None:  # noqa: N802 - Twisted's interface
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, LINK_READ, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, fds = b"", []
            if not data and not fds:
                self.on_eof()
                return
            self.on_message(data, fds)

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 - Twisted's interface
        self.on_eof()


def die_with_parent() -> None:
    """A worker gets SIGTERM when the main process ends, even by SIGKILL (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere the socket pair's end of file still stops the worker
    if os.getppid() == 1:  # the parent is already gone
        os.kill(os.getpid(), signal.SIGTERM)

