"""Pipelined ACKs: the latency of the second of two frames sent in one write, against one frame.

    python -m bench.pipelined [--pairs 500] [--warmup 50] [--servers engine,bare] [--keep-tmp]

On one loopback connection, `--pairs` times: one frame alone (wait for its ACK), then two
frames back-to-back in a single write (wait for both ACKs).  Reported, p50/p99/max: the single
frame's ACK, the pair's first ACK and its second, each from the write.  A server that leaves
Nagle's algorithm on (no TCP_NODELAY on the accepted socket) holds the second ACK until the
client's delayed ACK of the first (about 40 ms on Linux); with TCP_NODELAY both leave at once.
Our own socket sets TCP_NODELAY, so what is measured is the server's.  The engine runs as
`bench.run` starts it (fresh SQLite file, synchronous FULL); the bare Twisted server
(`bench.bare_server`) is the reference.  Every ACK must be AA with the right MSA-2, or the exit
status is 1 (2 when a server would not start).  The summary goes to bench/results/pipelined.json.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path
from typing import Any

from bench.loadgen import END, START, msa_fields, percentile
from bench.measure import HOST
from bench.procs import ServerProcess, scratch_dir
from bench.run import bare_server, engine_server
from bench.summary import write_results
from bench.synth import Synth

RESULTS = Path(__file__).resolve().parent / "results" / "pipelined.json"
ACK_TIMEOUT_S = 10.0


class Pipe:
    """One blocking connection with TCP_NODELAY; send frames, time each ACK from the write."""

    def __init__(self, port: int, synth: Synth) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=ACK_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.nodelay = bool(self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        self.synth = synth
        self.buffer = b""
        self.wrong: list[str] = []  # control ids whose ACK was not AA with the right MSA-2

    def send(self, count: int) -> list[int]:
        """`count` frames in one write; the nanoseconds from the write to each ACK."""
        messages = [self.synth.next() for _ in range(count)]
        data = b"".join(START + m.payload + END for m in messages)
        t0 = time.perf_counter_ns()
        self.sock.sendall(data)
        times: list[int] = []
        for m in messages:
            ack = self._next_ack()
            times.append(time.perf_counter_ns() - t0)
            if msa_fields(ack) != (b"AA", m.control_id.encode("ascii")):
                self.wrong.append(m.control_id)
        return times

    def _next_ack(self) -> bytes:
        while (end := self.buffer.find(END)) < 0:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buffer += chunk
        ack, self.buffer = self.buffer[:end], self.buffer[end + len(END):]
        return ack

    def close(self) -> None:
        self.sock.close()


def _stats(values_ns: list[int]) -> dict[str, float]:
    s = sorted(values_ns)
    return {"p50_ms": round(percentile(s, 0.5) / 1e6, 3), "p99_ms": round(percentile(s, 0.99) / 1e6, 3),
            "max_ms": round((s[-1] if s else 0) / 1e6, 3)}


def measure(server: ServerProcess, pairs: int, warmup: int) -> dict[str, Any]:
    """Alternate a single frame and a pair, `pairs` times after `warmup` untimed rounds."""
    pipe = Pipe(server.port, Synth(("ref", "siu")))
    single: list[int] = []
    first: list[int] = []
    second: list[int] = []
    try:
        for i in range(warmup + pairs):
            one = pipe.send(1)
            two = pipe.send(2)
            if i >= warmup:
                single += one
                first.append(two[0])
                second.append(two[1])
    finally:
        pipe.close()
    return {"pairs": pairs, "client_tcp_nodelay": pipe.nodelay, "single": _stats(single),
            "pair_first": _stats(first), "pair_second": _stats(second),
            "second_over_40ms": sum(t > 40e6 for t in second), "wrong_acks": len(pipe.wrong),
            "wrong_examples": pipe.wrong[:5]}


def line(name: str, r: dict[str, Any]) -> str:
    def f(key: str) -> str:
        s = r[key]
        return f"{s['p50_ms']:7.2f} {s['p99_ms']:7.2f} {s['max_ms']:7.2f}"

    return (f"{name:<7} {f('single')}   {f('pair_first')}   {f('pair_second')}   "
            f"{r['second_over_40ms']:>4}/{r['pairs']}  "
            + ("all AA" if not r["wrong_acks"] else f"{r['wrong_acks']} WRONG ACKs"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pipelined", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=500)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--servers", default="engine,bare", help="engine, bare, or both")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    p.add_argument("--keep-tmp", action="store_true", help="keep the engine's database and log")
    a = p.parse_args(argv)
    names = [n.strip() for n in a.servers.split(",") if n.strip()]
    if a.pairs < 1 or a.warmup < 0 or not names or set(names) - {"engine", "bare"}:
        p.error("--pairs >= 1, --warmup >= 0, --servers of engine, bare")
    results: dict[str, Any] = {}
    print(f"{'ACK ms':<7} {'single p50/p99/max':>23}   {'pair 1st p50/p99/max':>23}   "
          f"{'pair 2nd p50/p99/max':>23}   2nd > 40 ms")
    with scratch_dir("hl7-pipelined-", a.keep_tmp) as tmp:
        try:
            for name in names:
                with engine_server(tmp) if name == "engine" else bare_server(tmp) as server:
                    results[name] = measure(server, a.pairs, a.warmup)
                print(line(name, results[name]), flush=True)
        except (RuntimeError, OSError) as exc:
            print(f"pipelined: {exc}", file=sys.stderr)
            return 2
    write_results(a.results, {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "settings": {"pairs": a.pairs, "warmup": a.warmup}, **results})
    return 1 if any(r["wrong_acks"] for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
