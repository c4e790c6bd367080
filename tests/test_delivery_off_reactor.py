"""A delivery worker's bookkeeping runs off the reactor thread: while recording an attempt waits
for the database's write lock (held by another writer, as an ingest commit holds it), the
reactor goes on serving everything else.  Real SQLite file, real downstream socket."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator, MutableMapping
from datetime import datetime
from typing import Any

import pytest
from delivering import driven
from enginectl import outbound_states, sample_payload
from sink import Sink
from sqlalchemy import Engine, insert, update
from structlog.testing import capture_logs
from twisted.internet import reactor

from engine.config import Destination
from engine.outbound.queue import Delivered
from engine.store.database import open_database
from engine.store.lock import WriteLock
from engine.store.schema import outbound

REACTOR: Any = reactor  # running in a thread for the session (conftest `reactor`)
pytestmark = pytest.mark.usefixtures("reactor")

NOW = datetime(2026, 11, 28, 9, 0)
WAIT_S = 10.0  # how long a step may take before the test gives up on it


@pytest.fixture(name="db")
def db_fixture(sqlite_url: str) -> Iterator[Engine]:
    db = open_database(sqlite_url)
    yield db
    db.dispose()


def _wait_for(logs: list[MutableMapping[str, Any]], event: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not any(e["event"] == event for e in logs):
        assert time.monotonic() < deadline, f"no {event} within {WAIT_S:g} s"
        time.sleep(0.01)


def _reactor_answers() -> bool:
    """Does the reactor run a call handed to it from this thread (within WAIT_S)?"""
    pong: queue.Queue[str] = queue.Queue()
    REACTOR.callFromThread(pong.put, "pong")
    try:
        return pong.get(timeout=WAIT_S) == "pong"
    except queue.Empty:
        return False


def test_the_reactor_answers_while_an_attempt_waits_for_the_write_lock(db: Engine) -> None:
    """The downstream has ACKed; recording that attempt waits for the write lock another
    writer holds (its `flock` and SQLite's own lock).  Meanwhile the reactor runs other calls
    and the row is still queued; once the writer commits, the attempt is recorded."""
    payload = sample_payload("ref_i12_v251.hl7").replace(b"REF-I12-V251", b"OUT-1")
    with db.begin() as conn:
        conn.execute(insert(outbound).values(
            destination="down", route="r", message_id=1, control_id="OUT-1", payload=payload,
            status="queued", attempts=0, last_error="", created_at=NOW))
    sink = Sink()
    dest = Destination("down", "mllp", host="127.0.0.1", port=sink.port, ack_timeout_s=5.0)
    worker = driven(dest, db, lambda: NOW, REACTOR)
    done: queue.Queue[Delivered] = queue.Queue()
    lock, writer = WriteLock(db), db.connect()
    try:
        transaction = writer.begin()
        lock.acquire(writer)
        writer.execute(update(outbound).where(outbound.c.id == 0).values(last_error=""))
        with capture_logs() as logs:
            REACTOR.callFromThread(lambda: worker.worker.start_pass().addCallback(done.put))
            _wait_for(logs, "delivery.acked")  # the attempt is over; its recording waits
            answered = _reactor_answers()
            held = outbound_states(db)
        transaction.commit()
    finally:
        lock.release()
        lock.close()
        writer.close()
    try:
        result = done.get(timeout=WAIT_S)
    finally:
        worker.close()
        sink.close()
    assert answered
    assert held == [("OUT-1", "queued", 0)]
    assert (result.delivered, result.error) == (1, "")
    assert outbound_states(db) == [("OUT-1", "delivered", 1)]
