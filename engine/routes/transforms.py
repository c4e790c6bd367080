"""Route transforms: the `transform:` steps that rewrite an outbound copy of a message.

Steps run in order, each seeing the result of the ones before:

- `{set: {PATH: value}}` writes the value;
- `{copy: {from: PATH, to: PATH}}` writes the decoded leaf at `from` (omitted indexes mean 1);
- `{delete: PATH}` empties the element (an element that does not exist stays absent);
- `{map: {path: PATH, table: {old: new}, default: value}}` replaces the decoded leaf at PATH by its
  table entry, or by `default` when given; an unmapped value without a default is left as it is.

A target path names exactly one element.  A field path without a repetition index (`PID.3`) names
the whole field, every repetition; `PID.3[2]` names one repetition; `PID.3.4` and `PID.3[2].4.1`
name a component or subcomponent of that repetition (1 when omitted).  `map` reads and writes the
same leaf, so it translates a code in place and keeps the rest of the field.

Values are written escaped with the message's own delimiters, so a value holding `|` or `^` stays
one leaf.  Writing past the end of a segment, field, repetition list or component adds empty ones;
a segment that is missing (`ZBX`, `OBX[3]` in a message with two OBX) is never created, and the
step does nothing.  MSH-1 and MSH-2 *are* the delimiters and cannot be targets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from engine.parsing.escape import escape
from engine.parsing.message import Delimiters, InboundMessage, Path
from engine.routes.filters import check_path, kind

Op = Literal["set", "copy", "delete", "map"]
_OPS: tuple[Op, ...] = ("set", "copy", "delete", "map")
_EXPLICIT_REP = re.compile(r"^[^.]+\.[0-9]+\[")


@dataclass(frozen=True, slots=True)
class Step:
    """One transform step; `target` is the element written, `source` the leaf `copy` reads."""

    op: Op
    target: str
    value: str = ""  # set
    source: str = ""  # copy
    table: tuple[tuple[str, str], ...] = ()  # map: old -> new, decoded values
    default: str | None = None  # map: the value for anything not in the table


def apply(steps: tuple[Step, ...], msg: InboundMessage) -> bytes:
    """The message after every step, encoded in its charset, each segment ending with CR."""
    segments = msg.segments
    for step in steps:
        current = msg if segments is msg.segments else InboundMessage(
            segments, msg.delimiters, msg.charset)
        segments = _apply_step(step, current)
    return encode(segments, msg.delimiters, msg.charset)


def encode(segments: tuple[tuple[str, ...], ...], d: Delimiters, charset: str) -> bytes:
    """Segments back to wire bytes.  As in the ACK builder, a character the charset cannot hold
    becomes "?" rather than failing the delivery."""
    lines = [
        # MSH-1 is the field separator itself: the line is "MSH" + MSH-1 + MSH-2 + ...
        "MSH" + d.field + d.field.join(seg[2:]) if seg[0] == "MSH" else d.field.join(seg)
        for seg in segments
    ]
    return ("\r".join(lines) + "\r").encode(charset, errors="replace")


def _apply_step(step: Step, msg: InboundMessage) -> tuple[tuple[str, ...], ...]:
    d = msg.delimiters
    if step.op == "set":
        return _write(msg, step.target, escape(step.value, d), extend=True)
    if step.op == "copy":
        return _write(msg, step.target, escape(msg.get(step.source), d), extend=True)
    if step.op == "delete":
        return _write(msg, step.target, "", extend=False)
    old = msg.get(step.target)
    new = dict(step.table).get(old, step.default)
    if new is None:
        return msg.segments
    return _write(msg, _leaf(step.target), escape(new, d), extend=True)


def _leaf(target: str) -> str:
    """The leaf a map step reads (`InboundMessage.get`'s rule: omitted indexes mean 1)."""
    p = Path.parse(target)
    seg = p.segment if p.seg_rep == 1 else f"{p.segment}[{p.seg_rep}]"
    return f"{seg}.{p.field}[{p.rep}].{p.comp or 1}.{p.sub or 1}"


def _write(msg: InboundMessage, target: str, value: str,
           extend: bool) -> tuple[tuple[str, ...], ...]:
    """The segments with the element at `target` replaced by the wire text `value`."""
    p = Path.parse(target)
    where = [i for i, seg in enumerate(msg.segments) if seg[0] == p.segment]
    if p.seg_rep > len(where):
        return msg.segments  # a missing segment is never created
    i = where[p.seg_rep - 1]
    seg = list(msg.segments[i])
    if p.field >= len(seg):
        if not extend:
            return msg.segments
        seg.extend([""] * (p.field + 1 - len(seg)))
    d = msg.delimiters
    levels: list[tuple[str, int]] = []
    if p.comp or _EXPLICIT_REP.match(target):
        levels.append((d.repetition, p.rep))
    if p.comp:
        levels.append((d.component, p.comp))
    if p.sub:
        levels.append((d.subcomponent, p.sub))
    text = _put(seg[p.field], levels, value, extend)
    if text is None:
        return msg.segments
    seg[p.field] = text
    return (*msg.segments[:i], tuple(seg), *msg.segments[i + 1:])


def _put(text: str, levels: list[tuple[str, int]], value: str, extend: bool) -> str | None:
    """`text` with its element at `levels` (separator, 1-based index) set; None if absent and
    not extending."""
    if not levels:
        return value
    (sep, n), rest = levels[0], levels[1:]
    parts = text.split(sep)
    if n > len(parts):
        if not extend:
            return None
        parts.extend([""] * (n - len(parts)))
    inner = _put(parts[n - 1], rest, value, extend)
    if inner is None:
        return None
    parts[n - 1] = inner
    return sep.join(parts)


# --- parsing ----------------------------------------------------------------------------------


def parse_transform(raw: Any, path: str, problems: list[str]) -> tuple[Step, ...]:
    """The steps of a `transform:` list; each problem is appended as "yaml.path: text"."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(f"{path}: expected a list of steps, got {kind(raw)}")
        return ()
    steps: list[Step] = []
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in _OPS:
            problems.append(f"{where}: expected one of {{set: ...}}, {{copy: ...}}, "
                            f"{{delete: PATH}} or {{map: ...}}, got {_describe(item)}")
            continue
        op, body = next(iter(item.items()))
        steps.extend(_PARSERS[op](body, f"{where}.{op}", problems))
    return tuple(steps)


def _describe(item: Any) -> str:
    if isinstance(item, dict):
        return "keys " + ", ".join(repr(k) for k in item) if item else "an empty mapping"
    return kind(item)


def _target(raw: Any, where: str, problems: list[str]) -> str | None:
    text = check_path(raw, where, problems)
    if text is None:
        return None
    p = Path.parse(text)
    if p.segment == "MSH" and p.field <= 2:
        problems.append(f"{where}: MSH-1 and MSH-2 are the delimiters and cannot be transformed")
        return None
    return text


def _string(raw: Any, where: str, problems: list[str]) -> str | None:
    # Strict on purpose: YAML reads 007 as 7 and yes as True; only a quoted value is exact.
    if isinstance(raw, str):
        return raw
    problems.append(f"{where}: expected a string value (quote it), got {kind(raw)}")
    return None


def _mapping(raw: Any, where: str, problems: list[str], keys: tuple[str, ...],
             required: tuple[str, ...]) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping, got {kind(raw)}")
        return None
    ok = True
    for key in raw:
        if key not in keys:
            problems.append(f"{where}.{key}: unknown key (expected one of: {', '.join(keys)})")
            ok = False
    for key in required:
        if key not in raw:
            problems.append(f"{where}.{key}: required")
            ok = False
    return raw if ok else None


def _parse_set(raw: Any, where: str, problems: list[str]) -> list[Step]:
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{where}: expected a mapping of HL7 path to value, got "
                        f"{'an empty mapping' if raw == {} else kind(raw)}")
        return []
    steps: list[Step] = []
    for key, value in raw.items():
        target = _target(key, f"{where}.{key}", problems)
        text = _string(value, f"{where}.{key}", problems)
        if target is not None and text is not None:
            steps.append(Step("set", target, value=text))
    return steps


def _parse_copy(raw: Any, where: str, problems: list[str]) -> list[Step]:
    body = _mapping(raw, where, problems, ("from", "to"), ("from", "to"))
    if body is None:
        return []
    source = check_path(body["from"], f"{where}.from", problems)
    target = _target(body["to"], f"{where}.to", problems)
    if source is None or target is None:
        return []
    return [Step("copy", target, source=source)]


def _parse_delete(raw: Any, where: str, problems: list[str]) -> list[Step]:
    target = _target(raw, where, problems)
    return [] if target is None else [Step("delete", target)]


def _parse_map(raw: Any, where: str, problems: list[str]) -> list[Step]:
    body = _mapping(raw, where, problems, ("path", "table", "default"), ("path", "table"))
    if body is None:
        return []
    target = _target(body["path"], f"{where}.path", problems)
    table = body["table"]
    pairs: list[tuple[str, str]] = []
    ok = target is not None
    if not isinstance(table, dict):
        problems.append(f"{where}.table: expected a mapping of old value to new, got {kind(table)}")
        ok = False
    else:
        for old, new in table.items():
            key = _string(old, f"{where}.table.{old}", problems)
            value = _string(new, f"{where}.table.{old}", problems)
            if key is None or value is None:
                ok = False
            else:
                pairs.append((key, value))
    default = None
    if "default" in body:
        default = _string(body["default"], f"{where}.default", problems)
        ok = ok and default is not None
    if not ok or target is None:
        return []
    return [Step("map", target, table=tuple(pairs), default=default)]


_PARSERS = {"set": _parse_set, "copy": _parse_copy, "delete": _parse_delete, "map": _parse_map}
