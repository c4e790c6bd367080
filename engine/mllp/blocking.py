"""A small blocking MLLP client for the tests and the bench: send one payload, read ACKs.  The
engine itself (delivery and `hl7-engine send`) uses the Twisted client (`engine.mllp.client`)."""

from __future__ import annotations

import errno
import socket
import time
from typing import TYPE_CHECKING

from engine.mllp.framing import FrameDecoder
from engine.mllp.server import frame

if TYPE_CHECKING:
    import ssl


class MLLPClient:
    """One TCP connection, under TLS with an `ssl_context` (the handshake is done here, and the
    server's certificate must name `server_hostname`, by default `host`); `exchange` sends a
    payload and collects the ACK frames that follow.

    Under TLS 1.3 a server that refuses the client's certificate says so after the client has
    finished its handshake: the refusal is the `ssl.SSLError` of the first read."""

    def __init__(self, host: str, port: int, timeout: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None,
                 server_hostname: str | None = None) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ssl_context is not None:
                sock = _handshake(sock, ssl_context, server_hostname or host, timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.decoder = FrameDecoder()
        self.pending: list[bytes] = []
        self.timeout = timeout
        self.closed = False  # the peer closed the connection
        self.frames = 0  # frames received so far

    def send(self, payload: bytes) -> None:
        self.sock.sendall(frame(payload))

    def receive(self, count: int = 1, timeout: float | None = None) -> list[bytes]:
        """Up to `count` frames, waiting at most `timeout` seconds in all."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self.pending) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                self.closed = True
                self._add(self.decoder.eof())
                break
            self._add(self.decoder.feed(data))
        out, self.pending = self.pending[:count], self.pending[count:]
        return out

    def _add(self, frames: list[bytes]) -> None:
        self.frames += len(frames)
        self.pending.extend(frames)

    def exchange(self, payload: bytes, count: int = 1, timeout: float | None = None) -> list[bytes]:
        self.send(payload)
        return self.receive(count, timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MLLPClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _handshake(sock: socket.socket, context: ssl.SSLContext, name: str,
               timeout: float) -> ssl.SSLSocket:
    """The client's TLS handshake; no answer in time (a plain-TCP server waits for a frame) is
    an `ssl.SSLError` too, as every other failed handshake."""
    import ssl

    try:
        return context.wrap_socket(sock, server_hostname=name)
    except TimeoutError as exc:
        raise ssl.SSLError(errno.ETIMEDOUT, f"no answer within {timeout:g} s") from exc
