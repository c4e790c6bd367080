"""The MLLP listener: a thin Twisted protocol over `FrameDecoder` (HL7-SPEC §1, STYLE.md rule 2).

Per connection, frames are handed to the handler strictly one at a time, in arrival order, and each
frame's ACKs are written before the next frame is handed over.  Frames that arrive while one is in
work wait in a bounded queue; past `max_queued_frames` the connection stops reading (back-pressure)
until the queue drains.  Abuse (an oversized frame, too many connections, a peer outside the
channel's `listen.allow`) goes to one policy: log and drop the connection.  An idle connection is
closed after `idle_timeout_s`.  A `listen.tls` channel runs this same protocol under TLS
(`listening_factory`, engine/mllp/tls_listen.py); a failed handshake is logged as `mllp.tls_failed`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import structlog
from twisted.internet import defer
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from engine.config import Channel
from engine.mllp.framing import COMMIT_ACK, COMMIT_NAK, FrameDecoder, FrameTooLarge

START, END = b"\x0b", b"\x1c\r"

# handler(payload, peer) -> the ACKs to write; on a `framing.mllp_release: 2` channel it is
# called with a third argument, `committed(stored: bool)`, which it calls once the frame is
# stored (or could not be), before the ACKs are ready.
Handler = Callable[..., "defer.Deferred[list[bytes]]"]


def frame(payload: bytes) -> bytes:
    """Wrap one payload in the MLLP envelope."""
    return START + payload + END


def peer_text(address: IAddress) -> str:
    host, port = getattr(address, "host", "?"), getattr(address, "port", "")
    return f"{host}:{port}" if port != "" else str(host)


class MLLPServerProtocol(Protocol, TimeoutMixin):
    transport: Any

    def __init__(self, factory: MLLPServerFactory) -> None:
        self.factory = factory
        self.channel = factory.channel
        self.decoder = FrameDecoder(self.channel.limits.max_frame_bytes,
                                    self.channel.tolerate_missing_cr)
        self.queue: deque[bytes] = deque()
        self.busy = False
        self.draining = False  # in _next's loop: a handler answering at once must not recurse
        self.paused = False
        self.open = False
        self.peer = "?"
        self.log: Any = factory.log

    def connectionMade(self) -> None:
        self.peer = peer_text(self.transport.getPeer())
        self.log = self.factory.log.bind(peer=self.peer)
        if not self.channel.allows(str(getattr(self.transport.getPeer(), "host", ""))):
            self.log.warning("mllp.connection_refused", reason="not_allowed")
            self.transport.loseConnection()
            return
        if self.factory.connections >= self.channel.limits.max_connections:
            self.log.warning("mllp.connection_refused", reason="max_connections",
                             limit=self.channel.limits.max_connections)
            self.transport.loseConnection()
            return
        self.open = True
        self.factory.connections += 1
        self.callLater = self.factory.clock.callLater  # type: ignore[method-assign]
        if self.channel.limits.idle_timeout_s:
            self.setTimeout(self.channel.limits.idle_timeout_s)
        self.log.info("mllp.connection_opened", connections=self.factory.connections)

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        junk = self.decoder.junk_bytes
        try:
            frames = self.decoder.feed(data)
        except FrameTooLarge as exc:
            self.log.warning("mllp.frame_too_large", size=exc.size, limit=exc.limit)
            self.transport.abortConnection()
            return
        self._junk(junk)
        if frames:
            self.queue.extend(frames)
            self._next()
        if len(self.queue) > self.channel.limits.max_queued_frames and not self.paused:
            self.paused = True
            self.transport.pauseProducing()

    def _junk(self, before: int) -> None:
        if self.decoder.junk_bytes != before:
            self.log.warning("mllp.junk_discarded", bytes=self.decoder.junk_bytes - before)

    def _next(self) -> None:
        if self.draining:
            return
        self.draining = True
        try:
            while not self.busy and self.queue:
                self.busy = True
                args: tuple[Any, ...] = (self.queue.popleft(), self.peer)
                if self.channel.mllp_release == 2:
                    args += (self._committed,)
                d = defer.maybeDeferred(self.factory.handler, *args)
                d.addCallbacks(self._reply, self._failed)
        finally:
            self.draining = False

    def _reply(self, acks: list[bytes]) -> None:
        if self.transport is not None:
            for ack in acks:
                self.transport.write(frame(ack))
        self.busy = False
        if (self.paused and self.transport is not None
                and len(self.queue) <= self.channel.limits.max_queued_frames // 2):
            self.paused = False
            self.transport.resumeProducing()
        self._next()

    def _committed(self, stored: bool) -> None:
        """MLLP release 2: the frame is on safe storage (ACK) or is not (NAK); the HL7 ACK
        follows, as on any channel.  Per connection one frame is in work at a time, so this
        answers the frame in work."""
        if self.transport is not None:
            self.transport.write(frame(COMMIT_ACK if stored else COMMIT_NAK))

    def _failed(self, failure: Failure) -> None:
        # The handler answers every frame itself; reaching here is a bug, and the connection
        # must not hang on it.
        self.log.error("mllp.handler_failed", error=failure.type.__name__ if failure.type else "?")
        self._reply([])

    def timeoutConnection(self) -> None:
        self.log.info("mllp.idle_timeout", idle_timeout_s=self.channel.limits.idle_timeout_s)
        TimeoutMixin.timeoutConnection(self)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.setTimeout(None)
        if self.channel.tls is not None:
            self._tls_failed(reason)
        if self.factory.on_close is not None:  # every connection, refused ones too
            self.factory.on_close()
        if not self.open:
            return
        self.open = False
        self.factory.connections -= 1
        junk = self.decoder.junk_bytes
        tail = self.decoder.eof()
        self._junk(junk)
        # Frames complete before the close are still stored: nothing received is dropped.
        self.queue.extend(tail)
        self.transport = None
        self._next()
        self.log.info("mllp.connection_closed", connections=self.factory.connections,
                      pending=len(self.queue))

    def _tls_failed(self, reason: Failure) -> None:
        """A TLS channel's failed handshake (a plain-TCP client, a missing or untrusted client
        certificate) ends the connection with OpenSSL's error as the reason."""
        from engine.mllp.tls_listen import failure_text

        error = failure_text(reason)
        if error is not None:
            self.log.warning("mllp.tls_failed", error=error)


class MLLPServerFactory(Factory):
    """One per channel: the channel's limits, its handler, a clock, and a connection count."""

    protocol = MLLPServerProtocol  # type: ignore[assignment]

    def __init__(self, channel: Channel, handler: Handler, clock: Any, log: Any = None) -> None:
        self.channel = channel
        self.handler = handler
        self.clock = clock
        self.connections = 0
        self.on_close: Callable[[], None] | None = None  # an ingest worker reports closes
        self.log = log or structlog.get_logger("engine.mllp").bind(channel=channel.name)

    def buildProtocol(self, addr: IAddress | None) -> MLLPServerProtocol:
        return MLLPServerProtocol(self)


def listening_factory(factory: MLLPServerFactory) -> Any:
    """What a channel's port listens with, and its adopted connections (`workers:`) are given:
    the MLLP factory itself, or for a `listen.tls` channel, that factory under TLS."""
    if factory.channel.tls is None:
        return factory
    from engine.mllp.tls_listen import tls_factory

    return tls_factory(factory, factory.channel.tls, factory.clock)
