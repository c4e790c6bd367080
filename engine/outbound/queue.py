"""A destination's delivery worker: one pass over its queue, shared by file and MLLP destinations.

* Rows go in queue order within their lane (`engine.routes.ordering`): a strict destination's
  failing head holds the whole queue; a per_key destination's holds only the rows of its key.
* A failure counts an attempt, and the lane waits an exponential backoff with ±50% jitter
  (`retry_initial_s` doubling up to `retry_max_s`); after `max_attempts` the row becomes a dead
  letter and its lane moves on.  `queue.blocked`/`queue.recovered` (the whole destination) and
  `queue.key_blocked`/`queue.key_recovered` (one key, named by the outbound id, never by its
  value) are logged once per episode, not once per attempt.
* Each attempt is one transaction: its `deliveries` row (with the downstream's ACK as received)
  and the queue row's new status, together.

Durability of this bookkeeping.  On SQLite the worker records attempts through an engine of its
own opened with `synchronous=NORMAL` (`bookkeeping_engine`); ingest keeps FULL.  In WAL mode a
NORMAL commit skips the fsync: a process crash (SIGKILL) loses nothing, because the WAL pages sit
in the OS cache and survive the process; a power loss can lose the latest "delivered" marks, and
those messages are then sent again.  Delivery is at-least-once either way and no message is ever
lost: the queue rows themselves were committed with FULL before their message was acknowledged.
It takes an fsync per delivered message off the worker's path.  PostgreSQL uses the same engine.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import structlog
from sqlalchemy import Connection, Engine, select

from engine.config import Destination
from engine.mllp.client import Answer
from engine.outbound import operator
from engine.routes.ordering import WHOLE, Holds, Lane
from engine.store import sql
from engine.store.database import open_database
from engine.store.lock import DestinationLease, WriteLock
from engine.store.schema import outbound

log = structlog.get_logger("engine.delivery")

MAX_EXCLUDED = 1000  # waiting keys left out of a pass's query (the rest are skipped as read)


@dataclass(frozen=True, slots=True)
class Delivered:
    """What one pass did."""

    destination: str
    delivered: int = 0
    error: str = ""  # the failure that held the queue or a key, if any
    dead: int = 0


class Queued(NamedTuple):
    """A queued row, as a pass reads it."""

    id: int
    payload: bytes
    attempts: int
    message_id: int | None
    order_key: str


Outcome = Answer  # one attempt: delivered (no error), or why not; file and MLLP alike


def bookkeeping_engine(db: Engine) -> Engine:
    """The engine delivery workers record attempts with: for a SQLite file, a second engine on
    it with `synchronous=NORMAL` (see the module docstring); otherwise `db` itself."""
    if db.dialect.name != "sqlite" or db.url.database in (None, "", ":memory:"):
        return db
    return open_database(db.url.render_as_string(hide_password=False), synchronous="NORMAL",
                         migrate=False)


class QueueWorker:
    """The worker of one destination; subclasses send one payload (`send`).  `run_pass` works
    the queue until every lane with rows waits, is done, or `limit` rows were looked at."""

    limit = 200
    # Pass-through ACKs (`engine.outbound.passthrough`): told every correlated answer; True when a
    # sender was waiting for it, which makes a negative answer final (a dead letter at once).
    answered: Callable[[int, bytes], bool] | None = None
    # Metrics: told each attempt's outcome (destination, delivered | retry | dead).
    observe: Callable[[str, str], None] | None = None

    def __init__(self, dest: Destination, db: Engine, now: Callable[[], datetime],
                 jitter: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.dest = dest
        self.db = db
        self.now = now
        self.jitter = jitter
        self.clock = clock
        self.holds = Holds(per_key=bool(dest.order_key))
        self._conn: Connection | None = None  # kept between attempts: no pool round trip each
        self._lock: WriteLock | None = None  # SQLite: wait for the ingest writer in the kernel
        self._lease: DestinationLease | None = None  # this engine delivers the destination
        self._standby = False  # another engine does (logged once)

    def send(self, row_id: int, payload: bytes) -> Outcome:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the worker keeps open between passes (not during one), the lease too."""
        if self._lease is not None:
            self._lease.release(self._conn)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self.db.connect()
        return self._conn

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after `attempts` failures: doubling, capped, with ±50% jitter."""
        base = min(self.dest.retry_max_s, self.dest.retry_initial_s * 2 ** (attempts - 1))
        return float(base * (0.5 + self.jitter()))

    def run_pass(self, limit: int | None = None) -> Delivered:
        """One pass, sending with `send` on the calling thread."""
        steps = self.steps(limit)
        try:
            row = next(steps)
            while True:
                row = steps.send(self.send(row.id, row.payload))
        except StopIteration as stop:
            result: Delivered = stop.value
            return result
        except Exception:
            self.close()  # the next pass starts on fresh connections
            raise

    def steps(self, limit: int | None = None) -> Generator[Queued, Outcome, Delivered]:
        """One pass as a generator: it yields each row to send and is sent back its outcome,
        so the sending may be synchronous (`run_pass`) or asynchronous (an MLLP worker on the
        reactor).  Its bookkeeping runs on the thread that drives it."""
        limit = limit or self.limit
        if not self._running() or not self.holds.ready(WHOLE, self.clock()):
            return Delivered(self.dest.name)
        rows = self._queued(limit, self.holds.waiting_keys(self.clock()))
        stopped: set[Lane] = set()  # lanes that failed in this pass: the rest of them waits
        delivered = dead = 0
        error = ""
        for row in rows:
            lane = self.holds.lane(row.order_key)
            if lane in stopped or not self.holds.ready(lane, self.clock()):
                continue
            started = self.clock()
            outcome = yield row
            status, held = self._settle(row, lane, outcome, int((self.clock() - started) * 1000))
            delivered += status == "delivered"
            dead += status == "dead"
            if status == "queued":
                error = outcome.error
                stopped.add(held)
                if held is WHOLE:
                    break
        if len(rows) < limit:
            self.holds.prune(self.holds.lane(r.order_key) for r in rows)
        return Delivered(self.dest.name, delivered, error, dead)

    def _running(self) -> bool:
        """This engine holds the destination's lease and it is not paused; a pending `retry`
        request forgets every backoff."""
        conn = self._connection()
        if not self._leased(conn):
            return False
        with conn.begin():
            paused, _ = operator.state(conn, self.dest.name)
            if not paused and operator.take_retry(conn, self.dest.name):
                self.holds.forget_waits()
        return not paused

    def _leased(self, conn: Connection) -> bool:
        """Take the destination's lease, or stand by while another engine holds it."""
        if self._lease is None:
            self._lease = DestinationLease(self.db, self.dest.name)
        if self._lease.held:
            return True
        if not self._lease.hold(conn):
            if not self._standby:
                log.info("delivery.standby", destination=self.dest.name)
                self._standby = True
            return False
        log.info("delivery.lease_taken", destination=self.dest.name)
        self._standby = False
        return True

    def _queued(self, limit: int, waiting: Sequence[str]) -> list[Queued]:
        # Retention empties only delivered/dead rows and `release` skips those, so `purged_at`
        # is NULL on every queued row; the condition keeps an emptied payload from ever going out.
        q = select(outbound.c.id, outbound.c.payload, outbound.c.attempts, outbound.c.message_id,
                   outbound.c.order_key).where(outbound.c.destination == self.dest.name,
                                               outbound.c.status == "queued",
                                               outbound.c.purged_at.is_(None))
        if waiting:
            q = q.where(outbound.c.order_key.not_in(list(waiting[:MAX_EXCLUDED])))
        conn = self._connection()
        with conn.begin():
            return [Queued(*r) for r in conn.execute(q.order_by(outbound.c.id).limit(limit))]

    def _settle(self, row: Queued, lane: Lane, outcome: Outcome, ms: int) -> tuple[str, Lane]:
        """Record one attempt: (the row's new status, the lane that now waits when it stays
        queued)."""
        attempts = row.attempts + 1
        final = outcome.ack is not None and self.answered is not None and self.answered(
            row.id, outcome.ack)
        status = ("delivered" if outcome.delivered else
                  "dead" if final or attempts >= self.dest.max_attempts else "queued")
        self._record(row, outcome, attempts, status, ms)
        if self.observe is not None:
            self.observe(self.dest.name, "retry" if status == "queued" else status)
        held = WHOLE if outcome.unreachable else lane
        if status == "delivered":
            for recovered in self.holds.delivered(lane):
                self._log_edge("recovered", recovered, row.id, "")
        elif status == "dead":
            self.holds.moved_on(lane)
            log.error("queue.dead_letter", destination=self.dest.name, outbound_id=row.id,
                      attempts=attempts, error=outcome.error)
        else:
            wait = self.backoff(attempts)
            if self.holds.failed(held, self.clock() + wait):
                self._log_edge("blocked", held, row.id, outcome.error)
            log.debug("delivery.retry_scheduled", destination=self.dest.name, outbound_id=row.id,
                      attempts=attempts, error=outcome.error, retry_in_s=round(wait, 2))
        return status, held

    def _record(self, row: Queued, outcome: Outcome, attempts: int, status: str,
                ms: int) -> None:
        """The attempt and the queue row's new state, in one transaction."""
        at = self.now()
        values: dict[str, Any] = {"status": status, "attempts": attempts,
                                  "last_error": outcome.error[:500]}
        if status == "delivered":
            values["delivered_at"] = at
        conn = self._connection()
        if self._lock is None:
            self._lock = WriteLock(self.db)
        try:
            with conn.begin():
                self._lock.acquire(conn)
                sql.insert_many(conn, "deliveries", [{
                    "outbound_id": row.id, "message_id": row.message_id,
                    "destination": self.dest.name, "at": at, "ack_code": outcome.code,
                    "error": outcome.error[:500], "ms": ms, "ack": outcome.ack}])
                sql.update(conn, "outbound", row.id, values)
        finally:
            self._lock.release()

    def _log_edge(self, edge: str, lane: Lane, row_id: int, error: str) -> None:
        """`queue.blocked`/`queue.recovered` for the whole destination, `queue.key_*` for one
        key; the key's value is never logged (it may be an MRN), the outbound id is."""
        event = f"queue.{edge}" if lane is WHOLE else f"queue.key_{edge}"
        fields: dict[str, Any] = {"destination": self.dest.name, "outbound_id": row_id}
        if error:
            fields["error"] = error
        if edge == "blocked":
            log.warning(event, **fields)
        else:
            log.info(event, **fields)
