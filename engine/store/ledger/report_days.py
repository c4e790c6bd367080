"""The report's days from receipt to booking: the median and 90th percentile per group, read as
the few ranks they need, and every value for the web report's charts.

A referral's delay is from `received_at` to `first_scheduled_at`, computed exactly in the
database so it sorts there (an interval on PostgreSQL, microseconds on SQLite) and turned into
days as Python's timedelta gives them, so the figures are those of sorting every value in Python
(docs/report.md defines them).  A percentile by linear interpolation between the closest ranks
needs the values at two ranks: each is an `ORDER BY delay DESC LIMIT 2 OFFSET rank` over the
delays computed once (a common table expression, read by every rank).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Select,
    func,
    literal,
    select,
    union_all,
)

from engine.store.schema import referrals

PERCENTILES = (("median", 0.5), ("p90", 0.9))  # at or above the median: see _ranks


def delay(conn: Connection) -> ColumnElement[Any]:
    """From receipt to the first `scheduled` row, exactly, in an order the database can sort:
    an interval on PostgreSQL; on SQLite, whose datetimes are text 'YYYY-MM-DD HH:MM:SS.ffffff',
    microseconds (the whole seconds from strftime, then the six digits after the point)."""
    r = referrals.c
    if conn.dialect.name == "postgresql":
        return r.first_scheduled_at - r.received_at

    def micros(column: ColumnElement[Any]) -> ColumnElement[int]:
        # the seconds of the text without its fraction: SQLite rounds a time to the
        # millisecond, and .9995 or more would carry into the next second
        return (func.strftime("%s", func.substr(column, 1, 19)).cast(Integer) * 1_000_000
                + func.substr(column, 21).cast(Integer))

    return micros(r.first_scheduled_at) - micros(r.received_at)


def days(value: Any) -> float:
    """A `delay` value in days, as the timedelta between the two datetimes gives them."""
    when = value if isinstance(value, timedelta) else timedelta(microseconds=int(value))
    return when.total_seconds() / 86400


def schedule_days(conn: Connection, where: list[ColumnElement[bool]],
                  group: ColumnElement[Any] | None) -> dict[str, list[float]]:
    """The days of every referral `where` selects (scheduled ones), per `group` value ("" for
    all without one), sorted."""
    q = select(*([group] if group is not None else []), delay(conn)).where(*where)
    out: dict[str, list[float]] = {}
    for *grp, value in conn.execute(q):
        out.setdefault(str(grp[0] or "") if grp else "", []).append(days(value))
    return {k: sorted(v) for k, v in out.items()}


def rank(n: int, q: float) -> tuple[int, int, float]:
    """The closest ranks (from 0) around quantile `q` of `n` sorted values, and the weight of
    the higher one (numpy's default linear interpolation)."""
    pos = (n - 1) * q
    low = int(pos)
    return low, min(low + 1, n - 1), pos - low


def interpolate(values: list[float], weight: float) -> float | None:
    """Between the lowest and highest of `values` (the two ranks, or one), one decimal; None
    without any (none, or they changed since they were counted)."""
    if not values:
        return None
    low, high = min(values), max(values)
    return round(low + (high - low) * weight, 1)


def percentiles(conn: Connection, where: list[ColumnElement[bool]],
                group: ColumnElement[Any] | None, counts: Mapping[str | None, int]
                ) -> dict[str | None, dict[str, float | None]]:
    """`days_to_schedule` ({median, p90}) of each group value in `counts` (None: every
    referral `where` selects), `counts[g]` being how many of them were scheduled: one
    statement that hands over two rows per percentile."""
    delays = select(delay(conn).label("d"), *([group.label("grp")] if group is not None
                                              else [])).where(*where).cte("delays")
    asks = [(g, name, n, rank(n, q)) for g, n in counts.items() if n
            for name, q in PERCENTILES]
    found: dict[int, list[float]] = {}
    if asks:
        members = [_ranks(delays, i, g, n, low, high) for i, (g, _, n, (low, high, _)) in
                   enumerate(asks)]
        for i, value in conn.execute(union_all(*members)):
            found.setdefault(int(i), []).append(days(value))
    out: dict[str | None, dict[str, float | None]] = {
        g: {name: None for name, _ in PERCENTILES} for g in counts}
    for i, (g, name, _, (_, _, weight)) in enumerate(asks):
        out[g][name] = interpolate(found.get(i, []), weight)
    return out


def _ranks(delays: Any, ask: int, group: str | None, n: int, low: int, high: int
           ) -> Select[Any]:
    """Ranks low..high of the `n` delays of `group` (all of them for None), tagged `ask`.  Both
    percentiles are at or above the median, so they are read from the top: the database's sort
    keeps only the rows above them."""
    q = select(delays.c.d)
    if group is not None:
        q = q.where(delays.c.grp == group)
    picked = (q.order_by(delays.c.d.desc()).offset(n - 1 - high).limit(high - low + 1)
              .subquery())
    return select(literal(ask).label("ask"), picked.c.d)
