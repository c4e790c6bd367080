"""Scale-out on PostgreSQL: one engine against two engines on one database, side by side.

    python -m bench.pgscale [--messages 6000] [--connections 8] [--mix ref,siu] [--keep-tmp]

A throw-away PostgreSQL cluster is started (as the test suite does, tests/pgcluster.py); each
run gets a fresh database.  Run 1: one engine takes `--messages`.  Run 2: two engines on the
same database each take `--messages` at the same time, from two load generators with ids and
patients of their own.  Printed per run: msg/s (all engines together), ACK p50/p99, server CPU
µs per message, and from each engine's log (`store.batch_time`, written when it stops) the share
of batch time spent taking the batch's locks: the advisory locks of its keys
(engine.store.keylocks), one statement whose round trip is the one-engine figure; what two
engines add to it is time spent waiting for the other engine's batch.

On a machine with fewer cores than engines plus load generators plus PostgreSQL, two engines
cannot go much faster than one: read the lock-wait share, which says how much of a batch is
spent queueing behind the other engine whatever the cores.  Figures are printed, never judged; a
wrong ACK makes the exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from bench.loadgen import Report, drive, parse_mix
from bench.measure import HOST
from bench.procs import ServerProcess, cpu_times, scratch_dir
from bench.run import ROOT, engine_server
from bench.synth import Synth

sys.path.insert(0, str(ROOT / "tests"))
from pgcluster import PgCluster, find_binaries  # noqa: E402 - the suite's throw-away cluster


def _batch_time(log: Path) -> dict[str, float]:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if '"store.batch_time"' in line:
            event = json.loads(line)
            return {k: float(event[k]) for k in ("batches", "batch_s", "lock_wait_s")}
    return {"batches": 0.0, "batch_s": 0.0, "lock_wait_s": 0.0}


def _run(label: str, url: str, tmp: Path, engines: int, a: argparse.Namespace) -> bool:
    servers: list[ServerProcess] = []
    for i in range(engines):
        folder = tmp / f"{label}-{i}"
        folder.mkdir()
        servers.append(engine_server(folder, {"database": {"url": url}}))
    reports: dict[int, Report] = {}
    try:
        for server in servers:
            server.__enter__()
        for server, lane in zip(servers, "WXYZ", strict=False):  # warm up each engine alone
            drive(HOST, server.port, Synth(a.mix, lane=lane), 200, a.connections)
        before = [cpu_times(s.pid) for s in servers]
        lanes = [threading.Thread(target=lambda i=i, s=s: reports.__setitem__(i, drive(
            HOST, s.port, Synth(a.mix, lane="BCDE"[i]), a.messages, a.connections)))
            for i, s in enumerate(servers)]
        started = time.perf_counter()
        for t in lanes:
            t.start()
        for t in lanes:
            t.join()
        wall = time.perf_counter() - started
        cpu = sum((cpu_times(s.pid) - b).total for s, b in zip(servers, before, strict=True))
    finally:
        for server in servers:
            server.stop()
    acked = sum(r.acked for r in reports.values())
    times = [_batch_time(s.log.with_name("engine.log")) for s in servers]
    waited = sum(t["lock_wait_s"] for t in times)
    spent = sum(t["batch_s"] for t in times)
    p99 = max(r.p99_ms for r in reports.values())
    print(f"{label:<12} {acked / wall:8.0f} msg/s  p99 {p99:6.1f} ms  "
          f"server CPU {cpu / max(acked, 1) * 1e6:6.1f} us/msg  "
          f"lock wait {waited:.2f} s of {spent:.2f} s batch time "
          f"({waited / spent * 100 if spent else 0:.1f}%)", flush=True)
    return not any(r.failed for r in reports.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pgscale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=6000, help="per engine")
    p.add_argument("--connections", type=int, default=8, help="per engine")
    p.add_argument("--mix", type=parse_mix, default=("ref", "siu"))
    p.add_argument("--keep-tmp", action="store_true")
    a = p.parse_args(argv)
    binaries = find_binaries()
    if binaries is None:
        print("bench.pgscale: skipped, no PostgreSQL server binaries (initdb, pg_ctl)",
              file=sys.stderr)
        return 0
    cluster = PgCluster(binaries)
    cluster.start()
    ok = True
    try:
        with scratch_dir("hl7-bench-pgscale-", a.keep_tmp) as tmp:
            for label, engines in (("one engine", 1), ("two engines", 2)):
                url = cluster.url(cluster.create_database())
                ok = _run(label, url, tmp, engines, a) and ok
    finally:
        cluster.stop()
    return 0 if ok else 1




if __name__ == "__main__":
    raise SystemExit(main())
