"""Ledger scenario: does ingest stay flat, and do the ledger's views stay fast, as the ledger grows?

    python -m bench.ledger [--preload 1000000] [--messages 6000] [--connections 8] [--repeat 5]

Two runs of the same load, rounds of four messages: a new REF^I12, the SIU^S12 that books it
(SCH-26 names it), an SIU^S13 that reschedules that appointment and an SIU^S14 that modifies it:
  * "empty ledger": a fresh database;
  * "large ledger": the same, into a ledger that already holds `--preload` referrals received over
    the last year, in every status, each with its key, two patient ids and its history, a third
    of them with a matched appointment.
Preloaded rows are written straight into the database before the engine starts (the same rows
the engine would write, in a minute instead of hours).  Target: large within 1.5x of empty (msg/s).

Then, on the large ledger, the views a coordinator opens are timed over HTTP (the API runs the
same view functions as the CLI): a referral by id (`referral ID`), the worklist's first page
(`worklist`), the referrals list's first page, and the report over the last year (`report`).
Targets: under 50 ms each, the report under 3 s.  Figures are printed, never judged by the exit
status (the machine may be busy); a wrong ACK makes it 1.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert

from bench.measure import HOST, Settings, measure
from bench.procs import free_port, scratch_dir
from bench.run import engine_server
from bench.synth import Message, Synth, dated
from bench.web import STATUS_WEIGHTS, bench_token, get, marks
from engine.store.database import open_database
from engine.store.schema import (
    appointment_keys,
    appointments,
    referral_events,
    referral_keys,
    referral_patients,
    referrals,
)

CHUNK = 20_000
WAITING = ("pending", "accepted")  # the statuses the sweep's time rules act on
SPECIALTIES = ("NEURO", "CARDIO", "DERM", "ORTHO", "ONC")
VIEW_TARGET_MS, REPORT_TARGET_MS = 50.0, 3000.0


class Rounds(Synth):
    """REF, then the S12 booking it, the S13 rescheduling and the S14 modifying that booking."""

    def __init__(self) -> None:
        super().__init__(("ref", "siu"))
        self._count = itertools.count(0)

    def next(self) -> Message:
        n = next(self._count)
        round_, step = divmod(n, 4)
        cid = f"{self._prefix}{n:08d}"
        appt = f"{self._prefix}{round_:08d}"
        values = {"ts": self._ts, "cid": cid, "seq": appt, "ref": f"BR-{appt}",
                  "mrn": 1000001 + round_, "mrn2": 2000001 + round_, "name": "ALPHA"}
        if step == 0:
            return Message(cid, self._templates["ref"].format(**values).encode("ascii"))
        text = self._templates["siu"].format(**values)
        if step == 2:  # the visit a day later
            visit, later = (dated("{visit}", self._now + d * 86_400.0)[:8] for d in (0, 1))
            text = text.replace("SIU^S12^", "SIU^S13^").replace(visit, later)
        elif step == 3:
            text = text.replace("SIU^S12^", "SIU^S14^").replace("|30|min", "|45|min")
        return Message(cid, text.encode("ascii"))


def _chunks(first: int, count: int) -> Iterator[range]:
    for start in range(first, first + count, CHUNK):
        yield range(start, min(start + CHUNK, first + count))


def _rows(ids: range, now: datetime, rng: random.Random) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = {t: [] for t in (
        referrals, referral_keys, referral_patients, referral_events, appointments,
        appointment_keys)}
    statuses = rng.choices(list(STATUS_WEIGHTS), list(STATUS_WEIGHTS.values()), k=len(ids))
    for i, status in zip(ids, statuses, strict=True):
        rid, key = i + 1, f"BR-PRE{i:08d}"
        at = now - timedelta(seconds=rng.randrange(365 * 86400))
        out[referrals].append({
            "id": rid, "key_id": key, "key_authority": "PCPEHR", "source": "REF",
            "owner": "PCPEHR", "status": status, "priority": "SAR"[i % 3],
            "specialty": SPECIALTIES[i % len(SPECIALTIES)], "window_start": at,
            "window_end": max(at, now) + timedelta(days=180), "providers": "[]",
            "diagnoses": "[]", "review": False, "received_at": at, "updated_at": at,
            # a swept ledger: what still waits is neither past its window nor overdue
            # (else the engine's start-up sweep would work through it during the timed run)
            "due_at": (now if status in WAITING else at) + timedelta(days=(3, 14, 30)[i % 3]),
            **marks(status, at)})
        out[referral_keys].append({"referral_id": rid, "kind": "RF1-6", "key_id": key,
                                   "key_authority": "PCPEHR"})
        out[referral_patients].extend(
            {"referral_id": rid, "patient_id": str(base + i), "authority": authority}
            for base, authority in ((3000000, "NORTHCLINIC"), (4000000, "SOUTHHOSP")))
        out[referral_events].append({"referral_id": rid, "at": at, "event": "referral.pending",
                                     "status_after": "pending", "rule": "bench"})
        if i % 3 == 0:
            out[appointments].append({
                "id": i // 3 + 1, "key_id": f"PRE{i:08d}", "key_authority": "SCHED",
                "status": "booked", "filler_status": "Booked", "start": at + timedelta(days=20),
                "duration_min": 30, "specialty": SPECIALTIES[i % len(SPECIALTIES)],
                "patient_ids": f'["{4000000 + i}"]', "match": "matched", "referral_id": rid,
                "via": "SCH-26", "candidates": "[]", "created_at": at, "updated_at": at})
            out[appointment_keys].append({"appointment_id": i // 3 + 1, "kind": "SCH-26",
                                          "key_id": key, "key_authority": "PCPEHR"})
    return out


def preload(url: str, count: int) -> None:
    """`count` referrals BR-PRE<n> received over the last year (see the module's docstring)."""
    db = open_database(url, synchronous="OFF")
    now, rng = datetime.now().replace(microsecond=0), random.Random(3)
    with db.begin() as conn:
        for ids in _chunks(0, count):
            for table, rows in _rows(ids, now, rng).items():
                if rows:
                    conn.execute(insert(table), rows)
    db.dispose()


def run(label: str, extra: int, s: Settings, repeat: int, keep: bool) -> float:
    with scratch_dir("hl7-bench-ledger-", keep) as tmp:
        if extra:
            preload(f"sqlite:///{tmp / 'bench.db'}", extra)
        port = free_port(HOST)
        with engine_server(tmp, {"http": {"listen": {"host": HOST, "port": port}}}) as server:
            result = measure(label, server, s, Rounds())
            print(result.line(), flush=True)
            if result.report.failed:
                raise RuntimeError(f"{label}: wrong ACKs")
            if extra:
                time_views(f"http://{HOST}:{port}", bench_token(tmp / "bench.yaml"), extra,
                           repeat)
        return float(result.report.msg_per_s)


def time_views(base: str, token: str, preloaded: int, repeat: int) -> None:
    since = (datetime.now() - timedelta(days=365)).strftime("%Y-%m-%d")
    views = (("referral ID", f"/api/referrals/BR-PRE{preloaded // 2:08d}%5EPCPEHR",
              VIEW_TARGET_MS),
             ("worklist", "/api/worklist", VIEW_TARGET_MS),
             ("referrals, first page", "/api/referrals", VIEW_TARGET_MS),
             ("referrals?status=pending", "/api/referrals?status=pending", VIEW_TARGET_MS),
             ("report, last year", f"/api/report?since={since}", REPORT_TARGET_MS))
    for name, path, target in views:
        times = []
        for _ in range(repeat + 1):
            status, ms, _body = get(base + path, token)
            if status != 200:
                print(f"{name}: HTTP {status}", file=sys.stderr)
                break
            times.append(ms)
        if times:
            median = statistics.median(times[1:] or times)
            verdict = "PASS" if median < target else "MISS"
            print(f"  {name:<26} median {median:8.1f} ms (target < {target:.0f}: {verdict})",
                  flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ledger", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preload", type=int, default=1_000_000)
    p.add_argument("--messages", type=int, default=6000)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--warmup", type=int, default=400)
    p.add_argument("--repeat", type=int, default=5, help="timed fetches of each view")
    p.add_argument("--keep-tmp", action="store_true")
    a = p.parse_args(argv)
    s = Settings(a.messages, a.connections, 0, a.warmup, ("ref", "siu"))
    try:
        empty = run("empty ledger", 0, s, a.repeat, a.keep_tmp)
        large = run(f"+{a.preload} referrals", a.preload, s, a.repeat, a.keep_tmp)
    except RuntimeError as exc:
        print(f"bench.ledger: {exc}", file=sys.stderr)
        return 1
    ratio = empty / large if large else float("inf")
    verdict = "PASS" if ratio <= 1.5 else "MISS"
    print(f"\nmsg/s (REF, S12, S13, S14): empty ledger {empty:.0f}, with {a.preload} referrals "
          f"{large:.0f}: empty/large = {ratio:.2f} (target <= 1.5: {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
