"""The report page (`/report`, every role: counts and rates only, no patient data): the
`report` funnel for a chosen period (since/until, or the last N days), grouped by specialty,
source or priority, as the CLI's tables, with three charts: referrals booked within N days, the
distribution of days to booking, and the closed-loop and booked rates by week of receipt.
The figures are GET /api/report's; the charts read the same report functions."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup

from engine.store import Connection
from engine.store.ledger.report import (
    Period,
    PeriodError,
    parse_day,
    period,
    schedule_days,
    slice_rates,
    tables,
)
from engine.web import endpoints as ep
from engine.web.auth import ApiError
from engine.web.charts import bar_chart, histogram, line_chart
from engine.web.pages.core import Html, Page, PageCall

BOOKED_WITHIN = (1, 2, 7, 14, 28, 56)  # days: the bars of "booked within N days"
DAY_EDGES = (0, 1, 2, 4, 7, 14, 28, 56)  # the histogram's buckets of days to booking
MAX_POINTS = 26  # points of the over-time chart; slices are a week or longer
MAX_DAYS = 3660


def cohort_params(params: dict[str, str], now: datetime) -> dict[str, str]:
    """The API's parameters (since, until, by) from the form's: `days` N stands for since N
    days before until (or today), when since is empty."""
    out = {k: params[k] for k in ("since", "until", "by") if params.get(k)}
    days = params.get("days", "").strip()
    if days and not out.get("since"):
        if not days.isdigit() or not 1 <= int(days) <= MAX_DAYS:
            raise ApiError(400, "bad_request", f"days: expected a whole number from 1 to "
                                               f"{MAX_DAYS}")
        try:
            end = parse_day("until", out["until"]) if out.get("until") else now
        except PeriodError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        out["since"] = f"{end - timedelta(days=int(days)):%Y-%m-%d}"
    return out


def slices(p: Period) -> list[Period]:
    """The period cut into at most MAX_POINTS consecutive slices of a week or more (the last
    one may be shorter)."""
    total = (p.until - p.since).total_seconds() / 86400
    step = timedelta(days=max(7, math.ceil(total / MAX_POINTS)))
    out, start = [], p.since
    while start < p.until:
        out.append(Period(start, min(start + step, p.until)))
        start += step
    return out


def _percent(rate: float | None) -> float | None:
    return None if rate is None else round(rate * 100, 1)


@dataclass(frozen=True, slots=True)
class Series:
    """What the charts draw: the days from receipt to first booking of the cohort's booked
    referrals (sorted), and the report's totals per slice of the period."""

    days: list[float]
    slices: list[tuple[Period, dict[str, Any]]]


def series(conn: Connection, p: Period) -> Series:
    """The charts' data, read through the report's own functions (one query per chart)."""
    cut = slices(p)
    return Series(schedule_days(conn, p).get("", []),
                  list(zip(cut, slice_rates(conn, p, [s.since for s in cut]), strict=True)))


def charts(data: Series, received: int) -> dict[str, Markup]:
    """The report's three charts for a cohort of `received` referrals."""
    within = [(f"≤ {n} d", round(100 * sum(1 for d in data.days if d <= n) / received, 1))
              for n in BOOKED_WITHIN] if received else []
    weeks = [f"{s.since:%m-%d}" for s, _ in data.slices]
    return {
        "booked_within": bar_chart(
            within, title="Referrals booked within N days of receipt",
            x_label="days from receipt", y_label="% of received", unit="%", top=100),
        "days_to_schedule": histogram(
            data.days, edges=DAY_EDGES, title="Days from receipt to booking",
            x_label="days", y_label="referrals"),
        "over_time": line_chart(
            {name: list(zip(weeks, [_percent(t[key]) for _, t in data.slices], strict=True))
             for name, key in (("closed loop %", "closed_loop_rate"),
                               ("booked %", "scheduled_rate"))},
            title="Closed-loop and booked rates by week of receipt",
            x_label="received from", y_label="% of received", unit="%", top=100),
    }


def report_page(page: PageCall) -> Html:
    """`/report`: the form, the API's report as the CLI's tables, and the charts; a bad
    period or grouping is shown above the form."""
    form = {k: page.call.params.get(k, "") for k in ("since", "until", "days", "by")}
    context: dict[str, Any] = {"form": form, "groups": ep.REPORT_GROUPS, "error": None,
                               "report": None, "tables": [], "charts": {}}
    try:
        params = cohort_params(page.call.params, page.call.now)
        found = ep.report(replace(page.call, params=params))
    except ApiError as exc:
        if exc.status != 400:
            raise
        return Html("report.html", {**context, "error": exc.detail})
    cohort = period(page.call.now, params.get("since"), params.get("until"))
    with page.call.db.connect() as conn:
        data = series(conn, cohort)
    drawn = charts(data, found["totals"]["received"])
    return Html("report.html", {**context, "report": found, "tables": tables(found),
                                "charts": drawn})


PAGES: tuple[Page, ...] = ((("report",), "GET", "viewer", report_page),)
