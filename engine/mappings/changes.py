"""The values mappers produce and the ledger applies.  Immutable, plain, no database.

Identifiers are HL7 EI (`EI.1^EI.2`); patients are PID-3 CX.1 with the CX.4 namespace and OID
(compared by authority, never by CX.1 alone).

Several are built for every message, and a frozen dataclass's `__init__` (each field set through
`object.__setattr__`) costs several times more than plain slot stores (docs/performance.md): so
they are plain slotted dataclasses (`_value`) that type checkers see as frozen, with the same
equality, hash and order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar, dataclass_transform

from engine.errors import ContentError, Location

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True)
def _value(*, order: bool = False) -> Callable[[type[_T]], type[_T]]:
    """A slotted dataclass, hashed and compared by its fields, frozen for type checkers only."""
    return dataclass(slots=True, unsafe_hash=True, order=order)


@_value(order=True)
class EI:
    """An entity identifier: EI.1 (id) and EI.2 (namespace / assigning authority)."""

    id: str
    authority: str = ""

    @property
    def text(self) -> str:
        """`EI.1^EI.2`, as the CLI prints it (`MFP-R-1001^PCPEHR`)."""
        return f"{self.id}^{self.authority}" if self.authority else self.id

    def matches(self, other: EI) -> bool:
        """EI equality: EI.1 equal, and EI.2 equal when both sides have it."""
        return self.id == other.id and (
            not self.authority or not other.authority or self.authority == other.authority)

    @classmethod
    def parse(cls, text: str) -> EI:
        ident, _, authority = text.partition("^")
        return cls(ident, authority)


@_value(order=True)
class PatientId:
    """PID-3 as CX.1 with its assigning authority (HD): CX.4.1, the namespace, and CX.4.2, the
    OID (empty unless CX.4.3 is ISO or empty, `engine.mappings.fields.patient_ids`)."""

    id: str
    authority: str  # CX.4.1, the namespace
    oid: str = ""  # CX.4.2 when it is an ISO OID

    @property
    def text(self) -> str:
        """`CX.1^CX.4.1`, the OID standing in for an empty namespace, as the CLI prints it."""
        return f"{self.id}^{self.authority or self.oid}"

    def matches(self, other: PatientId) -> bool:
        """Patient id equality: CX.1 equal, and the OIDs equal when both have one, else the same
        non-empty namespace.  An id with neither never matches (no bare MRNs across facilities).
        `engine.store.ledger.repository.referrals_of_patients` asks the same in SQL."""
        if self.id != other.id:
            return False
        if self.oid and other.oid:
            return self.oid == other.oid
        return bool(self.authority) and self.authority == other.authority

    def merged(self, other: PatientId) -> PatientId | None:
        """The id both describe, when `other` is the same CX.1 under the same authority: equal,
        or sharing a non-empty namespace or OID with no part that differs where both have one.
        What one side lacks, the other fills in (`NS` and `NS&OID&ISO` are `NS&OID&ISO`).
        None when they are different ids, or cannot be told to be the same."""
        if self == other:
            return self
        if self.id != other.id:
            return None
        parts = ((self.authority, other.authority), (self.oid, other.oid))
        if any(a and b and a != b for a, b in parts) or not any(a and a == b for a, b in parts):
            return None
        return PatientId(self.id, self.authority or other.authority, self.oid or other.oid)


def merge_patient_ids(ids: Iterable[PatientId]) -> list[PatientId]:
    """`ids` with each one that merges into an earlier one (`PatientId.merged`) folded into it,
    in their first order."""
    out: list[PatientId] = []
    for p in ids:
        for i, have in enumerate(out):
            both = have.merged(p)
            if both is not None:
                out[i] = both
                break
        else:
            out.append(p)
    return out


@_value()
class Provider:
    """A PRD (or ORC-12 / OBR-16) provider: role (table 0286 RP/RT/PP/CP/...), id, name, location."""

    role: str
    id: str = ""
    name: str = ""
    location: str = ""


# Referral lifecycle events.  The ledger decides the status; mappers name the event.
OPEN = "open"  # REF I12, ORC NW
ACCEPT = "accept"  # RF1-1 A on I13/RRI, ORC OK, OSU SC/IP, ORC SC with ORC-5 SC/IP
REJECT = "reject"  # RF1-1 R, ORC UA
CANCEL = "cancel"  # REF I14, ORC CA/OC/CR/DC/OD, OSU DC
COMPLETE = "complete"  # ORC SC + ORC-5 CM
CLOSE = "close"  # RRI/I13 carrying a final consult note
EXPIRE = "expire"  # RF1-1 E
MODIFY = "modify"  # I13 without a status change, ORC XO/XX/XR: details only
NOTE = "note"  # recorded in history, no status change (I15 status request, ORC HD/RL, ...)

REFERRAL_EVENTS = (OPEN, ACCEPT, REJECT, CANCEL, COMPLETE, CLOSE, EXPIRE, MODIFY, NOTE)


@_value()
class ReferralChange:
    """What one REF/RRI/ORM/OMG/OSU message says about one referral."""

    event: str  # one of REFERRAL_EVENTS
    source: str  # REF | ORM | OMG (the family that owns the key)
    key: EI  # the originating key: RF1-6 (REF/RRI) or ORC-2 (orders)
    key_location: Location  # where the key is (RF1^1^6, ORC^1^2), for 204/205
    trigger: str  # MSH-9.1^MSH-9.2, for history
    owner: str = ""  # MSH-3.1 of the sender: the system that owns the key
    status_code: str = ""  # raw RF1-1 or ORC-1/ORC-5, for history
    patient_ids: tuple[PatientId, ...] = ()
    external_ids: tuple[EI, ...] = ()  # RF1-11 (repeating)
    filler_order_number: EI | None = None  # ORC-3
    priority: str = ""  # RF1-2 / ORC-7 / TQ1-9: S, A, R
    specialty: str = ""
    window_start: datetime | None = None  # RF1-7
    window_end: datetime | None = None  # RF1-8 (or TQ1-8 "needed by")
    providers: tuple[Provider, ...] = ()
    diagnoses: tuple[str, ...] = ()  # DG1-3.1 codes
    if_known: bool = False  # apply only to a known referral; an unknown key is not an error
    # Fields an update sets to the HL7 null `""` ("delete this value"): of
    # priority, specialty, window_start, window_end.  An empty field changes nothing.
    cleared: frozenset[str] = frozenset()


# Appointment statuses (issue 3): booked, cancelled, deleted, noshow, complete.
BOOKED, CANCELLED, DELETED, NOSHOW, COMPLETE_APPT = (
    "booked", "cancelled", "deleted", "noshow", "complete")
KEEP = ""  # an update that leaves the appointment's status as it is


@_value()
class AppointmentChange:
    """What one SIU message says about one appointment."""

    trigger: str  # S12 ... S26
    key: EI  # SCH-2, else SCH-1
    # booked | cancelled | deleted | noshow | complete; KEEP ("") when an S14 (or S18-S22) names
    # no status: an empty SCH-25, or Pending/Waitlist/Blocked (not a booking)
    status: str
    rescheduled: bool = False  # S13: new time
    filler_status: str = ""  # SCH-25 as sent (local words and coding system kept)
    start: datetime | None = None  # SCH-11.4 → TQ1-7 → AIS-4 → AIL-6 → AIP-6 → AIG-8
    duration_min: int | None = None
    duration_source: str = ""  # SCH-9, TQ1-8 or AIS-7 (the source field is recorded)
    duration_conflict: str = ""  # the sources' minutes when two disagree by more than 1 min
    specialty: str = ""  # the first mapped of AIL-3.1, AIS-3.1, AIP-3.1, else AIL or AIS as sent
    placer_order_numbers: tuple[EI, ...] = ()  # SCH-26
    filler_order_numbers: tuple[EI, ...] = ()  # SCH-27
    # `ledger.link_fields` (the third, configurable link): (name such as SCH-4, the keys
    # there), tried after 26/27
    other_keys: tuple[tuple[str, tuple[EI, ...]], ...] = ()
    patient_ids: tuple[PatientId, ...] = ()
    cleared: frozenset[str] = frozenset()  # of start, duration_min, specialty (S14 `""`)


Change = ReferralChange | AppointmentChange
NOTHING_CLEARED: frozenset[str] = frozenset()  # `cleared` of a change that deletes nothing


# --- content errors (answered AE) ------------------------------------------------------------


class RequiredSegmentMissing(ContentError):
    code = "100"


class RequiredFieldMissing(ContentError):
    code = "101"


class BadValue(ContentError):
    """A date/time or number we need cannot be read."""

    code = "102"


class UnknownCode(ContentError):
    """A coded value outside the table we act on (e.g. ORC-1)."""

    code = "103"


class UnknownKey(ContentError):
    """An update or cancel for a referral or order its owner never sent."""

    code = "204"


class DuplicateKey(ContentError):
    """A new referral or order whose key already exists."""

    code = "205"
