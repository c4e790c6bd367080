"""How fast the web face answers on a large database: every API listing, detail and the
health and metrics paths, timed over real HTTP against a running engine.

    python -m bench.web [--referrals 100000] [--messages 1000000] [--repeat 20] [--keep-tmp]

1. A SQLite database is filled straight through the store's tables (seconds instead of the
   hours real traffic would take): `--messages` message rows (REF^I12 and SIU^S12 bodies, a year
   of arrivals, about 1.5% errored or rejected), `--referrals` referrals over a year in every
   status (with keys, two patient ids each and their history), and appointments for the booked
   ones (1% unmatched, 0.5% ambiguous with two candidates).
2. The engine starts on it with `http:`; an admin user and a bearer token are made with the CLI,
   and a second admin logs in to the console as a browser would.
3. Each API path, then each console page, is fetched twice to warm up, then `--repeat` times; the median, p95 and maximum
   response times are printed, with the target (under 200 ms) beside them.  Figures are printed,
   never judged by the exit status: the machine may be busy.  A non-200 answer makes it 1.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from bench.measure import HOST
from bench.procs import free_port, scratch_dir
from bench.run import engine_server
from bench.synth import REF_I12, SIU_S12, dated
from engine.ledger.lifecycle import BOOKED_STATES, STATUSES
from engine.store.database import open_database
from engine.store.schema import (
    appointments,
    messages,
    referral_events,
    referral_keys,
    referral_patients,
    referrals,
)

TARGET_MS = 200.0
BENCH_PASSWORD = "bench-password-1"  # a throw-away user of a throw-away database
CHUNK = 10_000
SPECIALTIES = ("NEURO", "CARDIO", "DERM", "ORTHO", "ONC")
# Rough shares of a live ledger: most referrals booked or done, a tail waiting or lost.
STATUS_WEIGHTS = {"pending": 8, "accepted": 4, "rejected": 2, "scheduled": 20, "rescheduled": 3,
                  "completed": 25, "no_show": 3, "cancelled": 5, "expired": 5, "closed": 25}
assert set(STATUS_WEIGHTS) == set(STATUSES)


def marks(status: str, at: datetime) -> dict[str, Any]:
    """What the ledger keeps on a referral's row of its history, for a referral now in
    `status` that got there three days after `at`."""
    booked = status in ("scheduled", "rescheduled", "completed", "no_show", "closed")
    return {"first_scheduled_at": at + timedelta(days=3) if booked else None,
            "ever_seen": status in ("completed", "closed"), "ever_no_show": status == "no_show"}


def _chunks(total: int) -> Iterator[range]:
    for start in range(0, total, CHUNK):
        yield range(start, min(start + CHUNK, total))


def _message_rows(ids: range, start: datetime, step: timedelta) -> list[dict[str, Any]]:
    rows = []
    for i in ids:
        cid = f"W{i:09d}"
        siu = i % 5 >= 2
        template = SIU_S12 if siu else REF_I12
        raw = dated(template, start.timestamp()).format(ts="20260101120000", cid=cid, seq=cid, ref=f"WR{i % 100000:08d}",
                              mrn=5000000 + i % 100000, mrn2=6000000 + i % 100000,
                              name="ALPHA").encode("ascii")
        status = "rejected" if i % 200 == 0 else "errored" if i % 100 == 1 else "accepted"
        rows.append({"id": i + 1, "channel": "bench", "received_at": start + step * i,
                     "peer": "127.0.0.1", "sending_application": "SCHED" if siu else "PCPEHR",
                     "sending_facility": "SOUTHHOSP" if siu else "NORTHCLINIC",
                     "control_id": cid, "dedupe_key": f"x|y|{cid}",
                     "message_type": "SIU^S12" if siu else "REF^I12", "version": "2.5.1",
                     "processing_id": "P", "size": len(raw), "digest": "0" * 64, "raw": raw,
                     "status": status, "stage": "content",
                     "error_code": "" if status == "accepted" else "101",
                     "ack_codes": {"accepted": "AA", "errored": "AE", "rejected": "AR"}[status],
                     "ledger_effect": ""})
    return rows


def _referral_rows(ids: range, start: datetime, step: timedelta, messages_total: int,
                   rng: random.Random) -> dict[Any, list[dict[str, Any]]]:
    statuses = rng.choices(list(STATUS_WEIGHTS), list(STATUS_WEIGHTS.values()), k=len(ids))
    out: dict[Any, list[dict[str, Any]]] = {referrals: [], referral_keys: [],
                                            referral_patients: [], referral_events: [],
                                            appointments: []}
    for i, status in zip(ids, statuses, strict=True):
        rid, at = i + 1, start + step * i
        key = f"WR{i:08d}"
        out[referrals].append({
            "id": rid, "key_id": key, "key_authority": "PCPEHR", "source": "REF",
            "owner": "PCPEHR", "status": status, "priority": "SAR"[i % 3],
            "specialty": SPECIALTIES[i % len(SPECIALTIES)], "window_start": at,
            "window_end": at + timedelta(days=180), "providers": "[]", "diagnoses": "[]",
            "review": False, "received_at": at, "updated_at": at + timedelta(days=3),
            "due_at": at + timedelta(days=(3, 14, 30)[i % 3]),
            **marks(status, at)})
        out[referral_keys].append({"referral_id": rid, "kind": "RF1-6", "key_id": key,
                                   "key_authority": "PCPEHR"})
        out[referral_patients].extend(
            {"referral_id": rid, "patient_id": str(base + i), "authority": authority}
            for base, authority in ((5000000, "NORTHCLINIC"), (6000000, "SOUTHHOSP")))
        history = [("pending", at)] + ([] if status == "pending" else [(status, at + timedelta(days=3))])
        before = None
        for n, (after, when) in enumerate(history):
            out[referral_events].append({
                "referral_id": rid, "message_id": (2 * i + n) % messages_total + 1,
                "control_id": f"W{(2 * i + n) % messages_total:09d}", "at": when,
                "event": f"referral.{after}", "status_before": before, "status_after": after,
                "rule": "bench"})
            before = after
        if status in BOOKED_STATES or status in ("completed", "no_show", "closed"):
            out[appointments].append(_appointment(i, rid, at))
    return out


def _appointment(i: int, rid: int, at: datetime) -> dict[str, Any]:
    linked: int | None = rid
    match, via, candidates = "matched", "SCH-26", "[]"
    if i % 100 == 7:
        match, via, linked = "unmatched", "", None
    elif i % 200 == 9:
        match, via, candidates, linked = "ambiguous", "", f"[{rid}, {rid + 1}]", None
    return {"key_id": f"WA{i:08d}", "key_authority": "SCHED", "status": "booked",
            "filler_status": "Booked", "start": at + timedelta(days=20), "duration_min": 30,
            "specialty": SPECIALTIES[i % len(SPECIALTIES)],
            "patient_ids": f'["{6000000 + i}"]', "match": match, "referral_id": linked,
            "via": via or None, "candidates": candidates, "created_at": at + timedelta(days=3),
            "updated_at": at + timedelta(days=3)}


def fill(url: str, referral_count: int, message_count: int) -> None:
    """The database at `url` with the rows described in the module's docstring."""
    db = open_database(url, synchronous="OFF")
    now = datetime.now().replace(microsecond=0)
    start = now - timedelta(days=365)
    rng = random.Random(1)
    with db.begin() as conn:
        for ids in _chunks(message_count):
            conn.execute(insert(messages), _message_rows(ids, start, timedelta(days=365) / message_count))
        for ids in _chunks(referral_count):
            tables = _referral_rows(ids, start, timedelta(days=365) / referral_count,
                                    message_count, rng)
            for table, rows in tables.items():
                if rows:
                    conn.execute(insert(table), rows)
    db.dispose()


