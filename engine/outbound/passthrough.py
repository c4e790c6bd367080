"""Pass-through ACKs (Mirth Connect's "respond from destination"): a sender waits for the answer
its message gets downstream.

A channel with `ack: {mode: downstream, destination: D, timeout_s: T}` does not answer on commit.
Its message and the queue row for D commit as usual; the listener then waits (`Waiters.wait`)
until D's delivery worker reports D's ACK for that row (`Waiters.answered`), and relays it
(`AckBuilder.relay`).  Without an answer within T seconds the sender gets AE 207; the row stays
queued and is delivered when D is back, so a resend (a retransmission) waits for that delivery
instead of queuing a second copy.

A negative downstream answer that reached a waiting sender is final for that row (the sender was
told and owns the retry): the worker makes it a dead letter at once.  The sender's resend of the
same message requeues it.

Waiters live on the reactor thread, as does the MLLP delivery worker that reports to them; a
report is handed over with `callFromThread` all the same (the next reactor turn), so relaying an
answer never runs inside the worker's pass, and the report would be safe from a thread too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from engine.ack import AckBuilder
from engine.parsing import InboundMessage, parse
from engine.store import Database
from engine.store.relayed import Waiting, record_relayed

log = structlog.get_logger("engine.passthrough")

Answer = bytes | None  # the downstream's ACK, or None when the wait timed out


class Waiters:
    """Senders waiting for downstream answers, by outbound row id."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._waiting: dict[int, list[defer.Deferred[Answer]]] = {}

    def wait(self, outbound_id: int, timeout_s: float) -> defer.Deferred[Answer]:
        """Fires with the answer to this row, or None after `timeout_s`."""
        d: defer.Deferred[Answer] = defer.Deferred()
        self._waiting.setdefault(outbound_id, []).append(d)
        call = self._reactor.callLater(timeout_s, self._expire, outbound_id, d)

        def cancel_timer(result: Answer) -> Answer:
            if call.active():
                call.cancel()
            return result

        d.addBoth(cancel_timer)
        return d

    def waiting(self, outbound_id: int) -> bool:
        """Is a sender waiting for this row?  (A set lookup, safe from any thread.)"""
        return outbound_id in self._waiting

    def answered(self, outbound_id: int, ack: bytes) -> None:
        """The downstream answered this row: every sender waiting for it gets the answer."""
        for d in self._waiting.pop(outbound_id, []):
            d.callback(ack)

    def _expire(self, outbound_id: int, d: defer.Deferred[Answer]) -> None:
        found = self._waiting.get(outbound_id, [])
        if d in found:
            found.remove(d)
            if not found:
                del self._waiting[outbound_id]
            d.callback(None)

    def reporter(self) -> Callable[[int, bytes], bool]:
        """For a delivery worker: report an answer; True when a sender was waiting."""

        def report(outbound_id: int, ack: bytes) -> bool:
            if not self.waiting(outbound_id):
                return False
            self._reactor.callFromThread(self.answered, outbound_id, ack)
            return True

        return report


class Relay:
    """The listener's side for one pass-through channel: wait, relay, store, answer."""

    def __init__(self, destination: str, timeout_s: float, builder: AckBuilder,
                 waiters: Waiters, db: Database, reactor: Any) -> None:
        self.destination = destination
        self.timeout_s = timeout_s
        self.builder = builder
        self.waiters = waiters
        self.db = db
        self.reactor = reactor

    def answer(self, payload: bytes, message_id: int, waiting: Waiting
               ) -> defer.Deferred[list[bytes]]:
        """The ACKs for the sender once the downstream answered (or the wait timed out)."""
        started = time.perf_counter()
        d: defer.Deferred[Answer] = (defer.succeed(waiting.answer) if waiting.answer is not None
                                     else self.waiters.wait(waiting.outbound_id, self.timeout_s))
        d.addCallback(self._relayed, parse(payload), message_id, waiting.outbound_id, started)
        return cast(defer.Deferred[list[bytes]], d)  # Twisted's stubs lose the chained type

    def _relayed(self, answer: Answer, msg: InboundMessage, message_id: int, outbound_id: int,
                 started: float) -> defer.Deferred[list[bytes]]:
        if answer is None:
            ack = self.builder.timed_out(
                msg, f"no answer from {self.destination} within {self.timeout_s:g} s")
            downstream = ""
        else:
            ack = self.builder.relay(msg, answer)
            downstream = _msa1(answer)
        code = _msa1(ack)
        now = datetime.now(UTC).replace(tzinfo=None)
        d = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), record_relayed,
                              self.db, message_id, outbound_id, ack, code, downstream, now)

        def sent(result: object) -> list[bytes]:
            if isinstance(result, Failure):
                log.error("ack.relay_not_stored", id=message_id,
                          error=result.type.__name__ if result.type else "?")
            log.info("ack.relayed", id=message_id, control_id=msg.header.control_id,
                     destination=self.destination, downstream_ack=downstream or None, ack=code,
                     ms=round((time.perf_counter() - started) * 1000, 1))
            return [ack]

        d.addBoth(sent)
        return cast(defer.Deferred[list[bytes]], d)


def _msa1(ack: bytes) -> str:
    at = ack.find(b"\rMSA")
    return ack[at + 5: at + 7].decode("ascii", "replace") if at >= 0 else ""
