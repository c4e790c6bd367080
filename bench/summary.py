"""A bench run's figures as one JSON-ready dict, and that dict as the printed summary table.

The targets are judged here, PASS or MISS; they never fail a run (timing
belongs to benchmarks, and a shared machine makes single figures noisy, so ratios are quoted).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.measure import Memory, Settings, Throughput

RSS_TARGET_MB = 50.0  # VmRSS growth per 100k messages, less than
FLOOR_TARGET = 0.6  # engine/database floor throughput, at least
CPU_TARGET_US = {("ref",): 130.0, ("ref", "siu"): 140.0}  # server CPU per message, at most


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def throughput_dict(t: Throughput) -> dict[str, Any]:
    r = t.report
    return {
        "msg_per_s": round(r.msg_per_s, 1),
        "ack_p50_ms": round(r.p50_ms, 3),
        "ack_p99_ms": round(r.p99_ms, 3),
        "ack_max_ms": round(r.max_ms, 3),
        "server_cpu_us_per_msg": round(t.cpu_us_per_msg, 1),
        "reactor_thread_cpu_us_per_msg": round(t.main_thread_us_per_msg, 1),
        "other_threads_cpu_us_per_msg": round(t.other_threads_us_per_msg, 1),
        "loadgen_cpu_us_per_msg": round(r.client_cpu_us_per_msg, 1),
        "seconds": round(r.seconds, 3),
        "acks": {"ok": r.ok, "not_aa": r.not_aa, "mismatched": r.mismatched,
                 "errors": r.errors, "examples": list(r.examples),
                 "warmup_ok": t.warmup_ok},
    }


def memory_dict(m: Memory) -> dict[str, Any]:
    r = m.report
    return {
        "messages": m.messages,
        "rss_after_warmup_mb": round(m.after_warmup_mb, 1),
        "rss_end_mb": round(m.end_mb, 1),
        "growth_mb": round(m.growth_mb, 1),
        "growth_per_100k_mb": round(m.growth_per_100k_mb, 1),
        "target_per_100k_mb": f"< {RSS_TARGET_MB:g}",
        "verdict": _verdict(m.growth_per_100k_mb < RSS_TARGET_MB),
        "msg_per_s": round(r.msg_per_s, 1) if r else 0.0,
        "samples_acked_rss_mb": m.samples,
        "acks": {"ok": r.ok if r else 0, "not_aa": r.not_aa if r else 0,
                 "mismatched": r.mismatched if r else 0, "errors": r.errors if r else 0,
                 "examples": list(r.examples) if r else [], "warmup_ok": m.warmup_ok},
    }


def acks_ok(*parts: Throughput | Memory) -> bool:
    """True when every ACK of every phase, warm-ups included, was AA with the right MSA-2."""
    return all(p.warmup_ok and p.report is not None and not p.report.failed for p in parts)


def summarize(s: Settings, bare: Throughput, engine: Throughput, memory: Memory | None,
              extra: dict[str, Any], db_floor: float = 0.0) -> dict[str, Any]:
    """Everything worth keeping from one run (`db_floor`: bench.floor's msg/s)."""
    ratio = engine.report.msg_per_s / bare.report.msg_per_s if bare.report.msg_per_s else 0.0
    ceiling = db_floor / bare.report.msg_per_s if bare.report.msg_per_s else 0.0
    over_floor = engine.report.msg_per_s / db_floor if db_floor else 0.0
    cpu_target = CPU_TARGET_US.get(tuple(sorted(s.mix)))
    parts: list[Throughput | Memory] = [bare, engine] + ([memory] if memory else [])
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "loadavg_at_start": extra.pop("loadavg", None)},
        "settings": asdict(s),
        "bare": throughput_dict(bare),
        "engine": throughput_dict(engine),
        # Printed, no longer a target: the CPU per message and the floor ratio replaced it.
        "engine_over_bare_throughput": {"ratio": round(ratio, 3), "target": "", "verdict": ""},
        "db_floor": {"msg_per_s": round(db_floor, 1), "over_bare": round(ceiling, 3),
                     "engine_over_floor": round(over_floor, 3), "target": f">= {FLOOR_TARGET}",
                     "verdict": _verdict(over_floor >= FLOOR_TARGET)},
        "cpu_target_us": cpu_target,
        "rss": memory_dict(memory) if memory else None,
        "acks_all_ok": acks_ok(*parts),
        **extra,
    }


