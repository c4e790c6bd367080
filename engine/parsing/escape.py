"""HL7 escape sequences, decoded per leaf value after splitting (a value is split on the real
delimiters first, so an escaped delimiter never splits it).

`\\F\\ \\S\\ \\T\\ \\R\\ \\E\\` give back the delimiters, `\\P\\` the v2.7+ truncation character and
`\\Xhh..\\` bytes decoded in the message charset.  Formatting (`\\H\\ \\N\\ \\.br\\`), charset switches
(`\\Cxxyy\\ \\Mxxyyzz\\`) and local (`\\Zxx\\`) sequences are kept as they are, for text fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.parsing.message import Delimiters


def unescape(value: str, delims: Delimiters, charset: str = "utf-8") -> str:
    """Decode the escape sequences of one leaf value."""
    esc = delims.escape
    if not esc or esc not in value:
        return value
    out: list[str] = []
    pos = 0
    while True:
        start = value.find(esc, pos)
        if start < 0:
            break
        end = value.find(esc, start + 1)
        if end < 0:
            break  # an unterminated sequence is data
        out.append(value[pos:start])
        out.append(_sequence(value[start + 1 : end], value[start : end + 1], delims, charset))
        pos = end + 1
    out.append(value[pos:])
    return "".join(out)


def _sequence(body: str, literal: str, delims: Delimiters, charset: str) -> str:
    simple = {
        "F": delims.field,
        "S": delims.component,
        "T": delims.subcomponent,
        "R": delims.repetition,
        "E": delims.escape,
    }
    if body in simple:
        return simple[body]
    if body == "P" and delims.truncation:
        return delims.truncation
    if body[:1] == "X" and len(body) > 1 and len(body) % 2 == 1 and _HEX.issuperset(body[1:]):
        return bytes.fromhex(body[1:]).decode(charset, errors="replace")
    return literal


# `\Xhh..\` is pairs of ASCII hex digits; `bytes.fromhex` would also skip spaces inside them.
_HEX = frozenset("0123456789abcdefABCDEF")


def escape(value: str, delims: Delimiters) -> str:
    """Encode a value so that it survives as one leaf: the inverse of `unescape`.

    The escape character goes first, so the sequences written for the others are not escaped again.
    CR and LF become `\\X0D\\` and `\\X0A\\`, since they would end the segment.
    """
    e = delims.escape
    out = value.replace(e, f"{e}E{e}")
    for char, code in (
        (delims.field, "F"),
        (delims.component, "S"),
        (delims.subcomponent, "T"),
        (delims.repetition, "R"),
    ):
        out = out.replace(char, f"{e}{code}{e}")
    if delims.truncation:
        out = out.replace(delims.truncation, f"{e}P{e}")
    if "\r" in out or "\n" in out:
        out = out.replace("\r", f"{e}X0D{e}").replace("\n", f"{e}X0A{e}")
    return out


def transcode(raw: str, src: Delimiters, dst: Delimiters, charset: str = "utf-8") -> str:
    """Re-encode one field's wire text from one delimiter set to another, leaf by leaf."""
    return dst.repetition.join(
        dst.component.join(
            dst.subcomponent.join(escape(unescape(leaf, src, charset), dst)
                                  for leaf in comp.split(src.subcomponent))
            for comp in rep.split(src.component))
        for rep in raw.split(src.repetition))
