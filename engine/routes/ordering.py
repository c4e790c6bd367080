"""Which queued rows of a destination may go now: `order: strict` and `order: {per_key: PATH}`.

Rows travel in lanes, each in queue order.  A strict destination has one lane, `WHOLE`: a failing
head holds every row behind it.  A per_key destination has a lane per order key (the value of the
configured field when the row was queued; rows without one share the empty key): a failing head
holds only its own lane, with its own backoff, and the other lanes keep flowing.  When nothing
could be sent at all (the downstream refuses connections, the directory is unusable) the whole
destination waits, per_key or not: an outage is not one patient's problem.

`Holds` is the worker's memory of this, kept in process (after a restart everything is retried at
once).  It is pure: times are monotonic seconds passed in, and it never logs; its answers say when
a lane starts failing or recovers, so the worker logs each once.  Order keys may be patient data
(an MRN): they stay in here and in the store, never in a log line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

WHOLE: str | None = None  # the lane of a strict destination, and the destination-wide wait
Lane = str | None


@dataclass(slots=True)
class Holds:
    """The lanes of one destination that are failing, and until when each waits."""

    per_key: bool
    until: dict[Lane, float] = field(default_factory=dict)  # lane -> retry no sooner than
    failing: set[Lane] = field(default_factory=set)  # since its last delivery: logged once

    def lane(self, order_key: str) -> Lane:
        """The lane of a row with this order key."""
        return order_key if self.per_key else WHOLE

    def ready(self, lane: Lane, now: float) -> bool:
        """Whether a row of `lane` may be sent now (neither it nor the destination waits)."""
        return self.until.get(WHOLE, 0.0) <= now and self.until.get(lane, 0.0) <= now

    def waiting_keys(self, now: float) -> list[str]:
        """The order keys whose lane waits out a backoff now (none for a strict destination)."""
        return [k for k, t in self.until.items() if k is not None and t > now]  # not WHOLE

    def failed(self, lane: Lane, retry_at: float) -> bool:
        """A row of `lane` failed; its lane waits until `retry_at`.  True when the lane starts
        failing (the worker logs that once)."""
        self.until[lane] = retry_at
        first = lane not in self.failing
        self.failing.add(lane)
        return first

    def moved_on(self, lane: Lane) -> None:
        """The lane's head became a dead letter: the next row of the lane may go at once.  The
        lane counts as failing until something of it is delivered."""
        self.until.pop(lane, None)

    def delivered(self, lane: Lane) -> list[Lane]:
        """A row of `lane` was delivered: the lanes that recover by it (the lane itself, and the
        whole destination if it was unreachable), each reported once."""
        recovered = [x for x in dict.fromkeys((WHOLE, lane)) if x in self.failing]
        for x in (WHOLE, lane):
            self.until.pop(x, None)
            self.failing.discard(x)
        return recovered

    def forget_waits(self) -> None:
        """`hl7-engine retry`: every lane may be retried now."""
        self.until.clear()

    def prune(self, queued: Iterable[Lane]) -> None:
        """Forget failing keys that have no queued row left (after a full look at the queue),
        so the memory stays bounded by the keys still held."""
        keep = set(queued) | set(self.until)
        self.failing = {x for x in self.failing if x is WHOLE or x in keep}
