"""`validation: strict`: hl7apy's structure check of one message, mapped onto the ACK table.

`engine.pipeline.prepare` calls `check` for a channel with `validation: strict`, after the header
checks pass and before the mappers.  It runs on the writer thread inside the batch, so **a strict
channel costs ~30 ms of the writer's time per message** (hl7apy parses the message again and
walks the standard's structure for its version); lenient channels, the default, pay one attribute
check and never import hl7apy.  A message with hl7apy *errors* is answered AE (CA then AE in
enhanced mode), stored, and changes nothing in the ledger; hl7apy's *warnings* (table values,
lengths) never reject.

The first error line that a rule below recognises decides the answer (hl7apy lists them in the
order of the message structure); with none recognised, the first line gets the fallback.  ERR
text names the rule, the segment, field or structure, and how many problems there were: never a
value.  hl7apy 1.3.5's report lines, and what they become (ERR-3, ERR-2):

* `Missing required child REF_I12.PID` (a segment) → 100, `PID^1`.
* `Missing required child REF_I12.REF_I12_PROVIDER_CONTACT` (a group) → 100 at the segment that
  starts the group in hl7apy's structure, `PRD^1` (for a choice group: its first alternative).
* `Missing required child PID.PID_5` → 101, `PID^n^5`, n the first PID whose field 5 is empty.
* `Missing required child MSH_7.TS_1` (a component) → 101 at its field, `MSH^1^7`; below a
  component (`CX_4.HD_1`) hl7apy does not say which field: 101 with no location.
* `Child limit exceeded REF_I12.RF1` → 100, `RF1^2` (hl7apy's non-repeating segments and groups
  allow one, so the second is the one too many; a group is named by its first segment).
* `Child limit exceeded PID.PID_1` (a non-repeating field repeated) → 102 at the field: table 0357
  has no code for repetitions, and 102 (the value does not fit the field's definition) is the
  closest honest one.
* `Datatype None is not correct for PID.PID_1 (...)` (components in a primitive field) → 102,
  `PID^n^1`; `... for PID_3.CX_1 (...)` (a component) → 102 at its field, `PID^n^3`.
* `Invalid children detected for <Field PID_3 (...) of type CX>: [...]` (more components than the
  datatype has) → 102, `PID^n^3`; `<Component ...>` → 102 with no location.
* `Invalid children detected for <Segment PID>: [...]` (fields beyond the segment's definition)
  → 102 at the first such non-empty field, `PID^n^40`: the closest honest code, as above.
* `Invalid children detected for <Message|Group ...>: ['ZZZ']` → 100 at the first segment named.
* `Value ... not in table HL70001 in element PID.PID_8` → 103, `PID^n^8`.  hl7apy 1.3.5 reports
  table values only as warnings, so this rule waits for a stricter hl7apy.
* `Unknown element found: ...` (hl7apy has no structure for this type in this version, e.g.
  OSU^O51 in 2.5.1) → 100, no location.
* `hl7apy cannot read it: UnsupportedVersion` (2.7.1: hl7apy has no 2.7.1 tables) → AR 203,
  `MSH^1^12` (CR in enhanced mode): this channel cannot take that version strictly.
* `hl7apy cannot read it: <other>` and any line no rule recognises → 100, no location.

"n" is the first occurrence of the segment that shows the problem in our own parse (hl7apy's
lines do not say which occurrence), else 1.  An exception from hl7apy other than its own
(a bug in it) propagates; the pipeline answers it AR 207 and logs `validation.failed`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from engine.errors import ContentError, HL7Error, Location
from engine.parsing import InboundMessage
from engine.validation import report

_SEGMENT = re.compile(r"[A-Z][A-Z0-9]{2}")
_NUMBERED = re.compile(r"([A-Z][A-Z0-9]{1,2})_([0-9]+)")  # PID_3 (a field) or CX_4 (a component)
_MISSING = re.compile(r"Missing required child (\w+)\.(\w+)")
_LIMIT = re.compile(r"Child limit exceeded (\w+)\.(\w+)")
_DATATYPE = re.compile(r"Datatype \w* is not correct for (\w+)\.(\w+) \(.*\)")
_INVALID = re.compile(r"Invalid children detected for <(\w+) (\w*)(?: \(\w*\))?"
                      r"(?: of type (\w+))?>: \[(.*)\]")
_TABLE = re.compile(r"Value .* not in table (\w+) in element (\w+)\.(\w+)")
_UNKNOWN = re.compile(r"Unknown element found: .*")
_UNREADABLE = re.compile(r"hl7apy cannot read it: (\w+)(?::.*)?", re.DOTALL)

Test = Callable[[str], bool]  # on a field's wire text: does this occurrence show the problem?


class StructureError(ContentError):
    """hl7apy found the message outside its version's standard structure (AE)."""

    prefix = "strict validation: "

    def __init__(self, reason: str, location: Location | None = None) -> None:
        super().__init__(self.prefix + reason, location)


