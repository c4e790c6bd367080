"""A downstream MLLP system for delivery tests: a real TCP listener on loopback that records
every message and answers as a test's policy says; with an `ssl_context`, over TLS."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable

from engine.mllp.framing import FrameDecoder
from engine.mllp.server import frame
from engine.parsing import parse

Policy = Callable[[bytes, int], bytes | None]  # (message, how many came before) → ACK or None


class Unframed(bytes):
    """An answer the sink writes as is, without the MLLP envelope."""


def ack_for(message: bytes, code: str = "AA", control: str | None = None) -> bytes:
    """An ACK with MSA-1 `code` and MSA-2 the message's MSH-10 (or `control`)."""
    echoed = parse(message)["MSH.10"] if control is None else control
    return (f"MSH|^~\\&|SINK|DOWN|REFTRACK|HUB|20260101||ACK^I12^ACK|S1|P|2.5.1\r"
            f"MSA|{code}|{echoed}\r").encode()


class Sink:
    """`ssl_context` (server side): every accepted connection does its TLS handshake in its own
    thread first; one that fails is closed, and the sink goes on listening."""

    def __init__(self, policy: Policy | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.policy = policy or (lambda m, _n: ack_for(m))
        self.received: list[bytes] = []
        self.ssl_context = ssl_context
        self.connections = 0  # accepted, TLS handshake or not
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        if self.ssl_context is not None:
            try:
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
            except OSError:  # ssl.SSLError among them: the handshake failed
                conn.close()
                return
        decoder = FrameDecoder()
        with conn:
            while not self.stopped:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for message in decoder.feed(data):
                    n = len(self.received)
                    self.received.append(message)
                    answer = self.policy(message, n)
                    if answer is not None:
                        try:
                            conn.sendall(answer if isinstance(answer, Unframed)
                                         else frame(answer))
                        except OSError:  # the engine went away (a test killed it)
                            return

    def close(self) -> None:
        self.stopped = True
        self.server.close()
