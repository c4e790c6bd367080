"""Outcome to ACK bytes, as docs/acknowledgements.md describes.

* Original mode (MSH-15 and MSH-16 empty): one ACK, MSA-1 AA, AE or AR.
* Enhanced mode (either valued): an accept ACK (CA/CE/CR) when MSH-15 asks for it, then, for a
  committed message, an application ACK (AA/AE/AR) when MSH-16 asks for it, on the same connection.
  Table 0155: AL always, NE never, ER only on error/reject, SU only on success.  Decision: an empty
  MSH-15 in enhanced mode means AL, an empty MSH-16 means NE (one ACK, the commit one).
* ERR by version: >= 2.5 ERR-2 (location), ERR-3 (0357 code), ERR-4 (severity), ERR-8 (text);
  < 2.5 ERR-1 (`seg^seq^field^code&text&HL70357`) plus MSA-3 text.
* The ACK's MSH: ours (or inbound MSH-5/6) in MSH-3/4, inbound MSH-3/4 in MSH-5/6, MSH-9
  `ACK^<trigger>^ACK` (no third component for v2.3), a new MSH-10, MSH-11/12 echoed.  Standard
  delimiters `|^~\\&`, encoded in the inbound charset (MSH-18 echoed when the sender declared it).
"""

from __future__ import annotations

import enum
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import NamedTuple

from engine.errors import TABLE_0357, Disposition, HL7Error, Location, shown
from engine.parsing.escape import escape, transcode
from engine.parsing.header import Header
from engine.parsing.message import STANDARD, InboundMessage
from engine.parsing.parser import parse

GARBAGE_VERSION = "2.5.1"  # MSH-12 of an ACK to bytes that had no MSH to echo


