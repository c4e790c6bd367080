"""Delivery lanes against real downstreams (a TCP listener, a directory) and a real SQLite file:
`order: {per_key: PID.3.1}` holds only a failing patient's messages while the others flow in order,
and a file destination whose directory is unusable holds its queue."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from delivering import driven
from enginectl import Engine, outbound_states, run_cli, sample_payload, write_config
from sink import Sink, ack_for
from sqlalchemy import Engine as Database
from sqlalchemy import insert, select
from structlog.testing import capture_logs
from twisted.internet import reactor

from engine.config import Destination
from engine.mllp.blocking import MLLPClient
from engine.outbound import operator
from engine.outbound.views import queue_state
from engine.parsing import parse
from engine.store.database import open_database
from engine.store.schema import deliveries, outbound

REACTOR: Any = reactor  # running in a thread for the session (conftest `reactor`)
pytestmark = pytest.mark.usefixtures("reactor")

NOW = datetime(2026, 11, 28, 9, 0)
FAILING_MRN = "100666"
# (control id, MRN): patient 100666's first message fails downstream; the others are fine.
STREAM = [("K-1", "100001"), ("K-2", FAILING_MRN), ("K-3", "100002"), ("K-4", FAILING_MRN),
          ("K-5", "100001"), ("K-6", "100002")]


def _message(control: str, mrn: str) -> bytes:
    return (sample_payload("ref_i12_v251.hl7").replace(b"REF-I12-V251", control.encode())
            .replace(b"MFP-R-1001", f"R-{control}".encode())
            .replace(b"|100001^^^NORTHCLINIC", f"|{mrn}^^^NORTHCLINIC".encode()))


def _controls(received: list[bytes]) -> list[str]:
    return [parse(m)["MSH.10"] for m in received]


def _rejecting(mrn: str, failing: Callable[[], bool]) -> Callable[[bytes, int], bytes]:
    """A downstream policy: AE for the patient's messages while `failing()`, else AA."""
    def answer(message: bytes, _n: int) -> bytes:
        bad = failing() and parse(message)["PID.3.1"] == mrn
        return ack_for(message, "AE" if bad else "AA")
    return answer


@pytest.fixture(name="db")
def db_fixture(sqlite_url: str) -> Iterator[Database]:
    db = open_database(sqlite_url)
    yield db
    db.dispose()


def test_a_failing_key_holds_only_its_own_messages(db: Database) -> None:
    """Pass one: every other patient's message goes, in queue order; the failing patient's
    first message is retried and its second waits behind it.  `queue` says blocked with one
    held key; the log names the outbound id, never the MRN.  After max_attempts the first is a
    dead letter and the second goes; `release` sends the first again."""
    failing = [True]
    sink = Sink(_rejecting(FAILING_MRN, lambda: failing[0]))
    dest = Destination("down", "mllp", host="127.0.0.1", port=sink.port, ack_timeout_s=2.0,
                       retry_initial_s=0.0, retry_max_s=0.0, max_attempts=2,
                       order_key="PID.3.1")
    with db.begin() as conn:
        conn.execute(insert(outbound), [{
            "destination": "down", "route": "r", "message_id": n, "control_id": control,
            "payload": _message(control, mrn), "status": "queued", "attempts": 0,
            "last_error": "", "created_at": NOW, "order_key": mrn}
            for n, (control, mrn) in enumerate(STREAM, 1)])
    worker = driven(dest, db, lambda: NOW, REACTOR, jitter=lambda: 0.5)
    try:
        with capture_logs() as logs:
            first = worker.run_pass()
            held = queue_state(db, (dest,), NOW)[0]
            second = worker.run_pass()  # K-2 fails again: a dead letter; K-4 goes, and fails
            failing[0] = False
            worker.run_pass()  # K-4 delivered
            with db.begin() as conn:
                assert operator.release(conn, "down") == 1
            worker.run_pass()  # K-2 delivered
        worker.close()
    finally:
        sink.close()
    assert (first.delivered, first.dead, second.dead) == (4, 0, 1)
    assert _controls(sink.received) == ["K-1", "K-2", "K-3", "K-5", "K-6",  # pass one
                                        "K-2", "K-4",  # K-2 dead, its key moves on
                                        "K-4", "K-2"]  # recovered; K-2 released
    assert (held["state"], held["held_keys"], held["depth"]) == ("blocked", 1, 2)
    assert outbound_states(db) == [("K-1", "delivered", 1), ("K-2", "delivered", 1),
                                   ("K-3", "delivered", 1), ("K-4", "delivered", 2),
                                   ("K-5", "delivered", 1), ("K-6", "delivered", 1)]
    edges = [(e["event"], e.get("outbound_id")) for e in logs if e["event"].startswith("queue.")]
    assert edges == [("queue.key_blocked", 2), ("queue.dead_letter", 2),
                     ("queue.key_recovered", 4)]
    assert FAILING_MRN not in repr(logs)
    with db.connect() as conn:  # each attempt keeps the downstream's ACK as received
        acks = [(r.ack_code, parse(r.ack)["MSA.2"]) for r in conn.execute(
            select(deliveries.c.ack_code, deliveries.c.ack).where(deliveries.c.outbound_id == 2)
            .order_by(deliveries.c.id))]
    assert acks == [("AE", "K-2"), ("AE", "K-2"), ("AA", "K-2")]


