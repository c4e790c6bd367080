"""Field readers the mappers share: HL7 DTM/TS, NM, EI, PID-3 (CX) and person names.

Every reader returns decoded leaves (escapes resolved).  The HL7 null `""` ("delete
this value") reads as empty: a change cannot express a deletion yet, so it is
treated like an empty field, "no change".  Errors name the field, never its value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache

from engine.errors import Location
from engine.mappings.changes import EI, BadValue, PatientId
from engine.parsing.escape import unescape
from engine.parsing.message import InboundMessage

NULL = '""'  # HL7 "delete this value"

# Digits are ASCII 0-9 only: `\d` and `str.isdigit` also take "²" or Arabic-Indic digits, which
# are no HL7 number and which `int()` reads differently or not at all.
# DTM/TS: YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]; each part only after the one before it.
_DTM = re.compile(
    r"([0-9]{4})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})"
    r"(?:\.([0-9]+))?)?)?)?)?)?"
    r"(?:([+-])([0-9]{2})([0-9]{2}))?"
)
_NM = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# A plausible date/time: anything outside these years is a typo or a placeholder (0000, 9999),
# and near the ends of `datetime` an offset or a window would overflow.
YEARS = range(1800, 3000)
# HL7 NM is at most 16 characters (v2.5 ch.2A), sign and decimal point included.
NM_MAX_CHARS = 16
# An ISO OID as HD.2 carries it (table 0301 ISO): at least two arcs of ASCII digits.
_OID = re.compile(r"[0-9]+(?:\.[0-9]+)+")


def text(msg: InboundMessage, path: str) -> str:
    """The decoded leaf at `path`, with the HL7 null read as empty."""
    value = msg.get(path).strip()
    return "" if value == NULL else value


def leaf(msg: InboundMessage, seg: tuple[str, ...] | None, n: int, comp: int = 1) -> str:
    """`text` for field n, component `comp` (first repetition and subcomponent) of a segment
    already in hand (`msg.segment`): the same value without building and resolving a path."""
    value = msg.field_leaf(seg, n, 1, comp).strip()
    return "" if value == NULL else value


def leaves(msg: InboundMessage, seg: tuple[str, ...] | None, *ns: int) -> list[str]:
    """`leaf` of several fields of one segment in one call: a field without a repetition,
    subcomponent or escape (most) is its text up to the first component separator, stripped,
    the HL7 null read as empty; any other field is read by `leaf`."""
    if seg is None or seg[0] == "MSH":  # MSH-1/2 are leaves of their own
        return [leaf(msg, seg, n) for n in ns]
    d = msg.delimiters
    rep, sub, esc, comp = d.repetition, d.subcomponent, d.escape, d.component
    size = len(seg)
    out = []
    for n in ns:
        text = seg[n] if n < size else ""
        if rep in text or sub in text or esc in text:
            out.append(leaf(msg, seg, n))
            continue
        value = (text.split(comp, 1)[0] if comp in text else text).strip()
        out.append("" if value == NULL else value)
    return out


def nulled(msg: InboundMessage, *paths: str) -> bool:
    """Does an update delete this value?  One of its source fields holds the HL7 null `""` and
    none holds a value (`""` deletes, an empty field changes nothing)."""
    values = [msg.get(p).strip() for p in paths]
    return NULL in values and all(v in ("", NULL) for v in values)


def component(msg: InboundMessage, wire: str, comp: int, sub: int = 1) -> str:
    """One decoded leaf of a repetition's wire text (from `msg.repetitions` or `msg.raw`)."""
    d = msg.delimiters
    parts = wire.split(d.component, comp)  # the parts after `comp` stay whole: never read
    if comp > len(parts):
        return ""
    value = parts[comp - 1]
    if d.subcomponent in value:
        subs = value.split(d.subcomponent, sub)
        if sub > len(subs):
            return ""
        value = subs[sub - 1]
    elif sub > 1:
        return ""
    value = value.strip()
    if not value or value == NULL:
        return ""
    return unescape(value, d, msg.charset) if d.escape in value else value


def trigger(msg: InboundMessage) -> str:
    """MSH-9.1^MSH-9.2, as the ledger history records it."""
    h = msg.header
    return f"{h.message_type}^{h.trigger}"


def parse_dtm(value: str) -> datetime | None:
    """An HL7 DTM/TS value as a naive UTC datetime, or None when it is not one (or its year is
    outside `YEARS`).

    With a `+/-ZZZZ` offset the value is converted to UTC; without one it is taken as UTC.
    """
    value = value.strip()
    if len(value) in _DIGITS_ONLY and value.isascii() and value.isdigit():
        return _plain_dtm(value)
    m = _DTM.fullmatch(value)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, sign, off_h, off_m = m.groups()
    if int(year) not in YEARS:
        return None
    micro = int((frac or "0")[:6].ljust(6, "0"))
    try:
        when = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0),
                        int(minute or 0), int(second or 0), micro)
        if sign is None:
            return when
        if int(off_h) > 14 or int(off_m) > 59:
            return None
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        return when - offset if sign == "+" else when + offset
    except (ValueError, OverflowError):
        return None


# The lengths of a DTM of ASCII digits alone (YYYY to YYYYMMDDHHMMSS): read without the regex.
_DIGITS_ONLY = frozenset({4, 6, 8, 10, 12, 14})


