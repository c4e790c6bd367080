"""The Twisted MLLP client of delivery: one persistent connection to a downstream, on the reactor.

`MLLPLink.exchange` sends one framed message and calls back with the downstream's answer to
it: the first frame that is an ACK (MSH-9.1) whose MSA-2 equals the MSH-10 sent.  Frames that do
not correlate are logged as `delivery.uncorrelated_ack` and ignored; bytes outside any frame (an
unframed ACK) as `delivery.unframed_bytes`, and dropped.  No correlated ACK within
the timeout closes the connection, so a late ACK can never be taken for the next message.  The
connection is opened lazily, on the first exchange after none is open, and kept between
messages.  One exchange at a time: the caller (a delivery worker) is sequential.

With a destination's `tls` the connection is TLS (`engine.tls.client_options`).  A handshake that
fails (a certificate not trusted or not for the server's name, a client certificate demanded and
not given, the downstream closing or never answering before the handshake ends) answers the
exchange `connection: TLS handshake failed (<OpenSSL's reason>)`, logged as
`delivery.tls_failed`, and `Unreachable`: nothing was delivered.  Every exchange ends in one of
the typed outcomes of `engine.outbound.outcomes`.

The wire side (`client_endpoint`, `ClientProtocol`) is the engine's one MLLP client: delivery's
`MLLPLink` and `hl7-engine send` (`engine.mllp.session`) both connect through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from typing import Protocol as Port

import structlog
from twisted.internet import error
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IAddress, IHandshakeListener
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

from engine.errors import EngineError, HL7Error
from engine.mllp.framing import COMMIT_ACK, COMMIT_NAK, FrameDecoder, FrameTooLarge
from engine.mllp.server import frame
from engine.outbound.outcomes import Errored, Outcome, TimedOut, Unreachable, classify
from engine.parsing import parse
from engine.tls import ClientTLS, client_options, handshake_words

log = structlog.get_logger("engine.delivery")

CLOSED_BEFORE_ACK = "connection: closed by the destination before its ACK"


class LinkBusy(EngineError):
    """`exchange` was called while another exchange on the same link was still waiting."""

    def __init__(self, destination: str) -> None:
        super().__init__(f"an exchange with {destination} is already under way")
        self.destination = destination


@dataclass(slots=True)
class _Waiting:
    """The exchange under way: what it waits for, until when, and whom to tell."""

    control_id: str
    answered: Callable[[Outcome], None]
    deadline: float = 0.0  # reactor seconds, once sent


class FrameSink(Port):
    """What a `ClientProtocol` hands its frames and its end to (a delivery link, a send session);
    `name` and `log` for the protocol's own events."""

    name: str
    log: Any

    def received(self, protocol: ClientProtocol, payload: bytes) -> None: ...

    def lost(self, protocol: ClientProtocol, reason: Failure) -> None: ...


def client_endpoint(reactor: Any, host: str, port: int, connect_timeout_s: float,
                    creator: Any = None) -> Any:
    """The endpoint of an MLLP client connection: TCP, under TLS with `creator` (from
    `engine.tls.client_options`)."""
    endpoint: Any = HostnameEndpoint(reactor, host.encode("idna"), port,
                                     timeout=connect_timeout_s)
    return endpoint if creator is None else wrapClientTLS(creator, endpoint)


@implementer(IHandshakeListener)
class ClientProtocol(Protocol):
    """The wire side: frames in through `FrameDecoder`, handed to the sink."""

    transport: Any

    def __init__(self, link: FrameSink) -> None:
        self.link = link
        self.decoder = FrameDecoder()
        self.handshaken = False  # TLS: our side of the handshake is done
        self.heard = False  # the downstream sent something (over TLS: after the handshake)

    def connectionMade(self) -> None:
        # One small frame, then wait: no Nagle delay.  Over TLS the transport is Twisted's TLS
        # protocol, which hands this call on to the TCP transport beneath it.
        self.transport.setTcpNoDelay(True)

    def handshakeCompleted(self) -> None:
        self.handshaken = True

    def dataReceived(self, data: bytes) -> None:
        self.heard = True
        junk = self.decoder.junk_bytes
        try:
            frames = self.decoder.feed(data)
        except FrameTooLarge as exc:
            self.link.log.warning("delivery.ack_too_large", destination=self.link.name, size=exc.size,
                        limit=exc.limit)
            self.transport.abortConnection()
            return
        self._unframed(junk)
        for payload in frames:
            self.link.received(self, payload)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        junk = self.decoder.junk_bytes
        frames = self.decoder.eof()
        self._unframed(junk)
        for payload in frames:
            self.link.received(self, payload)
        self.link.lost(self, reason)

    def _unframed(self, before: int) -> None:
        """Bytes outside any MLLP frame (an unframed ACK among them) are dropped and logged."""
        if self.decoder.junk_bytes != before:
            self.link.log.warning("delivery.unframed_bytes", destination=self.link.name,
                        bytes=self.decoder.junk_bytes - before)


