"""What one frame says, before any database work: parse it, check its header (and, on a strict
channel, its structure), map it to ledger changes, and lay out its message row.  Pure per frame,
on the writer thread; every bug in here costs that frame only (AR 207, `pipeline.prepare_failed`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import structlog

from engine.ack import ACCEPTED, Stage, Verdict, ack_codes
from engine.config import STRICT, Channel
from engine.errors import ContentError, HeaderValueTooLong, HL7Error, InternalError
from engine.mappings.changes import AppointmentChange, Change
from engine.mappings.dispatch import map_message
from engine.parsing import InboundMessage, parse
from engine.parsing.header import Header
from engine.strict import check as check_structure
from engine.validate import check_header

log = structlog.get_logger("engine.pipeline")


class Job(NamedTuple):
    """A frame as the listener received it (NamedTuples here: one of each per message)."""

    channel: Channel
    raw: bytes
    peer: str
    received_at: datetime


@dataclass(slots=True)
class Prepared:
    job: Job
    msg: InboundMessage | None
    verdict: Verdict
    row: dict[str, Any] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)  # what it says to the ledger


def prepare_safely(job: Job) -> Prepared:
    """`prepare`, with its own bugs caught: the frame is then stored as received and answered
    AR 207 (`pipeline.prepare_failed` is logged), and the batch goes on."""
    try:
        return prepare(job)
    except Exception as exc:  # noqa: BLE001 - one frame must not cost the batch
        log.error("pipeline.prepare_failed", error=type(exc).__name__, channel=job.channel.name,
                  size=len(job.raw))
        error = InternalError("unexpected error while reading the message")
        try:  # its MSH-10 for MSA-2, when the parser is not what failed
            msg: InboundMessage | None = parse(job.raw)
        except Exception:  # noqa: BLE001
            msg = None
        p = Prepared(job, msg, Verdict(error.disposition, Stage.HEADER, error.code, None,
                                        error.reason))
        p.row = row_of(p)
        return p


def prepare(job: Job) -> Prepared:
    """Parse and check one frame, and lay out its row.  Never raises on input."""
    msg: InboundMessage | None = None
    try:
        msg = parse(job.raw)
        verdict = check_header(msg, job.channel) or ACCEPTED
    except HL7Error as exc:
        verdict = Verdict(exc.disposition, Stage.HEADER, exc.code, exc.location, exc.reason)
    if job.channel.validation == STRICT and msg is not None and verdict.accepted:
        verdict = _strict(msg, job)
    changes: list[Change] = []
    if msg is not None and verdict.accepted:
        try:
            changes = map_message(msg, job.channel.rules)
            _warn_conflicts(changes, msg)
        except ContentError as exc:
            verdict = Verdict(exc.disposition, Stage.CONTENT, exc.code, exc.location, exc.reason)
        except Exception as exc:  # noqa: BLE001 - a mapper bug must not stop the engine
            log.error("ledger.mapping_failed", error=type(exc).__name__,
                      control_id=msg.header.control_id)
            error = InternalError("unexpected error while reading the message")
            verdict = Verdict(error.disposition, Stage.CONTENT, error.code, None, error.reason)
    p = Prepared(job, msg, verdict, {}, changes)  # positional: keywords cost more, per message
    p.row = row_of(p)  # its ack_codes are what the ACKs will carry once committed
    return p


def _strict(msg: InboundMessage, job: Job) -> Verdict:
    """`validation: strict` (engine/strict.py): hl7apy's structure check, ~30 ms of this writer
    thread's time per message.  An exception from inside hl7apy answers this one message AR 207
    (CA then AR in enhanced mode: it is stored) and is logged as `validation.failed`."""
    try:
        error = check_structure(msg, job.raw)
    except Exception as exc:  # noqa: BLE001 - an hl7apy bug must not stop the engine
        log.error("validation.failed", error=type(exc).__name__, channel=job.channel.name,
                  control_id=msg.header.control_id)
        error = InternalError("unexpected error while validating the message")
        return Verdict(error.disposition, Stage.CONTENT, error.code, None, error.reason)
    if error is None:
        return ACCEPTED
    stage = Stage.CONTENT if isinstance(error, ContentError) else Stage.HEADER
    return Verdict(error.disposition, stage, error.code, error.location, error.reason)


def _warn_conflicts(changes: list[Change], msg: InboundMessage) -> None:
    """An appointment whose duration sources disagree by more than a minute is a warning
    (field names and minutes only)."""
    for change in changes:
        if isinstance(change, AppointmentChange) and change.duration_conflict:
            log.warning("appointment.duration_conflict", control_id=msg.header.control_id,
                        sources=change.duration_conflict)


def row_of(p: Prepared) -> dict[str, Any]:
    v, job = p.verdict, p.job
    h = p.msg.header if p.msg is not None else None
    if h is None:
        sender, facility, control_id, msg_type, version, processing = _NO_COLUMNS
        codes = ack_codes(v, "", "")
    else:
        sender, facility, control_id, msg_type, version, processing = _columns(h)
        codes = ack_codes(v, h.accept_ack, h.application_ack)
    whole = v.code != HeaderValueTooLong.code  # a cut sender or id must never match another's
    return {
        "channel": job.channel.name,
        "received_at": _naive(job.received_at),
        "peer": job.peer,
        "sending_application": sender,
        "sending_facility": facility,
        "control_id": control_id,
        "dedupe_key": f"{sender}|{facility}|{control_id}" if control_id and whole else None,
        "message_type": msg_type,
        "version": version,
        "processing_id": processing,
        "size": len(job.raw),
        "digest": hashlib.sha256(job.raw).hexdigest(),
        "raw": job.raw,
        # `_value_`, the member's own attribute: `.value` is a property, two Python calls
        "status": v.disposition._value_,
        "stage": v.stage._value_,
        "error_code": v.code,
        "error_location": str(v.location) if v.location else "",
        "error_text": v.text,
        "ack_codes": " ".join(codes),
        "control_id_reused": False,
        "retransmissions": 0,
        "last_retransmission_at": None,
        "ledger_effect": "",
    }


# The columns of MSH-3, MSH-4, MSH-10, MSH-9.1^MSH-9.2, MSH-12 and MSH-11, and their sizes.
_COLUMN_SIZES = (227, 227, 199, 40, 16, 8)
_SENDER, _FACILITY, _CONTROL_ID, _TYPE, _VERSION, _PROCESSING = _COLUMN_SIZES
_NO_COLUMNS = ("", "", "", "", "", "")


def _columns(h: Header) -> tuple[str, ...]:
    """The header values the message row keeps, each as its column holds it (`_fit`): the
    usual header, short and without NUL, in one test (plain `len` comparisons: no `map` of
    `int.__ge__` over the sizes)."""
    values = sender, facility, control_id, msg_type, version, processing = (
        h.sending_application, h.sending_facility, h.control_id_raw,
        f"{h.message_type}^{h.trigger}" if h.trigger else h.message_type,
        h.version, h.processing_id)
    if (len(sender) > _SENDER or len(facility) > _FACILITY or len(control_id) > _CONTROL_ID
            or len(msg_type) > _TYPE or len(version) > _VERSION or len(processing) > _PROCESSING
            or "\x00" in f"{sender}{facility}{control_id}{msg_type}{version}{processing}"):
        return tuple(map(_fit, values, _COLUMN_SIZES))
    return values


def _naive(when: datetime) -> datetime:
    """`when` without its time zone: `replace(tzinfo=None)`, whose keyword parsing costs six
    times this."""
    return datetime.combine(when.date(), when.time())


def _fit(value: str, size: int) -> str:
    """A header value as its column holds it: no NULs (PostgreSQL refuses them in text), at
    most `size` characters.  Values that matter whole are checked before (validate.py)."""
    return value.replace("\x00", "")[:size]
