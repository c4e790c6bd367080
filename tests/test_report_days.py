"""The report's days to booking (engine/store/ledger/report_days.py): the median and 90th
percentile read as two ranks from the database equal linear interpolation over every value
sorted in Python, per group, with 1, 2, an odd and an even number of values, none (null), and
delays to the microsecond (on SQLite, a receipt at .9997 of a second must not count a second
more).  On SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from engine.store.database import open_database
from engine.store.ledger.report import Period, build_report, schedule_days
from engine.store.schema import referrals

BASE = datetime(2026, 3, 1, 8, 0, 0)
NOW = BASE + timedelta(days=60)
COHORT = Period(BASE, BASE + timedelta(days=30))
US = timedelta(microseconds=1)
# Per specialty, each referral's receipt (days after BASE) and its delay to the first booking
# (None: never scheduled).  Delays to the microsecond; ties; a receipt at .999700 of a second.
DELAYS: dict[str, list[tuple[float, timedelta | None]]] = {
    "ONE": [(1, timedelta(days=2, hours=6))],
    "TWO": [(2, timedelta(days=1)), (3, timedelta(days=3, microseconds=250))],
    "ODD": [(4, timedelta(hours=6)), (5, timedelta(days=9)), (6, timedelta(hours=6)),
            (7, timedelta(days=12, seconds=1) - US), (8, timedelta(0))],
    "EVEN": [(9 + 0.9997 / 86400, timedelta(days=1, microseconds=400)),
             (10, timedelta(days=4, hours=12)), (11, timedelta(days=2, hours=2, minutes=30)),
             (12, timedelta(days=7, seconds=59, microseconds=999_999))],
    "NONE": [(13, None), (14, None)],
}
OUTSIDE = (-1, timedelta(days=100))  # received before the period: counted nowhere


def _percentile(values: list[float], q: float) -> float | None:
    """numpy's default (linear interpolation between the closest ranks), one decimal."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (pos - low), 1)


def _days(specialties: list[str]) -> list[float]:
    return [d.total_seconds() / 86400 for s in specialties for _, d in DELAYS[s] if d is not None]


def _row(rid: int, specialty: str, received: float, delay: timedelta | None) -> dict[str, Any]:
    at = BASE + timedelta(days=received)
    return {"id": rid, "key_id": f"R{rid}", "key_authority": "PCP", "source": "REF",
            "owner": "PCP", "status": "scheduled" if delay is not None else "pending",
            "priority": "R", "specialty": specialty, "received_at": at, "updated_at": at,
            "due_at": at + timedelta(days=14),
            "first_scheduled_at": at + delay if delay is not None else None}


@pytest.fixture(name="ledger")
def ledger_fixture(db_url: str) -> Iterator[Engine]:
    db = open_database(db_url)
    rows = [(s, r, d) for s, pairs in DELAYS.items() for r, d in pairs] + [("ONE", *OUTSIDE)]
    with db.begin() as conn:
        conn.execute(insert(referrals), [_row(i + 1, *row) for i, row in enumerate(rows)])
    yield db
    db.dispose()


def test_percentiles_per_group_equal_sorting_every_value(ledger: Engine) -> None:
    with ledger.connect() as conn:
        report = build_report(conn, COHORT, NOW, "specialty")
    groups = {g["specialty"]: g["days_to_schedule"] for g in report["groups"]}
    assert groups == {s: {"median": _percentile(_days([s]), 0.5),
                          "p90": _percentile(_days([s]), 0.9)} for s in DELAYS}
    assert groups["NONE"] == {"median": None, "p90": None}
    assert groups["ONE"] == {"median": 2.2, "p90": 2.2}  # 2.25 days: the float rounds down
    assert groups["ODD"] == {"median": 0.2, "p90": 10.8}  # 0, .25, .25, 9, 12.0000116
    every = _days(list(DELAYS))
    assert report["totals"]["days_to_schedule"] == {"median": _percentile(every, 0.5),
                                                    "p90": _percentile(every, 0.9)}


def test_schedule_days_are_exact_to_the_microsecond(ledger: Engine) -> None:
    with ledger.connect() as conn:
        days = schedule_days(conn, COHORT, "specialty")
        alone = schedule_days(conn, COHORT)
    assert days == {s: sorted(_days([s])) for s in DELAYS if s != "NONE"}
    assert alone == {"": sorted(_days(list(DELAYS)))}


def test_sqlite_page_cache_is_put_back(sqlite_url: str) -> None:
    db = open_database(sqlite_url)
    with db.connect() as conn:
        conn.exec_driver_sql("PRAGMA cache_size = -1234")
        build_report(conn, COHORT, NOW, "priority")
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == -1234
    db.dispose()


def test_the_report_reads_one_snapshot_while_referrals_arrive(ledger: Engine) -> None:
    """A referral committed by another connection between the report's statements is not
    half-seen: inside `snapshot` the report is the one before it, and after it the new one."""
    from engine.store.database import snapshot

    with snapshot(ledger) as conn:
        before = build_report(conn, COHORT, NOW)
        with ledger.begin() as other:
            other.execute(insert(referrals), [_row(9999, "LATE", 29.0, timedelta(days=1))])
        during = build_report(conn, COHORT, NOW)
    with snapshot(ledger) as conn:
        after = build_report(conn, COHORT, NOW)
    assert during == before
    assert after["totals"]["received"] == before["totals"]["received"] + 1
