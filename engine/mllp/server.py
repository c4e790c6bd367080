"""The MLLP listener: a thin Twisted protocol over `FrameDecoder` (docs/hl7-rules.md, "Framing").

Per connection, frames are handed to the handler strictly one at a time, in arrival order, and each
frame's ACKs are written before the next frame is handed over.  Frames that arrive while one is in
work wait in a bounded queue; past `max_queued_frames` the connection stops reading (back-pressure)
until the queue drains.  Abuse (an oversized frame, too many connections, a peer outside the
channel's `listen.allow`) goes to one policy: log and drop the connection.  An idle connection is
closed after `idle_timeout_s`.  A `listen.tls` channel runs this same protocol under TLS
(`listening_factory`, engine/mllp/tls_listen.py); a failed handshake is logged as `mllp.tls_failed`.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog
from twisted.internet import tcp
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from engine.mllp.framing import COMMIT_ACK, COMMIT_NAK, FrameDecoder, FrameTooLarge
from engine.mllp.options import ListenerOptions

START, END = b"\x0b", b"\x1c\r"
CLOSE_GRACE_S = 10.0  # after answering an oversized frame, how long a close may wait on the peer

# handler(payload, peer, reply) hands one frame on and calls `reply` once, at once or later,
# with the ACKs to write (a list of payloads) or a Failure (logged as `mllp.handler_failed`,
# nothing written): a plain callback, not a Deferred per frame.  On a `framing.mllp_release: 2`
# channel it is called with a fourth argument, `committed(stored: bool)`, which it calls once
# the frame is stored (or could not be), before the ACKs are ready.
Reply = Callable[["list[bytes] | Failure"], None]
Handler = Callable[..., None]
# oversize(head, size, limit) -> (the ACKs, what to log: sender, control_id); never raises.
Oversize = Callable[[bytes, int, int], tuple[list[bytes], dict[str, str]]]


def frame(payload: bytes) -> bytes:
    """Wrap one payload in the MLLP envelope."""
    return START + payload + END


def _no_delay(transport: Any) -> None:
    """TCP_NODELAY: an ACK goes out at once, not after the peer's delayed ACK of the last one
    (Nagle), which costs a pipelining sender ~40 ms per frame."""
    with contextlib.suppress(AttributeError, NotImplementedError, OSError):
        transport.setTcpNoDelay(True)  # not on a test's transport, or a closed socket


def send(transport: Any, data: bytes) -> None:
    """`transport.write(data)`, but on a plain TCP connection with nothing queued ahead of it,
    straight to the socket first: Twisted would have the reactor register the socket for
    writing (epoll_ctl), send on its next poll, and unregister it (epoll_ctl), for every ACK.
    Whatever the socket does not take at once (or on an error) goes through `write` as before,
    so order, back-pressure and connection loss are Twisted's as ever."""
    if type(transport) is tcp.Server and _nothing_queued(transport):
        with contextlib.suppress(OSError):  # would block, or the connection is gone
            data = data[transport.socket.send(data):]
    if data:
        transport.write(data)


def _nothing_queued(transport: tcp.Server) -> bool:
    """An open connection whose write buffers are empty (bytes sent now go out in order).
    Twisted's own attributes (the class's checked once, below): should a release rename one,
    the answer is False and every write goes through `transport.write`, as it did before."""
    return (_WRITE_STATE_KNOWN and getattr(transport, "_tempDataBuffer", None) == []
            and not transport.dataBuffer and bool(transport.connected)
            and not transport.disconnecting and not transport.TLS
            and not transport._writeDisconnected)


_WRITE_STATE_KNOWN = all(hasattr(tcp.Server, name) for name in (
    "connected", "disconnecting", "TLS", "_writeDisconnected", "dataBuffer"))


def peer_text(address: IAddress) -> str:
    host, port = getattr(address, "host", "?"), getattr(address, "port", "")
    return f"{host}:{port}" if port != "" else str(host)


class _Close:
    """Queued after the frames before it: write these ACKs, then close (an oversized frame)."""

    def __init__(self, acks: list[bytes]) -> None:
        self.acks = acks


