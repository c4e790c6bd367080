"""Delivery to file destinations: queued rows go out in queue order, one file each, atomically.

A file is written under a temporary name, fsynced and renamed to `<queue id, 12 digits>.hl7`, so
names sort in queue order and a reader never sees half a file.  Rows are marked delivered after
their files are in place: a crash in between writes the same files again under the same names
(at-least-once, idempotent).  A failure holds the queue (strict order) and counts an attempt;
after `max_attempts` the row becomes a dead letter and the queue moves on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, func, select, update

from engine.config import Destination
from engine.routes import operator
from engine.store.schema import deliveries, outbound


@dataclass(frozen=True, slots=True)
class Delivered:
    destination: str
    delivered: int = 0
    error: str = ""  # the failure that held the queue, if any
    dead: int = 0


def deliver_files(db: Engine, dest: Destination, now: Callable[[], datetime],
                  limit: int = 500) -> Delivered:
    """One pass over a file destination's queue (none while it is paused)."""
    with db.begin() as conn:
        if operator.state(conn, dest.name)[0]:
            return Delivered(dest.name)
        operator.take_retry(conn, dest.name)  # files retry every pass anyway
    with db.connect() as conn:
        rows = conn.execute(select(outbound.c.id, outbound.c.payload, outbound.c.attempts)
                            .where(outbound.c.destination == dest.name,
                                   outbound.c.status == "queued")
                            .order_by(outbound.c.id).limit(limit)).all()
    done: list[int] = []
    error, dead = "", 0
    for row in rows:
        try:
            _write(Path(dest.directory), f"{row.id:012d}.hl7", row.payload)
        except OSError as exc:
            error = exc.strerror or type(exc).__name__
            dead = _failed(db, dest, row.id, row.attempts + 1, error, now())
            break
        done.append(row.id)
    if done:
        with db.begin() as conn:
            conn.execute(update(outbound).where(outbound.c.id.in_(done)).values(
                status="delivered", delivered_at=now(), attempts=outbound.c.attempts + 1))
    return Delivered(dest.name, len(done), error, dead)


def _write(directory: Path, name: str, payload: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / name)


def _failed(db: Engine, dest: Destination, row_id: int, attempts: int, error: str,
            at: datetime) -> int:
    status = "dead" if attempts >= dest.max_attempts else "queued"
    with db.begin() as conn:
        conn.execute(update(outbound).where(outbound.c.id == row_id).values(
            attempts=attempts, last_error=error[:500], status=status))
    return int(status == "dead")


def queue_state(db: Engine, destinations: tuple[Destination, ...], now: datetime
                ) -> list[dict[str, object]]:
    """Per destination: depth, oldest queued age, delivered and dead-letter counts, last error."""
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
            paused = operator.state(conn, d.name)[0]
            out.append({
                "destination": d.name, "type": d.type,
                "state": "paused" if paused else "running",
                "depth": int(counts.get("queued", 0)),
                "oldest_age_s": round((now - oldest).total_seconds(), 1) if oldest else None,
                "delivered": int(counts.get("delivered", 0)),
                "dead_letters": int(counts.get("dead", 0)),
                "last_error": last_error or None,
            })
    return out


def deliveries_of(conn: Connection, message_id: int) -> list[dict[str, object]]:
    """A message's queue rows and every delivery attempt, for `show`."""
    rows = conn.execute(select(outbound.c.id, outbound.c.destination, outbound.c.status,
                               outbound.c.attempts).where(outbound.c.message_id == message_id)
                        .order_by(outbound.c.id)).all()
    attempts = conn.execute(select(deliveries).where(deliveries.c.message_id == message_id)
                            .order_by(deliveries.c.id)).mappings().all()
    return [{
        "queue_id": r.id, "destination": r.destination, "status": r.status,
        "attempts": [{"at": a["at"].isoformat() if a["at"] else None, "ack": a["ack_code"],
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
