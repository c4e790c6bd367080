"""Delivery to MLLP destinations: one message at a time, in queue order, each waiting for its ACK.

* The ACK must correlate: MSA-2 equal to the MSH-10 that was sent.  An ACK for anything else is
  logged and ignored; it never advances the queue (Mirth Connect #1441).
* AA/CA → delivered.  AE/AR/CE/CR, no ACK within `ack_timeout_s`, or a lost connection → the
  message stays at the head of the queue and is retried after an exponential backoff with
  jitter (`retry_initial_s` doubling up to `retry_max_s`); after `max_attempts` it becomes a dead
  letter and the queue moves on.
* After a timeout the connection is closed, so a late ACK cannot be taken for the next message.
The worker runs in a thread (a blocking socket per destination, kept open between messages);
the reactor only schedules its passes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime

import structlog
from sqlalchemy import Engine, insert, select, update

from engine.config import Destination
from engine.errors import HL7Error
from engine.mllp.client import MLLPClient
from engine.parsing import parse
from engine.routes import operator
from engine.routes.delivery import Delivered
from engine.store.schema import deliveries, outbound

log = structlog.get_logger("engine.delivery")


class MLLPDeliverer:
    """The worker of one MLLP destination; `run_pass` works its queue until it must wait."""

    def __init__(self, dest: Destination, db: Engine, now: Callable[[], datetime],
                 jitter: Callable[[], float] = random.random) -> None:
        self.dest = dest
        self.db = db
        self.now = now
        self.jitter = jitter
        self.client: MLLPClient | None = None
        self.retry_at = 0.0  # monotonic time before which the head of the queue waits
        self.blocked = False  # failing since the last delivery: logged once, not per attempt

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after `attempts` failures: doubling, capped, with ±50% jitter."""
        base = min(self.dest.retry_max_s, self.dest.retry_initial_s * 2 ** (attempts - 1))
        return float(base * (0.5 + self.jitter()))

    def run_pass(self, limit: int = 200) -> Delivered:
        with self.db.begin() as conn:
            paused, _ = operator.state(conn, self.dest.name)
            if not paused and operator.take_retry(conn, self.dest.name):
                self.retry_at = 0.0
        if paused or time.monotonic() < self.retry_at:
            return Delivered(self.dest.name)
        with self.db.connect() as conn:
            rows = conn.execute(select(outbound.c.id, outbound.c.payload, outbound.c.attempts,
                                       outbound.c.message_id)
                                .where(outbound.c.destination == self.dest.name,
                                       outbound.c.status == "queued")
                                .order_by(outbound.c.id).limit(limit)).all()
        delivered = dead = 0
        for row in rows:
            started = time.monotonic()
            code, error = self.send(row.payload)
            self._attempt(row.id, row.message_id, code, error,
                          int((time.monotonic() - started) * 1000))
            attempts = row.attempts + 1
            if code in ("AA", "CA"):
                self._set(row.id, status="delivered", attempts=attempts, delivered_at=self.now(),
                          last_error="")
                delivered += 1
                if self.blocked:
                    self.blocked = False
                    log.info("queue.recovered", destination=self.dest.name)
                continue
            if attempts >= self.dest.max_attempts:
                self._set(row.id, status="dead", attempts=attempts, last_error=error)
                log.error("queue.dead_letter", destination=self.dest.name, outbound_id=row.id,
                          attempts=attempts, error=error)
                dead += 1
                continue
            self._set(row.id, attempts=attempts, last_error=error)
            wait = self.backoff(attempts)
            self.retry_at = time.monotonic() + wait
            if not self.blocked:  # a destination that is down (e.g. nightly) queues quietly
                self.blocked = True
                log.warning("queue.blocked", destination=self.dest.name, outbound_id=row.id,
                            error=error)
            log.debug("delivery.retry_scheduled", destination=self.dest.name,
                      outbound_id=row.id, attempts=attempts, error=error,
                      retry_in_s=round(wait, 2))
            return Delivered(self.dest.name, delivered, error, dead)
        return Delivered(self.dest.name, delivered, "", dead)

    def send(self, payload: bytes) -> tuple[str, str]:
        """(MSA-1 of the correlated ACK, or "", and an error text when not accepted)."""
        try:
            control = parse(payload).header.control_id
        except HL7Error:
            return "", "the queued message cannot be parsed"
        started = time.monotonic()
        try:
            if self.client is None:
                self.client = MLLPClient(self.dest.host, self.dest.port,
                                         timeout=self.dest.ack_timeout_s)
            self.client.send(payload)
            deadline = started + self.dest.ack_timeout_s
            while (left := deadline - time.monotonic()) > 0:
                acks = self.client.receive(1, left)
                if not acks and self.client.closed:
                    self.close()
                    return "", "connection: closed by the destination before its ACK"
                for ack in acks:
                    code, echoed = _msa(ack)
                    if echoed != control:
                        log.warning("delivery.uncorrelated_ack", destination=self.dest.name,
                                    expected=control, msa2=echoed)
                        continue
                    log.info("delivery.acked", destination=self.dest.name, control_id=control,
                             ack=code, ms=round((time.monotonic() - started) * 1000, 1))
                    return code, "" if code in ("AA", "CA") else f"downstream answered {code}"
            self.close()  # a late ACK must not be taken for the next message
            return "", f"no ACK within {self.dest.ack_timeout_s:g} s"
        except OSError as exc:
            self.close()
            return "", f"connection: {exc.strerror or type(exc).__name__}"

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def _attempt(self, row_id: int, message_id: int, code: str, error: str, ms: int) -> None:
        """One delivery attempt, for `show` and `tail`."""
        with self.db.begin() as conn:
            conn.execute(insert(deliveries).values(
                outbound_id=row_id, message_id=message_id, destination=self.dest.name,
                at=self.now(), ack_code=code, error=error[:500], ms=ms))

    def _set(self, row_id: int, **values: object) -> None:
        with self.db.begin() as conn:
            conn.execute(update(outbound).where(outbound.c.id == row_id).values(**values))


def _msa(ack: bytes) -> tuple[str, str]:
    try:
        msg = parse(ack)
    except HL7Error:
        return "", ""
    if msg.header.message_type != "ACK":
        return "", ""
    return msg["MSA.1"], msg["MSA.2"]
