"""The immutable `InboundMessage` and its 1-based HL7 path access.

A path names a segment, field, repetition, component and subcomponent, all 1-based:
`PID.3` (first PID, field 3), `PID.3[2].1` (second repetition, first component), `OBX[2].5.1.2`
(second OBX).  As in HAPI's Terser, omitted indexes mean 1, so `msg["MSH.9"]` is the first
component of MSH-9.  `msg[path]` gives a decoded leaf; `msg.raw(path)` gives the element's text as
it was on the wire, escapes and inner delimiters kept.

MSH is numbered as the standard numbers it: MSH-1 *is* the field separator and MSH-2 the encoding
characters, so neither is split further.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from engine.parsing.escape import unescape
from engine.parsing.header import Header, read_header

_PATH = re.compile(
    r"^(?P<seg>[A-Z][A-Z0-9]{2})(?:\[(?P<segrep>[0-9]+)\])?"
    r"(?:\.(?P<field>[0-9]+)(?:\[(?P<rep>[0-9]+)\])?"
    r"(?:\.(?P<comp>[0-9]+)(?:\.(?P<sub>[0-9]+))?)?)?$"
)


@dataclass(frozen=True, slots=True)
class Delimiters:
    """MSH-1 and MSH-2: field, component, repetition, escape, subcomponent, and v2.7+ truncation."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as written."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


