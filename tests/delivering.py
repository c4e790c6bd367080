"""Delivery workers driven from a test's own thread: each pass and each close runs on the
session's reactor (conftest `reactor`, running in a thread) and the test waits for it."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from twisted.internet.threads import blockingCallFromThread

from engine.config import Destination
from engine.outbound.queue import Delivered, QueueWorker, target
from engine.store import Database


class Driven:
    """A `QueueWorker` seen from a test's thread."""

    def __init__(self, worker: QueueWorker) -> None:
        self.worker = worker

    def run_pass(self, limit: int | None = None) -> Delivered:
        call: Any = blockingCallFromThread  # typeshed cannot express a Deferred result
        result: Delivered = call(self.worker.reactor, self.worker.start_pass, limit)
        return result

    def close(self) -> None:
        blockingCallFromThread(self.worker.reactor, self.worker.close)

    @property
    def dest(self) -> Destination:
        return self.worker.dest

    @dest.setter
    def dest(self, dest: Destination) -> None:
        """The destination's settings change (its queue and lanes stay): the next attempt
        goes through a new deliverer, on a new connection."""
        blockingCallFromThread(self.worker.reactor, self._redirect, dest)

    def _redirect(self, dest: Destination) -> None:
        worker = self.worker
        worker.deliverer.close("connection: closed by the engine")
        worker.dest, worker.target = dest, target(dest)
        worker.deliverer = worker.target.deliverer(worker.reactor)


def driven(dest: Destination, db: Database, now: Callable[[], datetime], reactor: Any,
           jitter: Callable[[], float] = random.random,
           clock: Callable[[], float] = time.monotonic) -> Driven:
    """A worker for `dest`, its passes run on `reactor`."""
    return Driven(QueueWorker(dest, db, now, reactor, jitter=jitter, clock=clock))
