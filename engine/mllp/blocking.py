"""A small blocking MLLP client for `hl7-engine send`, the tests and the bench: send one payload,
read ACKs.  Delivery uses the Twisted client (`engine.mllp.client`)."""

from __future__ import annotations

import socket
import time

from engine.mllp.framing import FrameDecoder
from engine.mllp.server import frame


class MLLPClient:
    """One TCP connection; `exchange` sends a payload and collects the ACK frames that follow."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = FrameDecoder()
        self.pending: list[bytes] = []
        self.timeout = timeout
        self.closed = False  # the peer closed the connection

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
                self.pending.extend(self.decoder.eof())
                break
            self.pending.extend(self.decoder.feed(data))
        out, self.pending = self.pending[:count], self.pending[count:]
        return out

    def exchange(self, payload: bytes, count: int = 1, timeout: float | None = None) -> list[bytes]:
        self.send(payload)
        return self.receive(count, timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MLLPClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
