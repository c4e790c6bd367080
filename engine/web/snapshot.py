"""The database's figures for `/metrics`: one set of reads (the queues as `hl7-engine queue`
shows them, referrals by status, overdue referrals by priority), run in a thread pool on the
web's own connections, and cached for a few seconds so that frequent scrapes cost nothing.

While a refresh runs, scrapes get the cached figures; only the first scrape waits for one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from twisted.internet import defer

from engine.config import Config
from engine.outbound.views import queue_state
from engine.store import Database
from engine.store.ledger.views import overdue_counts, status_counts
from engine.web.metrics import Snapshot

log = structlog.get_logger("engine.web")

TTL_S = 5.0  # how long a snapshot serves before a scrape starts the next read


def read_snapshot(db: Database, config: Config, now: datetime) -> Snapshot:
    """Every database figure of `/metrics`, read now (a blocking call: run it in a thread)."""
    queues = queue_state(db, config.destinations, now)
    with db.connect() as conn:
        return Snapshot(tuple(queues), status_counts(conn), overdue_counts(conn, now))


class CachedSnapshot:
    """The latest snapshot, refreshed in the background when older than `ttl_s`.

    `run(f)` runs `f` off the reactor and returns a Deferred of its result; `clock` is the
    reactor's `seconds`.  Both are parameters so tests can drive it synchronously."""

    def __init__(self, read: Callable[[], Snapshot],
                 run: Callable[[Callable[[], Snapshot]], defer.Deferred[Snapshot]],
                 clock: Callable[[], float], ttl_s: float = TTL_S) -> None:
        self._read = read
        self._run = run
        self._clock = clock
        self.ttl_s = ttl_s
        self.value: Snapshot | None = None
        self.read_at = 0.0
        self._pending: defer.Deferred[Snapshot] | None = None
        self.reads = 0

    def current(self) -> Snapshot | None:
        return self.value

    def fresh(self) -> defer.Deferred[Snapshot | None]:
        """The snapshot to serve: the cached one at once (a read starts when it is stale), or,
        before the first read is done, that read's result (None if it failed)."""
        stale = self.value is None or self._clock() - self.read_at >= self.ttl_s
        if stale and self._pending is None:
            self._refresh()
        if self.value is not None or self._pending is None:
            return defer.succeed(self.value)
        waiting: defer.Deferred[Snapshot | None] = defer.Deferred()
        self._pending.addBoth(_pass_on, waiting, self)
        return waiting

    def _refresh(self) -> None:
        self.reads += 1
        pending = self._run(self._read)
        self._pending = pending
        pending.addCallbacks(self._got, self._failed)

    def _got(self, snap: Snapshot) -> Snapshot:
        self.value, self.read_at, self._pending = snap, self._clock(), None
        return snap

    def _failed(self, failure: Any) -> None:
        # The old figures stay (or none); the next scrape tries again.
        self._pending = None
        log.error("metrics.read_failed", error=failure.type.__name__)


def _pass_on(_result: object, waiting: defer.Deferred[Snapshot | None],
             cache: CachedSnapshot) -> object:
    waiting.callback(cache.value)
    return _result


def now_utc() -> datetime:
    """Naive UTC, as the database stores times."""
    return datetime.now(UTC).replace(tzinfo=None)
