"""The engine's reactor side alone, this tree against another revision in one run.

    python -m bench.reactor_side [--baseline DIR] [--messages 20000] [--rounds 3] [--rate 0]
    python -m bench.reactor_side --callgrind [--baseline DIR] [--messages 3000] [--rounds 3]

With `--metrics` the stub engines also feed `/metrics`'s per-frame instruments, as an engine with
`http:` does (bench.compare's engine has no `http:`).

Each engine runs its real listener, handler, `message.stored` line and writer thread, but the
writer's batch is a stub that answers every frame AA at once (no parse, no database, no fsync):
what is left is the reactor's own work per message (framing, the hand-off to the writer and
back, the log line, the ACK write, the kernel's share), measured as the reactor thread's CPU
without the real writer's load on the GIL.  Lines as `bench.compare` prints them (the CPU of
every thread, then of the reactor thread alone).  `--serve --port N` is the stub engine itself.

`--callgrind` runs each stub engine under valgrind's callgrind instead and prints the
instructions per message of each timed load (counters zeroed after the warm-up, dumped after the
load), of every thread and of the reactor thread alone: figures the machine's load does not move.
Under valgrind a message takes milliseconds, so what is cached per millisecond (the log's `ts`)
is worked out for nearly every message, and batches are as large as the connections allow.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

from bench.compare import one_run, summary
from bench.loadgen import drive, parse_mix
from bench.measure import HOST
from bench.procs import ServerProcess, free_port, scratch_dir
from bench.synth import Synth

ACK_HEAD = (b"MSH|^~\\&|REFTRACK|HUB|PCPEHR|NORTH|20260101120001||ACK^I12^ACK|ACK0001|P|2.5.1\r"
            b"MSA|AA|")


def serve(port: int, log_file: str, *, metrics: bool = False) -> None:
    """The stub engine: one channel on `port`, its log in `log_file`, until SIGTERM; on the
    reactor `hl7-engine run` installs and with the writer's hand-over after each poll, where
    the engine tree has them (as `make_service` wires them)."""
    try:
        from engine.mllp.reactor import install
    except ImportError:  # an older tree: Twisted's default reactor, as its `run` had
        pass
    else:
        install()
    from twisted.internet import reactor, task

    from engine.ack import ACCEPTED
    from engine.config import parse_config
    from engine.ingest import frame_handler
    from engine.logs import configure_logging, flush_logs
    from engine.mllp.server import MLLPServerFactory
    from engine.pipeline import Result
    from engine.service import listener_options
    from engine.store.writer import GroupCommitWriter
    from engine.web.metrics import Metrics

    def work(jobs: list[Any]) -> list[Result]:
        controls = [job.raw.split(b"|", 10)[9] for job in jobs]
        return [Result([ACK_HEAD + c + b"\r"], ACCEPTED, 1, c.decode(), "REF^I12", "0" * 64)
                for c in controls]

    configure_logging(log_file, console=None)
    channel = parse_config({"channels": [{"name": "bench", "listen": {"port": port},
                                          "accept": ["REF^I12-I15"]}]}).channels[0]
    r: Any = reactor
    writer: GroupCommitWriter[Any, Result] = GroupCommitWriter(
        work, r.callFromThread, lambda job, _exc: work([job])[0])
    handler = frame_handler(channel, writer, metrics=Metrics() if metrics else None)
    factory = MLLPServerFactory(listener_options(channel), handler, r)
    writer.expect(lambda: factory.connections)
    with contextlib.suppress(ImportError):  # an older tree hands each job over at once
        from engine.mllp.reactor import around_polls

        writer.hand_over_after_polls(partial(around_polls, r))
    writer.start()
    r.listenTCP(port, factory, interface=HOST)
    task.LoopingCall(flush_logs).start(0.5)
    r.run()


def stub_server(tmp: Path, name: str, code: Path | None, *, metrics: bool = False
                ) -> ServerProcess:
    """The stub engine as a subprocess, with the engine package of `code` (None: this tree)."""
    port = free_port(HOST)
    folder = tmp / f"{name}-{len(list(tmp.iterdir()))}"
    folder.mkdir()
    argv = [sys.executable, "-m", "bench.reactor_side", "--serve", "--port", str(port),
            "--log", str(folder / "engine.log"), *(["--metrics"] if metrics else [])]
    # Run from the scratch folder: `-m` puts the working directory first on the path, and
    # `engine` must come from `code` when given.
    root = str(Path(__file__).resolve().parent.parent)
    path = root if code is None else f"{code}{os.pathsep}{root}"
    return ServerProcess(name, argv, HOST, port, folder / "out", cwd=folder,
                         env={**os.environ, "PYTHONPATH": path})


def counted(tmp: Path, name: str, code: Path | None, synth: Synth, a: argparse.Namespace
            ) -> list[tuple[float, float]]:
    """The stub engine under callgrind: for each of `a.rounds` timed loads, the instructions
    per message of every thread and of the reactor thread (callgrind's thread 1)."""
    server = stub_server(tmp, name, code, metrics=a.metrics)
    out = server.log.parent / "callgrind.out"
    server.argv[:0] = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
                       f"--callgrind-out-file={out}"]
    server.start_timeout = 600.0
    server.env = {**(server.env or os.environ), "PYTHONHASHSEED": "0"}
    figures = []
    with server:
        drive(HOST, server.port, synth, a.warmup, a.connections, timeout=120.0)
        for dump in range(1, a.rounds + 1):
            subprocess.run(["callgrind_control", "--zero", str(server.pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            drive(HOST, server.port, synth, a.messages, a.connections, timeout=120.0)
            subprocess.run(["callgrind_control", "--dump", str(server.pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            threads = [_instructions(f) for f in sorted(out.parent.glob(f"{out.name}.{dump}-*"))]
            figures.append((sum(threads) / a.messages, threads[0] / a.messages))
    return figures


def _instructions(dump: Path) -> int:
    found = re.search(r"^summary: (\d+)", dump.read_text(), re.M)
    if found is None:
        raise RuntimeError(f"no instruction total in {dump}")
    return int(found[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reactor_side", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", help="a folder holding another revision's engine/ package")
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--rate", type=float, default=0.0, help="offered msg/s (0: closed loop)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--callgrind", action="store_true",
                   help="instructions per message, under valgrind")
    p.add_argument("--metrics", action="store_true",
                   help="feed /metrics's per-frame instruments, as with `http:`")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--log", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.serve:
        serve(a.port, a.log, metrics=a.metrics)
        return 0
    synth = Synth(parse_mix("ref"))
    trees: list[tuple[str, Path | None]] = [("this", None)]
    if a.baseline:
        trees.insert(0, ("base", Path(a.baseline).resolve()))
    with scratch_dir("hl7-reactor-") as tmp:
        (instructions if a.callgrind else timed)(tmp, trees, synth, a)
    return 0


def timed(tmp: Path, trees: list[tuple[str, Path | None]], synth: Synth,
          a: argparse.Namespace) -> None:
    """Each stub engine's CPU, round by round, then the medians."""
    results: dict[str, list[dict[str, float]]] = {}
    for r in range(a.rounds):
        for name, code in trees:
            with stub_server(tmp, name, code, metrics=a.metrics) as server:
                results.setdefault(name, []).append(one_run(server, synth, a))
        print(f"round {r + 1}: " + "; ".join(
            f"{k} reactor {runs[-1]['reactor_us']:.1f} us/msg" for k, runs in results.items()),
            flush=True)
    summary(f"{a.messages} REF over {a.connections} connections, stub batch", a, results)


def instructions(tmp: Path, trees: list[tuple[str, Path | None]], synth: Synth,
                 a: argparse.Namespace) -> None:
    """Each stub engine's instructions per message under callgrind, one line each."""
    for name, code in trees:
        runs = counted(tmp, name, code, synth, a)
        print(f"{name:<5} {statistics.median(r[0] for r in runs):9,.0f} instructions/message, "
              f"reactor thread {statistics.median(r[1] for r in runs):9,.0f} (median of "
              f"{len(runs)}; reactor: {', '.join(f'{r[1]:,.0f}' for r in runs)})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
