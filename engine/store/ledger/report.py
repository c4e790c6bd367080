"""The referral report (`hl7-engine report`): of the referrals received in a period, how many got
booked, how fast, how many were seen, how many closed the loop, how many were lost.

Everything is read from the ledger (`referrals` and `appointments`), in three statements
whatever the ledger's size: the counts, the appointments' counts, and the few ranks the
percentiles need (`engine.store.ledger.report_days`).  What the history says
(`referral_events`: a referral's first `scheduled` row, whether it ever reached
`completed`/`closed` or `no_show`) is kept on each referral's row as the ledger writes it
(`first_scheduled_at`, `ever_seen`, `ever_no_show`), so the statements read the period's
referrals from one index on `received_at` that holds every column they use (0016) and join
nothing to them but their appointments' statuses, from an index too.  The definitions:

* **Cohort**: referrals whose `received_at` (when the engine opened them) is in
  [since, until).  The CLI's dates are YYYY-MM-DD, UTC midnight; by default the 90 days up to now.
  Figures describe the cohort's referrals as the ledger has them *now*, whenever that happened.
* `received`: the cohort's size.  `by_status`: how many are in each status now, every status of
  the lifecycle (`engine.ledger.lifecycle.STATUSES`, in that order), zeros included.
* `scheduled`: referrals that ever reached `scheduled` (a history row with status_after
  `scheduled`: a booking, an orphan booking linked when the referral opened, or a manual link).
  A referral that is now `rescheduled`, `completed`, `no_show` or `closed` after a booking
  counts; one closed by a consult note without any booking on record does not.
  `scheduled_rate` = scheduled / received.
* `days_to_schedule`: `median` and `p90` (linear interpolation between the closest ranks) of the
  days, one decimal, from `received_at` to the first `scheduled` history row, over the scheduled
  referrals; null when none.  Both times are the engine's (when it processed the messages), not
  MSH-7 and not the appointment's start.  An orphan booking linked at opening counts 0 days.
* `scheduled_on_time`: scheduled no later than `due_at`, the deadline of the referral's priority
  (an I13 changing the priority moves it); `on_time_rate` = of the scheduled.
* `overdue_now`: pending or accepted now with `due_at` before now (`referrals --overdue`).
* `seen`: referrals that ever reached `completed` (SCH-25 Complete, ORC-5 CM) or `closed` (a
  final consult note): the visit is documented.  "Ever", not "now": the lifecycle lets a
  completed referral be cancelled afterwards (I14, ORC CA), and it was seen all the same.
  `seen_rate` = seen / received.
* `closed_loop`: now `closed` (terminal: the report came back); `closed_loop_rate` over received.
* `no_show`: referrals that ever reached `no_show` (S26 or SCH-25 Noshow), rebooked since or not.
  `no_show_rate` = `no_show_appointments` / (`no_show_appointments` + `completed_appointments`):
  the cohort's linked appointments now `noshow` or `complete`; null when there are none.  A visit
  documented only by the order (ORC-5 CM) or a consult note has no `complete` appointment.
* `lost`: now `expired`, `rejected` or `cancelled` and never seen; `lost_expired`,
  `lost_rejected`, `lost_cancelled` split it (they differ from `by_status` only by the referrals
  cancelled after being seen).  So `seen` + `lost` + the open ones never seen = `received`;
  `lost_rate` over received.
* Rates are fractions rounded to 4 places (the table shows percentages, one decimal); null when
  the denominator is 0.
* **Groups** (`by`): `specialty` and `priority` compared case-insensitively (as the engine
  matches them) and shown upper-case, `source` (REF, ORM, OMG); the same figures per group,
  groups sorted, an empty value shown as `-` in the table and `""` in JSON.  `totals` always
  covers the whole cohort.

History rows carry referral statuses in `status_after`, except the appointment rows, which carry
the appointment's (booked, cancelled, deleted, noshow, complete): none of the words read here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    case,
    func,
    literal,
    select,
)

from engine.ledger import lifecycle as lc
from engine.mappings.changes import COMPLETE_APPT, NOSHOW
from engine.store.ledger import report_days as rd
from engine.store.schema import appointments, referrals
from engine.timestamps import utc_text

DEFAULT_DAYS = 90
CACHE_KIB = 32 * 1024  # SQLite's page cache for the report's look-ups (see _page_cache)
GROUPINGS = ("specialty", "source", "priority")
SEEN = (lc.COMPLETED, lc.CLOSED)
LOST = (lc.EXPIRED, lc.REJECTED, lc.CANCELLED)
WAITING = (lc.PENDING, lc.ACCEPTED)  # the overdue rule's statuses, as `referrals --overdue`
_COUNTS = ("received", *(f"status_{s}" for s in lc.STATUSES), "scheduled", "scheduled_on_time",
           "overdue_now", "seen", "no_show", *(f"lost_{s}" for s in LOST),
           "no_show_appointments", "completed_appointments")


class PeriodError(Exception):
    """A bad --since/--until: the text names the option."""


@dataclass(frozen=True, slots=True)
class Period:
    """[since, until), naive UTC like every datetime in the ledger."""

    since: datetime
    until: datetime


def parse_day(option: str, text: str) -> datetime:
    """YYYY-MM-DD as UTC midnight."""
    try:
        if len(text) != 10 or text[4] != "-" or text[7] != "-":
            raise ValueError(text)
        return datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        raise PeriodError(f"{option}: expected a date YYYY-MM-DD, got {text!r}") from None


def period(now: datetime, since: str | None = None, until: str | None = None) -> Period:
    """The cohort's period from the CLI's options: until defaults to now, since to 90 days
    before until."""
    end = parse_day("--until", until) if until else now
    start = parse_day("--since", since) if since else end - timedelta(days=DEFAULT_DAYS)
    if start >= end:
        raise PeriodError(f"--since: {start:%Y-%m-%d %H:%M} is not before --until "
                          f"({end:%Y-%m-%d %H:%M})")
    return Period(start, end)


# --- the queries -----------------------------------------------------------------------------


def _cohort(p: Period) -> ColumnElement[bool]:
    return and_(referrals.c.received_at >= p.since, referrals.c.received_at < p.until)


def _group_value(by: str) -> ColumnElement[Any]:
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r}")
    column = referrals.c[by]
    return column if by == "source" else func.upper(column)


def _group(by: str | None) -> list[ColumnElement[Any]]:
    return [_group_value(by).label("grp")] if by else []


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.count().filter(condition)


def _ever(flag: ColumnElement[bool]) -> ColumnElement[int]:
    return _count(flag == True)  # noqa: E712 - SQL, not Python


def _scheduled(p: Period) -> list[ColumnElement[bool]]:
    return [_cohort(p), referrals.c.first_scheduled_at.is_not(None)]


def _grouped(q: Select[Any], by: str | None) -> Select[Any]:
    return q.group_by(*_group(by)) if by else q


def _referral_counts(conn: Connection, p: Period, now: datetime, by: str | None
                     ) -> dict[str, dict[str, int]]:
    r = referrals.c
    never_seen = r.ever_seen == False  # noqa: E712 - SQL, not Python
    columns = [
        func.count().label("received"),
        *(_count(r.status == s).label(f"status_{s}") for s in lc.STATUSES),
        func.count(r.first_scheduled_at).label("scheduled"),
        _count(r.first_scheduled_at <= r.due_at).label("scheduled_on_time"),
        _count(and_(r.status.in_(WAITING), r.due_at < now)).label("overdue_now"),
        _ever(r.ever_seen).label("seen"),
        _ever(r.ever_no_show).label("no_show"),
        *(_count(and_(r.status == s, never_seen)).label(f"lost_{s}") for s in LOST),
    ]
    q = select(*_group(by), *columns).where(_cohort(p))
    return _by_group(conn.execute(_grouped(q, by)).mappings(), by)


def _appointment_counts(conn: Connection, p: Period, by: str | None
                        ) -> dict[str, dict[str, int]]:
    a = appointments.c
    # Every appointment of the cohort's referrals, its status read from the index on
    # (referral_id, status): one look-up per referral (a filter on the status would make two).
    q = (select(*_group(by), _count(a.status == NOSHOW).label("no_show_appointments"),
                _count(a.status == COMPLETE_APPT).label("completed_appointments"))
         .select_from(appointments.join(referrals, referrals.c.id == a.referral_id))
         .where(_cohort(p)))
    with _page_cache(conn):
        return _by_group(conn.execute(_grouped(q, by)).mappings(), by)


@contextmanager
def _page_cache(conn: Connection) -> Iterator[None]:
    """On SQLite, a page cache of CACHE_KIB while the look-ups run, then the one before: the
    default 2 MiB cannot hold the index they go through, and every look-up would read it again
    from the file (twice the time on a year of a million referrals, docs/performance.md)."""
    if conn.dialect.name != "sqlite":
        yield
        return
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
    conn.exec_driver_sql(f"PRAGMA cache_size = -{CACHE_KIB}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size = {int(before)}")


def _by_group(rows: Iterable[Any], by: str | None) -> dict[str, dict[str, int]]:
    return {str(row["grp"] or "") if by else "": {k: int(v or 0) for k, v in row.items()
                                                  if k != "grp"} for row in rows}


def schedule_days(conn: Connection, p: Period, by: str | None = None) -> dict[str, list[float]]:
    """The days behind `days_to_schedule`, per group ("" without `by`), sorted: for the web
    report's distribution charts."""
    return rd.schedule_days(conn, _scheduled(p), _group_value(by) if by else None)


