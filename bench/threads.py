"""Per-thread CPU and context switches of a running engine, per message it logged.

    python -m bench.threads --pid PID --log ENGINE_LOG [--seconds 8]

Reads /proc/PID/task/*/stat and status twice, `--seconds` apart, and counts the `message.stored`
lines the engine's log gained meanwhile (the log is flushed twice a second, so keep `--seconds`
well above that).  Each thread that used CPU gets one line: user and system µs per message, and
voluntary (it waited: a lock, the GIL, a queue, a socket) and involuntary (preempted) context
switches per message.  Start the engine under load first, e.g. `python -m bench.compare --rounds
1 --messages 80000 &`; the main thread is the reactor.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
Counts = tuple[int, int, int, int]  # user ticks, system ticks, voluntary, involuntary switches


def thread_counts(pid: int) -> dict[int, Counts]:
    """Every live thread of `pid`: its CPU ticks and context switches so far."""
    out: dict[int, Counts] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = dict(line.split(":\t", 1) for line in
                          (task / "status").read_text().splitlines() if ":\t" in line)
        except OSError:  # the thread just ended
            continue
        out[int(task.name)] = (int(stat[11]), int(stat[12]),
                               int(status["voluntary_ctxt_switches"]),
                               int(status["nonvoluntary_ctxt_switches"]))
    return out


def stored_lines(log: Path) -> int:
    with log.open(errors="replace") as lines:
        return sum(1 for line in lines if '"message.stored"' in line)


def report(pid: int, before: dict[int, Counts], after: dict[int, Counts], messages: int
           ) -> list[str]:
    """One line per thread that used CPU between the two readings."""
    n = max(messages, 1)
    lines = []
    for tid, now in sorted(after.items()):
        user, system, voluntary, involuntary = (b - a for a, b in zip(before.get(tid, now), now,
                                                                     strict=True))
        if user or system:
            lines.append(f"thread {tid}{' (main)' if tid == pid else ''}: "
                         f"user {user / TICKS / n * 1e6:6.1f} sys {system / TICKS / n * 1e6:5.1f}"
                         f" us/msg, switches {voluntary / n:.2f} voluntary "
                         f"{involuntary / n:.2f} involuntary per message")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pid", type=int, required=True, help="the engine process")
    p.add_argument("--log", type=Path, required=True, help="its log file")
    p.add_argument("--seconds", type=float, default=8.0)
    a = p.parse_args(argv)
    before, logged = thread_counts(a.pid), stored_lines(a.log)
    time.sleep(a.seconds)
    after, messages = thread_counts(a.pid), stored_lines(a.log) - logged
    print(f"{messages} messages in {a.seconds:g} s ({messages / a.seconds:.0f}/s)")
    print("\n".join(report(a.pid, before, after, messages)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
