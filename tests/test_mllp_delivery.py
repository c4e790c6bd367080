"""Delivery to an MLLP destination against a real downstream listener and a real database:
ACK correlation, retries with backoff, timeouts, dead letters, order."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from delivering import Driven, driven
from enginectl import outbound_states, sample_payload
from sink import Sink, Unframed, ack_for
from sqlalchemy import Engine, insert, select
from structlog.testing import capture_logs
from twisted.internet import reactor

from engine.config import Destination
from engine.mllp.server import frame
from engine.outbound.queue import QueueWorker
from engine.store.database import open_database
from engine.store.schema import deliveries, outbound

REACTOR: Any = reactor  # running in a thread for the session (conftest `reactor`)
pytestmark = pytest.mark.usefixtures("reactor")

NOW = datetime(2026, 11, 28, 9, 0)


def _message(n: int) -> bytes:
    return sample_payload("ref_i12_v251.hl7").replace(b"REF-I12-V251", f"OUT-{n}".encode())


@pytest.fixture(name="db")
def db_fixture(sqlite_url: str) -> Iterator[Engine]:
    db = open_database(sqlite_url)
    yield db
    db.dispose()


def _queue(db: Engine, count: int) -> None:
    with db.begin() as conn:
        conn.execute(insert(outbound), [{
            "destination": "down", "route": "r", "message_id": n, "control_id": f"OUT-{n}",
            "payload": _message(n), "status": "queued", "attempts": 0, "last_error": "",
            "created_at": NOW} for n in range(1, count + 1)])


def _worker(db: Engine, sink: Sink, **options: float) -> Driven:
    dest = Destination("down", "mllp", host="127.0.0.1", port=sink.port,
                       ack_timeout_s=options.get("ack_timeout_s", 2.0),
                       retry_initial_s=0.0, retry_max_s=0.0,
                       max_attempts=int(options.get("max_attempts", 20)))
    return driven(dest, db, lambda: NOW, REACTOR, jitter=lambda: 0.5)


def _drain(worker: Driven, passes: int = 20) -> None:
    for _ in range(passes):
        worker.run_pass()


def test_messages_go_in_order_and_each_waits_for_its_ack(db: Engine) -> None:
    """Three queued messages reach the downstream once each, in queue order, on one connection."""
    sink = Sink()
    try:
        _queue(db, 3)
        worker = _worker(db, sink)
        result = worker.run_pass()
        worker.close()
    finally:
        sink.close()
    assert result.delivered == 3
    assert [m for m in sink.received] == [_message(1), _message(2), _message(3)]
    assert outbound_states(db) == [("OUT-1", "delivered", 1), ("OUT-2", "delivered", 1),
                                   ("OUT-3", "delivered", 1)]


def test_ae_is_retried_then_delivered_and_holds_the_queue(db: Engine) -> None:
    """AE twice, then AA: the head is sent three times and nothing behind it moves before."""
    sink = Sink(lambda m, n: ack_for(m, "AE" if n < 2 else "AA"))
    try:
        _queue(db, 2)
        worker = _worker(db, sink)
        _drain(worker)
        worker.close()
    finally:
        sink.close()
    assert sink.received == [_message(1), _message(1), _message(1), _message(2)]
    assert outbound_states(db) == [("OUT-1", "delivered", 3), ("OUT-2", "delivered", 1)]


def _no_ack(message: bytes) -> bytes:
    """An RRI^I12 carrying MSA|AA and the message's MSA-2: a message, not an ACK."""
    return ack_for(message).replace(b"|ACK^I12^ACK|", b"|RRI^I12^RRI_I12|")


@pytest.mark.parametrize("wrong", [
    pytest.param(lambda m: ack_for(m, "AA", control="SOMETHING-ELSE"), id="other-msa2"),
    pytest.param(_no_ack, id="msa-in-a-message-that-is-no-ack"),
])
def test_an_uncorrelated_or_late_ack_never_counts(db: Engine, wrong: Any) -> None:
    """An ACK whose MSA-2 names another message, or an MSA in a message that is no ACK
    (MSH-9 must be ACK), is ignored; the wait times out, the connection is closed
    (so the late answer cannot be read as the next one's) and the message is resent."""
    sink = Sink(lambda m, n: wrong(m) if n == 0 else ack_for(m))
    try:
        _queue(db, 1)
        worker = _worker(db, sink, ack_timeout_s=0.3)
        first = worker.run_pass()
        _drain(worker)
        worker.close()
    finally:
        sink.close()
    assert first.delivered == 0 and "no ACK within 0.3 s" in first.error
    assert sink.received == [_message(1), _message(1)]
    assert outbound_states(db) == [("OUT-1", "delivered", 2)]