def slice_rates(conn: Connection, p: Period, starts: Sequence[datetime]
                ) -> list[dict[str, Any]]:
    """The cohort cut at `starts` (the first is p.since; slice i is [starts[i], starts[i+1]),
    the last one up to p.until), in one query: per slice `received`, `scheduled`,
    `closed_loop` and their rates, as the report defines them."""
    r = referrals.c
    bounds = [case((r.received_at < b, i)) for i, b in enumerate(starts[1:])]
    index = (func.coalesce(*bounds, len(starts) - 1) if bounds
             else literal(0)).label("slice")
    q = (select(index, func.count().label("received"),
                func.count(r.first_scheduled_at).label("scheduled"),
                _count(r.status == lc.CLOSED).label("closed"))
         .where(_cohort(p))
         .group_by(index))
    found = {int(row.slice): row for row in conn.execute(q)}
    out = []
    for i in range(len(starts)):
        row = found.get(i)
        n, booked, closed = (int(row.received), int(row.scheduled), int(row.closed)) if row \
            else (0, 0, 0)
        out.append({"received": n, "scheduled": booked, "closed_loop": closed,
                    "scheduled_rate": _rate(booked, n), "closed_loop_rate": _rate(closed, n)})
    return out


# --- the figures -----------------------------------------------------------------------------


