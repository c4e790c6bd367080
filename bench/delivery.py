"""Delivery scenario (issue 4): does delivery to a downstream keep up with ingest?

    python -m bench.delivery [--messages 20000] [--connections 8] [--warmup 500]

Three engines in one run, each on a fresh SQLite database (synchronous FULL), each warmed up
first:
  * ingest only: the config of `bench.run`, no routes;
  * with delivery: the same plus one MLLP destination, a sink process that answers AA
    (`bench.sink`), and a route taking every message of the channel to it, loaded as fast as
    the ACKs come;
  * paced: the same as "with delivery", the load offered at half the ingest-only rate.
With delivery it measures ingest msg/s (the load generator's), delivery msg/s (messages received
at the sink from the start of the load until the queue is drained), the time from the last ACK
to the last delivery, and the queue depth sampled from the database four times a second (max).
Targets: delivery at least 0.5 of ingest-only; and at that rate (the paced run) the queue depth
bounded: never more than one second of the offered traffic, empty within a second of the last
ACK.  Each is printed as PASS or MISS, never failing the run.  A wrong ACK, or a message the
sink never got, does (exit status 1).
The summary is written to `bench/results/delivery.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.loadgen import LoadGen, Report
from bench.measure import HOST, Settings, measure
from bench.procs import ServerProcess, cpu_times
from bench.run import engine_log_facts, engine_server
from bench.sink import SinkProcess
from bench.summary import throughput_dict, write_results
from bench.synth import Synth

RESULTS = Path(__file__).resolve().parent / "results" / "delivery.json"
RATIO_TARGET = 0.5  # delivery msg/s over ingest-only msg/s, at least
DRAIN_TIMEOUT_S = 600.0


def routed(sink_port: int) -> dict[str, Any]:
    """Config keys that send every message of channel `bench` to the sink."""
    return {
        "destinations": [{"name": "sink", "type": "mllp", "host": HOST, "port": sink_port,
                          "ack_timeout_s": 30}],
        "routes": [{"name": "everything", "from": "bench", "to": ["sink"]}],
    }


def queue_depth(db: Path) -> int:
    """Rows queued for the sink, read from the engine's database (WAL: no lock taken)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return int(conn.execute("SELECT count(*) FROM outbound WHERE destination = 'sink' "
                                "AND status = 'queued'").fetchone()[0])


async def _until(done: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def _sample(db: Path, samples: list[tuple[float, int]], t0: float) -> None:
    while True:
        samples.append((round(time.perf_counter() - t0, 2), queue_depth(db)))
        await asyncio.sleep(0.25)


async def _delivery_run(s: Settings, server: ServerProcess, sink: SinkProcess, db: Path,
                        rate: float = 0.0) -> dict[str, Any]:
    """Warm up and drain, then the timed load; wait until the sink has every message."""
    synth = Synth(s.mix)
    warm = await LoadGen(HOST, server.port, synth, s.warmup, s.connections).run()
    got = sink.received
    await _until(lambda: got.count >= s.warmup, DRAIN_TIMEOUT_S)
    base, samples = got.count, []
    cpu0, t0 = cpu_times(server.pid), time.perf_counter()
    sampler = asyncio.ensure_future(_sample(db, samples, t0))
    report = await LoadGen(HOST, server.port, synth, s.messages, s.connections, rate=rate).run()
    last_ack, while_ingesting = time.perf_counter(), got.count - base
    drained = await _until(lambda: got.count - base >= report.ok, DRAIN_TIMEOUT_S)
    sampler.cancel()
    cpu = cpu_times(server.pid) - cpu0
    samples.append((round(time.perf_counter() - t0, 2), queue_depth(db)))
    delivered = got.count - base
    n = max(report.acked, 1)
    return {
        "report": report, "warmup_ok": not warm.failed, "drained": drained,
        "ingest_msg_per_s": round(report.msg_per_s, 1),
        "ack_p50_ms": round(report.p50_ms, 3), "ack_p99_ms": round(report.p99_ms, 3),
        "delivery_msg_per_s": round(delivered / (got.last_at - t0), 1) if delivered else 0.0,
        "delivery_while_ingesting_msg_per_s": round(while_ingesting / (last_ack - t0), 1),
        "last_ack_to_last_delivery_s": round(max(0.0, got.last_at - last_ack), 3),
        "queue_depth_max": max(d for _, d in samples),
        "queue_depth_samples_s_depth": samples,
        "delivered": delivered, "duplicates": got.duplicates,
        "server_cpu_us_per_msg": round(cpu.total / n * 1e6, 1),
        "reactor_thread_cpu_us_per_msg": round(cpu.main_thread / n * 1e6, 1),
    }


EXTRA: dict[str, Any] = {}


def run_with_delivery(s: Settings, tmp: Path, rate: float = 0.0) -> dict[str, Any]:
    sink = SinkProcess(HOST)

    async def scenario() -> dict[str, Any]:
        try:
            with engine_server(tmp, {**routed(sink.port), **EXTRA}) as server:
                result = await _delivery_run(s, server, sink, tmp / "bench.db", rate)
                result["engine_exit_status"] = server.stop()
        finally:
            sink.close()
        return result

    result = asyncio.run(scenario())
    return {**result, **engine_log_facts(tmp)}


def bounded(paced: dict[str, Any], rate: float) -> dict[str, Any]:
    """The paced run's verdict: the queue never held more than one second of the offered
    traffic, and it was empty within a second of the last ACK."""
    report: Report = paced.pop("report")
    ok = (paced["queue_depth_max"] <= rate and paced["last_ack_to_last_delivery_s"] <= 1.0
          and not report.failed and paced["drained"])
    return {**paced, "offered_msg_per_s": round(rate, 1), "target":
            "queue depth <= one second of traffic, drained <= 1 s after the last ACK",
            "verdict": "PASS" if ok else "MISS"}


def summarize(s: Settings, ingest_only: Any, d: dict[str, Any], loadavg: Any,
              paced: dict[str, Any]) -> dict[str, Any]:
    report: Report = d.pop("report")
    base = ingest_only.report.msg_per_s
    ratio = d["delivery_msg_per_s"] / base if base else 0.0
    ok = (not ingest_only.report.failed and ingest_only.warmup_ok and not report.failed
          and d["warmup_ok"] and d["drained"] and d["delivered"] >= s.messages)
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "loadavg_at_start": loadavg},
        "settings": {"messages": s.messages, "connections": s.connections, "warmup": s.warmup,
                     "mix": list(s.mix)},
        "ingest_only": throughput_dict(ingest_only),
        "with_delivery": {**d, "acks": {"ok": report.ok, "not_aa": report.not_aa,
                                        "mismatched": report.mismatched, "errors": report.errors,
                                        "examples": list(report.examples)}},
        "delivery_over_ingest_only": {"ratio": round(ratio, 3), "target": f">= {RATIO_TARGET}",
                                      "verdict": "PASS" if ratio >= RATIO_TARGET else "MISS"},
        "paced_at_half_of_ingest_only": paced,
        "all_ok": ok and paced["delivered"] >= s.messages,
    }


