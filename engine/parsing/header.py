"""MSH read once: every value the header checks, the store row and the ACK builder need.

Wire values (`*_raw`, and the sender/receiver fields) are the first repetition as sent, escapes
kept, ready to echo; decoded values follow the path rules of `InboundMessage.get` (first
repetition, first component unless named, escapes decoded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from engine.parsing.escape import unescape

if TYPE_CHECKING:
    from engine.parsing.message import Delimiters


class Header(NamedTuple):
    """A NamedTuple, not a frozen dataclass: it is built for every message, and a frozen
    dataclass's __init__ costs several times more."""

    sending_application: str  # MSH-3
    sending_facility: str  # MSH-4
    receiving_application: str  # MSH-5
    receiving_facility: str  # MSH-6
    message_type: str  # MSH-9.1
    trigger: str  # MSH-9.2
    trigger_raw: str
    control_id: str  # MSH-10
    control_id_raw: str
    processing_id: str  # MSH-11.1
    processing_raw: str  # MSH-11
    version: str  # MSH-12.1
    version_raw: str  # MSH-12
    accept_ack: str  # MSH-15
    application_ack: str  # MSH-16
    charset_raw: str  # MSH-18


def read_header(msh: tuple[str, ...], d: Delimiters, charset: str) -> Header:
    """The header of an MSH segment tuple (`msh[n]` is MSH-n)."""
    rep, comp = d.repetition, d.component
    fields = list(msh[:19])
    if len(fields) < 19:
        fields += [""] * (19 - len(fields))
    values = "".join(fields[3:])
    if rep in values:
        fields = [(f.split(rep, 1)[0] if rep in f else f) for f in fields]
    msh9 = fields[9].split(comp)
    trigger_raw = msh9[1] if len(msh9) > 1 else ""
    # MSH-9.1, MSH-9.2, MSH-10, MSH-11, MSH-12, MSH-15, MSH-16: decoded only when one could
    # change (most headers have no subcomponent, escape or component there).
    coded = [msh9[0], trigger_raw, fields[10], fields[11], fields[12], fields[15], fields[16]]
    if d.subcomponent in values or d.escape in values or comp in "".join(coded[2:]):
        coded = [_leaf(value, d, charset) for value in coded]
    # Positional, through `tuple.__new__`: a NamedTuple's keyword constructor costs seven times
    # this, and one header is read for every message.  The order is `Header`'s.
    return _new(Header, (
        fields[3], fields[4], fields[5], fields[6],  # sending, receiving application/facility
        coded[0], coded[1], trigger_raw,  # message_type, trigger, trigger_raw
        coded[2], fields[10], coded[3], fields[11],  # control id, processing id, decoded and raw
        coded[4], fields[12], coded[5], coded[6],  # version (and raw), accept and application ack
        # Blank as the parser reads it (no charset named) is no MSH-18 to echo.
        fields[18] if fields[18] and charset_name(fields[18], d) else "",
    ))


_new = tuple.__new__


def _leaf(text: str, d: Delimiters, charset: str) -> str:
    """The first component's first subcomponent, escapes decoded."""
    if d.component in text:
        text = text.split(d.component, 1)[0]
    if d.subcomponent in text:
        text = text.split(d.subcomponent, 1)[0]
    return unescape(text, d, charset) if d.escape in text else text


def charset_name(msh18: str, d: Delimiters) -> str:
    """The character set MSH-18 names, as the parser reads it: the first repetition's first
    component and subcomponent, escapes decoded (`8859\\T\\1` with `/` as the subcomponent
    separator), stripped; "" for none."""
    name = msh18.split(d.repetition, 1)[0].split(d.component, 1)[0].split(d.subcomponent, 1)[0]
    return (unescape(name, d, "ascii") if d.escape in name else name).strip()

