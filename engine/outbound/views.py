"""What the operator sees of every destination's queue (`queue`, `GET /api/queue`, metrics)."""

from __future__ import annotations

from datetime import datetime

from engine.config import Destination
from engine.outbound.status import OutboundStatus
from engine.store import Database
from engine.store.outbound import state
from engine.store.queue import QueueCounts, queue_counts


def queue_state(db: Database, destinations: tuple[Destination, ...], now: datetime
                ) -> list[dict[str, object]]:
    """Per destination: state, depth, oldest queued age, delivered and dead-letter counts, last
    error, and for per_key destinations how many keys are held."""
    with db.connect() as conn:
        return [_row(d, queue_counts(conn, d.name), state(conn, d.name)[0], now)
                for d in destinations]


def _row(d: Destination, counts: QueueCounts, paused: bool, now: datetime
         ) -> dict[str, object]:
    by_status, held = counts.by_status, counts.held_keys
    return {
        "destination": d.name, "type": d.type,
        "order": "per_key" if d.order_key else "strict",
        "state": "paused" if paused else "blocked" if held else "running",
        "depth": int(by_status.get(OutboundStatus.QUEUED, 0)),
        "oldest_age_s": (round((now - counts.oldest).total_seconds(), 1) if counts.oldest
                         else None),
        "delivered": int(by_status.get(OutboundStatus.DELIVERED, 0)),
        "dead_letters": int(by_status.get(OutboundStatus.DEAD, 0)),
        "held_keys": held if d.order_key else None,
        "last_error": counts.last_error or None,
    }