def render(d: dict[str, Any]) -> str:
    """The summary table, one figure a row: bare, engine, ratio or target, verdict."""
    b, e, ratio, rss = d["bare"], d["engine"], d["engine_over_bare_throughput"], d["rss"]
    floor_ = d.get("db_floor") or {"msg_per_s": 0.0, "over_bare": 0.0}
    rows = [
        ("over TLS" if d["settings"].get("tls") else "", "bare", "engine", "target", ""),
        ("throughput (msg/s)", f"{b['msg_per_s']:.0f}", f"{e['msg_per_s']:.0f}", "", ""),
        ("engine/bare throughput", "", f"{ratio['ratio']:.3f}", ratio["target"], ratio["verdict"]),
        ("database alone (msg/s)", "", f"{floor_['msg_per_s']:.0f}", "",
         f"{floor_['over_bare']:.3f} of bare (bench.floor)"),
        *_floor_row(floor_),
        ("ACK p50 (ms)", f"{b['ack_p50_ms']:.2f}", f"{e['ack_p50_ms']:.2f}", "", ""),
        ("ACK p99 (ms)", f"{b['ack_p99_ms']:.2f}", f"{e['ack_p99_ms']:.2f}", "", ""),
        ("server CPU (us/msg)", f"{b['server_cpu_us_per_msg']:.1f}",
         f"{e['server_cpu_us_per_msg']:.1f}", *_cpu_target(d.get("cpu_target_us"),
                                                         e["server_cpu_us_per_msg"])),
        ("  reactor thread", f"{b['reactor_thread_cpu_us_per_msg']:.1f}",
         f"{e['reactor_thread_cpu_us_per_msg']:.1f}", "", ""),
        ("  other threads", f"{b['other_threads_cpu_us_per_msg']:.1f}",
         f"{e['other_threads_cpu_us_per_msg']:.1f}", "", ""),
    ]
    if rss:
        rows += [
            ("RSS after warm-up (MB)", "", f"{rss['rss_after_warmup_mb']:.1f}", "", ""),
            (f"RSS after {rss['messages']} more (MB)", "", f"{rss['rss_end_mb']:.1f}", "", ""),
            ("RSS growth per 100k (MB)", "", f"{rss['growth_per_100k_mb']:.1f}",
             rss["target_per_100k_mb"], rss["verdict"]),
        ]
    rows += [
        ("engine: avg commit batch", "", f"{d.get('avg_commit_batch') or '-'}", "", ""),
        ("engine: error events logged", "", f"{d.get('engine_error_events', '-')}", "", ""),
        ("engine: exit status", "", f"{d.get('engine_exit_status', '-')}", "", ""),
        ("ACKs (all AA, MSA-2 right)", "", "yes" if d["acks_all_ok"] else "NO", "", ""),
    ]
    return "\n".join(f"{a:<30}{b_:>10}{c:>10}{t:>10}  {v}".rstrip() for a, b_, c, t, v in rows)


def _floor_row(floor_: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """engine / database floor throughput, when the run measured the floor."""
    if "engine_over_floor" not in floor_:
        return []
    return [("engine/database alone", "", f"{floor_['engine_over_floor']:.3f}", floor_["target"],
             floor_["verdict"])]


def _cpu_target(target: float | None, measured: float) -> tuple[str, str]:
    """The server CPU target of the run's mix (REF, REF+SIU) and its verdict; none for others."""
    if target is None:
        return "", ""
    return f"<= {target:g}", _verdict(measured <= target)


def write_results(path: Path, summary: dict[str, Any]) -> None:
    """Keep the summary as JSON under bench/results/ and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwritten to {path.relative_to(path.parent.parent.parent)}")
