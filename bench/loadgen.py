"""The load generator: N messages over C connections, strict request/response on each.

One asyncio event loop drives every connection with plain `asyncio.Protocol` callbacks (no task
per message): a connection sends one frame, waits for its ACK, checks it, sends the next.  The
connections share one source of messages, so exactly N are sent however fast each one goes.
With a `rate` the load is paced: message i leaves no earlier than i/rate seconds after the start
(an open-loop offered rate, for "does delivery keep up at this rate?"), still one at a time per
connection.

Each ACK is checked: MSA-1 must be AA and MSA-2 the MSH-10 sent.  Anything else (another code, a
wrong MSA-2, a frame nobody waited for, an ACK missing after `timeout` seconds, a connection lost
with an ACK pending, a message never sent) counts against the run, which then fails.

    python -m bench.loadgen --port N [--messages 20000] [--connections 8] [--mix ref,siu]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.synth import Message, Synth, prebuilt

START, END = b"\x0b", b"\x1c\r"
MAX_EXAMPLES = 5


@dataclass(slots=True)
class Tally:
    """Running counts, shared by every connection of one run."""

    sent: int = 0
    acked: int = 0
    ok: int = 0
    not_aa: int = 0
    mismatched: int = 0
    errors: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)  # control ids and codes only, no bodies

    def problem(self, kind: str, text: str) -> None:
        if kind == "not_aa":
            self.not_aa += 1
        elif kind == "mismatched":
            self.mismatched += 1
        else:
            self.errors += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{kind}: {text}")


def msa_fields(ack: bytes) -> tuple[bytes, bytes]:
    """MSA-1 and MSA-2 of one ACK frame (leading 0x0B allowed); (b"?", b"") without an MSA."""
    at = ack.find(b"\rMSA|")
    if at < 0:
        return b"?", b""
    fields = ack[at + 1:].split(b"\r", 1)[0].split(b"|")
    return fields[1], fields[2] if len(fields) > 2 else b""


class _Client(asyncio.Protocol):
    """One connection: send, wait for the ACK, check it, send the next; close when none is left."""

    def __init__(self, take: Callable[[], Message | None], tally: Tally,
                 pace: Callable[[], float] | None = None) -> None:
        self.take = take
        self.tally = tally
        self.pace = pace  # seconds to wait before the next send (a paced load)
        self.transport: Any = None
        self.buffer = b""
        self.expect: bytes | None = None
        self.sent_at = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._send_next()

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        pos = 0
        while (end := buf.find(END, pos)) >= 0:
            self._on_ack(buf[pos:end])
            pos = end + 2
        self.buffer = buf[pos:]

    def _on_ack(self, ack: bytes) -> None:
        now = time.perf_counter_ns()
        tally, expect = self.tally, self.expect
        if expect is None:
            tally.problem("unexpected", "an ACK frame arrived with none pending")
            return
        tally.acked += 1
        tally.latencies_ns.append(now - self.sent_at)
        code, echoed = msa_fields(ack)
        if code != b"AA":
            tally.problem("not_aa", f"{expect.decode()} got MSA-1 {code.decode(errors='replace')}")
        elif echoed != expect:
            tally.problem("mismatched", f"{expect.decode()} got MSA-2 "
                                        f"{echoed.decode(errors='replace')}")
        else:
            tally.ok += 1
        self.expect = None
        wait = self.pace() if self.pace is not None else 0.0
        if wait > 0:
            asyncio.get_running_loop().call_later(wait, self._send_next)
        else:
            self._send_next()

    def _send_next(self) -> None:
        msg = self.take()
        if msg is None:
            self.transport.close()
            return
        self.expect = msg.control_id.encode("ascii")
        self.tally.sent += 1
        self.sent_at = time.perf_counter_ns()
        self.transport.write(START + msg.payload + END)

    def overdue(self, now_ns: int, timeout_ns: int) -> bool:
        """Drop the connection if its ACK is later than the timeout."""
        if self.expect is None or now_ns - self.sent_at < timeout_ns:
            return False
        self.tally.problem("timeout", f"no ACK for {self.expect.decode()}")
        self.expect = None
        self.transport.abort()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.expect is not None:
            self.tally.problem("lost", f"connection closed with {self.expect.decode()} pending")
            self.expect = None
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass(frozen=True, slots=True)
class Report:
    """One run's figures."""

    messages: int
    connections: int
    seconds: float
    sent: int
    acked: int
    ok: int
    not_aa: int
    mismatched: int
    errors: int
    msg_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    client_cpu_us_per_msg: float
    examples: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return bool(self.not_aa or self.mismatched or self.errors) or self.ok != self.messages

    def line(self) -> str:
        verdict = "all AA" if not self.failed else (
            f"FAILED: {self.not_aa} not AA, {self.mismatched} MSA-2 mismatches, "
            f"{self.errors} errors")
        return (f"{self.msg_per_s:8.0f} msg/s  ACK p50 {self.p50_ms:6.2f} ms  p99 "
                f"{self.p99_ms:6.2f} ms  ({self.ok}/{self.messages} ok, {verdict})")


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of already sorted values (0 when empty)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class _TLS:
    """`bench.run --tls`: every connection of every load goes over TLS with this context."""

    context: ssl.SSLContext | None = None


