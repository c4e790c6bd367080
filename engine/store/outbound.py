"""The outbound queue's writes: queue rows, each destination's worker state (lease, pause, retry request), attempts.

A `DestinationQueue` is what one delivery worker reads and writes: plain synchronous calls on
a connection kept between them, made from a thread pool (never the reactor), one call at a
time.  Each attempt is one transaction: its `deliveries` row (with the downstream's ACK as
received) and the queue row's new status, together, under the engine's write lock.

Durability of this bookkeeping.  On SQLite the workers record attempts through an engine of
their own opened with `synchronous=NORMAL` (`bookkeeping_database`); ingest keeps FULL.  In WAL
mode a NORMAL commit skips the fsync: a process crash (SIGKILL) loses nothing, because the WAL
pages sit in the OS cache and survive the process; a power loss can lose the latest
"delivered" marks, and those messages are then sent again.  Delivery is at-least-once either way
and no message is ever lost: the queue rows themselves were committed with FULL before their
message was acknowledged.  PostgreSQL uses the same engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import structlog
from sqlalchemy import Connection, Engine, insert, select, update

from engine.outbound.status import OutboundStatus
from engine.store import sql
from engine.store.database import open_database
from engine.store.lock import DestinationLease, WriteLock
from engine.store.schema import destination_state, messages, outbound

log = structlog.get_logger("engine.delivery")

MAX_EXCLUDED = 1000  # waiting keys left out of a pass's query (the rest are skipped as read)
QUEUED, DELIVERED, DEAD = OutboundStatus.QUEUED, OutboundStatus.DELIVERED, OutboundStatus.DEAD


class QueuedRow(NamedTuple):
    """A queued row, as a pass reads it."""

    id: int
    payload: bytes
    attempts: int
    message_id: int | None
    order_key: str


class Attempt(NamedTuple):
    """One attempt to record, and the queue row's new state."""

    row: QueuedRow
    at: datetime
    status: OutboundStatus
    code: str  # the downstream's MSA-1, "" without an ACK
    error: str
    ms: int
    ack: bytes | None


def bookkeeping_database(db: Engine) -> Engine:
    """The engine delivery workers record attempts with: for a SQLite file, a second engine on
    it with `synchronous=NORMAL` (see the module docstring); otherwise `db` itself."""
    if db.dialect.name != "sqlite" or db.url.database in (None, "", ":memory:"):
        return db
    return open_database(db.url.render_as_string(hide_password=False), synchronous="NORMAL",
                         migrate=False)