def _cli(config: Path, *args: str, stdin: str = "") -> str:
    script = Path(sys.executable).with_name("hl7-engine")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "engine"]
    done = subprocess.run([*command, *args, "--config", str(config)], input=stdin, text=True,
                          capture_output=True, check=True)
    return done.stdout


def bench_user(config: Path, role: str, name: str = "bench") -> None:
    """A new user with `role` and the password BENCH_PASSWORD, made with the CLI."""
    _cli(config, "user", "add", name, "--role", role, "--password-stdin",
         stdin=BENCH_PASSWORD + "\n")


def console_login(base: str, config: Path, role: str, name: str = "bench"
                  ) -> urllib.request.OpenerDirector:
    """A browser-like client logged in to the console as a new user `name` with `role`."""
    bench_user(config, role, name)
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    with opener.open(base + "/login", timeout=10) as r:
        form = r.read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None, "the login form has no CSRF token"
    body = urllib.parse.urlencode({"csrf": csrf.group(1), "name": name,
                                   "password": BENCH_PASSWORD}).encode()
    with opener.open(base + "/login", data=body, timeout=10) as r:
        r.read()  # 303 to the dashboard, which the opener follows with the session cookie
    return opener


def bench_token(config: Path) -> str:
    """A bearer token of a new admin user `bench`, made with the CLI."""
    bench_user(config, "admin")
    return _cli(config, "token", "create", "bench").strip().splitlines()[-1]


