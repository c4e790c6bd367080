"""Engines side by side in one run: this tree against another revision, or `workers` 1 against 2.

    python -m bench.compare [--baseline DIR] [--workers 1[,2]] [--mix ref[,siu]]
                            [--messages 5000] [--rate 0] [--rounds 3] [--warmup 500]

The machine is shared and noisy, so figures are only comparable within one run: each round
starts the bare Twisted server and then every variant (this tree and, with `--baseline`, the
engine from DIR, e.g. `git worktree add DIR REV` or `git archive REV | tar -x -C DIR`; times each
of `--workers`) on a fresh SQLite database (synchronous FULL), in that order, so a busy minute
slows all of them.  With `--rate R` the timed load is open loop: message i leaves no earlier than
i/R seconds after the start (over `--connections`, one at a time on each), which is how ACK
latency at low load is measured; without it the load is as fast as the ACKs come.

Each variant's line gives the median over the rounds of msg/s, ACK p50/p99, server CPU µs per
message (utime+stime of every thread, then of the reactor thread alone) and messages per group
commit (from the engine's log).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import LoadGen, drive, parse_mix
from bench.measure import HOST
from bench.procs import ServerProcess, cpu_times, scratch_dir
from bench.run import bare_server, engine_log_facts, engine_server
from bench.synth import Synth


@dataclass(frozen=True, slots=True)
class Variant:
    """One engine to run: its code (None: this tree) and its ingest processes."""

    name: str
    code: Path | None
    workers: int


def one_run(server: ServerProcess, synth: Synth, a: argparse.Namespace) -> dict[str, float]:
    """Warm up as fast as the ACKs come, then the timed load; its figures."""
    drive(HOST, server.port, synth, a.warmup, a.connections)
    before = cpu_times(server.pid)
    report = asyncio.run(LoadGen(HOST, server.port, synth, a.messages, a.connections,
                                 rate=a.rate).run())
    if report.failed:
        raise RuntimeError(f"{server.name}: {report.line()}")
    used = cpu_times(server.pid) - before
    acked = max(report.acked, 1)
    return {"msg_per_s": report.msg_per_s, "p50_ms": report.p50_ms, "p99_ms": report.p99_ms,
            "cpu_us": used.total / acked * 1e6, "reactor_us": used.main_thread / acked * 1e6}


def run_variant(v: Variant, tmp: Path, synth: Synth, a: argparse.Namespace) -> dict[str, float]:
    folder = tmp / f"{v.name.replace('/', '-')}-{len(list(tmp.iterdir()))}"
    folder.mkdir()
    server = engine_server(folder, {"workers": v.workers} if v.workers > 1 else None)
    if v.code is not None:
        server.env = {**os.environ, "PYTHONPATH": str(v.code)}
    with server:
        figures = one_run(server, synth, a)
        server.stop()
    batch = engine_log_facts(folder).get("avg_commit_batch")
    return {**figures, "batch": float(batch or 0.0)}


def variants(a: argparse.Namespace) -> list[Variant]:
    trees: list[tuple[str, Path | None]] = [("this", None)]
    if a.baseline:
        trees.insert(0, ("base", Path(a.baseline).resolve()))
    workers = [int(w) for w in a.workers.split(",")]
    return [Variant(f"{name}/w{w}" if len(workers) > 1 else name, code, w)
            for name, code in trees for w in workers]


def line(name: str, runs: list[dict[str, float]]) -> str:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    spread = "-".join(f"{f(r['cpu_us'] for r in runs):.0f}" for f in (min, max))
    return (f"{name:<10} {med('msg_per_s'):7.0f} msg/s  ACK p50 {med('p50_ms'):5.2f} ms  "
            f"p99 {med('p99_ms'):5.2f} ms  CPU {med('cpu_us'):6.1f} us/msg ({spread}), "
            f"reactor thread {med('reactor_us'):5.1f}"
            + (f"  {med('batch'):.2f} msg/commit" if "batch" in runs[0] else ""))


def summary(what: str, a: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> None:
    """After the rounds: what ran, how, the machine's load, and each variant's `line`."""
    print(f"\n{a.rounds} rounds, {what}, "
          + (f"open loop at {a.rate:g} msg/s" if a.rate else "closed loop")
          + f", load average {os.getloadavg()[0]:.2f}:")
    for name, runs in results.items():
        print(line(name, runs))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", help="a folder holding another revision's engine/ package")
    p.add_argument("--workers", default="1", help="ingest processes to try, e.g. 1,2")
    p.add_argument("--mix", default="ref")
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--rate", type=float, default=0.0, help="offered msg/s (0: closed loop)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-bare", action="store_true", help="skip the bare server")
    a = p.parse_args(argv)
    synth = Synth(parse_mix(a.mix))
    results: dict[str, list[dict[str, Any]]] = {}
    with scratch_dir("hl7-compare-") as tmp:
        for r in range(a.rounds):
            if not a.no_bare:
                with bare_server(tmp) as bare:
                    results.setdefault("bare", []).append(one_run(bare, synth, a))
            for v in variants(a):
                results.setdefault(v.name, []).append(run_variant(v, tmp, synth, a))
            print(f"round {r + 1}: " + "; ".join(
                f"{k} {runs[-1]['cpu_us']:.0f} us/msg p99 {runs[-1]['p99_ms']:.2f}"
                for k, runs in results.items()), flush=True)
    summary(f"mix {a.mix}, {a.messages} messages over {a.connections} connections", a, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
