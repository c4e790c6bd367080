"""Every row of the lifecycle table (docs/ledger.md), as pure transitions."""

from __future__ import annotations

import pytest

from engine.ledger import lifecycle as lc
from engine.mappings import changes as c


@pytest.mark.parametrize(("status", "event", "after"), [
    (lc.PENDING, c.ACCEPT, lc.ACCEPTED),
    (lc.ACCEPTED, c.ACCEPT, lc.ACCEPTED),
    (lc.PENDING, c.REJECT, lc.REJECTED),
    (lc.ACCEPTED, c.REJECT, lc.REJECTED),
    (lc.SCHEDULED, c.REJECT, lc.SCHEDULED),
    (lc.PENDING, c.CANCEL, lc.CANCELLED),
    (lc.SCHEDULED, c.CANCEL, lc.CANCELLED),
    (lc.NO_SHOW, c.CANCEL, lc.CANCELLED),
    (lc.COMPLETED, c.CANCEL, lc.CANCELLED),
    (lc.SCHEDULED, c.COMPLETE, lc.COMPLETED),
    (lc.RESCHEDULED, c.COMPLETE, lc.COMPLETED),
    (lc.PENDING, c.COMPLETE, lc.PENDING),
    (lc.PENDING, c.CLOSE, lc.CLOSED),
    (lc.SCHEDULED, c.CLOSE, lc.CLOSED),
    (lc.COMPLETED, c.CLOSE, lc.CLOSED),
    (lc.PENDING, c.EXPIRE, lc.EXPIRED),
    (lc.ACCEPTED, c.EXPIRE, lc.EXPIRED),
    (lc.SCHEDULED, c.EXPIRE, lc.SCHEDULED),
    (lc.ACCEPTED, c.MODIFY, lc.ACCEPTED),
    (lc.PENDING, c.NOTE, lc.PENDING),
    (lc.CANCELLED, c.ACCEPT, lc.CANCELLED),
    (lc.CLOSED, c.CANCEL, lc.CLOSED),
    (lc.REJECTED, c.CLOSE, lc.REJECTED),
    (lc.EXPIRED, c.ACCEPT, lc.EXPIRED),
])
def test_referral_events(status: str, event: str, after: str) -> None:
    """A referral event moves the status exactly as the lifecycle table says; terminal stays put."""
    assert lc.referral_transition(status, event)[0] == after


def test_opening_status_follows_rf1_1() -> None:
    """A new referral is pending, or accepted when RF1-1 is A."""
    assert (lc.opening_status(""), lc.opening_status("P"), lc.opening_status("a")) == (
        lc.PENDING, lc.PENDING, lc.ACCEPTED)


@pytest.mark.parametrize(("status", "appt", "rescheduled", "other", "after"), [
    (lc.PENDING, c.BOOKED, False, False, lc.SCHEDULED),
    (lc.ACCEPTED, c.BOOKED, False, False, lc.SCHEDULED),
    (lc.NO_SHOW, c.BOOKED, False, False, lc.SCHEDULED),
    (lc.SCHEDULED, c.BOOKED, True, False, lc.RESCHEDULED),
    (lc.RESCHEDULED, c.BOOKED, True, False, lc.RESCHEDULED),
    (lc.SCHEDULED, c.BOOKED, False, False, lc.SCHEDULED),
    (lc.SCHEDULED, c.CANCELLED, False, False, lc.ACCEPTED),
    (lc.RESCHEDULED, c.DELETED, False, False, lc.ACCEPTED),
    (lc.SCHEDULED, c.CANCELLED, False, True, lc.SCHEDULED),
    (lc.SCHEDULED, c.NOSHOW, False, False, lc.NO_SHOW),
    (lc.RESCHEDULED, c.NOSHOW, False, False, lc.NO_SHOW),
    (lc.SCHEDULED, c.COMPLETE_APPT, False, False, lc.COMPLETED),
    (lc.CANCELLED, c.BOOKED, False, False, lc.CANCELLED),
    (lc.CLOSED, c.NOSHOW, False, False, lc.CLOSED),
])
def test_appointment_effects(status: str, appt: str, rescheduled: bool, other: bool,
                             after: str) -> None:
    """A linked appointment's update moves its referral per the SIU rows of the lifecycle table."""
    assert lc.appointment_transition(status, appt, rescheduled, other)[0] == after