def test_an_unframed_ack_never_counts_and_is_logged(db: Engine) -> None:
    """A correct ACK written without the MLLP envelope is dropped and logged; the wait times out
    and the message is resent."""
    sink = Sink(lambda m, n: Unframed(ack_for(m)) if n == 0 else ack_for(m))
    try:
        _queue(db, 1)
        worker = _worker(db, sink, ack_timeout_s=0.3)
        with capture_logs() as logs:
            first = worker.run_pass()
        _drain(worker)
        worker.close()
    finally:
        sink.close()
    assert first.delivered == 0 and first.error == "no ACK within 0.3 s"
    unframed = [e for e in logs if e["event"] == "delivery.unframed_bytes"]
    assert unframed and unframed[0]["destination"] == "down" and unframed[0]["bytes"] > 0
    assert outbound_states(db) == [("OUT-1", "delivered", 2)]


def test_each_message_gets_its_own_ack_timeout(db: Engine) -> None:
    """The timeout counts from each message's own send: three answers 0.2 s late each (0.6 s in
    all, past one 0.5 s timeout) are all in time; the fourth, never answered, times out no
    earlier than 0.5 s after it was sent."""

    def slow(message: bytes, n: int) -> bytes | None:
        if n >= 3:
            return None
        time.sleep(0.2)
        return ack_for(message)

    sink = Sink(slow)
    try:
        _queue(db, 4)
        worker = _worker(db, sink, ack_timeout_s=0.5, max_attempts=1)
        result = worker.run_pass()
        worker.close()
    finally:
        sink.close()
    assert (result.delivered, result.dead) == (3, 1)
    with db.connect() as conn:
        last = conn.execute(select(deliveries.c.error, deliveries.c.ms)
                            .order_by(deliveries.c.id.desc())).first()
    assert last is not None and last.error == "no ACK within 0.5 s" and last.ms >= 500


def test_after_max_attempts_a_dead_letter_and_the_queue_moves_on(db: Engine) -> None:
    """A message the downstream always rejects becomes a dead letter after `max_attempts`;
    the next message is delivered."""
    sink = Sink(lambda m, n: ack_for(m, "AR" if b"OUT-1|" in m else "AA"))
    try:
        _queue(db, 2)
        worker = _worker(db, sink, max_attempts=3)
        _drain(worker)
        worker.close()
    finally:
        sink.close()
    assert outbound_states(db) == [("OUT-1", "dead", 3), ("OUT-2", "delivered", 1)]


def test_a_down_destination_queues_and_delivers_when_it_returns(db: Engine) -> None:
    """Connection refused counts an attempt and keeps the message queued; once the downstream
    listens, everything goes in order."""
    _queue(db, 2)
    with socket.socket() as unused:  # bound, never listening: a connection is refused
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    dest = Destination("down", "mllp", host="127.0.0.1", port=port, ack_timeout_s=1.0,
                       retry_initial_s=0.0, retry_max_s=0.0)
    worker = driven(dest, db, lambda: NOW, REACTOR, jitter=lambda: 0.5)
    down = worker.run_pass()
    worker.close()
    assert (down.delivered, down.error) == (0, "connection: refused")
    sink = Sink()
    try:
        worker = driven(Destination("down", "mllp", host="127.0.0.1", port=sink.port,
                                    ack_timeout_s=1.0, retry_initial_s=0.0, retry_max_s=0.0),
                        db, lambda: NOW, REACTOR, jitter=lambda: 0.5)
        _drain(worker)
        worker.close()
    finally:
        sink.close()
    assert sink.received == [_message(1), _message(2)]
    assert outbound_states(db) == [("OUT-1", "delivered", 2), ("OUT-2", "delivered", 1)]


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    """initial 1 s doubling, capped at 300 s, times 0.5-1.5."""
    dest = Destination("down", "mllp", host="h", port=1, retry_initial_s=1.0, retry_max_s=300.0)
    worker = QueueWorker(dest, None, lambda: NOW, REACTOR, jitter=lambda: 0.5)  # type: ignore[arg-type]
    assert [worker.backoff(n) for n in (1, 2, 3, 10)] == [1.0, 2.0, 4.0, 300.0]
    worker.jitter = lambda: 0.0
    assert worker.backoff(1) == 0.5