class Stage(enum.Enum):
    """Where a verdict was reached; it picks the enhanced-mode accept code."""

    HEADER = "header"  # MSH unusable or unsupported: CR
    COMMIT = "commit"  # not committed: CE
    CONTENT = "content"  # committed: CA, then the application code


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the engine decided about one message, enough to (re)build its ACKs."""

    disposition: Disposition
    stage: Stage = Stage.CONTENT
    code: str = ""  # table 0357; "" when accepted
    location: Location | None = None
    text: str = ""  # why, without patient data

    @property
    def accepted(self) -> bool:
        return self.disposition is Disposition.ACCEPTED


ACCEPTED = Verdict(Disposition.ACCEPTED)

_ORIGINAL = {Disposition.ACCEPTED: "AA", Disposition.ERRORED: "AE", Disposition.REJECTED: "AR"}


def ack_codes(verdict: Verdict, msh15: str, msh16: str) -> list[str]:
    """The MSA-1 of every ACK to send, in order (none for NE/NE)."""
    if not msh15 and not msh16:
        return [_ORIGINAL[verdict.disposition]]
    if verdict.stage is Stage.HEADER:
        accept = "CR"
    elif verdict.stage is Stage.COMMIT:
        accept = "CE"
    else:
        accept = "CA"
    codes = [accept] if _wanted(msh15 or "AL", accept) else []
    if accept == "CA":
        app = _ORIGINAL[verdict.disposition]
        if _wanted(msh16 or "NE", app):
            codes.append(app)
    return codes


def _wanted(condition: str, code: str) -> bool:
    ok = code in ("AA", "CA")
    return {"NE": False, "ER": not ok, "SU": ok}.get(condition.upper(), True)


class ControlIds:
    """Unique MSH-10 values for our ACKs: a base-36 millisecond stamp taken at start plus a
    counter, at most 20 characters (the ST length of v2.3)."""

    def __init__(self, prefix: str = "A") -> None:
        self._prefix = prefix + base36(int(time.time() * 1000)) + base36(os.getpid() % 1296)
        self._count: Iterator[int] = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count)}"


def base36(n: int) -> str:
    """`n` in base 36, upper case (compact, sortable ids)."""
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


@dataclass(frozen=True, slots=True)
class AckBuilder:
    """Builds ACK bytes.  `application`/`facility` empty means echo inbound MSH-5/6."""

    application: str = ""
    facility: str = ""
    control_ids: Callable[[], str] = ControlIds()
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def build(self, msg: InboundMessage | None, verdict: Verdict) -> list[bytes]:
        """Every ACK for this message (or garbage, when `msg` is None), encoded and unframed."""
        if msg is None:
            return [self._one(None, None, verdict, code) for code in ack_codes(verdict, "", "")]
        h = msg.header
        return [self._one(msg, h, verdict, code)
                for code in ack_codes(verdict, h.accept_ack, h.application_ack)]

    def relay(self, msg: InboundMessage, downstream: bytes) -> bytes:
        """Pass-through: the downstream's answer for the sender.  MSA-1 (and MSA-3) and every ERR
        are copied, re-encoded with our delimiters; MSH and MSA-2 are the sender's, as for any
        ACK of ours.  A downstream answer we cannot read is AE 207 (`unreadable` below)."""
        try:
            answer = parse(downstream)
        except HL7Error:
            answer = None
        code = answer.get("MSA.1").upper() if answer is not None else ""
        if answer is None or code not in RELAYABLE:
            return self.timed_out(msg, "the downstream's answer could not be read")
        h = msg.header
        segments = [self._msh(msg, h, h.version or GARBAGE_VERSION)]
        msa = ["MSA", code, _wire(msg, h.control_id_raw)]
        if text := answer.raw("MSA.3"):
            msa.append(_copied(answer, text))
        segments.append("|".join(msa))
        segments += [_copied(answer, answer.delimiters.field.join(seg))
                     for seg in answer.segments if seg[0] == "ERR"]
        return ("\r".join(segments) + "\r").encode(msg.charset, errors="replace")

    def too_large(self, head: bytes, size: int, limit: int
                  ) -> tuple[list[bytes], dict[str, str]]:
        """An oversized frame's answer, from its first bytes: AR (CR in enhanced mode) with
        ERR-3 100 and MSA-2 = its MSH-10 when `head` holds a whole readable MSH; and, for the
        log, its sender (MSH-3^MSH-4) and control id, shortened and printable.  Never raises."""
        cut = head[: head.rfind(b"\r") + 1] if b"\r" in head else b""
        try:
            msg: InboundMessage | None = parse(cut) if cut else None
        except Exception:  # noqa: BLE001 - any head answers, readable or not
            msg = None
        text = f"frame too large: over the {limit}-byte limit of limits.max_frame_bytes"
        verdict = Verdict(Disposition.REJECTED, Stage.HEADER, "100", None, text)
        try:
            acks = self.build(msg, verdict)
        except Exception:  # noqa: BLE001
            acks = [fallback_ack(cut)]
        if msg is None:
            return acks, {}
        h = msg.header
        return acks, {"sender": shown(f"{h.sending_application}^{h.sending_facility}"),
                      "control_id": shown(h.control_id)}

    def timed_out(self, msg: InboundMessage, text: str) -> bytes:
        """Pass-through without a usable downstream answer: one AE with ERR-3 207."""
        verdict = Verdict(Disposition.ERRORED, Stage.CONTENT, "207", None, text)
        return self._one(msg, msg.header, verdict, "AE")

    def _one(self, msg: InboundMessage | None, h: Header | None, verdict: Verdict,
             code: str) -> bytes:
        version = (h.version if h else "") or GARBAGE_VERSION
        modern = _modern(version)
        msh = self._msh(msg, h, version)
        msa = f"MSA|{code}|{_wire(msg, h.control_id_raw) if h else ''}"
        if code in ("AA", "CA"):
            text = f"{msh}\r{msa}\r"
        elif modern:
            text = f"{msh}\r{msa}\r{_err(verdict, modern)}\r"
        else:
            text = f"{msh}\r{msa}|{_esc(_describe(verdict))}\r{_err(verdict, modern)}\r"
        charset = msg.charset if msg else "ascii"
        return text.encode(charset, errors="replace")

    def _msh(self, msg: InboundMessage | None, h: Header | None, version: str) -> str:
        w = _echoed(msg, h)
        application = _esc_once(self.application) if self.application else w.receiving_application
        facility = _esc_once(self.facility) if self.facility else w.receiving_facility
        msh = (f"MSH|^~\\&|{application}|{facility}|{w.sending_application}|"
               f"{w.sending_facility}|{_stamp(self.clock())}||"
               f"{_ack_type(w.trigger, version in ('2.3', '2.3.0'))}|{_esc(self.control_ids())}|"
               f"{w.processing}|{w.version}")
        return f"{msh}||||||{w.charset}" if w.charset else msh  # MSH-18 after 13-17


class _Echoed(NamedTuple):
    """The inbound MSH values an ACK's MSH echoes, in the standard delimiters."""

    receiving_application: str
    receiving_facility: str
    sending_application: str
    sending_facility: str
    trigger: str
    processing: str
    version: str
    charset: str


# Without an MSH to echo: processing id P, and the version of our own ACKs.
_NOTHING_ECHOED = _Echoed("", "", "", "", "", "P", GARBAGE_VERSION, "")


def _echoed(msg: InboundMessage | None, h: Header | None) -> _Echoed:
    """What the ACK's MSH echoes: as sent when the sender used the standard delimiters,
    else re-encoded (`_wire`)."""
    if h is None:
        return _NOTHING_ECHOED
    # Positional, through `tuple.__new__`: a NamedTuple's own constructor costs several times it.
    values = (h.receiving_application, h.receiving_facility, h.sending_application,
              h.sending_facility, h.trigger_raw, h.processing_raw, h.version_raw, h.charset_raw)
    if msg is not None and msg.delimiters is not STANDARD:
        return _new(_Echoed, [_wire(msg, v) for v in values])
    return _new(_Echoed, values)


_new = tuple.__new__


@lru_cache(maxsize=64)
def _ack_type(trigger: str, v23: bool) -> str:
    """The ACK's MSH-9: `ACK^<trigger>^ACK`, without the message structure for v2.3."""
    if trigger:
        return f"ACK^{trigger}" if v23 else f"ACK^{trigger}^ACK"
    return "ACK" if v23 else "ACK^^ACK"


