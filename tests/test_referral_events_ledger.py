"""Referral events in the writer's transaction, against a real database: rows per message in
batch order, a transform on an event route, nothing read for events no route takes, and a bug
while building one message's events isolated to that message."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from enginectl import sample_payload, table_rows
from sqlalchemy import Engine

from engine.ack import AckBuilder
from engine.config import parse_config
from engine.parsing import parse
from engine.pipeline import Job, Pipeline
from engine.routes import event_queue
from engine.store.database import open_database

NOW = datetime(2026, 1, 12, 9, 30, tzinfo=UTC)


def _pipeline(url: str, route: dict[str, Any]) -> tuple[Pipeline, Engine, Any]:
    config = parse_config({
        "channels": [{"name": "referrals", "listen": {"port": 0},
                      "accept": ["REF^I12-I15", "SIU^S12-S26"],
                      "ack": {"application": "REFTRACK", "facility": "HUB"}}],
        "destinations": [{"name": "pcp", "type": "file", "directory": "x"}],
        "routes": [{"name": "loop", "to": ["pcp"], **route}]})
    db = open_database(url)
    pipeline = Pipeline(db, {"referrals": AckBuilder("REFTRACK", "HUB")}, config, clock=lambda: NOW)
    return pipeline, db, config.channels[0]


def _ref(key: str) -> bytes:
    raw = sample_payload("ref_i12_v251.hl7").replace(b"MFP-R-1001", key.encode())
    return raw.replace(b"REF-I12-V251", f"C-{key}".encode())


def test_one_batch_gives_each_message_its_events_in_order(db_url: str) -> None:
    """A REF and its SIU^S12 committed in one batch: pending (message 1, built before the
    booking, so without an appointment) then scheduled (message 2, with it); the route's
    transform rewrites MSH-5 and the row's control id is the MSH-10 sent."""
    pipeline, db, channel = _pipeline(db_url, {
        "on": ["referral.pending", "referral.scheduled"],
        "transform": [{"set": {"MSH.5": "PCP-LOOP"}}]})
    results = pipeline.process_batch([
        Job(channel, sample_payload("ref_i12_v251.hl7"), "x", NOW),
        Job(channel, sample_payload("siu_s12_v251.hl7"), "x", NOW)])
    pipeline.close()
    assert [r.verdict.accepted for r in results] == [True, True]
    rows = table_rows(db)
    assert [(r["event"], r["message_id"], r["referral_id"], r["route"], r["status"])
            for r in rows] == [("referral.pending", 1, 1, "loop", "queued"),
                               ("referral.scheduled", 2, 1, "loop", "queued")]
    pending, scheduled = (parse(r["payload"]) for r in rows)
    assert (pending["MSH.5"], pending.count("OBR")) == ("PCP-LOOP", 0)
    assert (scheduled["MSH.5"], scheduled.count("OBR")) == ("PCP-LOOP", 1)
    assert [r["control_id"] for r in rows] == [pending["MSH.10"], scheduled["MSH.10"]]
    assert pending["MSH.10"] != scheduled["MSH.10"]


