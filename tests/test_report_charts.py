"""The report page's charts (engine.web.pages.report) on the report tests' real ledger
(tests/test_report.py: built through the real pipeline), on SQLite and PostgreSQL: the weekly
slices add up to the cohort's totals, and what the charts draw agrees with the report."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from test_report import COHORT, NOW, build_ledger

from engine.store.ledger.report import build_report
from engine.web.pages.report import charts, series

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(name="ledger")
def ledger_fixture(db_url: str) -> Iterator[Engine]:
    db = build_ledger(db_url)
    yield db
    db.dispose()


def _titles(svg: str, tag: str) -> list[str]:
    return [el.findtext(f"{SVG}title") or "" for el in ET.fromstring(svg).iter(f"{SVG}{tag}")]


def test_chart_series_agree_with_the_report(ledger: Engine) -> None:
    """The slices cover the cohort week by week and their received, booked and closed counts
    add up to the report's; the days are one per booked referral, their median the report's."""
    with ledger.connect() as conn:
        data = series(conn, COHORT)
        totals = build_report(conn, COHORT, NOW)["totals"]
    assert data.slices[0][0].since == COHORT.since and data.slices[-1][0].until == COHORT.until
    assert len(data.slices) == 6  # 40 days: five weeks and five days
    for key in ("received", "scheduled", "closed_loop"):
        assert sum(t[key] for _, t in data.slices) == totals[key], key
    assert len(data.days) == totals["scheduled"] > 0
    assert data.days == sorted(data.days)


def test_charts_draw_the_series(ledger: Engine) -> None:
    """Booked within 56 days is every booked referral of a 40-day cohort; the histogram's bars
    count every booked referral; the over-time chart has a point per slice and series where
    the slice received any."""
    with ledger.connect() as conn:
        data = series(conn, COHORT)
        totals = build_report(conn, COHORT, NOW)["totals"]
    drawn = charts(data, totals["received"])
    within = _titles(str(drawn["booked_within"]), "rect")
    assert within[-1] == f"≤ 56 d: {round(100 * totals['scheduled'] / totals['received'], 1):g}%"
    counts = [float(t.rsplit(": ", 1)[1]) for t in _titles(str(drawn["days_to_schedule"]),
                                                            "rect")]
    assert sum(counts) == totals["scheduled"]
    points = _titles(str(drawn["over_time"]), "circle")
    busy = sum(1 for _, t in data.slices if t["received"])
    assert len(points) == 2 * busy