def build_report(conn: Connection, p: Period, now: datetime, by: str | None = None
                 ) -> dict[str, Any]:
    """The report as a JSON-ready dict: `period`, `as_of`, `by`, `totals`, and with `by` the
    `groups` (each with its value under the key `by`)."""
    counts = _referral_counts(conn, p, now, by)
    appts = _appointment_counts(conn, p, by)
    merged = {g: {**counts.get(g, {}), **appts.get(g, {})} for g in set(counts) | set(appts)}
    total = {k: sum(m.get(k, 0) for m in merged.values()) for k in _COUNTS}
    scheduled: dict[str | None, int] = {None: total["scheduled"]}
    if by:
        scheduled.update({g: merged[g].get("scheduled", 0) for g in merged})
    days = rd.percentiles(conn, _scheduled(p), _group_value(by) if by else None, scheduled)
    out: dict[str, Any] = {
        "period": {"since": utc_text(p.since), "until": utc_text(p.until)},
        "as_of": utc_text(now),
        "by": by,
        "totals": _figures(total, days[None]),
    }
    if by:
        out["groups"] = [{by: g, **_figures(merged[g], days[g])} for g in sorted(merged)]
    return out


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _figures(c: dict[str, int], days: dict[str, float | None]) -> dict[str, Any]:
    n = c.get("received", 0)
    got = {k: c.get(k, 0) for k in _COUNTS}
    lost = sum(got[f"lost_{s}"] for s in LOST)
    seen_appts = got["no_show_appointments"] + got["completed_appointments"]
    return {
        "received": n,
        "by_status": {s: got[f"status_{s}"] for s in lc.STATUSES},
        "scheduled": got["scheduled"],
        "scheduled_rate": _rate(got["scheduled"], n),
        "days_to_schedule": days,
        "scheduled_on_time": got["scheduled_on_time"],
        "on_time_rate": _rate(got["scheduled_on_time"], got["scheduled"]),
        "overdue_now": got["overdue_now"],
        "seen": got["seen"],
        "seen_rate": _rate(got["seen"], n),
        "closed_loop": got[f"status_{lc.CLOSED}"],
        "closed_loop_rate": _rate(got[f"status_{lc.CLOSED}"], n),
        "no_show": got["no_show"],
        "no_show_appointments": got["no_show_appointments"],
        "completed_appointments": got["completed_appointments"],
        "no_show_rate": _rate(got["no_show_appointments"], seen_appts),
        "lost": lost,
        "lost_rate": _rate(lost, n),
        **{f"lost_{s}": got[f"lost_{s}"] for s in LOST},
    }