TLS = _TLS()


class LoadGen:
    """One run against host:port; `tally` may be read while `run()` is under way."""

    def __init__(self, host: str, port: int, synth: Synth, messages: int, connections: int,
                 timeout: float = 30.0, rate: float = 0.0) -> None:
        self.host, self.port = host, port
        self.synth = synth
        self.messages = messages
        self.connections = max(1, min(connections, messages)) if messages else 0
        self.timeout = timeout
        self.rate = rate  # messages per second offered; 0: as fast as the ACKs come
        self.tally = Tally()
        self._t0 = 0.0
        self._slots = 0

    async def run(self) -> Report:
        take = prebuilt(self.synth, self.messages)
        loop = asyncio.get_running_loop()
        cpu0, t0 = _own_cpu(), time.perf_counter()
        self._t0 = t0
        pace = self._pace if self.rate > 0 else None
        clients = [_Client(take, self.tally, pace) for _ in range(self.connections)]
        await asyncio.gather(*(loop.create_connection(_given(c), self.host, self.port,
                                                      ssl=TLS.context)
                               for c in clients))
        watchdog = asyncio.ensure_future(self._watch(clients))
        try:
            await asyncio.gather(*(c.closed for c in clients))
        finally:
            watchdog.cancel()
        seconds, cpu = time.perf_counter() - t0, _own_cpu() - cpu0
        unsent = self.messages - self.tally.sent
        if unsent:
            self.tally.problem("unsent", f"{unsent} messages never sent (connections lost)")
        return self._report(seconds, cpu)

    def _pace(self) -> float:
        """Seconds until the next message's slot (the first message of each connection goes at
        once; each later one takes the next slot of 1/rate seconds)."""
        self._slots += 1
        return self._t0 + (self.connections + self._slots) / self.rate - time.perf_counter()

    async def _watch(self, clients: list[_Client]) -> None:
        timeout_ns = int(self.timeout * 1e9)
        while True:
            await asyncio.sleep(min(1.0, self.timeout))
            now = time.perf_counter_ns()
            for c in clients:
                c.overdue(now, timeout_ns)

    def _report(self, seconds: float, cpu: float) -> Report:
        t = self.tally
        lat = sorted(t.latencies_ns)
        n = max(t.acked, 1)
        return Report(
            messages=self.messages, connections=self.connections, seconds=seconds,
            sent=t.sent, acked=t.acked, ok=t.ok, not_aa=t.not_aa, mismatched=t.mismatched,
            errors=t.errors, msg_per_s=t.acked / seconds if seconds > 0 else 0.0,
            p50_ms=percentile(lat, 0.50) / 1e6, p99_ms=percentile(lat, 0.99) / 1e6,
            max_ms=(lat[-1] if lat else 0) / 1e6, client_cpu_us_per_msg=cpu / n * 1e6,
            examples=tuple(t.examples),
        )


def _given(client: _Client) -> Callable[[], _Client]:
    """A protocol factory that hands over an already built client."""
    return lambda: client


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def drive(host: str, port: int, synth: Synth, messages: int, connections: int,
          timeout: float = 30.0) -> Report:
    """Run one load to completion in a fresh event loop (for callers that are not async)."""
    return asyncio.run(LoadGen(host, port, synth, messages, connections, timeout).run())


def parse_mix(text: str) -> tuple[str, ...]:
    """`ref,siu` to ("ref", "siu")."""
    return tuple(part.strip().lower() for part in text.split(",") if part.strip())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--mix", default="ref", help="message kinds, round-robin (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one ACK")
    args = p.parse_args(argv)
    report = drive(args.host, args.port, Synth(parse_mix(args.mix)), args.messages,
                   args.connections, args.timeout)
    print(report.line())
    print(f"client CPU {report.client_cpu_us_per_msg:.1f} us/msg, max ACK latency "
          f"{report.max_ms:.2f} ms")
    for example in report.examples:
        print(f"  {example}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
