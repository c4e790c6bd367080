"""The engine's per-message work in one process, for instruction counts (callgrind).

    python -m bench.hotpath [--messages 1000] [--mix ref[,siu]] [--stage all|prepare|ack|log]
    python -m bench.hotpath --callgrind [--baseline DIR] ...

`all` runs what the engine does for each message of a batch of 8 apart from the network: the
pipeline (parse, header, mapping, the message row, the ledger and SQLite statements, the ACKs)
on a fresh SQLite file (synchronous OFF: an fsync costs no instructions), then the JSON log line.
`prepare` runs parse, header check, mapping and the row alone; `ack` builds the ACKs of already
prepared messages; `log` writes the log line of already committed ones.

`--callgrind` runs the same twice under `valgrind --tool=callgrind` (N and 3N messages) and
prints the difference per message: the instructions of one message, free of start-up.  With
`--baseline DIR` it does the same for the engine package in DIR first (another revision), so two
versions are compared on a figure the machine's load does not move.  `HOTPATH_GC_FREEZE=1`
calls `gc.freeze()` after set-up (to see what the collector costs this path).

Without `--callgrind` it prints the CPU time per message of what it ran (`all`: the pipeline and
the log line apart), a noisy figure: run it a few times.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.loadgen import parse_mix
from bench.synth import Synth

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("all", "prepare", "ack", "log")


def work(stage: str, mix: tuple[str, ...], messages: int, folder: Path) -> None:
    from engine.ack import AckBuilder
    from engine.config import parse_config
    from engine.ingest import _log_result
    from engine.logs import configure_logging
    from engine.pipeline import Job, Pipeline
    from engine.prepare import prepare
    from engine.store.database import open_database

    configure_logging(str(folder / "engine.log"), console=None)
    channel = parse_config({"channels": [{"name": "bench", "listen": {"port": 0},
                                          "accept": ["REF^I12-I15", "SIU^S12-S26"]}]}).channels[0]
    builder = AckBuilder("REFTRACK", "HUB")
    synth = Synth(mix)
    jobs = [Job(channel, synth.next().payload, "bench", datetime.now(UTC))
            for _ in range(messages if stage in ("all", "prepare") else SAMPLE)]
    if os.environ.get("HOTPATH_GC_FREEZE"):
        gc.freeze()
    started = time.process_time()
    if stage == "prepare":
        for job in jobs:
            prepare(job)
        _cpu("prepare (parse, header, mapping, row)", started, messages)
        return
    if stage == "ack":
        ready = [prepare(job) for job in jobs]
        started = time.process_time()
        for i in range(messages):
            builder.build(ready[i % SAMPLE].msg, ready[i % SAMPLE].verdict)
        _cpu("ack", started, messages)
        return
    pipeline = Pipeline(open_database(f"sqlite:///{folder / 'hot.db'}", "OFF"),
                        {channel.name: builder})
    started = time.process_time()
    results = [r for i in range(0, len(jobs), 8) for r in pipeline.process_batch(jobs[i:i + 8])]
    if stage == "all":
        _cpu("pipeline (prepare, ledger, statements, commit at OFF, ACKs)", started, len(jobs))
    pipeline.close()
    started = time.process_time()
    for i in range(messages if stage == "log" else len(jobs)):
        job, r = jobs[i % len(jobs)], results[i % len(jobs)]
        _log_result(channel.name, r, job.peer, len(job.raw), 0.00123)
    _cpu("log line", started, messages if stage == "log" else len(jobs))


def _cpu(what: str, started: float, messages: int) -> None:
    """Print the CPU time per message since `started`."""
    print(f"{what:<62} {(time.process_time() - started) / messages * 1e6:7.1f} us CPU/message")


SAMPLE = 64  # `ack` and `log`: messages prepared once, then answered or logged over and over


def instructions(args: list[str], code: Path | None) -> int:
    """Total instructions (Ir) of one run of this module under callgrind (with the engine
    package of `code`, else this tree's)."""
    with tempfile.TemporaryDirectory(prefix="hl7-hotpath-") as tmp:
        out = Path(tmp) / "callgrind.out"
        path = [str(code), str(ROOT)] if code else [str(ROOT)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        sys.executable, "-m", "bench.hotpath", *args], check=True, cwd=tmp,
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
        if found is None:
            raise RuntimeError("no instruction total in the callgrind output")
        return int(found[1])


def per_message(stage: str, mix: str, messages: int, code: Path | None) -> float:
    base = ["--stage", stage, "--mix", mix]
    small = instructions([*base, "--messages", str(messages)], code)
    large = instructions([*base, "--messages", str(3 * messages)], code)
    return (large - small) / (2 * messages)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--mix", default="ref")
    p.add_argument("--stage", choices=STAGES, default="all")
    p.add_argument("--callgrind", action="store_true",
                   help="instructions per message, under valgrind")
    p.add_argument("--baseline", help="with --callgrind: another revision's engine, first")
    a = p.parse_args(argv)
    if not a.callgrind:
        with tempfile.TemporaryDirectory(prefix="hl7-hotpath-") as tmp:
            work(a.stage, parse_mix(a.mix), a.messages, Path(tmp))
        return 0
    codes: list[tuple[str, Path | None]] = [("this", None)]
    if a.baseline:
        codes.insert(0, ("base", Path(a.baseline).resolve()))
    for name, code in codes:
        ir = per_message(a.stage, a.mix, a.messages, code)
        print(f"{name:<5} stage {a.stage:<8} mix {a.mix:<8} {ir:10,.0f} instructions/message",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