def test_events_no_route_takes_read_nothing(sqlite_url: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """With an `on:` route for referral.closed only, opening and booking a referral read no
    referral facts and queue nothing."""
    def forbidden(*_args: Any) -> Any:
        raise AssertionError("referral facts read for an event no route takes")

    monkeypatch.setattr(event_queue, "referral_facts", forbidden)
    pipeline, db, channel = _pipeline(sqlite_url, {"on": ["referral.closed"]})
    results = pipeline.process_batch([
        Job(channel, sample_payload("ref_i12_v251.hl7"), "x", NOW),
        Job(channel, sample_payload("siu_s12_v251.hl7"), "x", NOW)])
    pipeline.close()
    assert [parse(r.acks[0])["MSA.1"] for r in results] == ["AA", "AA"]
    assert table_rows(db) == []


def test_a_bug_building_one_messages_event_spares_the_batch(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """If building the event message for one referral raises, that message is answered AR 207
    with no ledger change and no row; the other message of the batch is applied and routed."""
    real = event_queue.build_rri

    def fragile(facts: Any, *args: Any) -> bytes:
        if facts.key.id == "R-BAD":
            raise KeyError("bug")
        return real(facts, *args)

    monkeypatch.setattr(event_queue, "build_rri", fragile)
    pipeline, db, channel = _pipeline(sqlite_url, {"on": ["referral.pending"]})
    results = pipeline.process_batch([Job(channel, _ref("R-BAD"), "x", NOW),
                                      Job(channel, _ref("R-GOOD"), "x", NOW)])
    pipeline.close()
    assert [(parse(r.acks[0])["MSA.1"], parse(r.acks[0])["ERR.3.1"]) for r in results] == [
        ("AR", "207"), ("AA", "")]
    rows = table_rows(db)
    assert [(r["event"], parse(r["payload"])["RF1.6.1"]) for r in rows] == [
        ("referral.pending", "R-GOOD")]


def test_concurrent_sweeps_mark_a_referral_overdue_once(pg_url: str) -> None:
    """Two engine processes sweeping one PostgreSQL: while one sweep holds its uncommitted
    overdue mark, the other waits on the referral's row lock, then finds the mark and reports
    nothing, so `referral.overdue` is emitted once.

    The first sweep commits only once PostgreSQL's lock manager says the second one's backend
    is blocked by it (`pg_blocking_pids`, read live, not from the per-transaction statistics
    snapshot), so the interleaving is the same however slow the machine is."""
    import queue
    import threading
    import time

    from sqlalchemy import text, update

    from engine.store.ledger.sweep import mark_overdue
    from engine.store.schema import referrals

    pipeline, db, channel = _pipeline(pg_url, {"on": ["referral.overdue"]})
    pipeline.process_batch([Job(channel, _ref("R-LATE"), "x", NOW)])
    pipeline.close()
    now = NOW.replace(tzinfo=None)
    with db.begin() as conn:
        conn.execute(update(referrals).values(due_at=datetime(2026, 1, 1)))
    first: list[tuple[int, str]] = []
    second: list[tuple[int, str]] = []
    outcome: list[list[str]] = []
    backend: queue.Queue[int] = queue.Queue()
    holder = db.connect()
    held = holder.begin()
    holder_pid = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()
    assert mark_overdue(holder, now, first) == ["referral R-LATE^PCPEHR pending, overdue"]

    def other_sweep() -> None:
        with db.begin() as conn:
            backend.put(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
            outcome.append(mark_overdue(conn, now, second))

    thread = threading.Thread(target=other_sweep)
    thread.start()
    blocked = False
    try:
        other_pid = backend.get(timeout=120)
        hang_guard = time.monotonic() + 120  # not a timing assert: only stops a hung test
        with db.connect() as watcher:
            while not blocked and thread.is_alive() and time.monotonic() < hang_guard:
                blocked = bool(watcher.execute(
                    text("SELECT :holder = ANY(pg_blocking_pids(:other))"),
                    {"holder": holder_pid, "other": other_pid}).scalar())
                watcher.rollback()
                time.sleep(0.01)
    finally:
        held.commit()
        holder.close()
        thread.join(120)
    assert blocked, "the second sweep must wait for the first one's row lock"
    assert (outcome, [e for _, e in first], second) == ([[]], ["referral.overdue"], [])


def test_event_rows_for_a_per_key_destination_carry_the_patients_key(sqlite_url: str) -> None:
    """On a destination with `order: {per_key: PID.3.1}` an event row's order key is the
    generated RRI's PID-3.1 (the referral's first patient id), so one patient's notices wait
    only behind that patient's; a strict destination's rows keep the empty key."""
    config = parse_config({
        "channels": [{"name": "referrals", "listen": {"port": 0}, "accept": ["REF^I12"]}],
        "destinations": [{"name": "pcp", "type": "file", "directory": "x",
                          "order": {"per_key": "PID.3.1"}},
                         {"name": "audit", "type": "file", "directory": "y"}],
        "routes": [{"name": "loop", "on": ["referral.pending"], "to": ["pcp", "audit"]}]})
    db = open_database(sqlite_url)
    pipeline = Pipeline(db, {"referrals": AckBuilder()}, config, clock=lambda: NOW)
    pipeline.process_batch([Job(config.channels[0], _ref("K-1"), "x", NOW)])
    pipeline.close()
    rows = table_rows(db)
    first_id = parse(sample_payload("ref_i12_v251.hl7"))["PID.3.1"]
    assert [(r["destination"], r["order_key"]) for r in rows] == [("pcp", first_id),
                                                                  ("audit", "")]