STANDARD = Delimiters()


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed HL7 path; every index is 1-based."""

    segment: str
    seg_rep: int = 1
    field: int = 0
    rep: int = 1
    comp: int = 0
    sub: int = 0

    @staticmethod
    def parse(text: str) -> Path:
        """Paths in code are constants: each is parsed once."""
        return _parse_path(text)


@lru_cache(maxsize=4096)
def _parse_path(text: str) -> Path:
    m = _PATH.match(text)
    if not m:
        raise KeyError(f"not an HL7 path: {text!r} (expected e.g. PID.3[2].1)")
    return Path(
        m["seg"],
        int(m["segrep"] or 1),
        int(m["field"] or 0),
        int(m["rep"] or 1),
        int(m["comp"] or 0),
        int(m["sub"] or 0),
    )


@lru_cache(maxsize=4096)
def _leaf_path(text: str) -> Path:
    """Terser rule: omitted component and subcomponent indexes mean 1 (MSH-1/2 are leaves)."""
    p = _parse_path(text)
    if p.field and not (p.segment == "MSH" and p.field <= 2):
        return Path(p.segment, p.seg_rep, p.field, p.rep, p.comp or 1, p.sub or 1)
    return p


@lru_cache(maxsize=4096)
def _leaf_spec(text: str) -> tuple[str, int, int, int, int, int]:
    p = _leaf_path(text)
    return p.segment, p.seg_rep, p.field, p.rep, p.comp, p.sub


class InboundMessage:
    """One parsed message.  `segments[i][n]` is field n of segment i (`[0]` is the segment name).

    Immutable in practice (`Final`), but a plain slotted class, not a frozen dataclass: one is
    built for every message, and a frozen dataclass's `__init__` costs several times more
    (docs/performance.md).  Equal and hashed by segments, delimiters and charset."""

    __slots__ = ("segments", "delimiters", "charset", "_index", "_memo")

    def __init__(self, segments: tuple[tuple[str, ...], ...], delimiters: Delimiters = STANDARD,
                 charset: str = "utf-8") -> None:
        self.segments: Final = segments
        self.delimiters: Final = delimiters
        self.charset: Final = charset
        # Built on first use: the segments of each name in order, and the leaves already asked for.
        self._index: Final[dict[str, list[tuple[str, ...]]]] = {}
        self._memo: Final[dict[str, Any]] = {}

    def _fields(self) -> tuple[tuple[tuple[str, ...], ...], Delimiters, str]:
        return self.segments, self.delimiters, self.charset

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InboundMessage):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (f"InboundMessage(segments={self.segments!r}, delimiters={self.delimiters!r}, "
                f"charset={self.charset!r})")

    def _build_index(self) -> dict[str, list[tuple[str, ...]]]:
        index = self._index
        for seg in self.segments:
            same = index.get(seg[0])
            if same is None:
                index[seg[0]] = [seg]
            else:
                same.append(seg)
        return index

    @property
    def header(self) -> Header:
        """MSH, read once (the first segment is always MSH)."""
        found = self._memo.get(" header")
        if found is None:
            found = self._memo[" header"] = read_header(self.segments[0], self.delimiters,
                                                        self.charset)
        return found

    # --- segments ---------------------------------------------------------------------------

    @property
    def segment_names(self) -> tuple[str, ...]:
        return tuple(seg[0] for seg in self.segments)

    def count(self, name: str) -> int:
        """How many segments of this name the message has."""
        return len((self._index or self._build_index()).get(name, ()))

    def segment(self, name: str, seq: int = 1) -> tuple[str, ...] | None:
        """The fields of the seq-th segment of that name, or None."""
        same = (self._index or self._build_index()).get(name, ())
        return same[seq - 1] if 0 < seq <= len(same) else None

    def segments_named(self, name: str) -> Sequence[tuple[str, ...]]:
        """Every segment of that name, in order (`segment(name, 1)`, `segment(name, 2)`, ...)."""
        return (self._index or self._build_index()).get(name, ())

    # --- fields -----------------------------------------------------------------------------

    def raw(self, path: str) -> str:
        """The element at `path` as on the wire (escapes kept), or "" when absent."""
        key = "raw " + path
        value = self._memo.get(key)
        if value is None:
            value = self._memo[key] = self._resolve(Path.parse(path))
        return value

    def repetitions(self, path: str) -> tuple[str, ...]:
        """Every repetition of the field at `path` (MSH-1/2 never repeat), as wire text."""
        p = Path.parse(path)
        return tuple(self.field_repetitions(self.segment(p.segment, p.seg_rep), p.field))

    def field_repetitions(self, seg: tuple[str, ...] | None, n: int) -> list[str]:
        """`repetitions` of field n of a segment already in hand (`segment`)."""
        text = seg[n] if seg is not None and n < len(seg) else ""
        if not text:
            return []
        if n <= 2 and seg is not None and seg[0] == "MSH":
            return [text]
        return text.split(self.delimiters.repetition)

    def field_wire(self, seg: tuple[str, ...] | None, n: int) -> str:
        """The first repetition of field n (n > 2 for MSH) of a segment already in hand, as on
        the wire: what `raw` gives for `SEG.n`."""
        text = seg[n] if seg is not None and n < len(seg) else ""
        rep = self.delimiters.repetition
        return text.split(rep, 1)[0] if rep in text else text

    def get(self, path: str, default: str = "") -> str:
        """The decoded leaf at `path` (omitted indexes mean 1), or `default` when empty."""
        value = self._memo.get(path)
        if value is None:
            value = self._memo[path] = self._leaf(path)
        return value or default

    def _leaf(self, path: str) -> str:
        """`get`'s work (`_resolve`'s walk, inlined): the mappers read a few dozen leaves per
        message, and this is a tenth of their time less."""
        name, seq, n, rep, comp, sub = _leaf_spec(path)
        same = (self._index or self._build_index()).get(name)
        if same is None or seq > len(same):
            return ""
        d = self.delimiters
        if not n:  # a whole segment
            text = self._resolve(Path(name, seq))
            return unescape(text, d, self.charset) if d.escape in text else text
        return self.field_leaf(same[seq - 1], n, rep, comp, sub)

    def field_leaf(self, seg: tuple[str, ...] | None, n: int, rep: int = 1, comp: int = 1,
                   sub: int = 1) -> str:
        """The decoded leaf of field n of a segment already in hand (`segment`), as `get`
        reads it: for mappers that read several fields of one segment.  Each split stops at the
        part it reads."""
        text = seg[n] if seg is not None and n < len(seg) else ""
        if not text or (n <= 2 and seg is not None and seg[0] == "MSH"):
            return text
        d = self.delimiters
        if d.repetition in text:
            parts = text.split(d.repetition, rep)
            text = parts[rep - 1] if rep <= len(parts) else ""
        elif rep > 1:
            return ""
        if d.component in text:
            parts = text.split(d.component, comp)
            text = parts[comp - 1] if comp <= len(parts) else ""
        elif comp > 1:
            return ""
        if d.subcomponent in text:
            parts = text.split(d.subcomponent, sub)
            text = parts[sub - 1] if sub <= len(parts) else ""
        elif sub > 1:
            return ""
        return unescape(text, d, self.charset) if d.escape in text else text

    def __getitem__(self, path: str) -> str:
        return self.get(path)

    def _resolve(self, p: Path) -> str:
        seg = self.segment(p.segment, p.seg_rep)
        if seg is None:
            return ""
        if not p.field:
            return self.delimiters.field.join(seg if p.segment != "MSH" else _msh_line(seg))
        text = seg[p.field] if p.field < len(seg) else ""
        if not text or (p.segment == "MSH" and p.field <= 2):
            return text
        d = self.delimiters
        text = _nth(text, d.repetition, p.rep)
        if p.comp:
            text = _nth(text, d.component, p.comp)
            if p.sub:
                text = _nth(text, d.subcomponent, p.sub)
        return text


def _nth(text: str, sep: str, n: int) -> str:
    if sep not in text:
        return text if n == 1 else ""
    parts = text.split(sep)
    return parts[n - 1] if n <= len(parts) else ""


def _msh_line(seg: tuple[str, ...]) -> tuple[str, ...]:
    # MSH-1 is the separator itself, so the line joins without it.
    return (seg[0], *seg[2:])
