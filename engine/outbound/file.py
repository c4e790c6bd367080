"""Delivery to file destinations, and what the operator sees of every destination's queue.

A file is written under a temporary name, fsynced and renamed to `<queue id, 12 digits>.hl7`, so
names sort in queue order and a reader never sees half a file.  A row is marked delivered after
its file is in place: a crash in between writes the same file again under the same name
(at-least-once, idempotent).  Order, retries (twice a second), dead letters and the bookkeeping
are the shared worker's (`engine.outbound.queue`).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, distinct, func, select

from engine.config import Destination
from engine.outbound import operator
from engine.outbound.queue import Outcome, QueueWorker
from engine.store.schema import deliveries, outbound
from engine.timestamps import utc_text


class FileDeliverer(QueueWorker):
    """The worker of one file destination: one file per queued row, named by its queue id."""

    limit = 500

    def send(self, row_id: int, payload: bytes) -> Outcome:
        directory, name = Path(self.dest.directory), f"{row_id:012d}.hl7"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(directory / f".{name}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                         0o600)
        except OSError as exc:  # the directory is unusable: no message is at fault
            return Outcome(error=exc.strerror or type(exc).__name__, unreachable=True)
        try:
            _write(fd, directory, name, payload)
        except OSError as exc:
            return Outcome(error=exc.strerror or type(exc).__name__)
        return Outcome()


def _write(fd: int, directory: Path, name: str, payload: bytes) -> None:
    with open(fd, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(directory / f".{name}.tmp", directory / name)


def queue_state(db: Engine, destinations: tuple[Destination, ...], now: datetime
                ) -> list[dict[str, object]]:
    """Per destination: state, depth, oldest queued age, delivered and dead-letter counts, last
    error, and for per_key destinations how many keys are held."""
    out: list[dict[str, object]] = []
    with db.connect() as conn:
        for d in destinations:
            counts: dict[str, int] = dict(conn.execute(
                select(outbound.c.status, func.count()).where(outbound.c.destination == d.name)
                .group_by(outbound.c.status)).all())
            oldest = conn.execute(select(func.min(outbound.c.created_at)).where(
                outbound.c.destination == d.name, outbound.c.status == "queued")).scalar()
            last_error = conn.execute(select(outbound.c.last_error).where(
                outbound.c.destination == d.name, outbound.c.last_error != "")
                .order_by(outbound.c.id.desc()).limit(1)).scalar()
            held = _held_keys(conn, d.name)
            paused = operator.state(conn, d.name)[0]
            out.append({
                "destination": d.name, "type": d.type,
                "order": "per_key" if d.order_key else "strict",
                "state": "paused" if paused else "blocked" if held else "running",
                "depth": int(counts.get("queued", 0)),
                "oldest_age_s": round((now - oldest).total_seconds(), 1) if oldest else None,
                "delivered": int(counts.get("delivered", 0)),
                "dead_letters": int(counts.get("dead", 0)),
                "held_keys": held if d.order_key else None,
                "last_error": last_error or None,
            })
    return out


def _held_keys(conn: Connection, destination: str) -> int:
    """Keys whose head has failed and waits to be retried: a queued row with attempts is the
    head of its lane (rows behind a head are never tried before it), so a strict queue is held
    when this is 1."""
    return int(conn.execute(select(func.count(distinct(outbound.c.order_key))).where(
        outbound.c.destination == destination, outbound.c.status == "queued",
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
        if ack and r.status != "delivered":
            text += f" ({r.status})"
        out.setdefault(int(r.message_id), []).append(text)
    return out
