"""What a referral-event message says about a referral (issue 4, `on:` routes): plain frozen
values, read by `engine.store.ledger.repository.referral_facts` and turned into HL7 by `engine.routes.events`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from engine.mappings.changes import EI, PatientId, Provider


@dataclass(frozen=True, slots=True)
class AppointmentFacts:
    """The linked appointment updated last: SCH-2 (else SCH-1), start, duration, our status."""

    key: EI
    status: str  # booked | cancelled | deleted | noshow | complete
    start: datetime | None = None  # naive UTC
    duration_min: int | None = None


@dataclass(frozen=True, slots=True)
class ReferralFacts:
    """A referral as the ledger holds it, with what is known of the message that opened it."""

    key: EI  # RF1-6 or ORC-2
    status: str
    owner: str = ""  # MSH-3.1 of the opener
    priority: str = ""  # S | A | R (table 0280) or as sent
    window_start: datetime | None = None
    window_end: datetime | None = None
    due_at: datetime | None = None
    external_ids: tuple[EI, ...] = ()  # RF1-11 and ORC-3 keys
    patient_ids: tuple[PatientId, ...] = ()
    providers: tuple[Provider, ...] = ()
    channel: str = ""  # the channel the opening message came in on
    opening_control_id: str = ""  # its MSH-10
    owner_facility: str = ""  # its MSH-4 (wire text)
    appointment: AppointmentFacts | None = None
