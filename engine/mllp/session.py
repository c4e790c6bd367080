"""`hl7-engine send`'s connection: the engine's MLLP client (`engine.mllp.client`) handing over
every frame that arrives, in order, for a command that sends one message and reads its ACKs.

Nothing is correlated here: the command prints each frame.  Why a connection could not be
opened or was lost is a `SessionFailed`, in the words `send` prints (one place maps Twisted's
failures to them): the errno's text ("Connection refused"), or for TLS OpenSSL's reason, with
why the server's certificate was not trusted ("certificate verify failed: unable to get local
issuer certificate").
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

import structlog
from twisted.internet import defer, error
from twisted.python.failure import Failure

from engine.mllp.client import ClientFactory, ClientProtocol, client_endpoint
from engine.mllp.server import frame
from engine.tls import handshake_words


class SessionFailed(Exception):
    """The connection could not be opened (`opening`) or failed later; `tls` when TLS said no."""

    def __init__(self, words: str, tls: bool = False, opening: bool = False) -> None:
        super().__init__(words)
        self.words, self.tls, self.opening = words, tls, opening


def _silent(_logger: Any, _name: str, _event: MutableMapping[str, Any]) -> Any:
    raise structlog.DropEvent


class MLLPSession:
    """One connection; every method runs on the reactor.  `creator` (from
    `engine.tls.client_options`) makes it TLS, its server's certificate naming `server_name`."""

    def __init__(self, reactor: Any, host: str, port: int, timeout_s: float,
                 creator: Any = None, server_name: str = "") -> None:
        self.reactor = reactor
        self.name = f"{host}:{port}"
        self.log = structlog.wrap_logger(None, processors=[_silent])
        self.creator, self.server_name = creator, server_name or host
        self.endpoint = client_endpoint(reactor, host, port, timeout_s, creator)
        self.protocol: ClientProtocol | None = None
        self.pending: list[bytes] = []
        self.frames = 0  # frames received so far
        self.closed = False  # the connection has ended (`failure` says why, if not cleanly)
        self.failure: SessionFailed | None = None
        self._wake: defer.Deferred[None] | None = None

    async def open(self) -> None:
        """Connect (the TLS handshake ends before the first frame is read)."""
        try:
            self.protocol = await self.endpoint.connect(ClientFactory(self))
        except Exception as exc:  # noqa: BLE001 - every failure to connect is said in words
            raise SessionFailed(_connect_words(exc), opening=True) from None

    def send(self, payload: bytes) -> None:
        if self.protocol is not None and not self.closed:
            self.protocol.transport.write(frame(payload))

    async def receive(self, count: int, timeout_s: float) -> list[bytes]:
        """Up to `count` frames, waiting at most `timeout_s` seconds in all; raises
        `SessionFailed` when the connection failed and no frame is left to read."""
        deadline = self.reactor.seconds() + timeout_s
        while len(self.pending) < count and not self.closed:
            left = deadline - self.reactor.seconds()
            if left <= 0:
                break
            await self._wait(left)
        if not self.pending and self.failure is not None:
            raise self.failure
        if not self.pending and not self.closed and self._handshaking():
            raise SessionFailed(f"no answer within {timeout_s:g} s", tls=True)
        out, self.pending = self.pending[:count], self.pending[count:]
        return out

    async def close(self) -> None:
        """Close the connection and wait (a second at most) until it has ended."""
        if self.protocol is None or self.closed:
            return
        transport = self.protocol.transport
        transport.loseConnection()
        timer = self.reactor.callLater(1.0, transport.abortConnection)
        while not self.closed:
            await self._wait(1.0)
        if timer.active():
            timer.cancel()

    def _handshaking(self) -> bool:
        return self.creator is not None and self.protocol is not None \
            and not self.protocol.handshaken

    def _wait(self, seconds: float) -> defer.Deferred[None]:
        wake: defer.Deferred[None] = defer.Deferred()
        timer = self.reactor.callLater(seconds, self._woken, wake)
        wake.addBoth(lambda result: timer.cancel() if timer.active() else None)
        self._wake = wake
        return wake

    def _woken(self, wake: defer.Deferred[None] | None = None) -> None:
        wake = wake or self._wake
        if wake is not None and not wake.called:
            wake.callback(None)

    def received(self, protocol: ClientProtocol, payload: bytes) -> None:
        self.frames += 1
        self.pending.append(payload)
        self._woken()

    def lost(self, protocol: ClientProtocol, reason: Failure) -> None:
        self.closed = True
        self.failure = self._lost_words(protocol, reason)
        self._woken()

    def _lost_words(self, protocol: ClientProtocol, reason: Failure) -> SessionFailed | None:
        """None for a clean close; else why, a TLS error or the connection's."""
        if self.creator is not None:
            words = handshake_words(reason.value, self.server_name)
            if words == "certificate verify failed":
                detail = self.creator.verify_detail(protocol.transport)
                words += f": {detail}" if detail else ""
            if words is None and not protocol.handshaken:
                words = "the connection was closed"
            if words is not None:
                return SessionFailed(words, tls=True)
        if isinstance(reason.value, error.ConnectionDone):
            return None
        return SessionFailed(_connect_words(reason.value))


def _connect_words(exc: BaseException | None) -> str:
    """Twisted's failure to connect or lost connection in the words of the OS error that caused
    it ("Connection refused", "Connection reset by peer")."""
    if isinstance(exc, error.DNSLookupError):
        found = re.search(r"\[Errno -?\d+\] ([^.\]]+)", str(exc))
        return found.group(1) if found else "Name or service not known"
    if isinstance(exc, error.TimeoutError):  # --timeout passed while connecting
        return "TimeoutError"
    if isinstance(exc, error.ConnectError) and exc.args and isinstance(exc.args[0], str):
        return exc.args[0] or type(exc).__name__
    if isinstance(exc, error.ConnectionLost):
        return "Connection reset by peer"
    return str(exc).rstrip(".") or type(exc).__name__