def render(d: dict[str, Any]) -> str:
    w, ratio = d["with_delivery"], d["delivery_over_ingest_only"]
    p = d["paced_at_half_of_ingest_only"]
    rows = [
        ("ingest only: msg/s", f"{d['ingest_only']['msg_per_s']:.0f}", ""),
        ("with delivery: ingest msg/s", f"{w['ingest_msg_per_s']:.0f}", ""),
        ("with delivery: ACK p50/p99 (ms)", f"{w['ack_p50_ms']:.2f}/{w['ack_p99_ms']:.2f}", ""),
        ("delivery msg/s (until drained)", f"{w['delivery_msg_per_s']:.0f}", ""),
        ("delivery msg/s while ingesting", f"{w['delivery_while_ingesting_msg_per_s']:.0f}", ""),
        ("delivery / ingest-only", f"{ratio['ratio']:.3f}", f"{ratio['target']}  {ratio['verdict']}"),
        ("last ACK to last delivery (s)", f"{w['last_ack_to_last_delivery_s']:.2f}", ""),
        ("queue depth, max sampled", f"{w['queue_depth_max']}", ""),
        ("engine CPU (us/msg, both ways)", f"{w['server_cpu_us_per_msg']:.0f}", ""),
        ("delivered / duplicates", f"{w['delivered']}/{w['duplicates']}", ""),
        ("engine: error events logged", f"{w.get('engine_error_events', '-')}", ""),
        ("paced at 0.5 of ingest-only: msg/s", f"{p['offered_msg_per_s']:.0f}", ""),
        ("  ingest / delivered while ingesting",
         f"{p['ingest_msg_per_s']:.0f}/{p['delivery_while_ingesting_msg_per_s']:.0f}", ""),
        ("  queue depth max; drained after (s)",
         f"{p['queue_depth_max']}; {p['last_ack_to_last_delivery_s']:.2f}", f"{p['verdict']}"),
        ("all ACKs AA, every message delivered", "yes" if d["all_ok"] else "NO", ""),
    ]
    return "\n".join(f"{a:<38}{b:>14}  {c}".rstrip() for a, b, c in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.delivery", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args(argv)
    EXTRA["workers"] = a.workers  # explicit: with destinations the engine's default is 2
    if min(a.messages, a.connections, a.warmup) < 1:
        p.error("--messages, --connections and --warmup must be >= 1")
    s = Settings(a.messages, a.connections, 0, a.warmup, ("ref",))
    loadavg = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="hl7-bench-delivery-"))
    try:
        (tmp / "ingest").mkdir()
        (tmp / "delivery").mkdir()
        (tmp / "paced").mkdir()
        with engine_server(tmp / "ingest", EXTRA) as server:
            ingest_only = measure("ingest", server, s, Synth(s.mix))
        print(ingest_only.line(), flush=True)
        result = run_with_delivery(s, tmp / "delivery")
        rate = ingest_only.report.msg_per_s * RATIO_TARGET
        paced = bounded(run_with_delivery(s, tmp / "paced", rate), rate)
    except RuntimeError as exc:
        print(f"bench.delivery: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = summarize(s, ingest_only, result, loadavg, paced)
    print()
    print(render(summary))
    write_results(RESULTS, summary)
    return 0 if summary["all_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
