"""The referral lifecycle, as pure functions of (status, event): which event moves a referral
from which status to which, and the words the history records for it.

Statuses: pending, accepted, rejected, scheduled, rescheduled, completed, no_show, cancelled,
expired, closed.  Terminal ones take no further change; their events are still recorded.
"""

from __future__ import annotations

from datetime import datetime

from engine.mappings import changes as c

PENDING, ACCEPTED, REJECTED = "pending", "accepted", "rejected"
SCHEDULED, RESCHEDULED, COMPLETED = "scheduled", "rescheduled", "completed"
NO_SHOW, CANCELLED, EXPIRED, CLOSED = "no_show", "cancelled", "expired", "closed"

STATUSES = (PENDING, ACCEPTED, REJECTED, SCHEDULED, RESCHEDULED, COMPLETED, NO_SHOW, CANCELLED,
            EXPIRED, CLOSED)
TERMINAL = frozenset({REJECTED, CANCELLED, EXPIRED, CLOSED})
OPEN = frozenset({PENDING, ACCEPTED, SCHEDULED, RESCHEDULED, NO_SHOW})
MATCHABLE = frozenset({PENDING, ACCEPTED, NO_SHOW})  # open to a new booking (fallback candidates)
BOOKED_STATES = frozenset({SCHEDULED, RESCHEDULED})
WAITING = frozenset({PENDING, ACCEPTED})  # the statuses the time rules act on

# Referral events, for `on:` routes: `referral.<status>` whenever a referral reaches a status
# (its opening one included), and `referral.overdue` from the sweep, once per referral.
EVENT_PREFIX = "referral."
OVERDUE_EVENT = "referral.overdue"
EVENT_NAMES = tuple(EVENT_PREFIX + s for s in STATUSES) + (OVERDUE_EVENT,)

# event → (from states, to state, rule)
_REFERRAL_RULES: dict[str, tuple[frozenset[str], str, str]] = {
    c.ACCEPT: (frozenset({PENDING}), ACCEPTED, "pending→accepted"),
    c.REJECT: (frozenset({PENDING, ACCEPTED}), REJECTED, "rejected"),
    c.CANCEL: (frozenset(STATUSES) - TERMINAL, CANCELLED, "cancelled"),
    c.COMPLETE: (BOOKED_STATES, COMPLETED, "completed"),
    c.CLOSE: (OPEN | {COMPLETED}, CLOSED, "loop closed"),
    c.EXPIRE: (frozenset({PENDING, ACCEPTED}), EXPIRED, "expired"),
}


def opening_status(status_code: str) -> str:
    """A new referral is pending, or accepted when RF1-1 says A."""
    return ACCEPTED if status_code.upper() == "A" else PENDING


def window_ended(window_end: datetime | None, now: datetime) -> bool:
    """Has the referral's window (RF1-8, or TQ1-8 for orders) ended by `now`?  The sweep's own
    test, so a referral that arrives late is expired exactly when the sweep would expire it."""
    return window_end is not None and window_end < now


def overdue(status: str, due_at: datetime | None, now: datetime) -> bool:
    """Is a referral in `status` past its deadline to be scheduled (`due_at`) at `now`?  The
    sweep's own test: only pending and accepted referrals can be overdue."""
    return status in WAITING and due_at is not None and due_at < now


def referral_transition(status: str, event: str) -> tuple[str, str]:
    """The status after `event`, and the rule applied (or why nothing changed)."""
    if status in TERMINAL:
        return status, f"{status} is terminal: recorded only"
    rule = _REFERRAL_RULES.get(event)
    if rule is None:
        return status, f"{event}: no status change"
    sources, target, text = rule
    if status not in sources:
        return status, f"{event} from {status}: no status change"
    return target, text


def appointment_transition(status: str, appointment: str, rescheduled: bool,
                           other_active: bool) -> tuple[str, str]:
    """The referral's status after a linked appointment's update (the scheduling rows of the
    lifecycle).

    `appointment` is the appointment's new status; `other_active` says whether the referral has
    another booked appointment (a cancel only reopens the referral when none is left).
    """
    if status in TERMINAL:
        return status, f"{status} is terminal: appointment recorded only"
    if appointment == c.BOOKED:
        if rescheduled and status in BOOKED_STATES:
            return RESCHEDULED, "S13 rescheduled"
        if status in MATCHABLE:
            return SCHEDULED, "booking implies acceptance: scheduled"
        return status, "booking detail change: unchanged"
    if appointment in (c.CANCELLED, c.DELETED):
        if status in BOOKED_STATES and not other_active:
            return ACCEPTED, "last active appointment cancelled: awaiting rebooking"
        return status, "appointment cancelled: unchanged"
    if appointment == c.NOSHOW and status in BOOKED_STATES:
        return NO_SHOW, "no-show (still open)"
    if appointment == c.COMPLETE_APPT and status in BOOKED_STATES:
        return COMPLETED, "appointment complete"
    return status, f"appointment {appointment} from {status}: unchanged"
