"""The soak's checks: what a run saw, judged PASS or FAIL, as JSON and as the printed report.

The valid-message checks and the engine's survival decide the exit status; memory and file
descriptors are judged too but never fail a run (the machine may be shared).  "Growth after the
first minute" is the last sample less the first one taken at 60 s (at half the run, when the
run is shorter), so start-up and warm caches are not counted as a leak.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import percentile
from bench.synth import Synth

RSS_TOLERANCE_MB = 20.0  # growth after the first minute, at most
FD_TOLERANCE = 8  # open descriptors: growth after the first minute, and idle end over idle start


@dataclass(frozen=True, slots=True)
class Outcome:
    """Everything a soak run observed, before judging."""

    sent: list[str]
    acks: dict[str, list[str]]
    latencies_ns: list[int]
    problems: dict[str, int]
    stored: dict[str, int] | None  # valid control id -> rows in `messages` (None: unreadable)
    hostile_stored: dict[str, dict[str, int]]  # kind -> status -> rows
    samples: list[tuple[float, float, int]]  # (seconds, RSS MiB, open fds)
    idle: tuple[float, float, int] | None  # the sample taken once the traffic had stopped
    died_at: float | None
    alive: bool
    fresh: str | None  # MSA-1 of the fresh message after the traffic
    fresh_ms: float
    exit_status: int | None
    hostile: dict[str, dict[str, Any]]


def read_database(path: Path, synth: Synth, digests: dict[str, str]
                  ) -> tuple[dict[str, int] | None, dict[str, dict[str, int]]]:
    """Rows per valid control id (those of `synth`), and the other rows by the hostile kind
    whose frame had their digest (`digests`; "unknown" for none) and by status."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            valid = dict(db.execute(
                "SELECT control_id, COUNT(*) FROM messages WHERE control_id LIKE ? "
                "GROUP BY control_id", (synth._prefix + "%",)).fetchall())
            rows = db.execute("SELECT digest, status, COUNT(*) FROM messages "
                              "WHERE control_id NOT LIKE ? GROUP BY 1, 2",
                              (synth._prefix + "%",)).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return None, {}
    hostile: dict[str, dict[str, int]] = {}
    for digest, status, count in rows:
        by_status = hostile.setdefault(digests.get(digest, "unknown"), {})
        by_status[status] = by_status.get(status, 0) + count
    return valid, hostile


def _check(name: str, ok: bool, detail: str, fatal: bool = True) -> dict[str, Any]:
    return {"check": name, "verdict": "PASS" if ok else "FAIL", "detail": detail,
            "fails_the_run": fatal}


def _acks(o: Outcome) -> dict[str, Any]:
    sent = set(o.sent)
    one = sum(o.acks.get(c) == ["AA"] for c in o.sent)
    missing = sum(c not in o.acks for c in o.sent)
    several = sum(len(o.acks.get(c, ())) > 1 for c in o.sent)
    not_aa = sum(any(code != "AA" for code in o.acks.get(c, ())) for c in o.sent)
    stray = sum(len(v) for k, v in o.acks.items() if k not in sent)
    ok = bool(o.sent) and one == len(o.sent) and not stray
    return _check("every valid message got exactly one AA with the right MSA-2", ok,
                  f"{one}/{len(o.sent)} exactly one AA; {missing} without an ACK, {not_aa} with "
                  f"another MSA-1, {several} answered more than once, {stray} ACKs naming no "
                  f"message sent")


def _stored(o: Outcome) -> dict[str, Any]:
    if o.stored is None:
        return _check("each valid control id is stored exactly once", False,
                      "the database could not be read")
    once = sum(o.stored.get(c) == 1 for c in o.sent)
    missing = sum(c not in o.stored for c in o.sent)
    several = sum(o.stored.get(c, 0) > 1 for c in o.sent)
    return _check("each valid control id is stored exactly once",
                  bool(o.sent) and once == len(o.sent),
                  f"{once}/{len(o.sent)} once; {missing} missing, {several} stored more than "
                  f"once, {len(o.stored) - len(set(o.sent) & set(o.stored))} stored unsent")


def _alive(o: Outcome) -> dict[str, Any]:
    if not o.alive:
        return _check("the engine is alive at the end and answers a fresh message", False,
                      f"the engine exited (status {o.exit_status}) after about {o.died_at} s")
    return _check("the engine is alive at the end and answers a fresh message", o.fresh == "AA",
                  f"fresh message answered {o.fresh} in {o.fresh_ms:.1f} ms" if o.fresh
                  else "alive, but no ACK for a fresh message within 10 s")


