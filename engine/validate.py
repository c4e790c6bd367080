"""Structural (header) checks of a parsed message against its channel: the header rows of the
ACK table, the problems that make a message AR rather than AE.

Checked in the table's order: MSH-9 present, type, trigger, MSH-10 present, processing id,
version.  Per-message-type content rules belong to the ledger and plug into the same ACK table.
"""

from __future__ import annotations

from engine.ack import Stage, Verdict
from engine.config import Channel
from engine.errors import (
    HeaderValueTooLong,
    HL7Error,
    Location,
    RequiredHeaderFieldMissing,
    UnsupportedMessageType,
    UnsupportedProcessingId,
    UnsupportedTrigger,
    UnsupportedVersion,
    shown,
)
from engine.parsing import InboundMessage
from engine.parsing.header import Header


def check_header(msg: InboundMessage, channel: Channel) -> Verdict | None:
    """None when the header is acceptable, else the rejecting verdict."""
    error = _first_problem(msg, channel)
    if error is None:
        return None
    return Verdict(error.disposition, Stage.HEADER, error.code, error.location, error.reason)


# The longest MSH-3, MSH-4 and MSH-10 the message store keeps whole (its column sizes): a
# sender's identity and control id are the duplicate key, so they are never cut.
SENDER_MAX, CONTROL_ID_MAX = 227, 199
_MSH_9 = Location("MSH", 1, 9)


def _first_problem(msg: InboundMessage, channel: Channel) -> HL7Error | None:
    h = msg.header
    sender, facility, control_id = h.sending_application, h.sending_facility, h.control_id_raw
    if (len(sender) > SENDER_MAX or len(facility) > SENDER_MAX or len(control_id) > CONTROL_ID_MAX
            or "\x00" in sender or "\x00" in facility or "\x00" in control_id):
        return _not_kept_whole(h)
    msh9 = _MSH_9
    msg_type, trigger = h.message_type, h.trigger
    if not msg_type:
        return RequiredHeaderFieldMissing("MSH-9 message type is empty", msh9)
    if not channel.accepts(msg_type, trigger):  # the usual case answers both questions at once
        if not channel.accepts_type(msg_type):
            return UnsupportedMessageType(f"MSH-9.1 message type {shown(msg_type)} is not "
                                          f"accepted by channel {channel.name}", msh9)
        return UnsupportedTrigger(f"MSH-9.2 trigger event {shown(trigger)} of {msg_type} is not "
                                  f"accepted by channel {channel.name}", msh9)
    if not h.control_id:
        return RequiredHeaderFieldMissing("MSH-10 message control id is empty",
                                          Location("MSH", 1, 10))
    if h.processing_id not in channel.processing_ids:
        return UnsupportedProcessingId(f"MSH-11 processing id {shown(h.processing_id)} is not "
                                       f"accepted (accepted: {', '.join(channel.processing_ids)})",
                                       Location("MSH", 1, 11))
    if h.version not in channel.versions:
        return UnsupportedVersion(f"MSH-12 version {shown(h.version)} is not accepted "
                                  f"(accepted: {', '.join(channel.versions)})",
                                  Location("MSH", 1, 12))
    return None


def _not_kept_whole(h: Header) -> HL7Error | None:
    """The first of MSH-3, MSH-4 and MSH-10 the store could not keep whole (104), or None."""
    for field, name, limit, value in (
            (3, "sending application", SENDER_MAX, h.sending_application),
            (4, "sending facility", SENDER_MAX, h.sending_facility),
            (10, "message control id", CONTROL_ID_MAX, h.control_id_raw)):
        if len(value) > limit or "\x00" in value:
            return HeaderValueTooLong(f"MSH-{field} {name} is longer than {limit} characters "
                                      "or holds a NUL", Location("MSH", 1, field))
    return None
