"""The two measurements of a bench run: throughput with server CPU, and memory over a long run.

Both talk to a server that is already listening (`bench.procs.ServerProcess`) and read its /proc
figures around the load; neither knows which server it is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bench.loadgen import LoadGen, Report, drive
from bench.procs import CpuTimes, ServerProcess, cpu_times, rss_mb
from bench.synth import Synth

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Settings:
    """What the command line asked for."""

    messages: int
    connections: int
    rss_messages: int
    warmup: int
    mix: tuple[str, ...]
    repeat: int = 1
    tls: bool = False  # both servers and the load generator over TLS


@dataclass(frozen=True, slots=True)
class Throughput:
    """One server's timed run: the load generator's report and the server's CPU."""

    server: str
    report: Report
    cpu_us_per_msg: float
    main_thread_us_per_msg: float
    warmup_ok: bool

    @property
    def other_threads_us_per_msg(self) -> float:
        return self.cpu_us_per_msg - self.main_thread_us_per_msg

    def line(self) -> str:
        return (f"{self.server:<6} {self.report.line()}\n"
                f"{'':<6} server CPU {self.cpu_us_per_msg:7.1f} us/msg (reactor thread "
                f"{self.main_thread_us_per_msg:.1f}, other threads "
                f"{self.other_threads_us_per_msg:.1f}); load generator CPU "
                f"{self.report.client_cpu_us_per_msg:.1f} us/msg")


@dataclass(slots=True)
class Memory:
    """VmRSS of the engine across the long run, with samples (messages acked, MiB)."""

    messages: int
    after_warmup_mb: float = 0.0
    end_mb: float = 0.0
    samples: list[tuple[int, float]] = field(default_factory=list)
    report: Report | None = None
    warmup_ok: bool = True

    @property
    def growth_mb(self) -> float:
        return self.end_mb - self.after_warmup_mb

    @property
    def growth_per_100k_mb(self) -> float:
        return self.growth_mb * 100_000 / self.messages if self.messages else 0.0


def measure(name: str, server: ServerProcess, s: Settings, synth: Synth) -> Throughput:
    """Warm up, then time `s.messages` messages and the server's CPU over them.

    With `s.repeat` > 1 the fastest of that many timed runs is kept (a busy machine only ever
    slows a run down), unless one of them had a wrong ACK: then that one is kept.
    """
    warm = drive(HOST, server.port, synth, s.warmup, s.connections)
    best: Throughput | None = None
    for _ in range(max(1, s.repeat)):
        run = _timed(name, server, s, synth, not warm.failed)
        if run.report.failed:
            return run
        if best is None or run.report.msg_per_s > best.report.msg_per_s:
            best = run
    assert best is not None
    return best


def _timed(name: str, server: ServerProcess, s: Settings, synth: Synth,
           warmup_ok: bool) -> Throughput:
    before = cpu_times(server.pid)
    report = drive(HOST, server.port, synth, s.messages, s.connections)
    used: CpuTimes = cpu_times(server.pid) - before
    n = max(report.acked, 1)
    return Throughput(name, report, used.total / n * 1e6, used.main_thread / n * 1e6, warmup_ok)


def measure_memory(server: ServerProcess, s: Settings, synth: Synth) -> Memory:
    """VmRSS after a warm-up and after `s.rss_messages` more, sampled about once a second."""
    mem = Memory(s.rss_messages)
    mem.warmup_ok = not drive(HOST, server.port, synth, s.warmup, s.connections).failed
    mem.after_warmup_mb = rss_mb(server.pid)
    gen = LoadGen(HOST, server.port, synth, s.rss_messages, s.connections)

    async def sample() -> None:
        while True:
            mem.samples.append((gen.tally.acked, round(rss_mb(server.pid), 1)))
            await asyncio.sleep(1.0)

    async def both() -> Report:
        sampler = asyncio.ensure_future(sample())
        try:
            return await gen.run()
        finally:
            sampler.cancel()

    mem.report = asyncio.run(both())
    mem.end_mb = rss_mb(server.pid)
    mem.samples.append((gen.tally.acked, round(mem.end_mb, 1)))
    return mem