def test_per_key_end_to_end_keeps_each_patient_in_order(tmp_path: Path, sqlite_url: str) -> None:
    """Through the engine: the route fills each row's key from PID.3.1; the other patients'
    messages are delivered once each in order while the failing patient's are retried and go
    dead (the second never before the first has failed out); after the downstream is fixed,
    `release` delivers both, first one first."""
    failing = [True]
    sink = Sink(_rejecting(FAILING_MRN, lambda: failing[0]))
    config = write_config(tmp_path, sqlite_url, top={
        "destinations": [{"name": "down", "type": "mllp", "host": "127.0.0.1", "port": sink.port,
                          "ack_timeout_s": 5, "order": {"per_key": "PID.3.1"},
                          "retry": {"initial_s": 0.05, "max_s": 0.1, "max_attempts": 3}}],
        "routes": [{"name": "all", "from": "referrals", "to": ["down"]}]})

    def cli(*args: str) -> str:
        return run_cli(*args, config=config).stdout

    def wait_for(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 30
        while not done() and time.monotonic() < deadline:
            time.sleep(0.1)

    engine = Engine(config).start()
    try:
        with MLLPClient("127.0.0.1", engine.port) as client:
            assert [parse(client.exchange(_message(c, m))[0])["MSA.1"] for c, m in STREAM] == [
                "AA"] * len(STREAM)
        wait_for(lambda: json.loads(cli("queue", "--json"))[0]["dead_letters"] == 2)
        before = _controls(sink.received)
        failing[0] = False
        assert cli("release", "down").strip() == "down: 2 dead letter(s) queued again"
        wait_for(lambda: _controls(sink.received).count("K-4") == 4)
        state = json.loads(cli("queue", "--json"))[0]
    finally:
        engine.stop()
        sink.close()
    others = [c for c in before if c not in ("K-2", "K-4")]
    assert others == ["K-1", "K-3", "K-5", "K-6"]
    assert [c for c in before if c in ("K-2", "K-4")] == ["K-2"] * 3 + ["K-4"] * 3
    assert _controls(sink.received)[len(before):] == ["K-2", "K-4"]
    assert (state["order"], state["state"], state["held_keys"], state["delivered"]) == (
        "per_key", "running", 0, 6)


def test_an_unusable_directory_holds_the_file_queue_until_it_is_fixed(
        db: Database, tmp_path: Path) -> None:
    """A file destination whose directory cannot be created holds its whole queue (one attempt
    on the head, `queue.blocked` once); once the directory can be made, after the retry wait,
    the files land in queue order and `queue.recovered` is logged."""
    blocker = tmp_path / "occupied"
    blocker.write_text("a file where the directory should be")
    dest = Destination("archive", "file", directory=str(blocker / "out"), retry_initial_s=0.5,
                       retry_max_s=0.5)
    with db.begin() as conn:
        conn.execute(insert(outbound), [{
            "destination": "archive", "route": "r", "message_id": n, "control_id": control,
            "payload": _message(control, mrn), "status": "queued", "attempts": 0,
            "last_error": "", "created_at": NOW} for n, (control, mrn) in enumerate(STREAM, 1)])
    clock = [100.0]
    worker = driven(dest, db, lambda: NOW, REACTOR, jitter=lambda: 0.5, clock=lambda: clock[0])
    with capture_logs() as logs:
        down = worker.run_pass()
        blocker.unlink()
        waiting = worker.run_pass()  # the retry wait is not over
        clock[0] += 1.0
        back = worker.run_pass()
    assert (down.delivered, down.error, waiting.delivered, back.delivered) == (
        0, "Not a directory", 0, len(STREAM))
    files = sorted((blocker / "out").iterdir())
    assert [f.name for f in files] == [f"{n:012d}.hl7" for n in range(1, len(STREAM) + 1)]
    assert files[1].read_bytes() == _message(*STREAM[1])
    assert outbound_states(db)[0] == ("K-1", "delivered", 2)
    assert [e["event"] for e in logs if e["event"].startswith("queue.")] == [
        "queue.blocked", "queue.recovered"]


def test_routed_and_replayed_rows_carry_the_key_of_their_message(db: Database) -> None:
    """The pipeline fills a per_key destination's rows with the message's PID.3.1 and a strict
    destination's with ""; `replay` to a per_key destination takes the key from the stored
    message."""
    from datetime import UTC

    from engine.ack import AckBuilder
    from engine.config import parse_config
    from engine.pipeline import Job, Pipeline

    config = parse_config({
        "channels": [{"name": "referrals", "listen": {"port": 0}, "accept": ["REF^I12"]}],
        "destinations": [{"name": "keyed", "type": "mllp", "host": "h", "port": 1,
                          "order": {"per_key": "PID.3.1"}},
                         {"name": "strict", "type": "mllp", "host": "h", "port": 1}],
        "routes": [{"name": "all", "from": "referrals", "to": ["keyed", "strict"]}]})
    pipeline = Pipeline(db, {"referrals": AckBuilder()}, config)
    (stored,) = pipeline.process_batch([Job(config.channels[0], _message("K-1", FAILING_MRN),
                                            "x", NOW.replace(tzinfo=UTC))])
    pipeline.close()
    with db.begin() as conn:
        operator.replay(conn, int(stored.message_id or 0), "keyed", NOW, "PID.3.1")
        keys = [(r.destination, r.route, r.order_key) for r in conn.execute(
            select(outbound.c.destination, outbound.c.route, outbound.c.order_key)
            .order_by(outbound.c.id))]
    assert keys == [("keyed", "all", FAILING_MRN), ("strict", "all", ""),
                    ("keyed", "replay", FAILING_MRN)]