def get(url: str, token: str, opener: urllib.request.OpenerDirector | None = None
        ) -> tuple[int, float, bytes]:
    """(status, milliseconds, body) of a GET with the bearer token, or through `opener` (a
    console session) when given."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}
                                     if opener is None else {})
    t0 = time.perf_counter()
    try:
        with (opener or urllib.request.build_opener()).open(request, timeout=60) as answer:
            body = answer.read()
            status = answer.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    return status, (time.perf_counter() - t0) * 1000, body


def paths(base: str, token: str, referral_count: int, message_count: int) -> list[str]:
    """The paths to time; one is a page deep in the message log, reached by its cursor."""
    found = ["/healthz", "/readyz", "/metrics", "/api/queue", "/api/referrals",
             "/api/referrals?status=pending", "/api/referrals?overdue=1",
             "/api/referrals?specialty=NEURO", f"/api/referrals/WR{referral_count // 2:08d}%5EPCPEHR",
             "/api/appointments", "/api/worklist", "/api/report",
             "/api/report?by=specialty", "/api/messages", "/api/messages?status=errored",
             "/api/messages?type=SIU%5ES12", f"/api/messages/{message_count // 2}"]
    cursor = None
    for _ in range(20):
        _, _, body = get(f"{base}/api/messages?limit=500" + (f"&cursor={cursor}" if cursor else ""),
                          token)
        cursor = json.loads(body).get("next_cursor")
    if cursor:
        found.append(f"/api/messages?cursor={cursor}")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.web", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--referrals", type=int, default=100_000)
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--keep-tmp", action="store_true")
    a = p.parse_args(argv)
    with scratch_dir("hl7-bench-web-", a.keep_tmp) as tmp:
        t0 = time.perf_counter()
        fill(f"sqlite:///{tmp / 'bench.db'}", a.referrals, a.messages)
        print(f"filled: {a.referrals} referrals, {a.messages} messages "
              f"in {time.perf_counter() - t0:.0f} s", flush=True)
        port = free_port(HOST)
        with engine_server(tmp, {"http": {"listen": {"host": HOST, "port": port}}}):
            base = f"http://{HOST}:{port}"
            token = bench_token(tmp / "bench.yaml")
            console = console_login(base, tmp / "bench.yaml", "admin", "console")
            return _time_all(base, token, a, console)


def pages(referral_count: int, message_count: int) -> list[str]:
    """The console's pages to time, as an admin sees them."""
    return ["/", "/dashboard/panel", "/queues", "/messages", "/messages?status=errored",
            f"/messages/{message_count // 2}", "/worklist", "/referrals",
            "/referrals?status=pending", f"/referrals/WR{referral_count // 2:08d}%5EPCPEHR",
            "/report", "/report?by=specialty"]


def _time_all(base: str, token: str, a: argparse.Namespace,
              console: urllib.request.OpenerDirector) -> int:
    failed = 0
    print(f"{'path':<44} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  (target < {TARGET_MS:.0f})")
    timed = [(p, None) for p in paths(base, token, a.referrals, a.messages)] + [
        (p, console) for p in pages(a.referrals, a.messages)]
    for path, opener in timed:
        times = []
        for n in range(a.repeat + 2):
            status, ms, _ = get(base + path, token, opener)
            if status != 200:
                print(f"{path}: HTTP {status}", file=sys.stderr)
                failed += 1
                break
            if n >= 2:
                times.append(ms)
        if times:
            times.sort()
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            shown = path if len(path) <= 44 else path[:41] + "..."
            print(f"{shown:<44} {statistics.median(times):8.1f} {p95:8.1f} {times[-1]:8.1f}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
