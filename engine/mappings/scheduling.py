"""SIU S12-S26: one `AppointmentChange` keyed on SCH-2 (filler id), else SCH-1.

The trigger sets the status; S14 and the S18-S22 resource events keep the one SCH-25 (table 0278)
gives.  Blocked slots (S23/S24) and the S25 query have no appointment effect.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple

from engine.errors import Location
from engine.mappings.changes import (
    BOOKED,
    CANCELLED,
    COMPLETE_APPT,
    DELETED,
    KEEP,
    NOSHOW,
    NOTHING_CLEARED,
    AppointmentChange,
    BadValue,
    Change,
    RequiredFieldMissing,
    RequiredSegmentMissing,
)
from engine.mappings.fields import (
    NM_MAX_CHARS,
    dtm_value,
    ei_from_wire,
    eis_of,
    leaf,
    leaves,
    nm_value,
    nulled,
    patient_ids,
    read_eis,
    text,
)
from engine.mappings.rules import MappingRules, link_name
from engine.parsing.escape import transcode
from engine.parsing.message import STANDARD, InboundMessage

# Trigger → status, for the events that fix it.
TRIGGER_STATUS = {"S12": BOOKED, "S13": BOOKED, "S15": CANCELLED, "S16": CANCELLED,
                  "S17": DELETED, "S26": NOSHOW}
# Events whose status is SCH-25's: a modification (S14) and the service/resource events.
BY_FILLER_STATUS = frozenset({"S14", "S18", "S19", "S20", "S21", "S22"})
# Table 0278 filler status (case-insensitive; unknown local words read as booked).  Pending,
# Waitlist and Blocked are no booking (only S14 *Booked* schedules), and an empty SCH-25 says
# nothing (an empty field changes nothing): those updates keep the appointment's status.
FILLER_STATUS = {
    "BOOKED": BOOKED, "OVERBOOK": BOOKED, "STARTED": BOOKED, "COMPLETE": COMPLETE_APPT,
    "NOSHOW": NOSHOW, "CANCELLED": CANCELLED, "CANCELED": CANCELLED, "DC": CANCELLED,
    "DELETED": DELETED, "PENDING": KEEP, "WAITLIST": KEEP, "BLOCKED": KEEP, "": KEEP,
}
_TQ1_7 = Location("TQ1", 1, 7)
# Start time, first non-empty: SCH-11.4 → TQ1-7 → AIS-4 → AIL-6 → AIP-6 → AIG-8.
START_FIELDS = (
    ("SCH.11.4", Location("SCH", 1, 11)),
    ("TQ1.7", _TQ1_7),
    ("AIS.4", Location("AIS", 1, 4)),
    ("AIL.6", Location("AIL", 1, 6)),
    ("AIP.6", Location("AIP", 1, 6)),
    ("AIG.8", Location("AIG", 1, 8)),
)
# Duration units (SCH-10.1, AIS-8.1) → minutes; empty means minutes.
UNIT_MINUTES = {"": 1, "MIN": 1, "MINS": 1, "MINUTE": 1, "MINUTES": 1,
                "H": 60, "HR": 60, "HRS": 60, "HOUR": 60, "HOURS": 60}
# The longest plausible appointment: a year (of 366 days).  Longer is a typo or a placeholder,
# and it must not reach the ledger's INTEGER column.
MAX_DURATION_MIN = 366 * 24 * 60
_SCH_9, _AIS_7, _TQ1_8 = Location("SCH", 1, 9), Location("AIS", 1, 7), Location("TQ1", 1, 8)


def map_siu(msg: InboundMessage, rules: MappingRules) -> list[Change]:
    """The change an SIU makes to its appointment; [] for S23-S25 and non-SIU messages."""
    h = msg.header
    event = h.trigger
    if h.message_type != "SIU" or (
            event not in TRIGGER_STATUS and event not in BY_FILLER_STATUS):
        return []
    sch = msg.segment("SCH")
    if sch is None:
        raise RequiredSegmentMissing("SCH segment is missing", Location("SCH", 1))
    if msg.segment("RGS") is None:
        raise RequiredSegmentMissing("RGS segment is missing", Location("RGS", 1))
    key = ei_from_wire(msg, msg.field_wire(sch, 2)) or ei_from_wire(msg, msg.field_wire(sch, 1))
    if key is None:
        raise RequiredFieldMissing("SCH-2 and SCH-1 (appointment ids) are both empty",
                                   Location("SCH", 1, 2))
    filler_status = leaf(msg, sch, 25)
    duration = durations(msg)
    status = TRIGGER_STATUS.get(event) or FILLER_STATUS.get(filler_status.upper(), BOOKED)
    if event == "S12" and FILLER_STATUS.get(filler_status.upper()) == COMPLETE_APPT:
        status = COMPLETE_APPT  # S14/S12 with SCH-25 Complete completes the referral
    return [AppointmentChange(
        trigger=event,
        key=key,
        status=status,
        rescheduled=event == "S13",
        filler_status=_raw_filler_status(msg, sch),
        start=start_time(msg),
        duration_min=duration.minutes,
        duration_source=duration.source,
        duration_conflict=duration.conflict,
        specialty=_specialty(msg, rules),
        placer_order_numbers=eis_of(msg, msg.field_repetitions(sch, 26)),
        filler_order_numbers=eis_of(msg, msg.field_repetitions(sch, 27)),
        other_keys=tuple((link_name(p), keys) for p in rules.link_fields
                         if (keys := read_eis(msg, p))) if rules.link_fields else (),
        patient_ids=patient_ids(msg) if msg.segment("PID") else (),
        cleared=_cleared(msg) if event == "S14" else NOTHING_CLEARED,
    )]


def _raw_filler_status(msg: InboundMessage, sch: tuple[str, ...]) -> str:
    """SCH-25 as sent (mapped case-insensitively, the raw value kept; local words such as
    `Scheduled^^CSI` carry their coding system), in standard delimiters, cut to its column."""
    wires = msg.field_repetitions(sch, 25)
    if not wires:
        return ""
    if msg.delimiters is STANDARD:
        return wires[0][:64]
    return transcode(wires[0], msg.delimiters, STANDARD, msg.charset)[:64]


def _specialty(msg: InboundMessage, rules: MappingRules) -> str:
    """The specialty: the first of AIL-3.1, AIS-3.1, AIP-3.1 that `ledger.specialties` maps;
    else AIL-3.1 or AIS-3.1 as sent (a person's id in AIP-3 is no specialty unless mapped)."""
    if not rules.specialties:  # nothing to map: AIP-3 can say nothing
        return text(msg, "AIL.3.1") or text(msg, "AIS.3.1")
    codes = [text(msg, path) for path in ("AIL.3.1", "AIS.3.1", "AIP.3.1")]
    return next((s for s in map(rules.specialty, codes) if s), "") or codes[0] or codes[1]


def _cleared(msg: InboundMessage) -> frozenset[str]:
    """What an S14 deletes with `""`: the start (every start field null or empty), the duration
    (SCH-9, AIS-7), the specialty (AIL-3, AIS-3)."""
    out = set()
    if nulled(msg, *(path for path, _ in START_FIELDS)):
        out.add("start")
    if nulled(msg, "SCH.9", "AIS.7"):
        out.add("duration_min")
    if nulled(msg, "AIL.3.1", "AIS.3.1"):
        out.add("specialty")
    return frozenset(out)


def start_time(msg: InboundMessage) -> datetime | None:
    """The first non-empty start field; 102 at that field when it is not a date/time."""
    for path, where in START_FIELDS:
        value = text(msg, path)
        if value:
            return dtm_value(value, where)
    return None


class Duration(NamedTuple):
    minutes: int | None
    source: str  # the field it came from: SCH-9, TQ1-8 or AIS-7 ("" without one)
    conflict: str  # every source's minutes when two disagree by more than a minute, else ""


def durations(msg: InboundMessage) -> Duration:
    """The duration: SCH-9/SCH-10, then TQ1-8 minus TQ1-7, then AIS-7/AIS-8: the first that
    gives minutes is the duration (an unreadable one is 102); the later ones, where readable,
    are compared with it, and more than a minute apart they are named in `conflict`."""
    found: list[tuple[str, int]] = []
    for name, read in _DURATION_SOURCES:
        try:
            minutes = read(msg)
        except BadValue:
            if not found:
                raise
            continue
        if minutes is not None:
            found.append((name, minutes))
    if not found:
        return Duration(None, "", "")
    (source, minutes), others = found[0], found[1:]
    conflict = ", ".join(f"{n} {m} min" for n, m in found) \
        if any(abs(m - minutes) > 1 for _, m in others) else ""
    return Duration(minutes, source, conflict)


def _with_units(amount_text: str, units: str, where: Location) -> int | None:
    """An NM duration in whole minutes; None when empty or in units we do not know.  A feed
    repeats its few durations (`30^min`): short readable ones are read once (`_seen_minutes`,
    keyed on the text alone: a `Location`'s hash is a Python call); an unreadable one raises
    at `where`."""
    if len(amount_text) <= NM_MAX_CHARS and len(units) <= NM_MAX_CHARS:
        minutes = _seen_minutes(amount_text, units)
        if minutes != _UNREADABLE:
            return minutes
    return _minutes(amount_text, units, where)


def _minutes(amount_text: str, units: str, where: Location) -> int | None:
    """`_with_units`' work (an unreadable value raises, and is never cached)."""
    amount = nm_value(amount_text, where)
    factor = UNIT_MINUTES.get(units.upper())
    if amount is None or factor is None:
        return None
    if amount < 0:
        raise BadValue(f"{where.segment}-{where.field} is a negative duration", where)
    minutes = round(amount * factor)
    if minutes > MAX_DURATION_MIN:
        raise BadValue(f"{where.segment}-{where.field} is not a plausible duration "
                       f"(more than {MAX_DURATION_MIN} minutes)", where)
    return minutes


_UNREADABLE = -1  # `_seen_minutes` of a value `_minutes` refuses (never a duration: none is negative)
_NOWHERE = Location("SCH", 1, 9)  # the location `_seen_minutes` reads at; its errors are dropped


@lru_cache(maxsize=256)
def _seen_minutes(amount_text: str, units: str) -> int | None:
    """`_minutes`, or `_UNREADABLE` where it raises (read again at its own field, to raise)."""
    try:
        return _minutes(amount_text, units, _NOWHERE)
    except BadValue:
        return _UNREADABLE


def _sch_duration(msg: InboundMessage) -> int | None:
    sch = msg.segment("SCH")
    amount, units = leaves(msg, sch, 9, 10)
    return _with_units(amount, units, _SCH_9)


def _ais_duration(msg: InboundMessage) -> int | None:
    ais = msg.segment("AIS")
    amount, units = leaves(msg, ais, 7, 8)
    return _with_units(amount, units, _AIS_7)


def _tq1_span(msg: InboundMessage) -> int | None:
    """TQ1-8 end minus TQ1-7 start, when both are given, the end is not before the start and
    the span is no longer than `MAX_DURATION_MIN` (a longer one bounds a series of occurrences,
    not one appointment's length: like an end before the start, it gives no duration)."""
    tq1 = msg.segment("TQ1")
    if tq1 is None:
        return None
    start_text, end_text = leaves(msg, tq1, 7, 8)
    start = dtm_value(start_text, _TQ1_7)
    end = dtm_value(end_text, _TQ1_8)
    if start is None or end is None or end < start:
        return None
    minutes = round((end - start).total_seconds() / 60)
    return minutes if minutes <= MAX_DURATION_MIN else None


_DURATION_SOURCES: tuple[tuple[str, Callable[[InboundMessage], int | None]], ...] = (
    ("SCH-9", _sch_duration), ("TQ1-8", _tq1_span), ("AIS-7", _ais_duration))
