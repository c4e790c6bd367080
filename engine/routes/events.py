"""Referral events (`on:` routes): the RRI^I12 (structure RRI_I12, v2.5.1)
that tells the referring system what became of its referral.  Pure: plain values in, bytes out.

The field-by-field mapping is README.md "Referral events"; in short: MSH-3/4 us, MSH-5/6 the
referral's owner, MSA-2 the opening message's MSH-10, RF1-1 the status (table 0283, else a local
code), RF1-6 the referral id, PRD per stored provider, PID-3 the patient id pairs only, the linked
appointment as an OBR/OBX group with local codes, and for `referral.overdue` an NTE.  Every value
is written with HL7 escapes (`\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`), in standard delimiters, UTF-8.
"""

from __future__ import annotations

from datetime import datetime

from engine.ledger import lifecycle as lc
from engine.ledger.facts import AppointmentFacts, ReferralFacts
from engine.mappings import changes as c
from engine.mappings.changes import EI, Provider
from engine.parsing.escape import escape
from engine.parsing.message import STANDARD

OVERDUE = lc.OVERDUE_EVENT

# RF1-1: table 0283 where it has the status (P, A, R, E), else a local code (coding system L).
STATUS_CODES = {
    lc.PENDING: ("P", "Pending", "HL70283"),
    lc.ACCEPTED: ("A", "Accepted", "HL70283"),
    lc.REJECTED: ("R", "Rejected", "HL70283"),
    lc.EXPIRED: ("E", "Expired", "HL70283"),
    lc.SCHEDULED: ("SC", "Scheduled", "L"),
    lc.RESCHEDULED: ("RS", "Rescheduled", "L"),
    lc.COMPLETED: ("CM", "Completed", "L"),
    lc.NO_SHOW: ("NS", "No show", "L"),
    lc.CANCELLED: ("CA", "Cancelled", "L"),
    lc.CLOSED: ("CL", "Closed", "L"),
}
PRIORITIES = {"S": "STAT", "A": "ASAP", "R": "Routine"}  # table 0280
# The appointment's status as table 0278 (filler status codes) names it.
APPOINTMENT_STATUSES = {c.BOOKED: "Booked", c.CANCELLED: "Cancelled", c.DELETED: "Deleted",
                        c.NOSHOW: "Noshow", c.COMPLETE_APPT: "Complete"}
DEFAULT_SENDER = ("REFTRACK", "HUB")
UTF8 = "UNICODE UTF-8"  # MSH-18, table 0211, written only when a value is not ASCII


def build_rri(facts: ReferralFacts, event: str, control_id: str, now: datetime,
              sender: tuple[str, str] = DEFAULT_SENDER) -> bytes:
    """The RRI^I12 for `event` about the referral in `facts`, unframed, segments ending in CR.

    `now` is naive UTC (MSH-7); `sender` is our MSH-3/MSH-4.  RF1-1 is the event's status, or,
    for `referral.overdue`, the referral's current one.
    """
    status = facts.status if event == OVERDUE else event.removeprefix(lc.EVENT_PREFIX)
    body = [*_msa(facts), _rf1(facts, status), *_prds(facts.providers), _pid(facts),
            *_appointment(facts.appointment), *_overdue(facts, event)]
    text = "\r".join(body) + "\r"
    msh = _msh(facts, control_id, now, sender, utf8=not text.isascii())
    return (msh + "\r" + text).encode("utf-8")


def _e(value: str) -> str:
    return escape(value, STANDARD)


def _components(*values: str) -> str:
    """Escaped components joined with `^`, trailing empty ones dropped."""
    return "^".join(_e(v) for v in values).rstrip("^")


def _segment(*fields: str) -> str:
    """Fields joined with `|` (already escaped), trailing empty ones dropped."""
    return "|".join(fields).rstrip("|")


def _ei(key: EI) -> str:
    return _components(key.id, key.authority)


def _dtm(value: datetime, full: bool = False) -> str:
    """HL7 DTM of a naive UTC value: a date alone at midnight (RF1-7/8 are often dates), else
    to the second with the +0000 offset."""
    if not full and value.hour == value.minute == value.second == 0:
        return value.strftime("%Y%m%d")
    return value.strftime("%Y%m%d%H%M%S") + "+0000"