class DestinationQueue:
    """One destination's queue as its worker sees it (one call at a time, on any thread)."""

    def __init__(self, db: Engine, destination: str) -> None:
        self.db = db
        self.destination = destination
        self._conn: Connection | None = None  # kept between calls: no pool round trip each
        self._lock: WriteLock | None = None  # SQLite: wait for the ingest writer in the kernel
        self._lease: DestinationLease | None = None  # this engine delivers the destination
        self._standby = False  # another engine does (logged once)

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self.db.connect()
        return self._conn

    def open(self) -> tuple[bool, bool]:
        """(this engine delivers the destination and it is not paused, a pending `retry`
        request was taken: every backoff is to be forgotten)."""
        conn = self._connection()
        if not self._leased(conn):
            return False, False
        with conn.begin():
            paused, _ = state(conn, self.destination)
            retry = not paused and take_retry(conn, self.destination)
        return not paused, retry

    def _leased(self, conn: Connection) -> bool:
        """Take the destination's lease, or stand by while another engine holds it."""
        if self._lease is None:
            self._lease = DestinationLease(self.db, self.destination)
        if self._lease.held:
            return True
        if not self._lease.hold(conn):
            if not self._standby:
                log.info("delivery.standby", destination=self.destination)
                self._standby = True
            return False
        log.info("delivery.lease_taken", destination=self.destination)
        self._standby = False
        return True

    def queued(self, limit: int, waiting: Sequence[str]) -> list[QueuedRow]:
        """The first `limit` queued rows in queue order, without those of the `waiting` keys."""
        # Retention empties only delivered/dead rows and `release` skips those, so `purged_at`
        # is NULL on every queued row; the condition keeps an emptied payload from ever going out.
        q = select(outbound.c.id, outbound.c.payload, outbound.c.attempts, outbound.c.message_id,
                   outbound.c.order_key).where(outbound.c.destination == self.destination,
                                               outbound.c.status == QUEUED.value,
                                               outbound.c.purged_at.is_(None))
        if waiting:
            q = q.where(outbound.c.order_key.not_in(list(waiting[:MAX_EXCLUDED])))
        conn = self._connection()
        with conn.begin():
            return [QueuedRow(*r) for r in conn.execute(q.order_by(outbound.c.id).limit(limit))]

    def record(self, attempt: Attempt) -> None:
        """The attempt and the queue row's new state, in one transaction."""
        row, error = attempt.row, attempt.error[:500]
        values: dict[str, Any] = {"status": attempt.status.value, "attempts": row.attempts + 1,
                                  "last_error": error}
        if attempt.status is DELIVERED:
            values["delivered_at"] = attempt.at
        conn = self._connection()
        if self._lock is None:
            self._lock = WriteLock(self.db)
        try:
            with conn.begin():
                self._lock.acquire(conn)
                sql.insert_many(conn, "deliveries", [{
                    "outbound_id": row.id, "message_id": row.message_id,
                    "destination": self.destination, "at": attempt.at,
                    "ack_code": attempt.code, "error": error, "ms": attempt.ms,
                    "ack": attempt.ack}])
                sql.update(conn, "outbound", row.id, values)
        finally:
            self._lock.release()

    def close(self) -> None:
        """Release what is kept open between passes (not during one), the lease too."""
        if self._lease is not None:
            self._lease.release(self._conn)
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def queue_rows(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert queue rows that all have the same columns, in queue order."""
    sql.insert_many(conn, "outbound", rows)


def queue_row(conn: Connection, row: dict[str, Any]) -> int:
    """Insert one queue row; its id."""
    return sql.insert(conn, "outbound", row)


def _ensure(conn: Connection, name: str) -> None:
    if conn.execute(select(destination_state.c.name).where(
            destination_state.c.name == name)).first() is None:
        conn.execute(insert(destination_state).values(name=name, paused=False,
                                                      retry_now=False))


def set_paused(conn: Connection, name: str, paused: bool) -> None:
    """Paused destinations keep queueing; nothing is sent until `resume`."""
    _ensure(conn, name)
    conn.execute(update(destination_state).where(destination_state.c.name == name)
                 .values(paused=paused))


def request_retry(conn: Connection, name: str) -> None:
    """The destination's worker retries its head now, forgetting the backoff."""
    _ensure(conn, name)
    conn.execute(update(destination_state).where(destination_state.c.name == name)
                 .values(retry_now=True))


def state(conn: Connection, name: str) -> tuple[bool, bool]:
    """(paused, retry requested) of a destination."""
    row = conn.execute(select(destination_state.c.paused, destination_state.c.retry_now)
                       .where(destination_state.c.name == name)).first()
    return (bool(row.paused), bool(row.retry_now)) if row else (False, False)


def take_retry(conn: Connection, name: str) -> bool:
    """Consume a pending retry request."""
    _paused, wanted = state(conn, name)
    if wanted:
        conn.execute(update(destination_state).where(destination_state.c.name == name)
                     .values(retry_now=False))
    return wanted


def release(conn: Connection, name: str, outbound_id: int | None = None) -> int:
    """Dead letters (all, or one) go back into the queue with their attempts reset; not those
    whose payload retention purged (there is nothing left to send)."""
    q = update(outbound).where(outbound.c.destination == name, outbound.c.status == DEAD.value,
                               outbound.c.purged_at.is_(None))
    if outbound_id is not None:
        q = q.where(outbound.c.id == outbound_id)
    return int(conn.execute(q.values(status=QUEUED.value, attempts=0)).rowcount)


class StoredMessage(NamedTuple):
    """A stored message, as `replay` needs it."""

    raw: bytes
    control_id: str
    purged_at: datetime | None
    channel: str
    status: str


def stored_message(conn: Connection, message_id: int) -> StoredMessage | None:
    """The message with this id, or None."""
    row = conn.execute(select(messages.c.raw, messages.c.control_id, messages.c.purged_at,
                              messages.c.channel, messages.c.status)
                       .where(messages.c.id == message_id)).first()
    return None if row is None else StoredMessage(*row)


def queue_replay(conn: Connection, message_id: int, stored: StoredMessage, destination: str,
                 now: datetime, order_key: str) -> int:
    """Queue a stored message again for `destination`, as it was received; the new queue id."""
    result = conn.execute(insert(outbound).values(
        destination=destination, route="replay", message_id=message_id,
        control_id=stored.control_id, payload=stored.raw, status=QUEUED.value, attempts=0,
        last_error="", created_at=now, order_key=order_key).returning(outbound.c.id))
    return int(result.scalar_one())
