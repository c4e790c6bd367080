"""Late arrivals, through the pipeline into a real database: a referral received after its
window ended is expired at once (unless a booking for it is already waiting), and a message that
sets a deadline already past makes its referral overdue at once, with the sweep's own mark and
event, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from enginectl import sample_payload
from sqlalchemy import Engine, select

from engine.ack import AckBuilder
from engine.config import parse_config
from engine.mappings.changes import EI
from engine.parsing import parse
from engine.pipeline import Job, Pipeline
from engine.store.database import open_database
from engine.store.ledger.sweep import mark_overdue, run_sweep
from engine.store.ledger.views import find_referral, list_referrals
from engine.store.schema import outbound

RECEIVED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # the samples say RF1-8 2036-07-12; _ref sets it
CONFIG = parse_config({
    "channels": [{"name": "referrals", "listen": {"port": 0},
                  "accept": ["REF^I12-I15", "SIU^S12-S26"]}],
    "destinations": [{"name": "pcp", "type": "file", "directory": "x"}],
    "routes": [{"name": "loop", "to": ["pcp"],
                "on": ["referral.pending", "referral.expired", "referral.overdue"]}]})
CHANNEL = CONFIG.channels[0]


def _ref(key: str, window_end: str = "20260712", control: str = "") -> bytes:
    """ref_i12_v251 with its own RF1-6, MSH-10 and RF1-8."""
    raw = sample_payload("ref_i12_v251.hl7").replace(b"MFP-R-1001", key.encode())
    raw = raw.replace(b"REF-I12-V251", (control or f"C-{key}").encode())
    return raw.replace(b"|20360712|", f"|{window_end}|".encode())


def _i13(key: str, priority: str, control: str) -> bytes:
    """The same referral as an I13 that changes RF1-2 (priority) only."""
    raw = _ref(key, control=control).replace(b"^I12^", b"^I13^")
    return raw.replace(b"|R^Routine^HL70280|", f"|{priority}^^HL70280|".encode())


def _pipeline(db: Engine, when: datetime) -> Pipeline:
    return Pipeline(db, {"referrals": AckBuilder()}, CONFIG, clock=lambda: when)


def _apply(db: Engine, when: datetime, *messages: bytes) -> list[str]:
    """Process the messages in one batch at `when`; their MSA-1 codes."""
    pipeline = _pipeline(db, when)
    results = pipeline.process_batch([Job(CHANNEL, m, "x", when) for m in messages])
    pipeline.close()
    return [parse(r.acks[0])["MSA.1"] for r in results]


def _events(db: Engine) -> list[tuple[Any, ...]]:
    with db.connect() as conn:
        return [(r.event, r.referral_id) for r in conn.execute(
            select(outbound.c.event, outbound.c.referral_id).order_by(outbound.c.id))]


def _history(db: Engine, key: str) -> list[tuple[Any, ...]]:
    with db.connect() as conn:
        found = find_referral(conn, EI(key, "PCPEHR"))
    assert found is not None
    return [(h["event"], h["status_before"], h["status_after"], h["rule"])
            for h in found["history"]]


def test_a_referral_received_after_its_window_is_expired_on_arrival(db_url: str) -> None:
    """A REF whose RF1-8 is before its receipt opens `expired`, its history saying why, and
    emits `referral.expired` (not `referral.pending`); one still inside its window stays
    pending; the sweep afterwards finds nothing left to expire."""
    db = open_database(db_url)
    late_at = datetime(2026, 8, 1, 9, 0, tzinfo=UTC)
    assert _apply(db, late_at, _ref("R-LATE"), _ref("R-INSIDE", "20261231")) == ["AA", "AA"]
    with db.connect() as conn:
        assert {r["id"]: r["status"] for r in list_referrals(conn)} == {
            "R-LATE^PCPEHR": "expired", "R-INSIDE^PCPEHR": "pending"}
    assert _history(db, "R-LATE") == [(
        "REF^I12 open", None, "expired",
        "new referral received after its window ended (2026-07-12T00:00:00Z)")]
    assert _events(db) == [("referral.expired", 1), ("referral.pending", 2)]
    now = late_at.replace(tzinfo=None) + timedelta(hours=1)
    assert run_sweep(db, now, CONFIG.ledger)[0] == []
    db.dispose()


def test_a_late_referral_with_a_booking_waiting_is_scheduled_not_expired(
        sqlite_url: str) -> None:
    """The window rule expires only a referral with no active appointment: an SIU^S12 that
    came first (an orphan naming the referral in SCH-26) makes the late REF scheduled."""
    db = open_database(sqlite_url)
    late_at = datetime(2026, 8, 1, 9, 0, tzinfo=UTC)
    assert _apply(db, late_at, sample_payload("siu_s12_v251.hl7")) == ["AA"]
    assert _apply(db, late_at, sample_payload("ref_i12_v251.hl7")) == ["AA"]
    with db.connect() as conn:
        assert [(r["id"], r["status"]) for r in list_referrals(conn)] == [
            ("MFP-R-1001^PCPEHR", "scheduled")]
    db.dispose()


def test_an_update_whose_deadline_has_passed_makes_the_referral_overdue_at_once(
        db_url: str) -> None:
    """A routine referral received 3 days ago (due in 14) that an I13 makes STAT (due 1 day
    after receipt) is overdue when the I13 arrives: the sweep's `sweep overdue` history row and
    `referral.overdue`, once, even when two such updates come in one batch; the sweep then
    reports nothing."""
    db = open_database(db_url)
    assert _apply(db, RECEIVED, _ref("R-STAT")) == ["AA"]
    later = RECEIVED + timedelta(days=3)
    assert _apply(db, later, _i13("R-STAT", "S", "C-UP-1"), _i13("R-STAT", "A", "C-UP-2")) == [
        "AA", "AA"]
    marks = [h for h in _history(db, "R-STAT") if h[0] == "sweep overdue"]
    assert marks == [("sweep overdue", "pending", "pending",
                      "past its deadline to be scheduled (2026-03-03T09:00:00Z) when the "
                      "message arrived")]
    assert _events(db) == [("referral.pending", 1), ("referral.overdue", 1)]
    with db.begin() as conn:
        assert mark_overdue(conn, later.replace(tzinfo=None) + timedelta(days=30)) == []
    db.dispose()


def test_an_update_inside_its_deadline_is_left_to_the_sweep(sqlite_url: str) -> None:
    """The same I13 one hour after receipt: the STAT deadline has not passed, so nothing is
    marked until the sweep finds it overdue later, once."""
    db = open_database(sqlite_url)
    assert _apply(db, RECEIVED, _ref("R-SOON")) == ["AA"]
    assert _apply(db, RECEIVED + timedelta(hours=1), _i13("R-SOON", "S", "C-UP")) == ["AA"]
    assert [h for h in _history(db, "R-SOON") if h[0] == "sweep overdue"] == []
    swept = RECEIVED.replace(tzinfo=None) + timedelta(days=2)
    with db.begin() as conn:
        assert mark_overdue(conn, swept) == ["referral R-SOON^PCPEHR pending, overdue"]
    db.dispose()