@lru_cache(maxsize=4096)
def _plain_dtm(value: str) -> datetime | None:
    """`parse_dtm` of ASCII digits alone, no fraction or offset (what most senders write).
    Cached: a feed repeats its dates (windows, birth dates, slots), and a datetime is immutable."""
    year = int(value[:4])
    if year not in YEARS:
        return None
    try:
        return datetime(year, int(value[4:6] or 1), int(value[6:8] or 1), int(value[8:10] or 0),
                        int(value[10:12] or 0), int(value[12:14] or 0))
    except ValueError:
        return None


def read_dtm(msg: InboundMessage, path: str, where: Location) -> datetime | None:
    """The date/time at `path`: None when empty, BadValue (102) at `where` when unreadable."""
    return dtm_value(text(msg, path), where)


def dtm_value(value: str, where: Location) -> datetime | None:
    """`read_dtm` of a value already read (`text`, `leaf`)."""
    if not value:
        return None
    when = parse_dtm(value)
    if when is None:
        raise BadValue(f"{_name(where)} is not an HL7 date/time", where)
    return when


def read_nm(msg: InboundMessage, path: str, where: Location) -> Decimal | None:
    """The HL7 NM (number) at `path`: None when empty, BadValue (102) at `where` when unreadable."""
    return nm_value(text(msg, path), where)


def nm_value(value: str, where: Location) -> Decimal | None:
    """`read_nm` of a value already read (`text`, `leaf`)."""
    if not value:
        return None
    if len(value) > NM_MAX_CHARS or not _NM.fullmatch(value):
        raise BadValue(f"{_name(where)} is not an HL7 number (ASCII digits, at most "
                       f"{NM_MAX_CHARS} characters)", where)
    return Decimal(value)


def ei_from_wire(msg: InboundMessage, wire: str) -> EI | None:
    """An EI (or a CWE's code^text) from one repetition's wire text; None without EI.1.
    Without a subcomponent or escape (most ids), both parts come from one split."""
    d = msg.delimiters
    if d.subcomponent in wire or d.escape in wire:
        ident = component(msg, wire, 1)
        return EI(ident, component(msg, wire, 2)) if ident else None
    parts = wire.split(d.component, 2)
    ident = parts[0].strip()
    if not ident or ident == NULL:
        return None
    authority = parts[1].strip() if len(parts) > 1 else ""
    return EI(ident, "" if authority == NULL else authority)


def read_ei(msg: InboundMessage, path: str) -> EI | None:
    """The EI in the first repetition of the field at `path`."""
    return ei_from_wire(msg, msg.raw(path))


def read_eis(msg: InboundMessage, path: str) -> tuple[EI, ...]:
    """Every repetition of an EI field that has an EI.1 (RF1-11, SCH-26, SCH-27)."""
    return eis_of(msg, msg.repetitions(path))


def eis_of(msg: InboundMessage, wires: Iterable[str]) -> tuple[EI, ...]:
    """`read_eis` of repetitions already in hand (`InboundMessage.field_repetitions`)."""
    found = []
    for wire in wires:
        ei = ei_from_wire(msg, wire)
        if ei is not None:
            found.append(ei)
    return tuple(found)


def patient_ids(msg: InboundMessage) -> tuple[PatientId, ...]:
    """PID-3 as CX.1 with CX.4.1 (the namespace) and CX.4.2 (the OID) of its HD.

    CX.4.2 is taken as an OID only when it is written as one (digits and dots, `_OID`) and
    CX.4.3 is ISO (any case) or empty: another universal id type (DNS, UUID, URI, ...) is not an
    OID, and without a namespace such an id has no authority we compare.  Repetitions without
    CX.1 carry no identifier and are skipped.
    """
    ids: list[PatientId] = []
    d = msg.delimiters
    sub, esc, comp = d.subcomponent, d.escape, d.component
    for wire in msg.field_repetitions(msg.segment("PID"), 3):
        if sub in wire or esc in wire:
            ident = component(msg, wire, 1)
            if ident:
                ids.append(PatientId(ident, component(msg, wire, 4, 1),
                                     _oid(msg, wire) if sub in wire else ""))
            continue
        # Without a subcomponent or escape (most feeds send CX.4.1 alone): one split, no CX.4.2.
        parts = wire.split(comp, 4)
        ident = parts[0].strip()
        if ident and ident != NULL:
            namespace = parts[3].strip() if len(parts) > 3 else ""
            ids.append(PatientId(ident, "" if namespace == NULL else namespace, ""))
    return tuple(ids)


def _oid(msg: InboundMessage, wire: str) -> str:
    """CX.4.2 when it is an ISO OID (CX.4.3 ISO or empty), else empty."""
    oid = component(msg, wire, 4, 2)
    kind = component(msg, wire, 4, 3)
    return oid if kind.upper() in ("", "ISO") and _OID.fullmatch(oid) else ""


def person_name(msg: InboundMessage, wire: str, family: int) -> str:
    """`family^given` from an XPN (family=1) or XCN (family=2) repetition; FN.1 is the surname."""
    surname = component(msg, wire, family, 1)
    given = component(msg, wire, family + 1)
    if not given:
        return surname
    return f"{surname}^{given}"


def diagnoses(msg: InboundMessage, seqs: Iterable[int] | None = None) -> tuple[str, ...]:
    """DG1-3.1 of the given DG1 segments (1-based sequence numbers; None: every DG1), empty
    codes skipped."""
    dg1 = msg.segments_named("DG1")
    if seqs is None:
        return tuple([code for seg in dg1 if (code := leaf(msg, seg, 3))])
    return tuple([code for n in seqs if 0 < n <= len(dg1) and (code := leaf(msg, dg1[n - 1], 3))])


def _name(where: Location) -> str:
    return f"{where.segment}-{where.field}"
