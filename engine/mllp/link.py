"""One persistent MLLP client connection to a downstream, on the reactor (issue 4).

`MLLPLink.exchange` sends one framed message and fires with the downstream's answer to it:
the first frame that is an ACK (MSH-9.1) whose MSA-2 equals the MSH-10 sent.  Frames that do
not correlate are logged as `delivery.uncorrelated_ack` and ignored.  No correlated ACK within
the timeout closes the connection, so a late ACK can never be taken for the next message.  The
connection is opened lazily, on the first exchange after none is open, and kept between
messages.  One exchange at a time: the caller (a delivery worker) is sequential.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from engine.errors import EngineError, HL7Error
from engine.mllp.framing import FrameDecoder, FrameTooLarge
from engine.mllp.server import frame
from engine.parsing import parse

log = structlog.get_logger("engine.delivery")

CLOSED_BEFORE_ACK = "connection: closed by the destination before its ACK"


class LinkBusy(EngineError):
    """`exchange` was called while another exchange on the same link was still waiting."""

    def __init__(self, destination: str) -> None:
        super().__init__(f"an exchange with {destination} is already under way")
        self.destination = destination


@dataclass(frozen=True, slots=True)
class Answer:
    """One exchange: accepted (no error), or why not."""

    code: str = ""  # the downstream's MSA-1, when it answered
    error: str = ""  # empty: accepted (AA/CA)
    ack: bytes | None = None  # the correlated ACK frame as received
    unreachable: bool = False  # the connection could not be opened: nothing was sent


@dataclass(slots=True)
class _Waiting:
    """The exchange under way: what it waits for and how it ends."""

    control_id: str
    done: defer.Deferred[Answer]
    timer: Any = None  # the IDelayedCall of its timeout, once sent


class _LinkProtocol(Protocol):
    """The wire side: frames in through `FrameDecoder`, handed to the link."""

    transport: Any

    def __init__(self, link: MLLPLink) -> None:
        self.link = link
        self.decoder = FrameDecoder()

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # one small frame, then wait: no Nagle delay

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except FrameTooLarge as exc:
            log.warning("delivery.ack_too_large", destination=self.link.name, size=exc.size,
                        limit=exc.limit)
            self.transport.abortConnection()
            return
        for payload in frames:
            self.link.received(self, payload)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        for payload in self.decoder.eof():
            self.link.received(self, payload)
        self.link.lost(self)


class _LinkFactory(Factory):
    def __init__(self, link: MLLPLink) -> None:
        self.link = link

    def buildProtocol(self, addr: IAddress | None) -> _LinkProtocol:
        return _LinkProtocol(self.link)


class MLLPLink:
    """One downstream's connection; every method runs on the reactor thread."""

    def __init__(self, reactor: Any, host: str, port: int, connect_timeout_s: float,
                 name: str = "") -> None:
        self.reactor = reactor
        self.address = (host, port)
        self.name = name or f"{host}:{port}"
        self.endpoint = HostnameEndpoint(reactor, host.encode("idna"), port,
                                         timeout=connect_timeout_s)
        self.protocol: _LinkProtocol | None = None
        self.waiting: _Waiting | None = None

    def exchange(self, payload: bytes, control_id: str,
                 timeout_s: float) -> defer.Deferred[Answer]:
        """Send `payload` (unframed) and fire with the answer whose MSA-2 is `control_id`."""
        if self.waiting is not None:
            return defer.fail(LinkBusy(self.name))
        waiting = self.waiting = _Waiting(control_id, defer.Deferred())
        if self.protocol is not None:
            self._send(waiting, payload, timeout_s)
        else:
            factory: Any = _LinkFactory(self)  # a zope IProtocolFactory
            connecting = self.endpoint.connect(factory)
            connecting.addCallbacks(self._connected, self._unreachable,
                                    callbackArgs=(waiting, payload, timeout_s),
                                    errbackArgs=(waiting,))
        return waiting.done

    def close(self, reason: str = "connection: closed by the engine") -> None:
        """Drop the connection; an exchange under way fires with `reason` as its error."""
        self._hang_up()
        self._finish(Answer(error=reason))

    def _connected(self, protocol: _LinkProtocol, waiting: _Waiting, payload: bytes,
                   timeout_s: float) -> None:
        if waiting is not self.waiting:  # closed while connecting
            protocol.transport.abortConnection()
            return
        self.protocol = protocol
        self._send(waiting, payload, timeout_s)

    def _unreachable(self, failure: Failure, waiting: _Waiting) -> None:
        if waiting is self.waiting:
            reason = failure.getErrorMessage().rstrip(".") or getattr(failure.type, "__name__", "?")
            self._finish(Answer(error=f"connection: {reason}", unreachable=True))

    def _send(self, waiting: _Waiting, payload: bytes, timeout_s: float) -> None:
        assert self.protocol is not None
        waiting.timer = self.reactor.callLater(timeout_s, self._timed_out, waiting, timeout_s)
        self.protocol.transport.write(frame(payload))

    def _timed_out(self, waiting: _Waiting, timeout_s: float) -> None:
        waiting.timer = None
        if waiting is self.waiting:
            self._hang_up()  # a late ACK must not be taken for the next message
            self._finish(Answer(error=f"no ACK within {timeout_s:g} s"))

    def received(self, protocol: _LinkProtocol, payload: bytes) -> None:
        """A frame from the downstream: the answer if it correlates, else logged and ignored."""
        waiting = self.waiting
        if protocol is not self.protocol:
            return  # from a connection already given up on
        code, echoed = _msa(payload)
        if waiting is None or echoed != waiting.control_id:
            log.warning("delivery.uncorrelated_ack", destination=self.name,
                        expected=waiting.control_id if waiting else "", msa2=echoed)
            return
        error = "" if code in ("AA", "CA") else f"downstream answered {code}"
        self._finish(Answer(code, error, payload))

    def lost(self, protocol: _LinkProtocol) -> None:
        """The connection ended: the next exchange opens a new one."""
        if protocol is self.protocol:
            self.protocol = None
            self._finish(Answer(error=CLOSED_BEFORE_ACK))

    def _hang_up(self) -> None:
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            protocol.transport.abortConnection()

    def _finish(self, answer: Answer) -> None:
        waiting, self.waiting = self.waiting, None
        if waiting is None:
            return
        if waiting.timer is not None and waiting.timer.active():
            waiting.timer.cancel()
        waiting.done.callback(answer)


def _msa(ack: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an ACK; ("", "") for anything that is not a parsable ACK."""
    try:
        msg = parse(ack)
    except HL7Error:
        return "", ""
    if msg.header.message_type != "ACK":
        return "", ""
    return msg["MSA.1"], msg["MSA.2"]
