"""One frame's way from the listener to the writer and back: the channel's handler hands the
frame over as a `Job`, then logs the result (`message.stored`, `.retransmission`,
`.not_stored`), counts it for `/metrics`, and answers the sender with the ACKs or, on a
pass-through channel, with the downstream's relayed answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from twisted.python.failure import Failure

from engine.config import Channel
from engine.logs import emit, emit_rendered, quote
from engine.mllp.server import Handler, Reply
from engine.outbound.passthrough import Relay
from engine.pipeline import Job, Result
from engine.store.writer import GroupCommitWriter
from engine.web.metrics import Metrics


def frame_handler(channel: Channel, writer: GroupCommitWriter[Job, Result],
                  relay: Relay | None = None, metrics: Metrics | None = None) -> Handler:
    """The listener's handler for one channel: each frame goes to the group-commit writer as a
    Job; its result is logged, counted, and answered through the listener's `reply` (the ACKs,
    or on a pass-through channel the downstream's relayed answer)."""
    def handle(payload: bytes, peer: str, reply: Reply,
               committed: Callable[[bool], None] | None = None) -> None:
        started = time.perf_counter()

        def answered(acks: list[bytes] | Failure, message_type: str) -> None:
            if metrics is not None and not isinstance(acks, Failure):
                metrics.message(channel, message_type, acks, time.perf_counter() - started)
            reply(acks)

        def done(result: Result) -> None:
            if committed is not None:  # MLLP release 2: the commit ACK/NAK goes out first
                committed(result.committed)
            relayed = (relay is not None and result.waiting is not None
                       and result.verdict.accepted and result.message_id is not None)
            _log_result(channel.name, result, peer, len(payload), time.perf_counter() - started,
                        "downstream" if relayed else None)
            if relayed:
                assert relay is not None and result.waiting is not None  # for mypy
                relay.answer(payload, int(result.message_id or 0), result.waiting
                             ).addBoth(answered, result.message_type)
                return
            answered(result.acks, result.message_type)

        writer.submit(Job(channel, payload, peer, datetime.now(UTC)), done)

    return handle


def _log_result(channel: str, r: Result, peer: str, size: int, seconds: float,
                ack: str | None = None) -> None:
    """`message.stored` (or `.retransmission`, `.not_stored`); `ack` "downstream" when the
    sender's ACK is the relayed answer, logged as `ack.relayed` when it comes."""
    event = ("message.retransmission" if r.retransmission
             else "message.stored" if r.committed else "message.not_stored")
    acks = r.acks
    ack = ack or (_msa1(acks[0]) if len(acks) == 1 else " ".join(map(_msa1, acks)))
    if r.committed and not r.reused and emit_rendered(event, _members(
            channel, r, peer, size, ack, round(seconds * 1000, 2))):
        return
    fields: dict[str, Any] = {
        "channel": channel, "peer": peer, "id": r.message_id, "control_id": r.control_id,
        "type": r.message_type, "size": size, "digest": r.digest[:16],
        "ack": ack, "status": r.verdict.disposition.value,
        "ms": round(seconds * 1000, 2)}
    if r.verdict.code:
        fields["error_code"] = r.verdict.code
        fields["error_location"] = str(r.verdict.location or "")
    if r.reused:
        emit("warning", "message.control_id_reused", fields)
    elif not r.committed:
        emit("error", event, fields)
    else:
        emit("info", event, fields)


def _members(channel: str, r: Result, peer: str, size: int, ack: str, ms: float) -> str:
    """The fields of `_log_result`'s info event as JSON object members, in its order, as the
    log's JSONEncoder writes them (the status from `_value_`: `.value` is a property)."""
    v = r.verdict
    error = (f',"error_code":{quote(v.code)},"error_location":{quote(str(v.location or ""))}'
             if v.code else "")
    return (f'"channel":{quote(channel)},"peer":{quote(peer)},'
            f'"id":{"null" if r.message_id is None else int(r.message_id)},'
            f'"control_id":{quote(r.control_id)},"type":{quote(r.message_type)},'
            f'"size":{int(size)},"digest":{quote(r.digest[:16])},"ack":{quote(ack)},'
            f'"status":{quote(v.disposition._value_)},"ms":{float(ms)!r}{error}')


def _msa1(ack: bytes) -> str:
    at = ack.find(b"\rMSA")
    return ack[at + 5: at + 7].decode("ascii", "replace") if at >= 0 else "?"