class MLLPServerProtocol(Protocol, TimeoutMixin):
    """One connection.  It is also the push producer of its own transport's writes: when the
    ACKs a peer has not read pass the transport's buffer size, reading stops until they drain,
    so a sender that never reads its ACKs costs a bounded amount of memory."""

    transport: Any

    def __init__(self, factory: MLLPServerFactory) -> None:
        self.factory = factory
        self.options = factory.options
        self.decoder = FrameDecoder(self.options.max_frame_bytes,
                                    self.options.tolerate_missing_cr)
        self.queue: deque[bytes | _Close] = deque()
        self.busy = False
        self.draining = False  # in _next's loop: a handler answering at once must not recurse
        self.paused = False  # reading stopped (for one of `_holds`)
        self._holds: set[str] = set()  # why reading is stopped: "queue", "writes", "closing"
        self.open = False
        self.peer = "?"
        self.host = ""
        self.log: Any = factory.log
        self._frame_timer: Any = None  # armed while a frame is open (limits.frame_timeout_s)
        self.retiring = False  # a reload removed or replaced the channel: close when answered

    def connectionMade(self) -> None:
        address = self.transport.getPeer()
        self.peer = peer_text(address)
        self.host = str(getattr(address, "host", ""))
        self.log = self.factory.log.bind(peer=self.peer)
        refused = self._refusal()
        if refused is not None:
            self.log.warning("mllp.connection_refused", **refused)
            self.transport.loseConnection()
            return
        self.open = True
        self.factory.opened(self)
        self.callLater = self.factory.clock.callLater  # type: ignore[method-assign]
        _no_delay(self.transport)
        self.transport.registerProducer(self, True)
        if self.options.idle_timeout_s:
            self.setTimeout(self.options.idle_timeout_s)
        self.log.info("mllp.connection_opened", connections=self.factory.connections)

    def _refusal(self) -> dict[str, Any] | None:
        """Why this connection may not be served (allow-list, connection caps), or None."""
        limits = self.options
        if not self.options.allows(self.host):
            return {"reason": "not_allowed"}
        if self.factory.connections >= limits.max_connections:
            return {"reason": "max_connections", "limit": limits.max_connections}
        per_address = limits.max_connections_per_address
        if per_address and self.factory.by_address.get(self.host, 0) >= per_address:
            return {"reason": "max_connections_per_address", "limit": per_address}
        return None

    def dataReceived(self, data: bytes) -> None:
        if "closing" in self._holds:
            return  # an oversized frame is being answered: nothing more is read
        self.resetTimeout()
        junk = self.decoder.junk_bytes
        try:
            frames = self.decoder.feed(data)
        except FrameTooLarge as exc:
            self._junk(junk)
            self._too_large(exc)
            return
        self._junk(junk)
        self._watch_frame(bool(frames))
        if frames:
            self.queue.extend(frames)
            self._next()
        if len(self.queue) > self.options.max_queued_frames:
            self._hold("queue")

    def _watch_frame(self, completed: bool) -> None:
        """Arm the frame timer when a frame opens (again after one completed in this read),
        disarm it when none is open: a frame must be complete `frame_timeout_s` after its
        0x0B, however slowly its bytes come (each byte resets only the idle timeout)."""
        timeout = self.options.frame_timeout_s
        if not timeout:
            return
        if not self.decoder.in_frame:
            self._cancel_frame_timer()
        elif self._frame_timer is None or completed:
            self._cancel_frame_timer()
            self._frame_timer = self.factory.clock.callLater(timeout, self._frame_timed_out)

    def _frame_timed_out(self) -> None:
        self._frame_timer = None
        if not self.open or not self.decoder.in_frame:
            return
        if self._holds:  # we stopped reading, not the sender: give it the time again
            self._watch_frame(True)
            return
        self.log.warning("mllp.frame_timeout", frame_timeout_s=self.options.frame_timeout_s,
                         size=self.decoder.buffered)
        self.transport.loseConnection()

    def _cancel_frame_timer(self) -> None:
        timer, self._frame_timer = self._frame_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _too_large(self, exc: FrameTooLarge) -> None:
        """Answer the oversized frame after the frames before it (AR/CR, ERR-3 100, MSA-2 from
        its MSH when readable), then close; nothing more is read meanwhile."""
        acks: list[bytes] = []
        about: dict[str, str] = {}
        if self.factory.oversize is not None:
            acks, about = self.factory.oversize(exc.head, exc.size, exc.limit)
        self.log.warning("mllp.frame_too_large", size=exc.size, limit=exc.limit, **about)
        self._cancel_frame_timer()
        self._hold("closing")
        self.queue.append(_Close(acks))
        self._next()

    def _junk(self, before: int) -> None:
        if self.decoder.junk_bytes != before:
            self.log.warning("mllp.junk_discarded", bytes=self.decoder.junk_bytes - before)

    def _next(self) -> None:
        if self.draining:
            return
        self.draining = True
        try:
            while not self.busy and self.queue:
                item = self.queue.popleft()
                if isinstance(item, _Close):
                    self._close_after(item.acks)
                    return
                self.busy = True
                args: tuple[Any, ...] = (item, self.peer, self._answer)
                if self.options.mllp_release == 2:
                    args += (self._committed,)
                try:
                    self.factory.handler(*args)
                except Exception:  # noqa: BLE001 - answered below, like a failed reply
                    self._answer(Failure())
        finally:
            self.draining = False

    def _close_after(self, acks: list[bytes]) -> None:
        self.queue.clear()
        if self.transport is None:
            return
        for ack in acks:
            self.transport.write(frame(ack))
        self.transport.loseConnection()
        # A peer that does not read would keep a graceful close waiting for ever.
        self.factory.clock.callLater(CLOSE_GRACE_S, self._abort)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()

    def _answer(self, acks: list[bytes] | Failure) -> None:
        """The handler's `reply`: write the frame's ACKs (in one write), serve the next frame."""
        if isinstance(acks, Failure):
            self._failed(acks)
            return
        if self.transport is not None and acks:
            send(self.transport, b"".join(map(frame, acks)))
        self._served()

    def _served(self) -> None:
        self.busy = False
        if self._holds and len(self.queue) <= self.options.max_queued_frames // 2:
            self._release("queue")  # (a hold is only lifted there: none held, none to lift)
        if self.queue:
            self._next()
        self._close_if_retired()

    def retire(self) -> None:
        """Its channel was removed or replaced by a reload: read nothing more, answer every
        frame already received, then close."""
        self._hold("closing")
        self._cancel_frame_timer()
        self.retiring = True
        self._close_if_retired()

    def _close_if_retired(self) -> None:
        if self.retiring and not self.busy and not self.queue and self.transport is not None:
            self.log.info("mllp.connection_retired")
            self.transport.loseConnection()

    def _hold(self, why: str) -> None:
        """Stop reading for this reason (reading resumes when no reason is left)."""
        self._holds.add(why)
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pauseProducing()

    def _release(self, why: str) -> None:
        self._holds.discard(why)
        if self.paused and not self._holds and self.transport is not None:
            self.paused = False
            self.transport.resumeProducing()

    # IPushProducer, for the transport's write buffer (registered in connectionMade).
    def pauseProducing(self) -> None:
        self._hold("writes")

    def resumeProducing(self) -> None:
        self._release("writes")

    def stopProducing(self) -> None:
        self._cancel_frame_timer()

    def _committed(self, stored: bool) -> None:
        """MLLP release 2: the frame is on safe storage (ACK) or is not (NAK); the HL7 ACK
        follows, as on any channel.  Per connection one frame is in work at a time, so this
        answers the frame in work."""
        if self.transport is not None:
            self.transport.write(frame(COMMIT_ACK if stored else COMMIT_NAK))

    def _failed(self, failure: Failure) -> None:
        """A bug (the handler answers every frame itself): logged; the connection goes on."""
        self.log.error("mllp.handler_failed", error=failure.type.__name__ if failure.type else "?")
        self._served()

    def timeoutConnection(self) -> None:
        self.log.info("mllp.idle_timeout", idle_timeout_s=self.options.idle_timeout_s)
        TimeoutMixin.timeoutConnection(self)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.setTimeout(None)
        self._cancel_frame_timer()
        if self.options.tls is not None:
            self._tls_failed(reason)
        if self.factory.on_close is not None:  # every connection, refused ones too
            self.factory.on_close()
        if not self.open:
            return
        self.open = False
        self.factory.closed(self)
        junk = self.decoder.junk_bytes
        self.decoder.eof()
        self._junk(junk)
        if self.decoder.incomplete_bytes:
            self.log.warning("mllp.incomplete_frame", size=self.decoder.incomplete_bytes)
        # Frames complete before the close are still stored: nothing received is dropped.
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
    """One per channel: the channel's limits, its handler, a clock, and connection counts
    (in all and per peer address).  `oversize(head, size, limit)` gives an oversized frame's
    answer and what to log about it (sender, control id) from the frame's first bytes."""

    protocol = MLLPServerProtocol  # type: ignore[assignment]

    def __init__(self, options: ListenerOptions, handler: Handler, clock: Any, log: Any = None,
                 oversize: Oversize | None = None) -> None:
        self.options = options
        self.handler = handler
        self.clock = clock
        self.oversize = oversize
        self.connections = 0
        self.by_address: dict[str, int] = {}
        self.live: set[MLLPServerProtocol] = set()
        self.on_close: Callable[[], None] | None = None  # an ingest worker reports closes
        self.log = log or structlog.get_logger("engine.mllp").bind(channel=options.name)

    def opened(self, protocol: MLLPServerProtocol) -> None:
        self.live.add(protocol)
        self.connections += 1
        self.by_address[protocol.host] = self.by_address.get(protocol.host, 0) + 1

    def closed(self, protocol: MLLPServerProtocol) -> None:
        self.live.discard(protocol)
        self.connections -= 1
        left = self.by_address.get(protocol.host, 1) - 1
        if left > 0:
            self.by_address[protocol.host] = left
        else:
            self.by_address.pop(protocol.host, None)

    def retire(self) -> None:
        """Every open connection finishes the frames it sent, then closes (a reload)."""
        for protocol in list(self.live):
            protocol.retire()

    def buildProtocol(self, addr: IAddress | None) -> MLLPServerProtocol:
        return MLLPServerProtocol(self)


def listening_factory(factory: MLLPServerFactory) -> Any:
    """What a channel's port listens with, and its adopted connections (`workers:`) are given:
    the MLLP factory itself, or for a `listen.tls` channel, that factory under TLS."""
    if factory.options.tls is None:
        return factory
    from engine.mllp.tls_listen import tls_factory

    return tls_factory(factory, factory.options.tls, factory.clock)