# --- the table -------------------------------------------------------------------------------

_BOOKING = (("received", "received"), ("scheduled", "scheduled"),
            ("scheduled_rate", "scheduled %"), ("median", "median days"),
            ("p90", "p90 days"), ("on_time_rate", "on time %"), ("overdue_now", "overdue now"))
_OUTCOME = (("seen", "seen"), ("seen_rate", "seen %"), ("closed_loop", "closed loop"),
            ("closed_loop_rate", "closed loop %"), ("no_show", "no-show"),
            ("no_show_rate", "no-show appts %"), ("lost", "lost"), ("lost_rate", "lost %"),
            ("lost_expired", "expired"), ("lost_rejected", "rejected"),
            ("lost_cancelled", "cancelled"))


def tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[dict[str, str]]]]:
    """The report as (title, columns, rows of text) tables: booking, outcome, current status;
    a row per group and the total row last; rates as percentages with one decimal."""
    by = report["by"]
    first = by or "referrals"
    rows = [(g[by] or "-", g) for g in report.get("groups", [])] + [("total", report["totals"])]
    out: list[tuple[str, list[str], list[dict[str, str]]]] = []
    for title, fields in (("booking", _BOOKING), ("outcome (lost: never seen, ended "
                                                   "expired/rejected/cancelled)", _OUTCOME)):
        out.append((title, [first, *(label for _, label in fields)],
                    [{first: name, **{label: _cell(key, _value(f, key)) for key, label in fields}}
                     for name, f in rows]))
    out.append(("current status", [first, *lc.STATUSES],
                [{first: name, **{s: str(f["by_status"][s]) for s in lc.STATUSES}}
                 for name, f in rows]))
    return out


def _value(figures: dict[str, Any], key: str) -> Any:
    if key in ("median", "p90"):
        return figures["days_to_schedule"][key]
    return figures[key]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key.endswith("_rate"):
        return f"{value * 100:.1f}%"
    return str(value)