def _series(o: Outcome, index: int, minutes: float) -> dict[str, Any]:
    """first/last/max of one sampled figure, and its growth after the first minute."""
    values = [(s[0], s[index]) for s in o.samples]
    if not values:
        return {}
    after = min(60.0, minutes * 30)
    base_at, base = next(((t, v) for t, v in values if t >= after), values[-1])
    return {"first": values[0][1], "last": values[-1][1], "max": max(v for _, v in values),
            "baseline_at_s": base_at, "growth_after_baseline": round(values[-1][1] - base, 1),
            "idle_end": o.idle[index] if o.idle else None}


def _flat(o: Outcome, minutes: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rss, fds = _series(o, 1, minutes), _series(o, 2, minutes)
    if not rss:
        return [_check("RSS and open fds stay flat", False, "no samples", fatal=False)], {}
    rss_ok = rss["growth_after_baseline"] <= RSS_TOLERANCE_MB
    idle_fds = fds["idle_end"] - fds["first"] if fds["idle_end"] is not None else 0
    fds_ok = fds["growth_after_baseline"] <= FD_TOLERANCE and idle_fds <= FD_TOLERANCE
    checks = [
        _check("RSS stays flat", rss_ok,
               f"first {rss['first']:.1f}, last {rss['last']:.1f}, max {rss['max']:.1f} MiB; "
               f"{rss['growth_after_baseline']:+.1f} MiB after {rss['baseline_at_s']:g} s "
               f"(at most +{RSS_TOLERANCE_MB:g})", fatal=False),
        _check("open fds stay flat", fds_ok,
               f"first {fds['first']}, last {fds['last']}, max {fds['max']}; "
               f"{fds['growth_after_baseline']:+g} after {fds['baseline_at_s']:g} s, "
               f"{idle_fds:+g} idle end over idle start (at most +{FD_TOLERANCE})", fatal=False),
    ]
    return checks, {"rss_mb": rss, "open_fds": fds}


def log_events(path: Path) -> dict[str, int]:
    """Warning and error events in the engine's log, by name."""
    counts: Counter[str] = Counter()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        if '"level":"warning"' in line or '"level":"error"' in line:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            counts[f"{event.get('level')} {event.get('event')}"] += 1
    return dict(sorted(counts.items()))


def judge(o: Outcome, a: argparse.Namespace, kinds: tuple[str, ...], tmp: Path
          ) -> dict[str, Any]:
    """The run's summary: settings, checks (PASS/FAIL), figures; `passed` sets the exit."""
    flat, series = _flat(o, a.minutes)
    checks = [_acks(o), _stored(o), _alive(o), *flat]
    lat = sorted(o.latencies_ns)
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
        "settings": {"minutes": a.minutes, "valid_connections": a.valid_connections,
                     "valid_rate": a.valid_rate, "hostile_kinds": list(kinds),
                     "hostile_interval_s": a.hostile_interval, "seed": a.seed},
        "passed": all(c["verdict"] == "PASS" for c in checks if c["fails_the_run"]),
        "checks": checks,
        "valid": {"sent": len(o.sent), "problems": o.problems,
                  "ack_p50_ms": round(percentile(lat, 0.5) / 1e6, 2),
                  "ack_p99_ms": round(percentile(lat, 0.99) / 1e6, 2),
                  "ack_max_ms": round((lat[-1] if lat else 0) / 1e6, 2)},
        **series,
        "hostile": {k: {**v, "stored": o.hostile_stored.get(k, {})} for k, v in o.hostile.items()},
        "stored_from_no_frame_sent": o.hostile_stored.get("unknown", {}),
        "engine": {"died_at_s": o.died_at, "exit_status": o.exit_status,
                   "log_events": log_events(tmp / "engine.log")},
    }


def render(d: dict[str, Any]) -> str:
    v = d["valid"]
    lines = [f"valid: {v['sent']} sent, ACK p50 {v['ack_p50_ms']:.2f} ms, p99 "
             f"{v['ack_p99_ms']:.2f} ms, max {v['ack_max_ms']:.2f} ms"
             + (f"; problems: {v['problems']}" if v["problems"] else "")]
    lines += [f"{c['verdict']}  {c['check']}: {c['detail']}" for c in d["checks"]]
    lines.append(f"{'hostile kind':<12}{'attempts':>9}{'frames':>8}{'bytes':>10}  what came back"
                 "  |  stored by status")
    for kind, h in d["hostile"].items():
        answers = ", ".join(f"{k} {n}" for k, n in h["outcomes"].items()) or "-"
        stored = ", ".join(f"{k} {n}" for k, n in h["stored"].items()) or "none"
        lines.append(f"{kind:<12}{h['attempts']:>9}{h['frames']:>8}{h['bytes_sent']:>10}  "
                     f"{answers}  |  {stored}")
    e = d["engine"]
    lines.append(f"engine: exit status {e['exit_status']}"
                 + (f", died after about {e['died_at_s']} s" if e["died_at_s"] else "")
                 + f"; warnings/errors logged: {e['log_events'] or 'none'}")
    lines.append("soak: PASS" if d["passed"] else "soak: FAIL")
    return "\n".join(lines)
