"""What the ledger can keep of each mapped field: the column sizes, and no NUL character.

PostgreSQL refuses a longer value or a NUL in text, and the whole batch's commit fails (SQLite
would keep either), so a change is checked before it reaches the ledger.  An identifier that
does not fit is AE 102 at its field: cut or cleaned, it could match another one.  A descriptive
code (priority, specialty, SCH-25) is cut to its column and loses its NULs instead, as SCH-25
is cut (local words, kept as sent where they fit).  Error texts name the field and
the limit, never the value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from engine.errors import Location
from engine.mappings.changes import EI, AppointmentChange, BadValue, Change, ReferralChange

ID_MAX = 199  # EI.1, EI.2, CX.1, CX.4.1, CX.4.2 (HL7 v2.7 ST lengths of the parts)
OWNER_MAX = 227  # MSH-3 (HD)
PRIORITY_MAX = 8
SPECIALTY_MAX = 64
FILLER_STATUS_MAX = 64  # SCH-25 as sent
NUL = "\x00"
_SCH_2, _SCH_26, _SCH_27 = Location("SCH", 1, 2), Location("SCH", 1, 26), Location("SCH", 1, 27)
_RF1_11, _PID_3 = Location("RF1", 1, 11), Location("PID", 1, 3)


def bounded(change: Change) -> Change:
    """`change` with its descriptive codes cut to their columns; BadValue (102) for an
    identifier longer than its column."""
    if isinstance(change, ReferralChange):
        if not _referral_fits(change):
            _referral_ids(change)
        priority = _code(change.priority, PRIORITY_MAX)
        specialty = _code(change.specialty, SPECIALTY_MAX)
        if (priority, specialty) == (change.priority, change.specialty):
            return change
        return replace(change, priority=priority, specialty=specialty)
    if not _appointment_fits(change):
        _appointment_ids(change)
    return _appointment_cut(change)


def _referral_fits(change: ReferralChange) -> bool:
    """Does every identifier fit (the usual case, one test for all; `_referral_ids` then
    finds nothing)?"""
    parts = [change.key.id, change.key.authority]
    for ei in change.external_ids:
        parts += (ei.id, ei.authority)
    if change.filler_order_number is not None:
        parts += (change.filler_order_number.id, change.filler_order_number.authority)
    for p in change.patient_ids:
        parts += (p.id, p.authority, p.oid)
    return (_all_fit(parts) and len(change.owner) <= OWNER_MAX and NUL not in change.owner)


def _appointment_fits(change: AppointmentChange) -> bool:
    """`_referral_fits` of an appointment's keys."""
    parts = [change.key.id, change.key.authority]
    for keys in (change.placer_order_numbers, change.filler_order_numbers,
                 *(keys for _, keys in change.other_keys)):
        for ei in keys:
            parts += (ei.id, ei.authority)
    return _all_fit(parts)


def _appointment_ids(change: AppointmentChange) -> None:
    _ids(_SCH_2, [change.key])
    _ids(_SCH_26, change.placer_order_numbers)
    _ids(_SCH_27, change.filler_order_numbers)
    for name, keys in change.other_keys:
        _ids(_location(name), keys)


def _referral_ids(change: ReferralChange) -> None:
    _ids(change.key_location, [change.key])
    if len(change.owner) > OWNER_MAX or NUL in change.owner:
        raise BadValue(f"MSH-3 is longer than {OWNER_MAX} characters or holds a NUL",
                       Location("MSH", 1, 3))
    _ids(_RF1_11, change.external_ids)
    if change.filler_order_number is not None:
        _ids(Location(change.key_location.segment, change.key_location.sequence, 3),
             [change.filler_order_number])
    for p in change.patient_ids:
        if not (_fits(p.id) and _fits(p.authority) and _fits(p.oid)):
            raise BadValue(f"PID-3 is longer than {ID_MAX} characters per part or holds a NUL",
                           _PID_3)


def _appointment_cut(change: AppointmentChange) -> AppointmentChange:
    specialty = _code(change.specialty, SPECIALTY_MAX)
    filler_status = _code(change.filler_status, FILLER_STATUS_MAX)
    if (specialty, filler_status) == (change.specialty, change.filler_status):
        return change
    return replace(change, specialty=specialty, filler_status=filler_status)


def _ids(where: Location, keys: Iterable[EI]) -> None:
    for key in keys:
        if not (_fits(key.id) and _fits(key.authority)):
            raise BadValue(f"{where.segment}-{where.field} is longer than {ID_MAX} characters "
                           f"per part or holds a NUL", where)


def _fits(part: str) -> bool:
    return len(part) <= ID_MAX and NUL not in part


def _all_fit(parts: list[str]) -> bool:
    """`_fits` of every part, in a few C-level calls: when all of them together are no longer
    than one may be (the usual ids), no part's length needs a look of its own."""
    joined = "".join(parts)
    return NUL not in joined and (len(joined) <= ID_MAX or max(map(len, parts)) <= ID_MAX)


def _code(value: str, limit: int) -> str:
    return value.replace(NUL, "")[:limit] if NUL in value else value[:limit]


def _location(name: str) -> Location:
    """`SCH-4` (a `ledger.link_fields` name) as a location."""
    segment, _, field = name.partition("-")
    number = field.split(".")[0]
    return Location(segment, 1, int(number) if number.isascii() and number.isdigit() else 0)
