"""The outbound queue's reads for the operator: counts per destination, a message's attempts."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Connection, distinct, func, select

from engine.outbound.status import OutboundStatus
from engine.store.schema import deliveries, outbound
from engine.timestamps import utc_text

QUEUED, DELIVERED = OutboundStatus.QUEUED, OutboundStatus.DELIVERED


class QueueCounts(NamedTuple):
    """One destination's queue: rows by status, the oldest queued row's time, the last error,
    and how many keys are held."""

    by_status: dict[str, int]
    oldest: datetime | None
    last_error: str | None
    held_keys: int


def queue_counts(conn: Connection, destination: str) -> QueueCounts:
    """What `queue` shows of one destination's queue."""
    counts: dict[str, int] = dict(conn.execute(
        select(outbound.c.status, func.count()).where(outbound.c.destination == destination)
        .group_by(outbound.c.status)).all())
    oldest = conn.execute(select(func.min(outbound.c.created_at)).where(
        outbound.c.destination == destination, outbound.c.status == QUEUED.value)).scalar()
    last_error = conn.execute(select(outbound.c.last_error).where(
        outbound.c.destination == destination, outbound.c.last_error != "")
        .order_by(outbound.c.id.desc()).limit(1)).scalar()
    return QueueCounts(counts, oldest, last_error, _held_keys(conn, destination))


def _held_keys(conn: Connection, destination: str) -> int:
    """Keys whose head has failed and waits to be retried: a queued row with attempts is the
    head of its lane (rows behind a head are never tried before it), so a strict queue is held
    when this is 1."""
    return int(conn.execute(select(func.count(distinct(outbound.c.order_key))).where(
        outbound.c.destination == destination, outbound.c.status == QUEUED.value,
        outbound.c.attempts > 0)).scalar() or 0)


def deliveries_of(conn: Connection, message_id: int) -> list[dict[str, object]]:
    """A message's queue rows and every delivery attempt, for `show`."""
    rows = conn.execute(select(outbound.c.id, outbound.c.destination, outbound.c.status,
                               outbound.c.attempts).where(outbound.c.message_id == message_id)
                        .order_by(outbound.c.id)).all()
    attempts = conn.execute(select(deliveries).where(deliveries.c.message_id == message_id)
                            .order_by(deliveries.c.id)).mappings().all()
    return [{
        "queue_id": r.id, "destination": r.destination, "status": r.status,
        "attempts": [{"at": utc_text(a["at"]), "ack": a["ack_code"],
                      "error": a["error"] or None, "ms": a["ms"]}
                     for a in attempts if a["outbound_id"] == r.id],
    } for r in rows]


def delivery_lines(conn: Connection, message_ids: list[int]) -> dict[int, list[str]]:
    """Per message, one short line per destination (`→ specialist-ehr AA 12 ms`), for `tail`."""
    if not message_ids:
        return {}
    rows = conn.execute(select(outbound.c.id, outbound.c.message_id, outbound.c.destination,
                               outbound.c.status).where(outbound.c.message_id.in_(message_ids))
                        .order_by(outbound.c.id)).all()
    last: dict[int, tuple[str, int | None]] = {}
    for a in conn.execute(select(deliveries.c.outbound_id, deliveries.c.ack_code, deliveries.c.ms)
                          .where(deliveries.c.message_id.in_(message_ids))
                          .order_by(deliveries.c.id)):
        last[int(a.outbound_id)] = (a.ack_code, a.ms)
    out: dict[int, list[str]] = {}
    for r in rows:
        ack, ms = last.get(int(r.id), ("", None))
        text = f"→ {r.destination} {ack} {ms} ms" if ack and ms is not None else (
            f"→ {r.destination} {r.status}")
        if ack and r.status != DELIVERED.value:
            text += f" ({r.status})"
        out.setdefault(int(r.message_id), []).append(text)
    return out
