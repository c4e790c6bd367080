"""Delivery to MLLP destinations: one message at a time, in queue order, each waiting for its ACK.

* The ACK must correlate: MSA-2 equal to the MSH-10 that was sent.  An ACK for anything else is
  logged and ignored; it never advances the queue (Mirth Connect #1441).
* AA/CA → delivered.  AE/AR/CE/CR, no ACK within `ack_timeout_s`, or a lost connection → the
  message stays at the head of its lane and is retried after the backoff (`engine.outbound.queue`,
  which also keeps order per destination or per key, dead letters and the bookkeeping).
* A connection that cannot be opened holds the whole destination, per_key or not: nothing was
  sent, so no key is at fault.
* After a timeout the connection is closed, so a late ACK cannot be taken for the next message.
* With the destination's `tls` the connection is TLS; a failed handshake holds the whole
  destination like a refused connection (nothing was delivered), logged `delivery.tls_failed`.

The worker runs on the reactor: its network I/O is the Twisted client (`engine.mllp.client`, one
persistent connection per destination) and its bookkeeping (one short transaction per attempt,
`synchronous=NORMAL` on SQLite) runs inline between two exchanges.  No thread hand-over per
message: that is what made an earlier design, a worker thread reaching the client with
`blockingCallFromThread`, deliver 40% less (docs/design-notes.md).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Generator
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Engine
from twisted.internet import defer
from twisted.internet.threads import blockingCallFromThread
from twisted.python import threadable

from engine.config import Destination
from engine.errors import HL7Error
from engine.mllp.client import MLLPLink
from engine.outbound.queue import Delivered, Outcome, Queued, QueueWorker
from engine.parsing import parse
from engine.tls import TLSFileError

log = structlog.get_logger("engine.delivery")
in_io_thread: Callable[[], bool] = threadable.isInIOThread  # typeshed has it untyped

STOPPING = "connection: closed, the engine is stopping"


class MLLPDeliverer(QueueWorker):
    """The worker of one MLLP destination.  `start_pass` (on the reactor thread) works its queue
    until it must wait; `run_pass` is the same from another thread (tests)."""

    def __init__(self, dest: Destination, db: Engine, now: Callable[[], datetime], reactor: Any,
                 jitter: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(dest, db, now, jitter, clock)
        self.reactor = reactor
        self.link: MLLPLink | None = None  # opened at the first exchange, kept between them
        self.stopping = False
        # The pass under way: its steps, its result, and the exchange waiting for its answer.
        self._steps: Generator[Queued, Outcome, Delivered]
        self._done: defer.Deferred[Delivered]
        self._sent: tuple[str, float] = ("", 0.0)

    def start_pass(self, limit: int | None = None) -> defer.Deferred[Delivered]:
        """Work the queue until it must wait; fires with what the pass did."""
        self._steps = self.steps(limit)
        self._done = defer.Deferred()
        self._advance(None)
        return self._done

    def run_pass(self, limit: int | None = None) -> Delivered:
        """`start_pass` from another thread (tests): runs it on the reactor and waits for it."""
        call: Any = blockingCallFromThread  # typeshed cannot express a Deferred result
        result: Delivered = call(self.reactor, self.start_pass, limit)
        return result

    def _advance(self, outcome: Outcome | None) -> None:
        """Hand the pass an outcome (none at its start) and send the row it yields next; a
        loop, not a recursion, while outcomes come at once (an unparsable queued message)."""
        steps, done = self._steps, self._done
        while True:
            try:
                row = steps.send(outcome)  # type: ignore[arg-type]  # None starts it
            except StopIteration as stop:
                done.callback(stop.value)
                return
            except Exception:
                self.close()  # the next pass starts on fresh connections
                done.errback()
                return
            outcome = self._exchange(row.payload)
            if outcome is None:
                return  # `_answered` goes on

    def _exchange(self, payload: bytes) -> Outcome | None:
        """Send one message; None when its answer comes later, through `_answered`."""
        try:
            control = _control_id(payload)
        except HL7Error:
            return Outcome(error="the queued message cannot be parsed")
        dest = self.dest
        if self.link is None or (self.link.address, self.link.tls) != ((dest.host, dest.port),
                                                                       dest.tls):
            self._drop_link()
            try:
                self.link = MLLPLink(self.reactor, dest.host, dest.port, dest.ack_timeout_s,
                                     name=dest.name, tls=dest.tls)
            except TLSFileError as exc:  # a file checked at load, gone or changed since
                error = f"connection: TLS settings: {exc}"
                log.warning("delivery.tls_failed", destination=dest.name, error=error)
                return Outcome(error=error, unreachable=True)
        self._sent = (control, self.clock())
        self.link.exchange(payload, control, self.dest.ack_timeout_s, self._answered)
        return None

    def _answered(self, answer: Outcome) -> None:
        control, started = self._sent
        if answer.ack is not None:
            log.info("delivery.acked", destination=self.dest.name, control_id=control,
                     ack=answer.code, ms=round((self.clock() - started) * 1000, 1))
        if self.stopping:  # not an attempt: the row is sent again after the restart
            self._steps.close()
            self._done.callback(Delivered(self.dest.name))
            return
        self._advance(answer)

    def stop(self) -> None:
        """The engine stops: the exchange under way ends now, uncounted, and no other starts."""
        self.stopping = True
        self.close()

    def close(self) -> None:
        if not in_io_thread():  # a test, done with the worker
            blockingCallFromThread(self.reactor, self.close)
            return
        self._drop_link()
        super().close()

    def _drop_link(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            link.close(STOPPING if self.stopping else "connection: closed by the engine")


def _control_id(payload: bytes) -> str:
    """MSH-10 of a queued message, from its MSH segment alone (the rest need not be parsed)."""
    end = payload.find(b"\r")
    return parse(payload if end < 0 else payload[:end + 1])["MSH.10"]