@lru_cache(maxsize=64)
def _modern(version: str) -> bool:
    """An ACK for this version carries the v2.5 ERR (and no MSA-3)."""
    return _version_tuple(version) >= (2, 5)


def _stamp(now: datetime) -> str:
    """MSH-7: `now` to the second.  A UTC clock's (the default) is formatted once a second."""
    utc = now.tzinfo is UTC
    if utc:
        second, text = _last_stamp[0]
        if second <= now and now - second < _SECOND:
            return text
    second = now.replace(microsecond=0)
    text = second.strftime("%Y%m%d%H%M%S%z")
    if utc:
        _last_stamp[0] = (second, text)  # one tuple, replaced whole: safe across threads
    return text


_SECOND = timedelta(seconds=1)
_last_stamp = [(datetime.min.replace(tzinfo=UTC), "")]


def _err(verdict: Verdict, modern: bool) -> str:
    code = verdict.code or "207"
    label = TABLE_0357.get(code, "")
    loc = verdict.location.erl() if verdict.location else ()
    if modern:
        cwe = f"{code}^{label}^HL70357"
        text = _esc(verdict.text) if verdict.text else ""
        return "|".join(["ERR", "", "^".join(loc), cwe, "E", "", "", "", text]).rstrip("|")
    eld = list(loc) + [""] * (3 - len(loc)) + [f"{code}&{label}&HL70357"]
    return "ERR|" + "^".join(eld)


def _describe(verdict: Verdict) -> str:
    label = TABLE_0357.get(verdict.code or "207", "")
    return f"{label}: {verdict.text}" if verdict.text else label


def _esc(value: str) -> str:
    return value if value.isalnum() else escape(value, STANDARD)


_esc_once = lru_cache(maxsize=64)(_esc)  # our own MSH-3/4: the same few values every time


def _wire(msg: InboundMessage | None, raw: str | None) -> str:
    """An inbound wire value re-encoded with the standard delimiters."""
    if not raw or msg is None or msg.delimiters is STANDARD:
        return raw or ""
    return transcode(raw, msg.delimiters, STANDARD, msg.charset)


RELAYABLE = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})


def _copied(answer: InboundMessage, wire: str) -> str:
    """A downstream segment or field, re-encoded from its delimiters to ours."""
    d = answer.delimiters
    if d is STANDARD or d == STANDARD:
        return wire
    return "|".join(transcode(f, d, STANDARD, answer.charset) if f else ""
                    for f in wire.split(d.field))


def _version_tuple(version: str) -> tuple[int, ...]:
    """`2.5.1` as (2, 5, 1), read up to the first piece that is not ASCII digits (`str.isdigit`
    alone also accepts `²` and other digits `int` refuses)."""
    parts: list[int] = []
    for piece in version.split("."):
        if not (piece.isascii() and piece.isdigit()) or len(piece) > 3:
            break
        parts.append(int(piece))
    return tuple(parts) or (2, 5)


# The answer of last resort, when building the real ACK failed (a bug): made from constants and
# the control id only when that reads as plain ASCII, so building it cannot fail.
_FALLBACK_TEXT = "Application internal error: the answer could not be built; send it again"
_FALLBACK_ERR = f"ERR|||207^{TABLE_0357['207']}^HL70357|E||||{_FALLBACK_TEXT}"
_SAFE_ID = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_.")


def fallback_ack(raw: bytes, control_id: str = "FALLBACK") -> bytes:
    """A fixed AR (CR when MSH-15 or MSH-16 is valued) with ERR-3 207, for a frame whose real
    ACK could not be built.  MSA-2 echoes MSH-10 when it is 1-20 plain ASCII letters, digits or
    `-_.`; otherwise it is empty.  Never raises."""
    try:
        control, enhanced = _header_bits(raw)
    except Exception:  # noqa: BLE001 - this path must not fail on any input
        control, enhanced = "", False
    try:
        stamp = time.strftime("%Y%m%d%H%M%S+0000", time.gmtime())
    except Exception:  # noqa: BLE001
        stamp = ""
    msh = f"MSH|^~\\&|||||{stamp}||ACK^^ACK|{control_id}|P|{GARBAGE_VERSION}"
    msa = f"MSA|{'CR' if enhanced else 'AR'}|{control}"
    return f"{msh}\r{msa}\r{_FALLBACK_ERR}\r".encode("ascii")


def _header_bits(raw: bytes) -> tuple[str, bool]:
    """MSH-10 (when safe to echo) and whether MSH-15/16 ask for enhanced mode."""
    start = raw.find(b"MSH")
    if start < 0 or len(raw) < start + 8:
        return "", False
    line = raw[start:].split(b"\r", 1)[0]
    fields = line.split(raw[start + 3: start + 4])
    control = fields[9] if len(fields) > 9 else b""
    ok = 0 < len(control) <= 20 and all(b in _SAFE_ID for b in control)
    enhanced = any(len(fields) > n and fields[n].strip() for n in (14, 15))
    return (control.decode("ascii") if ok else ""), enhanced
