"""Queue rows for routed messages, inside the batch transaction (issue 4): an ACK still means
everything is committed.

Only accepted, first-time messages are routed.  A destination with `order: {per_key: PATH}`
gets the inbound message's value at PATH as the row's order key.  For a pass-through channel
(`ack: {mode: downstream}`) the row for its destination is the one the sender waits for
(`engine/outbound/passthrough.py`); a retransmission waits for its original's row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from engine.config import Channel, Destination, Route
from engine.outbound.status import OutboundStatus
from engine.parsing import InboundMessage
from engine.routes.filters import matches
from engine.routes.transforms import apply as transform
from engine.store import Connection
from engine.store.outbound import queue_row, queue_rows
from engine.store.relayed import Waiting, row_for_resend

QUEUED = OutboundStatus.QUEUED.value


class Routed(NamedTuple):
    """One message of a batch, as routing needs it."""

    channel: str
    msg: InboundMessage | None
    accepted: bool
    control_id: str
    message_id: int
    retransmission: bool


class Enqueuer:
    """The message routes (`from:`), per_key paths and pass-through destinations."""

    def __init__(self) -> None:
        self._routes: dict[str, tuple[Route, ...]] = {}
        self._order_keys: dict[str, str] = {}  # per_key destination -> HL7 path of its key
        self._answers: dict[str, str] = {}  # pass-through channel -> its destination

    def route(self, routes: tuple[Route, ...]) -> None:
        grouped: dict[str, list[Route]] = {}
        for r in routes:
            if r.source:
                grouped.setdefault(r.source, []).append(r)
        self._routes = {name: tuple(rs) for name, rs in grouped.items()}

    def order_by(self, destinations: tuple[Destination, ...]) -> None:
        self._order_keys = {d.name: d.order_key for d in destinations if d.order_key}

    @property
    def active(self) -> bool:
        """Does any message route exist?  (Without one a batch queues nothing.)"""
        return bool(self._routes)

    def answer_from(self, channels: tuple[Channel, ...]) -> None:
        self._answers = {ch.name: ch.ack.passthrough for ch in channels if ch.ack.passthrough}

    def queue(self, conn: Connection, batch: Sequence[Routed], now: datetime
              ) -> dict[int, Waiting]:
        """Insert the batch's rows in order; for pass-through messages, by batch index, the row
        each sender waits for."""
        rows = [(i, row) for i, m in enumerate(batch) for row in self.rows(m, now)]
        if not self._answers:
            queue_rows(conn, [row for _, row in rows])
            return {}
        waiting: dict[int, Waiting] = {}
        for i, row in rows:  # one by one, for the ids, in queue order
            row_id = queue_row(conn, row)
            if self._answers.get(batch[i].channel) == row["destination"] and i not in waiting:
                waiting[i] = Waiting(row_id)
        for i, m in enumerate(batch):
            dest = self._answers.get(m.channel)
            if dest and m.retransmission and m.accepted:
                found = row_for_resend(conn, m.message_id, dest)
                if found is not None:
                    waiting[i] = found
        return waiting

    def rows(self, m: Routed, now: datetime) -> list[dict[str, Any]]:
        """The queue rows of one message: a row per destination of each route that takes it."""
        routes = self._routes.get(m.channel, ())
        if not routes or m.retransmission or not m.accepted or m.msg is None:
            return []
        rows: list[dict[str, Any]] = []
        for route in routes:
            if not matches(route.when, m.msg):
                continue
            payload = transform(route.transform, m.msg)
            rows += [{"destination": dest, "route": route.name, "message_id": m.message_id,
                      "control_id": m.control_id, "payload": payload, "status": QUEUED,
                      "attempts": 0, "last_error": "", "created_at": now,
                      "order_key": self._order_key(dest, m.msg)} for dest in route.to]
        return rows

    def _order_key(self, destination: str, msg: InboundMessage) -> str:
        """The message's value at a per_key destination's path ("" when absent or for a strict
        destination), cut to the column's 199 characters."""
        path = self._order_keys.get(destination)
        return msg.get(path)[:199] if path else ""