def test_pause_holds_the_queue_resume_and_release_send_it(db: Engine) -> None:
    """Paused: nothing is sent and the queue keeps its messages; resumed: sent in order.
    A dead letter released goes out again."""
    from engine.outbound import operator

    sink = Sink(lambda m, n: ack_for(m, "AR" if n == 0 else "AA"))
    try:
        _queue(db, 2)
        worker = _worker(db, sink, max_attempts=1)
        with db.begin() as conn:
            operator.set_paused(conn, "down", True)
        assert worker.run_pass().delivered == 0 and sink.received == []
        with db.begin() as conn:
            operator.set_paused(conn, "down", False)
        worker.run_pass()
        assert outbound_states(db) == [("OUT-1", "dead", 1), ("OUT-2", "delivered", 1)]
        with db.begin() as conn:
            assert operator.release(conn, "down") == 1
        worker.run_pass()
        worker.close()
    finally:
        sink.close()
    assert outbound_states(db) == [("OUT-1", "delivered", 1), ("OUT-2", "delivered", 1)]
    assert sink.received == [_message(1), _message(2), _message(1)]


def test_retry_now_forgets_the_backoff(db: Engine) -> None:
    """After a failure the head waits out its backoff; `retry` makes the next pass send it."""
    from engine.outbound import operator

    sink = Sink(lambda m, n: ack_for(m, "AE" if n == 0 else "AA"))
    try:
        _queue(db, 1)
        dest = Destination("down", "mllp", host="127.0.0.1", port=sink.port, ack_timeout_s=2.0,
                           retry_initial_s=3600.0, retry_max_s=3600.0)
        worker = driven(dest, db, lambda: NOW, REACTOR, jitter=lambda: 0.5)
        worker.run_pass()
        worker.run_pass()  # still waiting out an hour
        assert len(sink.received) == 1
        with db.begin() as conn:
            operator.request_retry(conn, "down")
        worker.run_pass()
        worker.close()
    finally:
        sink.close()
    assert len(sink.received) == 2 and outbound_states(db) == [("OUT-1", "delivered", 2)]


def test_replay_queues_a_stored_message_as_received(db: Engine) -> None:
    """`replay MESSAGE_ID --to DEST` queues the stored bytes again, and they are delivered."""
    from datetime import UTC

    from engine.ack import AckBuilder
    from engine.config import parse_config
    from engine.outbound import operator
    from engine.pipeline import Job, Pipeline

    channel = parse_config({"channels": [{"name": "referrals", "listen": {"port": 0},
                                          "accept": ["REF^I12"]}]}).channels[0]
    pipeline = Pipeline(db, {"referrals": AckBuilder()})
    raw = sample_payload("ref_i12_v251.hl7")
    (stored,) = pipeline.process_batch([Job(channel, raw, "x", NOW.replace(tzinfo=UTC))])
    pipeline.close()
    with db.begin() as conn:
        assert operator.replay(conn, 999, "down", NOW) is None
        queued = operator.replay(conn, int(stored.message_id or 0), "down", NOW)
    assert queued == 1
    sink = Sink()
    try:
        worker = _worker(db, sink)
        worker.run_pass()
        worker.close()
    finally:
        sink.close()
    assert sink.received == [raw]


def test_a_down_destination_logs_blocked_once_and_recovered_once(db: Engine) -> None:
    """Failing attempts log `queue.blocked` once, not once per attempt; the first delivery
    after logs `queue.recovered`."""
    from structlog.testing import capture_logs

    sink = Sink(lambda m, n: ack_for(m, "AE" if n < 3 else "AA"))
    try:
        _queue(db, 1)
        worker = _worker(db, sink)
        with capture_logs() as logs:
            _drain(worker)
        worker.close()
    finally:
        sink.close()
    events = [e["event"] for e in logs if e["event"].startswith("queue.")]
    assert events == ["queue.blocked", "queue.recovered"]


def test_a_release_2_downstream_commit_ack_is_skipped_and_its_nak_retried(db: Engine) -> None:
    """MLLP release 2 downstream (docs/hl7-rules.md): a commit ACK frame before the HL7 ACK changes
    nothing; a commit NAK fails the attempt at once (it is sent again), whatever follows it."""
    def r2(message: bytes, n: int) -> bytes:
        commit = b"\x15" if n == 0 else b"\x06"
        return Unframed(frame(commit) + frame(ack_for(message)))

    sink = Sink(r2)
    try:
        _queue(db, 2)
        worker = _worker(db, sink)
        first = worker.run_pass()
        _drain(worker)
        worker.close()
    finally:
        sink.close()
    assert first.delivered == 0
    assert first.error == "downstream could not store it (MLLP release 2 NAK)"
    assert sink.received == [_message(1), _message(1), _message(2)]
    assert outbound_states(db) == [("OUT-1", "delivered", 2), ("OUT-2", "delivered", 1)]
