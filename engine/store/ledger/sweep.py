"""The ledger's time rules (README "Time rules"), run by `hl7-engine sweep` and by `run` at start
and then every `ledger.sweep_interval_minutes`: expiry past the window, and the once-only overdue
notice.

Both record history rows and, when `events` is given (an `on:` route exists), the referral
events they cause: `referral.expired`, `referral.overdue`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine

from engine.ledger import lifecycle as lc
from engine.ledger.settings import LedgerSettings
from engine.ledger.state import OVERDUE_MARK, event_row
from engine.store.ledger import repository as store

Events = list[tuple[int, str]] | None
OPEN = (lc.PENDING, lc.ACCEPTED)  # the statuses the time rules act on


def sweep(conn: Connection, now: datetime, settings: LedgerSettings,
          events: Events = None, limit: int | None = None) -> list[str]:
    """Expire pending/accepted referrals past RF1-8 (or past received + the default window);
    at most `limit` of them (`run_sweep` takes them in chunks), in a few statements for all."""
    received_before = now - timedelta(days=settings.default_window_days)
    found = store.expirable(conn, OPEN, now, received_before, limit)
    statuses = store.lock_referrals(conn, [rid for rid, _, _ in found])
    # another sweep or a message may have got there first
    expiring = [(rid, key, statuses[rid]) for rid, _, key in found if statuses.get(rid) in OPEN]
    store.set_statuses(conn, [rid for rid, _, _ in expiring], lc.EXPIRED, now)
    store.insert_events(conn, [event_row(
        at=now, event="sweep expire", message_id=None, referral_id=rid, before=status,
        after=lc.EXPIRED, rule="past RF1-8 with no appointment") for rid, _, status in expiring])
    if events is not None:
        events += [(rid, lc.EVENT_PREFIX + lc.EXPIRED) for rid, _, _ in expiring]
    return [f"referral {key.text} {status}→expired" for _, key, status in expiring]


def mark_overdue(conn: Connection, now: datetime, events: Events = None,
                 limit: int | None = None) -> list[str]:
    """Pending/accepted referrals past their deadline to reach `scheduled` (`due_at`, by
    priority), each once: the history row `sweep overdue` is what makes it once.  At most
    `limit` of them, in a few statements for all."""
    found = store.overdue(conn, OPEN, now, limit)
    statuses = store.lock_referrals(conn, [rid for rid, _, _, _ in found])
    marked = store.marked_overdue(conn, list(statuses))
    # another sweep or a message may have got there first
    due = [(rid, key, statuses[rid], at) for rid, _, key, at in found
           if statuses.get(rid) in OPEN and rid not in marked]
    store.insert_events(conn, [event_row(
        at=now, event=OVERDUE_MARK, message_id=None, referral_id=rid, before=status,
        after=status, rule=f"past its deadline to be scheduled ({at:%Y-%m-%dT%H:%M:%S}Z)")
        for rid, _, status, at in due])
    if events is not None:
        events += [(rid, lc.OVERDUE_EVENT) for rid, _, _, _ in due]
    return [f"referral {key.text} {status}, overdue" for _, key, status, _ in due]


CHUNK = 200  # referrals per transaction: a backlog never holds the database for long


def run_sweep(db: Engine, now: datetime, settings: LedgerSettings,
              queue: Callable[[Connection, list[tuple[int, str]]], int] | None = None
              ) -> tuple[list[str], list[str], int]:
    """Expiry, then the overdue notices, each in transactions of at most CHUNK referrals, with
    the `on:` routes' rows (`queue`) in the same transaction as their change: (expired lines,
    overdue lines, rows queued).  Every referral a chunk looks at leaves the next chunk's
    query (expired, marked, or changed by someone else), so the loop ends."""
    expired: list[str] = []
    overdue: list[str] = []
    queued = 0
    for lines in (expired, overdue):
        while True:
            events: Events = [] if queue is not None else None
            with db.begin() as conn:
                found = (sweep(conn, now, settings, events, CHUNK) if lines is expired
                         else mark_overdue(conn, now, events, CHUNK))
                if queue is not None and events:
                    queued += queue(conn, events)
            lines += found
            if not found:
                break
    return expired, overdue, queued
