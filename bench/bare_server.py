"""The ceiling: a bare Twisted MLLP server that answers every frame with AA and stores nothing.

It does the least an MLLP listener can do: buffer the stream, cut frames at `0x1C 0x0D`, take the
inbound MSH-3/4/9.2/10 by one split of the MSH line, and write a fixed-shape ACK.  The engine's
throughput is reported as a fraction of this one's.

    python -m bench.bare_server --port N [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Iterator
from typing import Any

from twisted.internet.protocol import Factory, Protocol

START, END = b"\x0b", b"\x1c\r"


class _Stamp:
    """MSH-7 for the ACKs, formatted at most once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._text = time.strftime("%Y%m%d%H%M%S", time.gmtime(now)).encode("ascii")
        return self._text


def build_ack(payload: bytes, control_id: bytes, stamp: bytes) -> bytes:
    """`MSH|...|ACK^<trigger>^ACK|<id>|P|2.5.1 CR MSA|AA|<inbound MSH-10> CR`, unframed."""
    line_end = payload.find(b"\r")
    msh = (payload[:line_end] if line_end >= 0 else payload).split(b"|")
    if len(msh) < 10:
        msh += [b""] * (10 - len(msh))
    msg_type = msh[8].split(b"^")
    trigger = msg_type[1] if len(msg_type) > 1 else b""
    return b"".join((
        b"MSH|^~\\&|BARE|BENCH|", msh[2], b"|", msh[3], b"|", stamp, b"||ACK^", trigger,
        b"^ACK|", control_id, b"|P|2.5.1\rMSA|AA|", msh[9], b"\r",
    ))


class BareMLLP(Protocol):
    """Buffer, cut frames at the trailer, answer each one."""

    transport: Any
    factory: BareFactory

    def connectionMade(self) -> None:
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        out: list[bytes] = []
        pos = 0
        while (end := buf.find(END, pos)) >= 0:
            start = buf.find(START, pos, end)
            payload = buf[start + 1 if start >= 0 else pos: end]
            out += (START, self.factory.ack_for(payload), END)
            pos = end + 2
        self.buffer = buf[pos:]
        if out:
            self.transport.write(b"".join(out))


class BareFactory(Factory):
    """Holds the ACK control-id counter and the cached timestamp."""

    protocol = BareMLLP  # type: ignore[assignment]

    def __init__(self) -> None:
        self._ids: Iterator[int] = itertools.count(1)
        self._stamp = _Stamp()

    def ack_for(self, payload: bytes) -> bytes:
        return build_ack(payload, b"BARE%d" % next(self._ids), self._stamp())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert", help="serve TLS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="and this key (PEM)")
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    r: Any = reactor
    if args.tls_cert:
        from engine.tls import ListenTLS, server_options

        options = server_options(ListenTLS(args.tls_cert, args.tls_key))
        r.listenSSL(args.port, BareFactory(), options, interface=args.host)
    else:
        r.listenTCP(args.port, BareFactory(), interface=args.host)
    r.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