class ClientFactory(Factory):
    """One `ClientProtocol` per connection, for one sink."""

    def __init__(self, link: FrameSink) -> None:
        self.link = link

    def buildProtocol(self, addr: IAddress | None) -> ClientProtocol:
        return ClientProtocol(self.link)


class MLLPLink:
    """One downstream's connection; every method runs on the reactor thread.

    Per message it costs one write and one read: the frame is flushed at once (`doWrite`, not
    at the reactor's next turn; plain TCP only) and the timeout is one timer per link that
    re-arms itself for the current deadline, not a timer made and cancelled per message.
    `tls` makes it a TLS connection (it raises `TLSFileError` when a file cannot be read)."""

    def __init__(self, reactor: Any, host: str, port: int, connect_timeout_s: float,
                 name: str = "", tls: ClientTLS | None = None) -> None:
        self.reactor = reactor
        self.address = (host, port)
        self.tls = tls
        self.name = name or f"{host}:{port}"
        self.server_name = (tls.server_name or host) if tls is not None else ""
        self.log = log
        self.endpoint = client_endpoint(reactor, host, port, connect_timeout_s,
                                        client_options(tls, host) if tls is not None else None)
        self.protocol: ClientProtocol | None = None
        self.waiting: _Waiting | None = None
        self._timer: Any = None  # the IDelayedCall that checks the deadline

    def exchange(self, payload: bytes, control_id: str, timeout_s: float,
                 answered: Callable[[Outcome], None]) -> None:
        """Send `payload` (unframed); `answered` is called once, later, with the answer whose
        MSA-2 is `control_id`, or with why there is none."""
        if self.waiting is not None:
            raise LinkBusy(self.name)
        waiting = self.waiting = _Waiting(control_id, answered)
        if self.protocol is not None:
            self._send(waiting, payload, timeout_s)
        else:
            factory: Any = ClientFactory(self)  # a zope IProtocolFactory
            connecting = self.endpoint.connect(factory)
            connecting.addCallbacks(self._connected, self._unreachable,
                                    callbackArgs=(waiting, payload, timeout_s),
                                    errbackArgs=(waiting,))

    def close(self, reason: str = "connection: closed by the engine") -> None:
        """Drop the connection; an exchange under way is answered with `reason` as its error."""
        self._hang_up()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._finish(Errored(reason))

    def _connected(self, protocol: ClientProtocol, waiting: _Waiting, payload: bytes,
                   timeout_s: float) -> None:
        if waiting is not self.waiting:  # closed while connecting
            protocol.transport.abortConnection()
            return
        self.protocol = protocol
        self._send(waiting, payload, timeout_s)

    def _unreachable(self, failure: Failure, waiting: _Waiting) -> None:
        if waiting is not self.waiting:
            return
        words = (handshake_words(failure.value, self.server_name) if self.tls is not None
                 else None)
        if words is not None:
            self._tls_failed(f"connection: TLS handshake failed ({words})", unreachable=True)
        else:
            self._finish(Unreachable(f"connection: {_why(failure)}"))

    def _send(self, waiting: _Waiting, payload: bytes, timeout_s: float) -> None:
        assert self.protocol is not None
        waiting.deadline = self.reactor.seconds() + timeout_s
        if self._timer is None or not self._timer.active():
            self._timer = self.reactor.callLater(timeout_s, self._check, timeout_s)
        transport = self.protocol.transport
        transport.write(frame(payload))
        if self.tls is None:
            # Flush now (IWriteDescriptor.doWrite): one turn of the reactor less per message.
            # An error is left to the reactor, which calls doWrite again and drops the
            # connection.  Over TLS the transport is Twisted's BufferingTLSTransport, which
            # encrypts small writes together at the reactor's next turn and has no public
            # flush; a doWrite would reach the TCP transport beneath it before the ciphertext.
            transport.doWrite()

    def _check(self, timeout_s: float) -> None:
        """The timer: the exchange under way has timed out, or it re-arms for its deadline."""
        self._timer = None
        waiting = self.waiting
        if waiting is None or not waiting.deadline:
            return
        left = waiting.deadline - self.reactor.seconds()
        if left > 0:
            self._timer = self.reactor.callLater(left, self._check, timeout_s)
            return
        protocol = self.protocol
        self._hang_up()  # a late ACK must not be taken for the next message
        if self.tls is not None and protocol is not None and not protocol.handshaken:
            self._tls_failed(f"connection: TLS handshake failed (no answer within {timeout_s:g} s)",
                             unreachable=True)
        else:
            self._finish(TimedOut(timeout_s))

    def received(self, protocol: ClientProtocol, payload: bytes) -> None:
        """A frame from the downstream: the answer if it correlates, else logged and ignored."""
        waiting = self.waiting
        if protocol is not self.protocol:
            return  # from a connection already given up on
        if payload == COMMIT_ACK:  # MLLP release 2: stored downstream; its HL7 ACK follows
            return
        if payload == COMMIT_NAK and waiting is not None:  # not stored downstream: sent again
            self._finish(Errored("downstream could not store it (MLLP release 2 NAK)"))
            return
        code, echoed = _msa(payload)
        if waiting is None or echoed != waiting.control_id:
            log.warning("delivery.uncorrelated_ack", destination=self.name,
                        expected=waiting.control_id if waiting else "", msa2=echoed)
            return
        self._finish(classify(code, payload))

    def lost(self, protocol: ClientProtocol, reason: Failure = connectionDone) -> None:
        """The connection ended: the next exchange opens a new one."""
        if protocol is not self.protocol:
            return
        self.protocol = None
        words = (handshake_words(reason.value, self.server_name) if self.tls is not None
                 else None)
        if protocol.heard:  # the handshake had succeeded: a TLS error is one of the stream
            if words is None:
                self._finish(Errored(CLOSED_BEFORE_ACK))
            else:
                self._tls_failed(f"connection: TLS error ({words})", unreachable=False)
        elif words is not None or (self.tls is not None and not protocol.handshaken):
            # TLS 1.3: a client certificate is refused after our side is done, before any data
            words = words or "closed by the destination"
            self._tls_failed(f"connection: TLS handshake failed ({words})", unreachable=True)
        else:
            self._finish(Errored(CLOSED_BEFORE_ACK))

    def _tls_failed(self, error: str, unreachable: bool) -> None:
        """The exchange under way ends on a TLS failure: logged once per attempt."""
        if self.waiting is not None:
            log.warning("delivery.tls_failed", destination=self.name, error=error)
        self._finish(Unreachable(error) if unreachable else Errored(error))

    def _hang_up(self) -> None:
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            protocol.transport.abortConnection()

    def _finish(self, outcome: Outcome) -> None:
        waiting, self.waiting = self.waiting, None
        if waiting is not None:
            waiting.answered(outcome)


def _why(failure: Failure) -> str:
    """Why a connection could not be opened, in the words `queue` and the log show."""
    for kind, words in _CONNECT_ERRORS:
        if isinstance(failure.value, kind):
            return words
    return failure.getErrorMessage().rstrip(".") or getattr(failure.type, "__name__", "?")


_CONNECT_ERRORS = ((error.ConnectionRefusedError, "refused"),
                   (error.TCPTimedOutError, "timed out"), (error.TimeoutError, "timed out"),
                   (error.DNSLookupError, "host name not found"),
                   (error.NoRouteError, "no route to host"))


def _msa(ack: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an ACK; ("", "") for anything that is not a parsable ACK."""
    try:
        msg = parse(ack)
    except HL7Error:
        return "", ""
    if msg["MSH.9.1"] != "ACK":
        return "", ""
    return msg["MSA.1"], msg["MSA.2"]
