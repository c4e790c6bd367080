"""Delivery to MLLP destinations: one message at a time, in queue order, each waiting for its ACK.

* The ACK must correlate: MSA-2 equal to the MSH-10 that was sent.  An ACK for anything else is
  logged and ignored; it never advances the queue (Mirth Connect #1441).
* AA/CA → delivered.  AE/AR/CE/CR, another MSA-1, no ACK within `ack_timeout_s`, or a lost
  connection → the message stays at the head of its lane and is retried after the backoff
  (`engine.outbound.queue`, which also keeps order per destination or per key, dead letters
  and the bookkeeping).
* A connection that cannot be opened holds the whole destination, per_key or not: nothing was
  sent, so no key is at fault.
* After a timeout the connection is closed, so a late ACK cannot be taken for the next message.
* With the destination's `tls` the connection is TLS; a failed handshake holds the whole
  destination like a refused connection (nothing was delivered), logged `delivery.tls_failed`.

The network I/O is the Twisted client (`engine.mllp.client`, one persistent connection per
destination) on the reactor; the bookkeeping between two exchanges runs on a thread pool.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import structlog
from twisted.internet import defer

from engine.config import Destination
from engine.errors import HL7Error
from engine.mllp.client import MLLPLink
from engine.outbound.outcomes import Errored, Outcome, Unreachable
from engine.parsing import parse
from engine.tls import ClientTLS, TLSFileError

log = structlog.get_logger("engine.delivery")


@dataclass(frozen=True, slots=True)
class MllpDestination:
    """An `mllp` destination: the downstream's address, its ACK timeout, its TLS."""

    name: str
    host: str
    port: int
    ack_timeout_s: float
    tls: ClientTLS | None = None
    limit = 200  # rows a pass looks at

    @classmethod
    def of(cls, dest: Destination) -> MllpDestination:
        return cls(dest.name, dest.host, dest.port, dest.ack_timeout_s, dest.tls)

    def deliverer(self, reactor: Any) -> MLLPDeliverer:
        return MLLPDeliverer(self, reactor)


class MLLPDeliverer:
    """Sends to one MLLP destination on a connection kept between exchanges (reactor thread)."""

    def __init__(self, dest: MllpDestination, reactor: Any) -> None:
        self.dest = dest
        self.reactor = reactor
        self.link: MLLPLink | None = None  # opened at the first exchange, kept between them

    def deliver(self, row_id: int, payload: bytes) -> defer.Deferred[Outcome]:
        try:
            control = _control_id(payload)
        except HL7Error:
            return defer.succeed(Errored("the queued message cannot be parsed"))
        dest = self.dest
        if self.link is None:
            try:
                self.link = MLLPLink(self.reactor, dest.host, dest.port, dest.ack_timeout_s,
                                     name=dest.name, tls=dest.tls)
            except TLSFileError as exc:  # a file checked at load, gone or changed since
                error = f"connection: TLS settings: {exc}"
                log.warning("delivery.tls_failed", destination=dest.name, error=error)
                return defer.succeed(Unreachable(error))
        done: defer.Deferred[Outcome] = defer.Deferred()
        started = time.monotonic()

        def answered(outcome: Outcome) -> None:
            if outcome.ack is not None:
                log.info("delivery.acked", destination=dest.name, control_id=control,
                         ack=outcome.code, ms=round((time.monotonic() - started) * 1000, 1))
            done.callback(outcome)

        self.link.exchange(payload, control, dest.ack_timeout_s, answered)
        return done

    def close(self, reason: str) -> None:
        link, self.link = self.link, None
        if link is not None:
            link.close(reason)


def _control_id(payload: bytes) -> str:
    """MSH-10 of a queued message, from its MSH segment alone (the rest need not be parsed)."""
    end = payload.find(b"\r")
    return parse(payload if end < 0 else payload[:end + 1])["MSH.10"]
