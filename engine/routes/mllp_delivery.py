"""Delivery to MLLP destinations: one message at a time, in queue order, each waiting for its ACK.

* The ACK must correlate: MSA-2 equal to the MSH-10 that was sent.  An ACK for anything else is
  logged and ignored; it never advances the queue (Mirth Connect #1441).
* AA/CA → delivered.  AE/AR/CE/CR, no ACK within `ack_timeout_s`, or a lost connection → the
  message stays at the head of its lane and is retried after the backoff (`engine.routes.worker`,
  which also keeps order per destination or per key, dead letters and the bookkeeping).
* A connection that cannot be opened holds the whole destination, per_key or not: nothing was
  sent, so no key is at fault.
* After a timeout the connection is closed, so a late ACK cannot be taken for the next message.
The worker runs in a thread (a blocking socket per destination, kept open between messages);
the reactor only schedules its passes.
"""

from __future__ import annotations

import structlog

from engine.errors import HL7Error
from engine.mllp.client import MLLPClient
from engine.parsing import parse
from engine.routes.worker import Outcome, QueueWorker

log = structlog.get_logger("engine.delivery")


class MLLPDeliverer(QueueWorker):
    """The worker of one MLLP destination; `run_pass` works its queue until it must wait."""

    client: MLLPClient | None = None

    def send(self, row_id: int, payload: bytes) -> Outcome:
        """Send one message and wait for its correlated ACK."""
        try:
            control = _control_id(payload)
        except HL7Error:
            return Outcome(error="the queued message cannot be parsed")
        if self.client is None:
            try:
                self.client = MLLPClient(self.dest.host, self.dest.port,
                                         timeout=self.dest.ack_timeout_s)
            except OSError as exc:
                return Outcome(error=_connection_error(exc), unreachable=True)
        try:
            return self._exchange(self.client, control, payload)
        except OSError as exc:
            self._hang_up()
            return Outcome(error=_connection_error(exc))

    def _exchange(self, client: MLLPClient, control: str, payload: bytes) -> Outcome:
        started = self.clock()
        client.send(payload)
        deadline = started + self.dest.ack_timeout_s
        while (left := deadline - self.clock()) > 0:
            acks = client.receive(1, left)
            if not acks and client.closed:
                self._hang_up()
                return Outcome(error="connection: closed by the destination before its ACK")
            for ack in acks:
                code, echoed = _msa(ack)
                if echoed != control:
                    log.warning("delivery.uncorrelated_ack", destination=self.dest.name,
                                expected=control, msa2=echoed)
                    continue
                log.info("delivery.acked", destination=self.dest.name, control_id=control,
                         ack=code, ms=round((self.clock() - started) * 1000, 1))
                error = "" if code in ("AA", "CA") else f"downstream answered {code}"
                return Outcome(code, error, ack)
        self._hang_up()  # a late ACK must not be taken for the next message
        return Outcome(error=f"no ACK within {self.dest.ack_timeout_s:g} s")

    def close(self) -> None:
        self._hang_up()
        super().close()

    def _hang_up(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def _control_id(payload: bytes) -> str:
    """MSH-10 of a queued message, from its MSH segment alone (the rest need not be parsed)."""
    end = payload.find(b"\r")
    return parse(payload if end < 0 else payload[:end + 1]).header.control_id


def _connection_error(exc: OSError) -> str:
    return f"connection: {exc.strerror or type(exc).__name__}"


def _msa(ack: bytes) -> tuple[str, str]:
    try:
        msg = parse(ack)
    except HL7Error:
        return "", ""
    if msg.header.message_type != "ACK":
        return "", ""
    return msg["MSA.1"], msg["MSA.2"]
