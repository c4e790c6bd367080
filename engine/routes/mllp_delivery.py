"""Delivery to MLLP destinations: one message at a time, in queue order, each waiting for its ACK.

* The ACK must correlate: MSA-2 equal to the MSH-10 that was sent.  An ACK for anything else is
  logged and ignored; it never advances the queue (Mirth Connect #1441).
* AA/CA → delivered.  AE/AR/CE/CR, no ACK within `ack_timeout_s`, or a lost connection → the
  message stays at the head of its lane and is retried after the backoff (`engine.routes.worker`,
  which also keeps order per destination or per key, dead letters and the bookkeeping).
* A connection that cannot be opened holds the whole destination, per_key or not: nothing was
  sent, so no key is at fault.
* After a timeout the connection is closed, so a late ACK cannot be taken for the next message.
The worker loop runs in a thread (its database bookkeeping is synchronous); its network I/O is a
Twisted client on the reactor (`engine.mllp.link`, one connection per destination, kept open
between messages), reached with `blockingCallFromThread`.  When the reactor shuts down, the
exchange under way is cut short and no other starts, so the reactor's thread pool can be joined.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Engine
from twisted.internet import defer
from twisted.internet.threads import blockingCallFromThread

from engine.config import Destination
from engine.errors import HL7Error
from engine.mllp.link import Answer, MLLPLink
from engine.parsing import parse
from engine.routes.worker import Outcome, QueueWorker

log = structlog.get_logger("engine.delivery")

STOPPING = "the engine is stopping"


class MLLPDeliverer(QueueWorker):
    """The worker of one MLLP destination; `run_pass` works its queue until it must wait."""

    def __init__(self, dest: Destination, db: Engine, now: Callable[[], datetime],
                 reactor: Any, jitter: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(dest, db, now, jitter, clock)
        self.reactor = reactor
        self.link: MLLPLink | None = None  # made on the reactor thread, at the first send
        self._guard = threading.Lock()
        self._sending = False  # a worker thread is inside `send`
        self._stopping = False
        self._idle: defer.Deferred[None] | None = None  # shutdown waits for `send` to return
        reactor.addSystemEventTrigger("before", "shutdown", self._shutdown)

    def send(self, row_id: int, payload: bytes) -> Outcome:
        """Send one message and wait for its correlated ACK (on the worker thread)."""
        try:
            control = _control_id(payload)
        except HL7Error:
            return Outcome(error="the queued message cannot be parsed")
        with self._guard:
            if self._stopping:
                return Outcome(error=STOPPING, unreachable=True, aborted=True)
            self._sending = True
        try:
            started = self.clock()
            call: Any = blockingCallFromThread  # typeshed cannot express a Deferred result
            answer: Answer = call(self.reactor, self._exchange, payload, control)
        finally:
            self._sent()
        if answer.ack is not None:
            log.info("delivery.acked", destination=self.dest.name, control_id=control,
                     ack=answer.code, ms=round((self.clock() - started) * 1000, 1))
        # Stopping ends the pass here (no other key is tried) and is not counted as an attempt.
        stopping = self._stopping and answer.ack is None
        return Outcome(answer.code, answer.error, answer.ack, answer.unreachable or stopping,
                       aborted=stopping)

    def _exchange(self, payload: bytes, control: str) -> defer.Deferred[Answer]:
        """On the reactor thread: the link (made on first use) sends and waits for the answer."""
        if self._stopping:
            return defer.succeed(Answer(error=STOPPING, unreachable=True))
        if self.link is None or self.link.address != (self.dest.host, self.dest.port):
            self._close_link()
            self.link = MLLPLink(self.reactor, self.dest.host, self.dest.port,
                                 self.dest.ack_timeout_s, name=self.dest.name)
        return self.link.exchange(payload, control, self.dest.ack_timeout_s)

    def _sent(self) -> None:
        with self._guard:
            self._sending = False
            idle, self._idle = self._idle, None
        if idle is not None:
            self.reactor.callFromThread(idle.callback, None)

    def _shutdown(self) -> defer.Deferred[None] | None:
        """Before the reactor stops: no new exchange, the one under way ends now, and shutdown
        waits until `send` has returned (the thread pool is joined next)."""
        with self._guard:
            self._stopping = True
            if self._sending:
                self._idle = defer.Deferred()
            idle = self._idle
        self._close_link(STOPPING)
        return idle

    def close(self) -> None:
        self.reactor.callFromThread(self._close_link)
        super().close()

    def _close_link(self, reason: str = "connection: closed by the engine") -> None:
        link, self.link = self.link, None
        if link is not None:
            link.close(reason)


def _control_id(payload: bytes) -> str:
    """MSH-10 of a queued message, from its MSH segment alone (the rest need not be parsed)."""
    end = payload.find(b"\r")
    return parse(payload if end < 0 else payload[:end + 1]).header.control_id
