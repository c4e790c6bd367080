"""The referral lifecycle, exactly HL7-SPEC §7, as pure functions of (status, event).

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
MATCHABLE = frozenset({PENDING, ACCEPTED, NO_SHOW})  # fallback candidates (§6, §9.6)
BOOKED_STATES = frozenset({SCHEDULED, RESCHEDULED})
WAITING = frozenset({PENDING, ACCEPTED})  # the statuses the time rules act on

# Referral events, for `on:` routes: `referral.<status>` whenever a referral reaches a status
# (its opening one included), and `referral.overdue` from the sweep, once per referral.
EVENT_PREFIX = "referral."
OVERDUE_EVENT = "referral.overdue"
EVENT_NAMES = tuple(EVENT_PREFIX + s for s in STATUSES) + (OVERDUE_EVENT,)

# event → (from states, to state, rule)
_REFERRAL_RULES: dict[str, tuple[frozenset[str], str, str]] = {
    c.ACCEPT: (frozenset({PENDING}), ACCEPTED, "§7 pending→accepted"),
    c.REJECT: (frozenset({PENDING, ACCEPTED}), REJECTED, "§7 rejected"),
    c.CANCEL: (frozenset(STATUSES) - TERMINAL, CANCELLED, "§7 cancelled"),
    c.COMPLETE: (BOOKED_STATES, COMPLETED, "§7 completed"),
    c.CLOSE: (OPEN | {COMPLETED}, CLOSED, "§7 loop closed"),
    c.EXPIRE: (frozenset({PENDING, ACCEPTED}), EXPIRED, "§7 expired"),
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
        return status, f"§7 {status} is terminal: recorded only"
    rule = _REFERRAL_RULES.get(event)
    if rule is None:
        return status, f"§7 {event}: no status change"
    sources, target, text = rule
    if status not in sources:
        return status, f"§7 {event} from {status}: no status change"
    return target, text


def appointment_transition(status: str, appointment: str, rescheduled: bool,
                           other_active: bool) -> tuple[str, str]:
    """The referral's status after a linked appointment's update (§7 SIU rows).

    `appointment` is the appointment's new status; `other_active` says whether the referral has
    another booked appointment (a cancel only reopens the referral when none is left).
    """
    if status in TERMINAL:
        return status, f"§7 {status} is terminal: appointment recorded only"
    if appointment == c.BOOKED:
        if rescheduled and status in BOOKED_STATES:
            return RESCHEDULED, "§7 S13 rescheduled"
        if status in MATCHABLE:
            return SCHEDULED, "§7 booking implies acceptance: scheduled"
        return status, "§7 booking detail change: unchanged"
    if appointment in (c.CANCELLED, c.DELETED):
        if status in BOOKED_STATES and not other_active:
            return ACCEPTED, "§7 last active appointment cancelled: awaiting rebooking"
        return status, "§7 appointment cancelled: unchanged"
    if appointment == c.NOSHOW and status in BOOKED_STATES:
        return NO_SHOW, "§7 no-show (still open)"
    if appointment == c.COMPLETE_APPT and status in BOOKED_STATES:
        return COMPLETED, "§7 appointment complete"
    return status, f"§7 appointment {appointment} from {status}: unchanged"
