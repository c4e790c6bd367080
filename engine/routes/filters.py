"""Route filters: the `when:` block of a route, parsed from YAML and matched against a message.

A `When` holds three conditions, all of which must hold; an empty condition matches anything:
message types (`REF^I12`, `SIU^*`, or `ORM` for every trigger), senders (MSH-3.1, the HD namespace
id), and fields (an HL7 path and the decoded value it must have, "" meaning empty or absent).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from engine.parsing.message import InboundMessage, Path

_TYPE = re.compile(r"^[A-Z0-9]{3}(?:\^(?:[A-Z0-9]{3}|\*))?$")
_ZERO_INDEX = re.compile(r"[.\[]0+(?=[.\]]|$)")
_KEYS = ("fields", "sender", "type")


@dataclass(frozen=True, slots=True)
class When:
    """The conditions of one route; every non-empty one must hold."""

    types: tuple[str, ...] = ()  # "REF^I12", "SIU^*", "ORM" (type only); empty = any
    senders: tuple[str, ...] = ()  # MSH-3.1 values (HD namespace id); empty = any
    fields: tuple[tuple[str, str], ...] = ()  # (HL7 path, expected decoded value)


def matches(when: When, msg: InboundMessage) -> bool:
    """Whether the message passes every condition of `when`."""
    if when.types and not _type_matches(when.types, msg):
        return False
    # MSH-3.1 is the HD namespace id: the sender's name, without its universal id.
    if when.senders and msg.get("MSH.3") not in when.senders:
        return False
    return all(msg.get(path) == expected for path, expected in when.fields)


def _type_matches(types: tuple[str, ...], msg: InboundMessage) -> bool:
    header = msg.header
    for pattern in types:
        kind, _, trigger = pattern.partition("^")
        if kind == header.message_type and trigger in ("", "*", header.trigger):
            return True
    return False


def parse_when(raw: Any, path: str, problems: list[str]) -> When:
    """A `When` from its YAML value; each problem is appended as "yaml.path: text"."""
    if raw is None:
        return When()
    if not isinstance(raw, dict):
        problems.append(f"{path}: expected a mapping, got {kind(raw)}")
        return When()
    for key in raw:
        if key not in _KEYS:
            problems.append(f"{path}.{key}: unknown key (expected one of: {', '.join(_KEYS)})")
    types: list[str] = []
    for where, entry in _strings(raw.get("type"), f"{path}.type", problems):
        if _TYPE.match(entry.upper()):
            types.append(entry.upper())
        else:
            problems.append(f"{where}: expected TYPE^TRIGGER, TYPE^* or TYPE, got {entry!r}")
    senders = tuple(s for _, s in _strings(raw.get("sender"), f"{path}.sender", problems))
    fields = _fields(raw.get("fields"), f"{path}.fields", problems)
    return When(tuple(types), senders, fields)


def _strings(raw: Any, path: str, problems: list[str]) -> list[tuple[str, str]]:
    """A string or a non-empty list of strings, each with its YAML path; absent means none."""
    if raw is None:
        return []
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        problems.append(f"{path}: expected a string or a non-empty list, got an empty list")
    out: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]" if isinstance(raw, list) else path
        if isinstance(item, str) and item.strip():
            out.append((where, item.strip()))
        else:
            got = "an empty string" if isinstance(item, str) else kind(item)
            problems.append(f"{where}: expected a non-empty string, got {got}")
    return out


def _fields(raw: Any, path: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        problems.append(f"{path}: expected a mapping of HL7 path to value, got {kind(raw)}")
        return ()
    out: list[tuple[str, str]] = []
    for key, value in raw.items():
        where = f"{path}.{key}"
        hl7_path = check_path(key, where, problems)
        # Strict on purpose: YAML reads 007 as 7, 1.10 as 1.1 and yes as True, so only a quoted
        # value says what the field must hold.
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string value (quote it), got {kind(value)}")
        elif hl7_path is not None:
            out.append((hl7_path, value))
    return tuple(out)


def check_path(raw: Any, where: str, problems: list[str]) -> str | None:
    """An HL7 path naming at least a field (`PID.3`, `OBX[2].5.1`), or None and a problem."""
    if not isinstance(raw, str):
        problems.append(f"{where}: expected an HL7 path such as PID.3.1, got {kind(raw)}")
        return None
    text = raw.strip()
    try:
        parsed = Path.parse(text)
    except KeyError:
        problems.append(f"{where}: not an HL7 path: {text!r} (expected e.g. PID.3[2].1)")
        return None
    if _ZERO_INDEX.search(text[3:]):
        problems.append(f"{where}: HL7 indexes are 1-based, got {text!r}")
        return None
    if not parsed.field:
        problems.append(f"{where}: expected a path to a field, got a whole segment {text!r}")
        return None
    return text


def kind(value: Any) -> str:
    """The YAML kind of a value, for problem text."""
    names = {list: "a list", dict: "a mapping", str: "a string", int: "a number",
             float: "a number", bool: "a boolean", type(None): "nothing"}
    return names.get(type(value), type(value).__name__)