class SegmentSequenceError(StructureError):
    code = "100"


class RequiredFieldMissing(StructureError):
    code = "101"


class DataTypeError(StructureError):
    code = "102"


class TableValueNotFound(StructureError):
    code = "103"


class VersionNotCheckable(HL7Error):
    """hl7apy has no definition of this MSH-12 (AR/CR 203, like a version the channel refuses)."""

    code = "203"


def check(msg: InboundMessage, raw: bytes) -> HL7Error | None:
    """None when hl7apy finds no error, else the error that answers the message."""
    errors = report(msg, raw).errors
    if not errors:
        return None
    found = next((e for e in (classify(line, msg) for line in errors) if e is not None), None) \
        or SegmentSequenceError("hl7apy reports a problem no rule here knows")
    if len(errors) > 1:
        found.reason += f" (1 of {len(errors)} problems)"
    return found


def classify(line: str, msg: InboundMessage) -> HL7Error | None:
    """The error one hl7apy report line stands for, or None when no rule knows the line."""
    for rule in (_missing, _limit, _datatype, _invalid, _table, _unknown, _unreadable):
        found = rule(line, msg)
        if found is not None:
            return found
    return None


def _missing(line: str, msg: InboundMessage) -> HL7Error | None:
    if not (m := _MISSING.fullmatch(line)):
        return None
    parent, child = m[1], m[2]
    if _SEGMENT.fullmatch(child):
        return SegmentSequenceError(f"required segment {child} missing in {parent}",
                                    Location(child))
    if (where := _field(parent, child, msg)) is not None:
        seg, n = where
        at = _at(msg, seg, n, lambda text: not text)
        return RequiredFieldMissing(f"required field {seg}-{n} missing", at)
    if (where := _field(parent, "", msg)) is not None:
        seg, n = where
        return RequiredFieldMissing(f"required component {_dotted(child)} of {seg}-{n} missing",
                                    _at(msg, seg, n, bool))
    if _NUMBERED.fullmatch(child):
        return RequiredFieldMissing(f"required component {_dotted(child)} of {_dotted(parent)} "
                                    "missing")
    first = _leading_segment(child, msg.header.version)
    return SegmentSequenceError(f"required segment group {child} missing in {parent}",
                                Location(first) if first else None)


def _limit(line: str, msg: InboundMessage) -> HL7Error | None:
    if not (m := _LIMIT.fullmatch(line)):
        return None
    parent, child = m[1], m[2]
    if (where := _field(parent, child, msg)) is not None:
        seg, n = where
        repeated = _at(msg, seg, n, lambda text: msg.delimiters.repetition in text)
        return DataTypeError(f"field {seg}-{n} repeated; it does not repeat", repeated)
    first = child if _SEGMENT.fullmatch(child) else _leading_segment(child, msg.header.version)
    what = "segment" if first == child else "segment group"
    return SegmentSequenceError(f"{what} {child} repeated; {parent} allows one",
                                Location(first, 2) if first else None)


def _datatype(line: str, msg: InboundMessage) -> HL7Error | None:
    if not (m := _DATATYPE.fullmatch(line)):
        return None
    parent, child = m[1], m[2]
    d = msg.delimiters
    if (where := _field(parent, child, msg)) is not None:
        seg, n = where
        at = _at(msg, seg, n, lambda text: d.component in text or d.subcomponent in text)
        return DataTypeError(f"{seg}-{n} does not fit its data type", at)
    if (where := _field(parent, "", msg)) is not None:
        seg, n = where
        at = _at(msg, seg, n, lambda text: d.subcomponent in text)
        return DataTypeError(f"component {_dotted(child)} of {seg}-{n} does not fit its data type",
                             at)
    return DataTypeError(f"component {_dotted(child)} of {_dotted(parent)} does not fit its "
                         "data type")