def _msh(facts: ReferralFacts, control_id: str, now: datetime, sender: tuple[str, str],
         utf8: bool) -> str:
    fields = ["MSH", STANDARD.encoding_characters, _e(sender[0]), _e(sender[1]), _e(facts.owner),
              _e(facts.owner_facility.split("^")[0]), _dtm(now, full=True), "",
              "RRI^I12^RRI_I12", _e(control_id), "P", "2.5.1"]
    if utf8:
        fields += [""] * 5 + [UTF8]
    return _segment(*fields)


def _msa(facts: ReferralFacts) -> list[str]:
    """MSA-2 links the event to the message that opened the referral (omitted when unknown)."""
    return [_segment("MSA", "AA", _e(facts.opening_control_id))] if facts.opening_control_id \
        else []


def _rf1(facts: ReferralFacts, status: str) -> str:
    code, label, system = STATUS_CODES[status]
    priority = facts.priority.upper()
    rf1_2 = _components(priority, PRIORITIES[priority], "HL70280") if priority in PRIORITIES \
        else _e(facts.priority)
    return _segment(
        "RF1", _components(code, label, system), rf1_2, "", "", "", _ei(facts.key),
        _dtm(facts.window_start) if facts.window_start else "",
        _dtm(facts.window_end) if facts.window_end else "", "", "",
        "~".join(_ei(k) for k in facts.external_ids))


def _prds(providers: tuple[Provider, ...]) -> list[str]:
    """PRD-1 role (an order's ordering provider OP is the referring provider RP), PRD-2
    family^given, PRD-4.1 point of care, PRD-7.1 id.  RRI_I12 needs at least one PRD."""
    out = []
    for p in providers:
        if not p.role:
            continue  # PRD-1 is required; a provider without a role cannot be written
        family, _, given = p.name.partition("^")
        role = "RP" if p.role.upper() == "OP" else p.role
        out.append(_segment("PRD", _e(role), _components(family, given), "",
                            _e(p.location), "", "", _e(p.id)))
    return out or ["PRD|RP"]


def _pid(facts: ReferralFacts) -> str:
    """PID-3 as CX.1^^^CX.4.1 pairs and nothing else about the patient; an id stored with an
    OID and no namespace carries the OID there, as before the OID was stored apart (the ids
    are echoed, never compared).  PID-5 is required in 2.5.1; we store no names, so it is an
    empty name of type U (unspecified, table 0200)."""
    ids = "~".join(_components(p.id, "", "", p.authority or p.oid) for p in facts.patient_ids)
    return _segment("PID", "1", "", ids, "", "^^^^^^U")


def _appointment(appt: AppointmentFacts | None) -> list[str]:
    """The linked appointment as one OBR with local codes and an OBX per known value."""
    if appt is None:
        return []
    values = [("CX", "APPT-ID^Appointment identifier (SCH-2)^L",
               _components(appt.key.id, "", "", appt.key.authority), "")]
    if appt.start is not None:
        values.append(("TS", "APPT-START^Appointment start^L", _dtm(appt.start, full=True), ""))
    if appt.duration_min is not None:
        values.append(("NM", "APPT-DURATION^Appointment duration^L", str(appt.duration_min),
                       "min^minutes^ANS+"))
    status = APPOINTMENT_STATUSES.get(appt.status)
    values.append(("CE", "APPT-STATUS^Appointment status^L",
                   _components(status, status, "HL70278") if status else _e(appt.status), ""))
    return ["OBR|1|||APPT^Referral appointment^L"] + [
        _segment("OBX", str(n), kind, code, "", value, units, "", "", "", "", "F")
        for n, (kind, code, value, units) in enumerate(values, 1)]


def _overdue(facts: ReferralFacts, event: str) -> list[str]:
    if event != OVERDUE:
        return []
    due = facts.due_at.strftime("%Y-%m-%dT%H:%M:%SZ") if facts.due_at else "unknown"
    return [_segment("NTE", "1", "O",
                     _e(f"Referral overdue: not scheduled by its due date {due}"))]
