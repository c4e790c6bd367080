"""The store's side of pass-through ACKs (`engine/outbound/passthrough.py`): which queue row a
sender waits for, and every ACK relayed to a sender."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Connection, Engine, insert, select, update

from engine.outbound.status import OutboundStatus
from engine.store.schema import deliveries, messages, outbound, relayed_acks
from engine.timestamps import utc_text


class Waiting(NamedTuple):
    """The routed copy a sender waits for, and the downstream's answer when it already came."""

    outbound_id: int
    answer: bytes | None = None


def row_for_resend(conn: Connection, message_id: int, destination: str) -> Waiting | None:
    """For a retransmission: the original's row for the pass-through destination.  Delivered →
    its accepting answer, to relay again; a dead letter (the sender was told it failed) →
    queued again, to wait for; queued → waited for."""
    row = conn.execute(select(outbound.c.id, outbound.c.status)
                       .where(outbound.c.message_id == message_id,
                              outbound.c.destination == destination)
                       .order_by(outbound.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    if row.status == OutboundStatus.DELIVERED:
        ack = conn.execute(select(deliveries.c.ack)
                           .where(deliveries.c.outbound_id == row.id,
                                  deliveries.c.ack_code.in_(("AA", "CA")))
                           .order_by(deliveries.c.id.desc()).limit(1)).scalar()
        if ack is not None:
            return Waiting(int(row.id), bytes(ack))
    if row.status == OutboundStatus.DEAD:
        conn.execute(update(outbound).where(outbound.c.id == row.id)
                     .values(status=OutboundStatus.QUEUED.value, attempts=0, last_error=""))
    return Waiting(int(row.id))


def record_relayed(db: Engine, message_id: int, outbound_id: int | None, ack: bytes, code: str,
                   downstream_code: str, now: datetime) -> None:
    """Keep the ACK sent to the sender, and show its code in the message log."""
    with db.begin() as conn:
        conn.execute(insert(relayed_acks).values(
            message_id=message_id, outbound_id=outbound_id, at=now, code=code,
            downstream_code=downstream_code, ack=ack))
        conn.execute(update(messages).where(messages.c.id == message_id)
                     .values(ack_codes=code))


def relayed_of(conn: Connection, message_id: int) -> list[dict[str, object]]:
    """A message's relayed ACKs, for `show`."""
    rows = conn.execute(select(relayed_acks.c.at, relayed_acks.c.code,
                               relayed_acks.c.downstream_code, relayed_acks.c.outbound_id)
                        .where(relayed_acks.c.message_id == message_id)
                        .order_by(relayed_acks.c.id)).all()
    return [{"at": utc_text(r.at), "ack": r.code, "downstream_ack": r.downstream_code or None,
             "queue_id": r.outbound_id} for r in rows]
