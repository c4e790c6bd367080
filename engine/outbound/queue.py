"""A destination's queue worker: one pass over its queue at a time, shared by file and MLLP destinations.

* Rows go in queue order within their lane (`engine.routes.ordering`): a strict destination's
  failing head holds the whole queue; a per_key destination's holds only the rows of its key.
* A failure counts an attempt, and the lane waits an exponential backoff with ±50% jitter
  (`retry_initial_s` doubling up to `retry_max_s`); after `max_attempts` the row becomes a dead
  letter and its lane moves on.  `queue.blocked`/`queue.recovered` (the whole destination) and
  `queue.key_blocked`/`queue.key_recovered` (one key, named by the outbound id, never by its
  value) are logged once per episode, not once per attempt.
* A pass runs on the reactor: each attempt is its destination's `Deliverer` (`FileDeliverer`,
  `MLLPDeliverer`, picked by the destination's type), and every read and write of the store
  (`engine.store.outbound.DestinationQueue`) runs on the reactor's thread pool, one at a time,
  so a recording that waits for the database never stalls a listener.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import structlog
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from engine.config import Destination
from engine.outbound.file import FileDestination
from engine.outbound.mllp import MllpDestination
from engine.outbound.outcomes import Accepted, Deliverer, Outcome, Unreachable
from engine.outbound.status import OutboundStatus, attempt_result
from engine.routes.ordering import WHOLE, Holds, Lane
from engine.store import Database
from engine.store.outbound import Attempt, DestinationQueue, QueuedRow

log = structlog.get_logger("engine.delivery")

STOPPING = "connection: closed, the engine is stopping"
P = ParamSpec("P")
T = TypeVar("T")

Target = FileDestination | MllpDestination
TARGETS: dict[str, Callable[[Destination], Target]] = {
    "file": FileDestination.of, "mllp": MllpDestination.of}


def target(dest: Destination) -> Target:
    """The destination as its type's deliverer needs it."""
    return TARGETS[dest.type](dest)


@dataclass(frozen=True, slots=True)
class Delivered:
    """What one pass did."""

    destination: str
    delivered: int = 0
    error: str = ""  # the failure that held the queue or a key, if any
    dead: int = 0


class QueueWorker:
    """The worker of one destination.  `start_pass` (on the reactor thread) works the queue
    until every lane with rows waits, is done, or `limit` rows were looked at."""

    # Pass-through ACKs (`engine.outbound.passthrough`): told every correlated answer; True when
    # a sender was waiting for it, which makes a negative answer final (a dead letter at once).
    answered: Callable[[int, bytes], bool] | None = None
    # Metrics: told each attempt's result (destination, delivered | retry | dead).
    observe: Callable[[str, str], None] | None = None

    def __init__(self, dest: Destination, db: Database, now: Callable[[], datetime],
                 reactor: Any, jitter: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.dest = dest
        self.now = now
        self.reactor = reactor
        self.jitter = jitter
        self.clock = clock
        self.target = target(dest)
        self.deliverer: Deliverer = self.target.deliverer(reactor)
        self.queue = DestinationQueue(db, dest.name)
        self.holds = Holds(per_key=bool(dest.order_key))
        self.stopping = False

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after `attempts` failures: doubling, capped, with ±50% jitter."""
        base = min(self.dest.retry_max_s, self.dest.retry_initial_s * 2 ** (attempts - 1))
        return float(base * (0.5 + self.jitter()))

    def start_pass(self, limit: int | None = None) -> Deferred[Delivered]:
        """Work the queue until it must wait; fires with what the pass did."""
        return Deferred.fromCoroutine(self._pass(limit or self.target.limit))

    def stop(self) -> None:
        """The engine stops: the attempt under way ends now, uncounted, and no other starts."""
        self.stopping = True
        self.deliverer.close(STOPPING)

    def close(self) -> None:
        """Release what the worker keeps open between passes (not during one), the lease too."""
        self.deliverer.close(STOPPING if self.stopping else "connection: closed by the engine")
        self.queue.close()

    def _store(self, f: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        """`f` on the reactor's thread pool: the store never blocks the reactor."""
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args, **kwargs)

    async def _pass(self, limit: int) -> Delivered:
        try:
            return await self._work(limit)
        except Exception:
            self.close()  # the next pass starts on fresh connections
            raise

    async def _work(self, limit: int) -> Delivered:
        running, retry = await self._store(self.queue.open)
        if retry:
            self.holds.forget_waits()
        if not running or not self.holds.ready(WHOLE, self.clock()):
            return Delivered(self.dest.name)
        rows = await self._store(self.queue.queued, limit, self.holds.waiting_keys(self.clock()))
        stopped: set[Lane] = set()  # lanes that failed in this pass: the rest of them waits
        delivered = dead = 0
        error = ""
        for row in rows:
            if self.stopping:
                break
            lane = self.holds.lane(row.order_key)
            if lane in stopped or not self.holds.ready(lane, self.clock()):
                continue
            started = self.clock()
            outcome = await self.deliverer.deliver(row.id, row.payload)
            if self.stopping:  # not an attempt: the row is sent again after the restart
                return Delivered(self.dest.name)
            ms = int((self.clock() - started) * 1000)
            status, held = await self._settle(row, lane, outcome, ms)
            delivered += status is OutboundStatus.DELIVERED
            dead += status is OutboundStatus.DEAD
            if status is OutboundStatus.QUEUED:
                error = outcome.error
                stopped.add(held)
                if held is WHOLE:
                    break
        if len(rows) < limit:
            self.holds.prune(self.holds.lane(r.order_key) for r in rows)
        return Delivered(self.dest.name, delivered, error, dead)

    def _status(self, row: QueuedRow, outcome: Outcome) -> OutboundStatus:
        """The row's state after this attempt (a sender waiting for the answer is told it)."""
        final = outcome.ack is not None and self.answered is not None and self.answered(
            row.id, outcome.ack)
        if isinstance(outcome, Accepted):
            return OutboundStatus.DELIVERED
        if final or row.attempts + 1 >= self.dest.max_attempts:
            return OutboundStatus.DEAD
        return OutboundStatus.QUEUED

    async def _settle(self, row: QueuedRow, lane: Lane, outcome: Outcome, ms: int
                      ) -> tuple[OutboundStatus, Lane]:
        """Record one attempt: (the row's new status, the lane that now waits when it stays
        queued)."""
        status = self._status(row, outcome)
        await self._store(self.queue.record, Attempt(row, self.now(), status, outcome.code,
                                                     outcome.error, ms, outcome.ack))
        if self.observe is not None:
            self.observe(self.dest.name, attempt_result(status))
        held = WHOLE if isinstance(outcome, Unreachable) else lane
        if status is OutboundStatus.DELIVERED:
            for recovered in self.holds.delivered(lane):
                self._log_edge("recovered", recovered, row.id, "")
        elif status is OutboundStatus.DEAD:
            self.holds.moved_on(lane)
            log.error("queue.dead_letter", destination=self.dest.name, outbound_id=row.id,
                      attempts=row.attempts + 1, error=outcome.error)
        else:
            wait = self.backoff(row.attempts + 1)
            if self.holds.failed(held, self.clock() + wait):
                self._log_edge("blocked", held, row.id, outcome.error)
            log.debug("delivery.retry_scheduled", destination=self.dest.name, outbound_id=row.id,
                      attempts=row.attempts + 1, error=outcome.error, retry_in_s=round(wait, 2))
        return status, held

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