def _invalid(line: str, msg: InboundMessage) -> HL7Error | None:
    if not (m := _INVALID.fullmatch(line)):
        return None
    kind, name, datatype, children = m[1], m[2], m[3], m[4]
    version = msg.header.version
    if kind == "Segment" and _SEGMENT.fullmatch(name):
        extra = _first_extra_field(msg, name, _width(name, "Segment", version))
        return DataTypeError(f"{name} has fields its definition does not have",
                             Location(name, *extra) if extra else Location(name))
    if kind == "Field" and (where := _field(name, "", msg)) is not None:
        seg, n = where
        width = _width(datatype or "", "Datatypes_Structs", version)
        at = _at(msg, seg, n, lambda text: _components(text, msg) > width)
        return DataTypeError(f"{seg}-{n} has more components than its data type "
                             f"{datatype or ''}".rstrip(), at)
    if kind in ("Field", "Component"):
        return DataTypeError(f"{_dotted(name)} has more parts than its data type "
                             f"{datatype or ''}".rstrip())
    names = re.findall(r"'(\w+)'", children)
    segment = next((n for n in names if _SEGMENT.fullmatch(n)), "")
    return SegmentSequenceError(f"segment {segment or '(unnamed)'} not allowed in {name}",
                                Location(segment) if segment else None)


def _table(line: str, msg: InboundMessage) -> HL7Error | None:
    if not (m := _TABLE.fullmatch(line)):
        return None
    table, parent, child = m[1], m[2], m[3]
    where = _field(parent, child, msg) or _field(parent, "", msg)
    if where is None:
        return TableValueNotFound(f"value of {_dotted(child)} not in table {table}")
    seg, n = where
    return TableValueNotFound(f"value of {seg}-{n} not in table {table}",
                              _at(msg, seg, n, bool))


def _unknown(line: str, msg: InboundMessage) -> HL7Error | None:
    if not _UNKNOWN.fullmatch(line):
        return None
    return SegmentSequenceError(f"hl7apy has no {msg.header.version} structure for this "
                                "message (or one of its elements)")


def _unreadable(line: str, msg: InboundMessage) -> HL7Error | None:
    if not (m := _UNREADABLE.fullmatch(line)):
        return None
    if m[1] == "UnsupportedVersion":
        return VersionNotCheckable(f"version {msg.header.version} cannot be validated strictly "
                                   "(hl7apy does not define it)", Location("MSH", 1, 12))
    return SegmentSequenceError(f"hl7apy cannot read the message ({m[1]})")


# --- where: names to segments and fields, occurrences from our own parse --------------------


def _field(parent: str, child: str, msg: InboundMessage) -> tuple[str, int] | None:
    """(segment, field) for a field name: `child` when `parent` is its segment (`PID`, `PID_3`),
    or `parent` itself when `child` is "" (`PID_3`).  `CX_4` is a component, not a field: a
    name counts as a field only when the message has that segment."""
    name = child if child else parent
    m = _NUMBERED.fullmatch(name)
    if m is None or (child and m[1] != parent) or not _SEGMENT.fullmatch(m[1]):
        return None
    return (m[1], int(m[2])) if msg.count(m[1]) else None


def _at(msg: InboundMessage, seg: str, n: int, test: Test) -> Location:
    """`seg^seq^n`, seq the first occurrence whose field n passes `test` (else 1)."""
    for seq in range(1, msg.count(seg) + 1):
        fields = msg.segment(seg, seq) or ()
        if test(fields[n] if n < len(fields) else ""):
            return Location(seg, seq, n)
    return Location(seg, 1, n)


def _first_extra_field(msg: InboundMessage, seg: str, width: int) -> tuple[int, int] | None:
    """(seq, field) of the first non-empty field past the segment's definition."""
    for seq in range(1, msg.count(seg) + 1):
        fields = msg.segment(seg, seq) or ()
        extra = next((n for n in range(width + 1, len(fields)) if fields[n]), None)
        if width and extra is not None:
            return seq, extra
    return None


def _components(text: str, msg: InboundMessage) -> int:
    """The most components any repetition of a field has."""
    d = msg.delimiters
    return max(len(rep.split(d.component)) for rep in text.split(d.repetition))


def _dotted(name: str) -> str:
    """hl7apy's `CX_4` as HL7 writes it, `CX.4`."""
    return name.replace("_", ".", 1) if _NUMBERED.fullmatch(name) else name


@lru_cache(maxsize=512)
def _width(name: str, kind: str, version: str) -> int:
    """How many fields (components) hl7apy defines for a segment (datatype); 0 if unknown."""
    from hl7apy import load_reference
    from hl7apy.exceptions import HL7apyException

    try:
        ref = load_reference(name, kind, version)
    except HL7apyException:
        return 0
    return len(ref[1] if kind == "Segment" else ref)


@lru_cache(maxsize=512)
def _leading_segment(group: str, version: str) -> str:
    """The segment a group starts with in hl7apy's structure ("" when hl7apy has no such group)."""
    from hl7apy import load_reference
    from hl7apy.exceptions import HL7apyException

    try:
        children = load_reference(group, "Group", version)[1]
    except HL7apyException:
        return ""
    first = str(children[0][0]) if children else ""
    return first if not first or _SEGMENT.fullmatch(first) else _leading_segment(first, version)
