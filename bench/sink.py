"""A downstream for the delivery bench: an asyncio MLLP listener that answers every frame AA.

It does the least a downstream can (cut frames at `0x1C 0x0D`, echo MSH-10 in MSA-2, the bare
server's ACK shape) and counts what arrives: messages, distinct MSH-10s, and when the first and
the last came.  `SinkProcess` runs it in a process of its own, as a real downstream is: in the
load generator's busy event loop every delivery's round trip waited behind the load.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import time
from dataclasses import dataclass, field
from typing import Any

from bench.bare_server import END, START, _Stamp, build_ack


@dataclass(slots=True)
class Received:
    """What reached the sink; times are `time.perf_counter()` seconds."""

    count: int = 0
    controls: set[bytes] = field(default_factory=set)
    first_at: float = 0.0
    last_at: float = 0.0

    @property
    def duplicates(self) -> int:
        return self.count - len(self.controls)


class _SinkProtocol(asyncio.Protocol):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.transport: Any = None
        self.buffer = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        out: list[bytes] = []
        pos = 0
        while (end := buf.find(END, pos)) >= 0:
            start = buf.find(START, pos, end)
            out += (START, self.sink.answer(buf[start + 1 if start >= 0 else pos: end]), END)
            pos = end + 2
        self.buffer = buf[pos:]
        if out:
            self.transport.write(b"".join(out))


class Sink:
    """`await Sink.start(host)`; `port` is bound, `received` fills as frames arrive."""

    def __init__(self) -> None:
        self.received = Received()
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._ids = itertools.count(1)
        self._stamp = _Stamp()
        self.shared: Shared | None = None

    @classmethod
    async def start(cls, host: str) -> Sink:
        sink = cls()
        loop = asyncio.get_running_loop()
        sink._server = await loop.create_server(lambda: _SinkProtocol(sink), host, 0)
        sink.port = sink._server.sockets[0].getsockname()[1]
        return sink

    def answer(self, payload: bytes) -> bytes:
        now = time.perf_counter()
        r = self.received
        if not r.count:
            r.first_at = now
        r.count += 1
        r.last_at = now
        line = payload[:payload.find(b"\r")]
        fields = line.split(b"|")
        r.controls.add(fields[9] if len(fields) > 9 else b"")
        if self.shared is not None:
            self.shared.publish(r)
        return build_ack(payload, b"SINK%d" % next(self._ids), self._stamp())

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


class Shared:
    """What a sink process has received, in shared memory: the `Received` fields the bench
    reads (perf_counter is CLOCK_MONOTONIC, the same clock in every process)."""

    def __init__(self, ctx: Any) -> None:
        self._count = ctx.Value("q", 0, lock=False)
        self._distinct = ctx.Value("q", 0, lock=False)
        self._first = ctx.Value("d", 0.0, lock=False)
        self._last = ctx.Value("d", 0.0, lock=False)

    def publish(self, r: Received) -> None:
        self._count.value, self._distinct.value = r.count, len(r.controls)
        self._first.value, self._last.value = r.first_at, r.last_at

    @property
    def count(self) -> int:
        return int(self._count.value)

    @property
    def first_at(self) -> float:
        return float(self._first.value)

    @property
    def last_at(self) -> float:
        return float(self._last.value)

    @property
    def duplicates(self) -> int:
        return int(self._count.value - self._distinct.value)


def _serve(host: str, shared: Shared, port: Any) -> None:
    async def main() -> None:
        sink = await Sink.start(host)
        sink.shared = shared
        port.send(sink.port)
        await asyncio.Event().wait()

    asyncio.run(main())


class SinkProcess:
    """The sink in a child process; `received` reads its counts."""

    def __init__(self, host: str) -> None:
        ctx = multiprocessing.get_context("fork")
        self.received = Shared(ctx)
        ours, theirs = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(host, self.received, theirs),
                                    daemon=True)
        self._process.start()
        self.port = int(ours.recv())

    def close(self) -> None:
        self._process.terminate()
        self._process.join(5)
