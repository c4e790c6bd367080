"""Delivery to an MLLP destination against a real downstream listener and a real database:
ACK correlation, retries with backoff, timeouts, dead letters, order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from enginectl import sample_payload
from sink import Sink, ack_for
from sqlalchemy import Engine, insert, select

from engine.config import Destination
from engine.routes.mllp_delivery import MLLPDeliverer
from engine.routes.worker import Delivered
from engine.store.database import open_database
from engine.store.schema import outbound

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


def _rows(db: Engine) -> list[tuple[str, str, int]]:
    with db.connect() as conn:
        return [(r.control_id, r.status, r.attempts) for r in conn.execute(
            select(outbound.c.control_id, outbound.c.status, outbound.c.attempts)
            .order_by(outbound.c.id))]


def _worker(db: Engine, sink: Sink, reactor: Any, **options: float) -> MLLPDeliverer:
    dest = Destination("down", "mllp", host="127.0.0.1", port=sink.port,
                       ack_timeout_s=options.get("ack_timeout_s", 2.0),
                       retry_initial_s=0.0, retry_max_s=0.0,
                       max_attempts=int(options.get("max_attempts", 20)))
    return MLLPDeliverer(dest, db, lambda: NOW, reactor, jitter=lambda: 0.5)


def _drain(worker: MLLPDeliverer, passes: int = 20) -> None:
    for _ in range(passes):
        worker.run_pass()


def test_messages_go_in_order_and_each_waits_for_its_ack(db: Engine, reactor_thread: Any) -> None:
    """Three queued messages reach the downstream once each, in queue order, on one connection."""
    sink = Sink()
    try:
        _queue(db, 3)
        worker = _worker(db, sink, reactor_thread)
        result = worker.run_pass()
        worker.close()
    finally:
        sink.close()
    assert result.delivered == 3
    assert [m for m in sink.received] == [_message(1), _message(2), _message(3)]
    assert _rows(db) == [("OUT-1", "delivered", 1), ("OUT-2", "delivered", 1),
                         ("OUT-3", "delivered", 1)]


def test_ae_is_retried_then_delivered_and_holds_the_queue(db: Engine, reactor_thread: Any) -> None:
    """AE twice, then AA: the head is sent three times and nothing behind it moves before."""
    sink = Sink(lambda m, n: ack_for(m, "AE" if n < 2 else "AA"))
    try:
        _queue(db, 2)
        worker = _worker(db, sink, reactor_thread)
        _drain(worker)
        worker.close()
    finally:
        sink.close()
    assert sink.received == [_message(1), _message(1), _message(1), _message(2)]
    assert _rows(db) == [("OUT-1", "delivered", 3), ("OUT-2", "delivered", 1)]


def test_an_uncorrelated_or_late_ack_never_counts(db: Engine, reactor_thread: Any) -> None:
    """An ACK whose MSA-2 names another message is ignored; the wait times out, the connection
    is closed (so the late answer cannot be read as the next one's) and the message is resent."""
    sink = Sink(lambda m, n: ack_for(m, "AA", control="SOMETHING-ELSE") if n == 0
                else ack_for(m))
    try:
        _queue(db, 1)
        worker = _worker(db, sink, reactor_thread, ack_timeout_s=0.3)
        first = worker.run_pass()
        _drain(worker)
        worker.close()
    finally:
        sink.close()
    assert first.delivered == 0 and "no ACK within 0.3 s" in first.error
    assert sink.received == [_message(1), _message(1)]
    assert _rows(db) == [("OUT-1", "delivered", 2)]


def test_after_max_attempts_a_dead_letter_and_the_queue_moves_on(db: Engine,
                                                                 reactor_thread: Any) -> None:
    """A message the downstream always rejects becomes a dead letter after `max_attempts`;
    the next message is delivered."""
    sink = Sink(lambda m, n: ack_for(m, "AR" if b"OUT-1|" in m else "AA"))
    try:
        _queue(db, 2)
        worker = _worker(db, sink, reactor_thread, max_attempts=3)
        _drain(worker)
        worker.close()
    finally:
        sink.close()
    assert _rows(db) == [("OUT-1", "dead", 3), ("OUT-2", "delivered", 1)]


def test_a_down_destination_queues_and_delivers_when_it_returns(db: Engine,
                                                                reactor_thread: Any) -> None:
    """Connection refused counts an attempt and keeps the message queued; once the downstream
    listens, everything goes in order."""
    _queue(db, 2)
    placeholder = Sink()
    port = placeholder.port
    placeholder.close()
    dest = Destination("down", "mllp", host="127.0.0.1", port=port, ack_timeout_s=1.0,
                       retry_initial_s=0.0, retry_max_s=0.0)
    worker = MLLPDeliverer(dest, db, lambda: NOW, reactor_thread, jitter=lambda: 0.5)
    down = worker.run_pass()
    assert down.delivered == 0 and down.error.startswith("connection:")
    sink = Sink()
    try:
        worker.dest = Destination("down", "mllp", host="127.0.0.1", port=sink.port,
                                  ack_timeout_s=1.0, retry_initial_s=0.0, retry_max_s=0.0)
        _drain(worker)
        worker.close()
    finally:
        sink.close()
    assert sink.received == [_message(1), _message(2)]
    assert _rows(db) == [("OUT-1", "delivered", 2), ("OUT-2", "delivered", 1)]


def test_backoff_doubles_up_to_its_cap_with_jitter(reactor_thread: Any) -> None:
    """initial 1 s doubling, capped at 300 s, times 0.5-1.5."""
    dest = Destination("down", "mllp", host="h", port=1, retry_initial_s=1.0, retry_max_s=300.0)
    worker = MLLPDeliverer(dest, None, lambda: NOW, reactor_thread, jitter=lambda: 0.5)  # type: ignore[arg-type]
    assert [worker.backoff(n) for n in (1, 2, 3, 10)] == [1.0, 2.0, 4.0, 300.0]
    worker.jitter = lambda: 0.0
    assert worker.backoff(1) == 0.5


def test_pause_holds_the_queue_resume_and_release_send_it(db: Engine, reactor_thread: Any) -> None:
    """Paused: nothing is sent and the queue keeps its messages; resumed: sent in order.
    A dead letter released goes out again."""
    from engine.routes import operator

    sink = Sink(lambda m, n: ack_for(m, "AR" if n == 0 else "AA"))
    try:
        _queue(db, 2)
        worker = _worker(db, sink, reactor_thread, max_attempts=1)
        with db.begin() as conn:
            operator.set_paused(conn, "down", True)
        assert worker.run_pass().delivered == 0 and sink.received == []
        with db.begin() as conn:
            operator.set_paused(conn, "down", False)
        worker.run_pass()
        assert _rows(db) == [("OUT-1", "dead", 1), ("OUT-2", "delivered", 1)]
        with db.begin() as conn:
            assert operator.release(conn, "down") == 1
        worker.run_pass()
        worker.close()
    finally:
        sink.close()
    assert _rows(db) == [("OUT-1", "delivered", 1), ("OUT-2", "delivered", 1)]
    assert sink.received == [_message(1), _message(2), _message(1)]


def test_retry_now_forgets_the_backoff(db: Engine, reactor_thread: Any) -> None:
    """After a failure the head waits out its backoff; `retry` makes the next pass send it."""
    from engine.routes import operator

    sink = Sink(lambda m, n: ack_for(m, "AE" if n == 0 else "AA"))
    try:
        _queue(db, 1)
        dest = Destination("down", "mllp", host="127.0.0.1", port=sink.port, ack_timeout_s=2.0,
                           retry_initial_s=3600.0, retry_max_s=3600.0)
        worker = MLLPDeliverer(dest, db, lambda: NOW, reactor_thread, jitter=lambda: 0.5)
        worker.run_pass()
        worker.run_pass()  # still waiting out an hour
        assert len(sink.received) == 1
        with db.begin() as conn:
            operator.request_retry(conn, "down")
        worker.run_pass()
        worker.close()
    finally:
        sink.close()
    assert len(sink.received) == 2 and _rows(db) == [("OUT-1", "delivered", 2)]


def test_replay_queues_a_stored_message_as_received(db: Engine, reactor_thread: Any) -> None:
    """`replay MESSAGE_ID --to DEST` queues the stored bytes again, and they are delivered."""
    from datetime import UTC

    from engine.ack import AckBuilder
    from engine.config import parse_config
    from engine.pipeline import Job, Pipeline
    from engine.routes import operator

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
        worker = _worker(db, sink, reactor_thread)
        worker.run_pass()
        worker.close()
    finally:
        sink.close()
    assert sink.received == [raw]


def test_a_down_destination_logs_blocked_once_and_recovered_once(db: Engine,
                                                                 reactor_thread: Any) -> None:
    """Failing attempts log `queue.blocked` once, not once per attempt; the first delivery
    after logs `queue.recovered`."""
    from structlog.testing import capture_logs

    sink = Sink(lambda m, n: ack_for(m, "AE" if n < 3 else "AA"))
    try:
        _queue(db, 1)
        worker = _worker(db, sink, reactor_thread)
        with capture_logs() as logs:
            _drain(worker)
        worker.close()
    finally:
        sink.close()
    events = [e["event"] for e in logs if e["event"].startswith("queue.")]
    assert events == ["queue.blocked", "queue.recovered"]


def test_link_skips_an_uncorrelated_ack_and_returns_the_correlated_one(
        reactor_thread: Any) -> None:
    """`MLLPLink.exchange` against a real listener that answers with an ACK for another message
    and then the right one: the first is logged as `delivery.uncorrelated_ack` (ids only) and
    ignored, the second is the answer."""
    from structlog.testing import capture_logs
    from twisted.internet.threads import blockingCallFromThread

    from engine.mllp.link import MLLPLink

    # One answer holding two frames: the sink wraps it as 0x0B other 0x1C 0x0D 0x0B right 0x1C 0x0D.
    sink = Sink(lambda m, _n: ack_for(m, "AA", control="SOMETHING-ELSE") + b"\x1c\r\x0b"
                + ack_for(m, "CA"))
    link = MLLPLink(reactor_thread, "127.0.0.1", sink.port, 2.0, name="down")
    try:
        with capture_logs() as logs:
            answer = blockingCallFromThread(reactor_thread, link.exchange, _message(1),
                                            "OUT-1", 5.0)
    finally:
        reactor_thread.callFromThread(link.close)
        sink.close()
    assert (answer.code, answer.error, answer.unreachable) == ("CA", "", False)
    assert answer.ack == ack_for(_message(1), "CA")
    assert [e for e in logs if e["event"] == "delivery.uncorrelated_ack"] == [{
        "event": "delivery.uncorrelated_ack", "log_level": "warning", "destination": "down",
        "expected": "OUT-1", "msa2": "SOMETHING-ELSE"}]


def test_link_times_out_on_a_silent_destination_and_closes_the_connection(
        reactor_thread: Any) -> None:
    """No ACK within the timeout: the exchange fires with the timeout error and the link closes
    the connection it was sent on; the next exchange goes on a new connection and is answered."""
    from twisted.internet.threads import blockingCallFromThread

    from engine.mllp.link import MLLPLink

    sink = Sink(lambda m, n: None if n == 1 else ack_for(m))  # silent to the second message
    link = MLLPLink(reactor_thread, "127.0.0.1", sink.port, 2.0, name="down")

    def on_reactor(f: Any, *args: Any) -> Any:
        return blockingCallFromThread(reactor_thread, f, *args)

    try:
        before = on_reactor(link.exchange, _message(1), "OUT-1", 5.0)
        first = link.protocol
        silent = on_reactor(link.exchange, _message(2), "OUT-2", 0.2)
        dropped = link.protocol
        after = on_reactor(link.exchange, _message(3), "OUT-3", 5.0)
        second = link.protocol
    finally:
        reactor_thread.callFromThread(link.close)
        sink.close()
    assert (before.code, silent.code, after.code) == ("AA", "", "AA")
    assert (silent.error, silent.ack) == ("no ACK within 0.2 s", None)
    assert first is not None and dropped is None and second not in (None, first)
    assert first.transport.disconnected  # closed on the timeout, seen by the reactor since
    assert sink.received == [_message(1), _message(2), _message(3)]


def test_reactor_shutdown_ends_the_exchange_under_way_and_starts_no_other(
        db: Engine, reactor_thread: Any) -> None:
    """The deliverer's before-shutdown trigger cuts the exchange under way short and waits
    until `send` has returned; the pass then sends nothing more, not even another key's
    message (otherwise its worker thread would wait on a reactor about to join it)."""
    import threading

    from twisted.internet.threads import blockingCallFromThread

    arrived = threading.Event()

    def silent(_message: bytes, _n: int) -> None:
        arrived.set()

    sink = Sink(silent)
    try:
        with db.begin() as conn:
            conn.execute(insert(outbound), [{
                "destination": "down", "route": "r", "message_id": n, "control_id": f"OUT-{n}",
                "payload": _message(n), "status": "queued", "attempts": 0, "last_error": "",
                "created_at": NOW, "order_key": str(n)} for n in (1, 2)])
        dest = Destination("down", "mllp", host="127.0.0.1", port=sink.port,
                           ack_timeout_s=3600.0, retry_initial_s=0.0, retry_max_s=0.0,
                           order_key="PID.3.1")
        worker = MLLPDeliverer(dest, db, lambda: NOW, reactor_thread, jitter=lambda: 0.5)
        passes: list[Delivered] = []
        running = threading.Thread(target=lambda: passes.append(worker.run_pass()))
        running.start()
        assert arrived.wait(30)
        blockingCallFromThread(reactor_thread, worker._shutdown)  # what reactor.stop() runs
        running.join()
        worker.close()
    finally:
        sink.close()
    assert [(p.delivered, p.error) for p in passes] == [(0, "the engine is stopping")]
    assert sink.received == [_message(1)]
    # Cut short by the stop, the first is not counted as an attempt (a restart sends it again,
    # and a stop never makes a dead letter); the second was never tried.
    assert _rows(db) == [("OUT-1", "queued", 0), ("OUT-2", "queued", 0)]
