"""The engine's timed work: the ledger sweep (expiry and overdue notices, with their `on:` route
rows) and the retention purge, as services of the tree `make_service` builds.

Each runs at start, then on its interval (`ledger.sweep_interval_minutes`; the purge daily), off
the reactor in its thread pool, on its own database connection, and reads the configuration in
force when it runs, so a reload applies to the next run.  `sweep_now` is also what
`hl7-engine sweep` runs by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.threads import deferToThreadPool

from engine.config import Config
from engine.ledger.settings import LedgerSettings
from engine.logs import emit
from engine.timestamps import utc_now

PURGE_INTERVAL_S = 86400.0


def event_router(config: Config | None) -> Any:
    """The `on:` routes (engine.routes.event_queue.EventRouter), or None without any."""
    if config is None:
        return None
    from engine.routes.event_queue import EventRouter

    router = EventRouter.of(config.routes, [(ch.name, ch.ack.application, ch.ack.facility)
                                            for ch in config.channels])
    return router.keyed(config.destinations) if router is not None else None


def sweep_now(db: Any, config: Config | None) -> tuple[list[str], list[str], int]:
    """Expiry, then the once-only overdue notice, and the `on:` routes' rows for both, in
    chunked transactions: (expired lines, overdue lines, rows queued)."""
    from engine.store.ledger.sweep import run_sweep

    now = utc_now()
    router = event_router(config)
    queue = (lambda conn, events: router.queue(conn, events, None, now)) if router else None
    return run_sweep(db, now, config.ledger if config else LedgerSettings(), queue)


class SweepService(TimerService):
    """The sweep at start, then every `ledger.sweep_interval_minutes` (a reload that changes
    the interval restarts the timer: `interval`)."""

    def __init__(self, reactor: Any, db: Any, config: Callable[[], Config]) -> None:
        super().__init__(60.0 * config().ledger.sweep_interval_minutes, self.sweep)
        self.clock = reactor
        self.reactor, self.db, self.config = reactor, db, config

    def interval(self, minutes: int) -> None:
        """Sweep every `minutes` from now on (and once now)."""
        if self.step == 60.0 * minutes:
            return
        self.step = 60.0 * minutes
        if self.running:
            self.stopService()
            self.startService()

    def sweep(self) -> None:
        config = self.config()

        def work() -> None:
            expired, overdue, queued = sweep_now(self.db, config)
            emit("info", "ledger.sweep", {"expired": len(expired), "overdue": len(overdue),
                                          "events_queued": queued})

        def failed(failure: Any) -> None:
            emit("error", "ledger.sweep_failed", {"error": failure.type.__name__})

        d = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), work)
        d.addErrback(failed)


class PurgeService(TimerService):
    """The retention purge at start, then daily, when `retention.message_bodies_days` is set
    in the configuration in force; it stops between two chunks when the engine stops."""

    def __init__(self, reactor: Any, db: Any, config: Callable[[], Config]) -> None:
        super().__init__(PURGE_INTERVAL_S, self.purge)
        self.clock = reactor
        self.reactor, self.db, self.config = reactor, db, config

    def purge(self) -> None:
        from engine.store.retention import purge

        days = self.config().retention.message_bodies_days
        if days is None:
            return
        d = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), purge, self.db,
                              utc_now(), days, stopping=lambda: not self.running)
        d.addErrback(lambda _failure: None)  # already logged as retention.purge_failed
