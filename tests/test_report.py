"""`hl7-engine report` (engine/store/ledger/report.py) on a real ledger, built through the real pipeline
so the history rows are the ones the engine writes: the story corpus replayed one file a day,
a few referrals of our own around it, the manual link and the expiry sweep.  On SQLite and
PostgreSQL.

Timeline (day N = BASE + N days, the pipeline's clock, so received_at and history times):
story file `NNN_…` at day NNN // 10; R-OLD at day -1 and R-LATE at day 40 (outside the cohort
[day 0, day 40)); R-EDGE at day 0 (on the boundary: inside); at day 39 QUEBEC's order is
cancelled after it was completed, and R-EXP (specialty `neuro`, RF1-8 at day 42) arrives; at day
41 the operator links VICTOR's ambiguous booking; the report runs at day 45, after the sweep
expired R-EXP.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from enginectl import ROOT, SAMPLES, sample_payload, write_config
from sqlalchemy import Engine

from engine.ack import AckBuilder
from engine.cli import main
from engine.config import parse_config
from engine.ledger.settings import LedgerSettings
from engine.mappings.changes import EI
from engine.pipeline import Job, Pipeline
from engine.store.database import open_database
from engine.store.ledger.ingest import link_manually
from engine.store.ledger.report import Period, build_report, tables
from engine.store.ledger.sweep import sweep

STORY = SAMPLES / "story"
ORDER_SPECIALTIES = {"CONSULT-NEUR": "NEUR", "CONSULT-DERM": "DERM"}
CHANNEL = parse_config({"channels": [{
    **yaml.safe_load((ROOT / "channels.yaml").read_text())["channels"][0],
    "ledger": {"order_specialties": ORDER_SPECIALTIES}}]}).channels[0]
BASE = datetime(2026, 9, 1)  # naive UTC, as the ledger stores it
NOW = BASE + timedelta(days=45)
COHORT = Period(BASE, BASE + timedelta(days=40))
STATUSES = ("pending", "accepted", "rejected", "scheduled", "rescheduled", "completed",
            "no_show", "cancelled", "expired", "closed")


def day(n: float) -> datetime:
    return BASE + timedelta(days=n)


def _ref(key: str, window_end: str | None = "20270301", specialty: str = "NEURO",
         priority: str = "R^Routine") -> bytes:
    """ref_i12_v251 as a new referral: its own RF1-6 and MSH-10, RF1-8 (None: the sample's,
    long past), PRD(RT)-4.1 and RF1-2."""
    raw = sample_payload("ref_i12_v251.hl7").replace(b"MFP-R-1001", key.encode())
    raw = raw.replace(b"REF-I12-V251", f"C-{key}".encode())
    raw = raw.replace(b"|NEURO^^^SOUTHHOSP|", f"|{specialty}^^^SOUTHHOSP|".encode())
    raw = raw.replace(b"|R^Routine^HL70280|", f"|{priority}^HL70280|".encode())
    return raw if window_end is None else raw.replace(b"|20360712|", f"|{window_end}|".encode())


def _story(name: str) -> bytes:
    return (STORY / name).read_bytes().replace(b"\n", b"\r")


def _quebec_cancelled() -> bytes:
    """ROMEO's ORC CA (file 160) sent for QUEBEC's order, already completed (file 290)."""
    raw = _story("160_orm_ca_romeo.hl7").replace(b"ST-ORD-3002", b"ST-ORD-3001")
    raw = raw.replace(b"ST-160-ORM-CA", b"ST-395-ORM-CA")
    return raw.replace(b"100026^", b"100023^").replace(b"200026^", b"200023^")


def build_ledger(url: str) -> Engine:
    """The ledger of the module docstring's timeline."""
    db = open_database(url)
    clock = [BASE]
    pipeline = Pipeline(db, {CHANNEL.name: AckBuilder()}, clock=lambda: clock[0])

    def at(n: float, raw: bytes) -> None:
        clock[0] = day(n)
        pipeline.process_batch([Job(CHANNEL, raw, "127.0.0.1:1", day(n))])

    at(-1, _ref("R-OLD"))
    at(0, _ref("R-EDGE"))
    for name in sorted(p.name for p in STORY.glob("*.hl7")):
        at(int(name[:3]) // 10, _story(name))
    at(39, _quebec_cancelled())
    at(39, _ref("R-EXP", "20261013", specialty="neuro"))  # RF1-8: day 42
    at(40, _ref("R-LATE"))
    pipeline.close()
    with db.begin() as conn:
        link_manually(conn, EI("ST-A-6501", "SCHED"), EI("ST-R-2007", "PCPEHR"), day(41))
    with db.begin() as conn:
        assert sweep(conn, NOW, LedgerSettings()) == ["referral R-EXP^PCPEHR pending→expired"]
    return db


def statuses(**counts: int) -> dict[str, int]:
    return {s: counts.get(s, 0) for s in STATUSES}


# Days from receipt to the first `scheduled` row: TANGO 0 (its orphan booking was linked when
# the REF arrived), OSCAR 11 and PAPA 11 (on time; PAPA is STAT, due after 1 day: late), QUEBEC
# 12, SIERRA 21 (routine, due after 14: late), VICTOR-2007 22 (the manual link, late).
TOTALS = {
    "received": 12,  # R-EDGE, the ten story referrals, R-EXP
    "by_status": statuses(pending=2, rejected=1, scheduled=3, no_show=1, cancelled=3,
                          expired=1, closed=1),
    "scheduled": 6,  # OSCAR, PAPA, QUEBEC, SIERRA, TANGO, VICTOR-2007
    "scheduled_rate": 0.5,
    "days_to_schedule": {"median": 11.5, "p90": 21.5},  # of 0, 11, 11, 12, 21, 22
    "scheduled_on_time": 3,  # OSCAR, QUEBEC, TANGO
    "on_time_rate": 0.5,
    "overdue_now": 2,  # R-EDGE (due day 14), VICTOR-2006 (due day 32), both pending
    "seen": 2,  # PAPA (closed), QUEBEC (completed, then cancelled)
    "seen_rate": 0.1667,
    "closed_loop": 1,  # PAPA
    "closed_loop_rate": 0.0833,
    "no_show": 1,  # OSCAR
    "no_show_appointments": 1,  # OSCAR's ST-A-6002
    "completed_appointments": 1,  # PAPA's ST-A-6101 (QUEBEC's stayed booked: ORC-5 CM did it)
    "no_show_rate": 0.5,
    "lost": 4,  # ROMEO and XRAY cancelled, ZULU rejected, R-EXP expired; not QUEBEC (seen)
    "lost_rate": 0.3333,
    "lost_expired": 1,
    "lost_rejected": 1,
    "lost_cancelled": 2,
}


def group(received: int, by_status: dict[str, int], days: list[float], on_time: int,
          overdue: int = 0, seen: int = 0, no_show: int = 0, appointments: tuple[int, int] = (0, 0),
          lost: tuple[int, int, int] = (0, 0, 0)) -> dict[str, Any]:
    """A group's figures; `days` are its days to schedule (at most one here: median = p90)."""
    scheduled = len(days)

    def rate(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    return {
        "received": received, "by_status": by_status,
        "scheduled": scheduled, "scheduled_rate": rate(scheduled, received),
        "days_to_schedule": {"median": days[0] if days else None,
                             "p90": days[-1] if days else None},
        "scheduled_on_time": on_time, "on_time_rate": rate(on_time, scheduled),
        "overdue_now": overdue, "seen": seen, "seen_rate": rate(seen, received),
        "closed_loop": by_status["closed"], "closed_loop_rate": rate(by_status["closed"], received),
        "no_show": no_show, "no_show_appointments": appointments[0],
        "completed_appointments": appointments[1], "no_show_rate": rate(appointments[0],
                                                                        sum(appointments)),
        "lost": sum(lost), "lost_rate": rate(sum(lost), received),
        "lost_expired": lost[0], "lost_rejected": lost[1], "lost_cancelled": lost[2],
    }


BY_SPECIALTY = [
    {"specialty": "", **group(1, statuses(scheduled=1), [21.0], 0)},  # SIERRA (360X: none)
    {"specialty": "CARDIO", **group(1, statuses(closed=1), [11.0], 0, seen=1,
                                    appointments=(0, 1))},  # PAPA
    {"specialty": "DERM", **group(3, statuses(scheduled=1, cancelled=2), [0.0], 1,
                                  lost=(0, 0, 2))},  # TANGO, ROMEO, XRAY
    {"specialty": "ENT", **group(2, statuses(pending=1, scheduled=1), [22.0], 0,
                                 overdue=1)},  # VICTOR 2006, 2007
    {"specialty": "GI", **group(1, statuses(rejected=1), [], 0, lost=(0, 1, 0))},  # ZULU
    {"specialty": "NEUR", **group(1, statuses(cancelled=1), [12.0], 1, seen=1)},  # QUEBEC
    # OSCAR, R-EDGE and R-EXP (`neuro`: specialties are compared case-insensitively)
    {"specialty": "NEURO", **group(3, statuses(pending=1, no_show=1, expired=1), [11.0], 1,
                                   overdue=1, no_show=1, appointments=(1, 0), lost=(1, 0, 0))},
]


@pytest.fixture(name="ledger")
def ledger_fixture(db_url: str) -> Iterator[Engine]:
    db = build_ledger(db_url)
    yield db
    db.dispose()


def test_report_totals_and_groups_by_specialty(ledger: Engine) -> None:
    """Every figure of the cohort [day 0, day 40), as of day 45: the boundaries (R-OLD and
    R-LATE out, R-EDGE in), a referral scheduled late (PAPA, SIERRA, VICTOR-2007), one never
    scheduled and overdue (VICTOR-2006), a no-show (OSCAR), a closed loop (PAPA), an expired one
    (R-EXP), one seen then cancelled (QUEBEC: seen, not lost); and by specialty, one row per
    group, sorted, the empty specialty first, totals unchanged."""
    with ledger.connect() as conn:
        plain = build_report(conn, COHORT, NOW)
        by_specialty = build_report(conn, COHORT, NOW, "specialty")
    assert plain == {"period": {"since": "2026-09-01T00:00:00Z", "until": "2026-10-11T00:00:00Z"},
                     "as_of": "2026-10-16T00:00:00Z", "by": None, "totals": TOTALS}
    assert by_specialty["totals"] == TOTALS
    assert by_specialty["by"] == "specialty"
    assert by_specialty["groups"] == BY_SPECIALTY


def test_report_by_source_and_priority(ledger: Engine) -> None:
    """`--by source` (REF, ORM, OMG) and `--by priority` (RF1-2/ORC-7/TQ1-9, upper-case; ZULU
    counts as S: its I13 raised it) split the same cohort: (group, received, scheduled, on time,
    seen, lost) per row."""
    def rows(by: str) -> list[tuple[str, int, int, int, int, int]]:
        with ledger.connect() as conn:
            report = build_report(conn, COHORT, NOW, by)
        assert report["totals"] == TOTALS
        return [(g[by], g["received"], g["scheduled"], g["scheduled_on_time"], g["seen"],
                 g["lost"]) for g in report["groups"]]

    assert rows("source") == [("OMG", 1, 1, 0, 0, 0), ("ORM", 2, 1, 1, 1, 1),
                              ("REF", 9, 4, 2, 1, 3)]
    assert rows("priority") == [("R", 10, 5, 3, 1, 3), ("S", 2, 1, 0, 1, 1)]


def test_report_on_a_narrower_period_and_an_empty_one(ledger: Engine) -> None:
    """The cohort is by received_at only: [day 10, day 20) holds ROMEO (10), VICTOR 2006 (18)
    and 2007 (19), whose scheduling on day 41 still counts.  An empty period gives zeros, null
    rates and no groups."""
    with ledger.connect() as conn:
        narrow = build_report(conn, Period(day(10), day(20)), NOW)["totals"]
        empty = build_report(conn, Period(day(100), day(200)), NOW, "source")
    assert (narrow["received"], narrow["scheduled"], narrow["days_to_schedule"],
            narrow["overdue_now"], narrow["lost_cancelled"]) == (
        3, 1, {"median": 22.0, "p90": 22.0}, 1, 1)
    assert empty["groups"] == []
    assert empty["totals"] == group(0, statuses(), [], 0)


def test_report_table_text(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json: a header with the period, then the booking, outcome and current-status
    tables, a row per group (empty value `-`) and the total last, rates as percentages.  (As of
    now, not day 45: R-EDGE and VICTOR-2006 are overdue all the same.)"""
    build_ledger(db_url).dispose()
    assert main(["report", "--database", db_url, "--config", "/nowhere/channels.yaml",
                 "--since", "2026-09-01", "--until", "2026-10-11", "--by", "source"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("referrals received 2026-09-01T00:00:00Z to 2026-10-11T00:00:00Z "
                             "(until excluded), as of ")
    booking = out[out.index("booking") + 1:out.index("booking") + 6]
    assert [line.split("  ")[0] for line in booking] == ["source", "OMG", "ORM", "REF", "total"]
    assert booking[-1].split() == ["total", "12", "6", "50.0%", "11.5", "21.5", "50.0%", "2"]
    outcome = out[out.index("outcome (lost: never seen, ended expired/rejected/cancelled)") + 5]
    assert outcome.split() == ["total", "2", "16.7%", "1", "8.3%", "1", "50.0%", "4", "33.3%",
                               "1", "1", "2"]
    status = out[out.index("current status") + 1:]
    assert status[0].split() == ["source", *STATUSES]
    assert status[-1].split() == ["total", "2", "0", "1", "3", "0", "0", "1", "3", "1", "1"]


def test_table_shows_an_empty_group_as_a_dash() -> None:
    """The empty specialty (a 360X request names none) is `-` in the table, `""` in JSON."""
    report = {"by": "specialty", "totals": TOTALS, "groups": BY_SPECIALTY}
    for _title, columns, rows in tables(report):
        assert columns[0] == "specialty"
        assert [r["specialty"] for r in rows] == ["-", "CARDIO", "DERM", "ENT", "GI", "NEUR",
                                                  "NEURO", "total"]


# --- the command line ------------------------------------------------------------------------


def test_cli_report_json_default_period(tmp_path: Path, sqlite_url: str) -> None:
    """`python -m engine report --json --config ...`: by default the 90 days up to now; one
    referral received 100 days ago is left out, a routine one 10 days ago is not yet overdue, a
    STAT one 5 days ago is (due after a day)."""
    config = write_config(tmp_path, sqlite_url)
    now = datetime.now(UTC)
    db = open_database(sqlite_url)
    clock = [now]
    pipeline = Pipeline(db, {CHANNEL.name: AckBuilder()}, clock=lambda: clock[0])
    for key, days_ago, priority in (("R-100", 100, "R^Routine"), ("R-10", 10, "R^Routine"),
                                    ("R-5", 5, "S^STAT")):
        clock[0] = now - timedelta(days=days_ago)
        pipeline.process_batch([Job(CHANNEL, _ref(key, priority=priority), "x", clock[0])])
    pipeline.close()
    db.dispose()
    done = subprocess.run([sys.executable, "-m", "engine", "report", "--json", "--config",
                           str(config)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    since, until = (datetime.fromisoformat(report["period"][k]) for k in ("since", "until"))
    assert until - since == timedelta(days=90)
    assert abs(until - now) < timedelta(minutes=5)
    assert report["as_of"] == report["period"]["until"]
    assert "groups" not in report
    totals = report["totals"]
    assert (totals["received"], totals["by_status"]["pending"], totals["overdue_now"],
            totals["scheduled_rate"]) == (2, 2, 1, 0.0)


@pytest.mark.parametrize(("args", "error"), [
    (["--since", "2026-13-01"], "--since: expected a date YYYY-MM-DD, got '2026-13-01'"),
    (["--until", "2026-02-30"], "--until: expected a date YYYY-MM-DD, got '2026-02-30'"),
    (["--since", "2026/09/01"], "--since: expected a date YYYY-MM-DD, got '2026/09/01'"),
    (["--since", "20260901"], "--since: expected a date YYYY-MM-DD, got '20260901'"),
    (["--since", "2026-10-01", "--until", "2026-10-01"],
     "--since: 2026-10-01 00:00 is not before --until (2026-10-01 00:00)"),
])
def test_cli_report_bad_date_is_one_line_exit_2(args: list[str], error: str, sqlite_url: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A bad --since/--until: one line on stderr naming the option, exit 2, nothing on stdout."""
    assert main(["report", "--database", sqlite_url, "--config", "/nowhere/channels.yaml",
                 *args]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", error + "\n")


def test_cli_report_empty_cohort_says_so(sqlite_url: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """No referral received in the period: a sentence, exit 0."""
    open_database(sqlite_url).dispose()
    assert main(["report", "--database", sqlite_url, "--config", "/nowhere/channels.yaml",
                 "--since", "2020-01-01", "--until", "2020-02-01"]) == 0
    assert capsys.readouterr().out == (
        "no referrals received in 2020-01-01T00:00:00Z to 2020-02-01T00:00:00Z (until excluded)\n")
