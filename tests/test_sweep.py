"""Time rules: the expiry sweep and overdue referrals (issue 3 "Time rules"), on a real database."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from enginectl import ROOT, Engine, cli_stdout, sample_payload, write_config
from sqlalchemy import update

from engine.ack import AckBuilder
from engine.config import parse_config
from engine.ledger.settings import LedgerSettings
from engine.mappings.changes import EI
from engine.mllp.blocking import MLLPClient
from engine.parsing import parse
from engine.pipeline import Job, Pipeline
from engine.store.database import open_database
from engine.store.ledger.sweep import sweep
from engine.store.ledger.views import find_referral, list_appointments, list_referrals
from engine.store.schema import referrals

CHANNEL = parse_config({"channels": [{
    "name": "referrals", "listen": {"port": 0}, "accept": ["REF^I12-I15", "SIU^S12-S26"]}]}
).channels[0]
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)  # before every window below ends


def _ref(key: str, window_end: str | None) -> bytes:
    """ref_i12_v251 with its own RF1-6 and RF1-8 (None empties RF1-8)."""
    raw = sample_payload("ref_i12_v251.hl7").replace(b"MFP-R-1001", key.encode())
    raw = raw.replace(b"REF-I12-V251", f"C-{key}".encode())
    return raw.replace(b"|20360712|", f"|{window_end or ''}|".encode())


def test_sweep_expires_past_window_and_default_window(db_url: str) -> None:
    """Pending/accepted referrals past RF1-8, or past received + 180 days when RF1-8 is empty,
    become expired with a history row; others stay; a second sweep changes nothing."""
    db = open_database(db_url)
    clock = [RECEIVED]  # R-PAST arrives inside its window, the others now
    pipeline = Pipeline(db, {"referrals": AckBuilder()}, clock=lambda: clock[0])
    pipeline.process_batch([Job(CHANNEL, _ref("R-PAST", "20260301"), "x", RECEIVED)])
    clock[0] = NOW
    pipeline.process_batch([Job(CHANNEL, _ref(k, end), "x", NOW) for k, end in (
        ("R-FUTURE", "20270301"), ("R-NOEND", None), ("R-NOEND-OLD", None))])
    pipeline.close()
    with db.begin() as conn:
        conn.execute(update(referrals).where(referrals.c.key_id == "R-NOEND-OLD")
                     .values(received_at=datetime(2026, 1, 1)))
    now = NOW.replace(tzinfo=None)
    with db.begin() as conn:
        expired = sweep(conn, now, LedgerSettings())
    assert sorted(expired) == ["referral R-NOEND-OLD^PCPEHR pending→expired",
                               "referral R-PAST^PCPEHR pending→expired"]
    with db.begin() as conn:
        assert sweep(conn, now, LedgerSettings()) == []
        states = {r["id"]: r["status"] for r in list_referrals(conn)}
        history = find_referral(conn, EI("R-PAST", "PCPEHR"))
    assert states == {"R-PAST^PCPEHR": "expired", "R-FUTURE^PCPEHR": "pending",
                      "R-NOEND^PCPEHR": "pending", "R-NOEND-OLD^PCPEHR": "expired"}
    assert history is not None
    assert [(h["event"], h["status_before"], h["status_after"]) for h in history["history"]][-1] \
        == ("sweep expire", "pending", "expired")


def test_overdue_lists_referrals_past_their_priority_deadline(sqlite_url: str) -> None:
    """`referrals --overdue`: pending/accepted referrals whose deadline to reach `scheduled`
    (S 1 day, A 2 days, R 14 days from receipt) has passed."""
    db = open_database(sqlite_url)
    pipeline = Pipeline(db, {"referrals": AckBuilder()}, clock=lambda: NOW)
    stat = _ref("R-STAT", "20270301").replace(b"|R^Routine^HL70280|", b"|S^STAT^HL70280|")
    routine = _ref("R-ROUTINE", "20270301")
    pipeline.process_batch([Job(CHANNEL, stat, "x", NOW), Job(CHANNEL, routine, "x", NOW)])
    pipeline.close()
    base = NOW.replace(tzinfo=None)
    with db.connect() as conn:
        assert [r["id"] for r in list_referrals(conn, overdue_at=base + timedelta(hours=12))] == []
        assert [r["id"] for r in list_referrals(conn, overdue_at=base + timedelta(days=2))] == [
            "R-STAT^PCPEHR"]
        assert [r["id"] for r in list_referrals(conn, overdue_at=base + timedelta(days=15))] == [
            "R-STAT^PCPEHR", "R-ROUTINE^PCPEHR"]


def test_a_backlog_is_swept_in_small_transactions(db_url: str, monkeypatch: object) -> None:
    """`run_sweep` works in chunks (here of 2 referrals): 5 past their window and overdue are
    expired, the one still open is marked overdue once; a second run does nothing."""
    from engine.store.ledger import sweep as sweeping

    monkeypatch.setattr(sweeping, "CHUNK", 2)  # type: ignore[attr-defined]
    db = open_database(db_url)
    pipeline = Pipeline(db, {"referrals": AckBuilder()}, clock=lambda: RECEIVED)
    pipeline.process_batch([Job(CHANNEL, _ref(f"R-{n}", "20260301"), "x", NOW)
                            for n in range(5)] + [Job(CHANNEL, _ref("R-OPEN", "20270301"),
                                                      "x", NOW)])
    pipeline.close()
    now = NOW.replace(tzinfo=None)
    expired, overdue, queued = sweeping.run_sweep(db, now, LedgerSettings())
    assert (len(expired), overdue, queued) == (5, ["referral R-OPEN^PCPEHR pending, overdue"], 0)
    assert sweeping.run_sweep(db, now, LedgerSettings()) == ([], [], 0)


# --- `ledger:` in channels.yaml: the configured window and deadlines -------------------------


def _siu_fallback(start: datetime) -> bytes:
    """siu_s12_v251 without SCH-26 (so only the fallback can match it), starting at `start`."""
    raw = sample_payload("siu_s12_v251.hl7").replace(b"|MFP-R-1001^PCPEHR", b"|")
    return raw.replace(b"20260302090000", start.strftime("%Y%m%d%H%M%S").encode())


@pytest.mark.parametrize(("window_days", "match"), [(180, "matched"), (30, "unmatched")])
def test_fallback_match_uses_the_configured_default_window(sqlite_url: str, window_days: int,
                                                           match: str) -> None:
    """An appointment 60 days after a referral without RF1-7/RF1-8 is inside the default
    window of 180 days, outside a configured one of 30."""
    db = open_database(sqlite_url)
    pipeline = Pipeline(db, {"referrals": AckBuilder()}, clock=lambda: NOW,
                        settings=LedgerSettings(window_days))
    ref = _ref("R-WIN", None).replace(b"|20260112|", b"||", 1)
    pipeline.process_batch([Job(CHANNEL, ref, "x", NOW)])
    pipeline.process_batch([Job(CHANNEL, _siu_fallback(NOW + timedelta(days=60)), "x", NOW)])
    pipeline.close()
    with db.connect() as conn:
        assert [(a["match"], a["referral"]) for a in list_appointments(conn)] == [
            (match, "R-WIN^PCPEHR" if match == "matched" else None)]


def test_configured_deadlines_and_window_reach_the_running_engine_and_the_sweep(
        tmp_path: Path, sqlite_url: str) -> None:
    """`ledger: {default_window_days: 30, deadlines_days: {S: 0.25, R: 3}}`: a STAT referral is
    due 6 hours after receipt, a routine one 3 days after; `hl7-engine sweep` expires one
    received 31 days ago without RF1-8 (the default window would keep it 180 days)."""
    config = write_config(tmp_path, sqlite_url, {"ledger": {
        "default_window_days": 30, "deadlines_days": {"S": 0.25, "R": 3}}})
    stat = _ref("R-STAT", None).replace(b"|R^Routine^HL70280|", b"|S^STAT^HL70280|")
    routine = _ref("R-ROUTINE", None)
    engine = Engine(config).start()
    try:
        with MLLPClient("127.0.0.1", engine.port) as client:
            assert [parse(client.exchange(m)[0])["MSA.1"] for m in (stat, routine)] == [
                "AA", "AA"]
    finally:
        assert engine.stop() == 0
    found = {r["id"]: r for r in json.loads(cli_stdout(config, "referrals", "--json"))}
    for key, hours in (("R-STAT^PCPEHR", 6), ("R-ROUTINE^PCPEHR", 72)):
        received = datetime.fromisoformat(found[key]["received_at"])
        assert datetime.fromisoformat(found[key]["due_at"]) - received == timedelta(hours=hours)
    db = open_database(sqlite_url)
    with db.begin() as conn:
        conn.execute(update(referrals).where(referrals.c.key_id == "R-ROUTINE").values(
            received_at=datetime.now(UTC).replace(tzinfo=None) - timedelta(days=31)))
    db.dispose()
    swept = subprocess.run([sys.executable, "-m", "engine", "sweep", "--config", str(config)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert swept.returncode == 0, swept.stderr
    assert "referral R-ROUTINE^PCPEHR pending→expired" in swept.stdout
    audits = [e for e in map(json.loads, (tmp_path / "engine.log").read_text().splitlines())
              if e["event"] == "audit.sweep"]
    assert [(a["expired"], a["overdue"], a["audit"]) for a in audits] == [(1, 0, True)]
    assert {r["id"]: r["status"] for r in json.loads(cli_stdout(config, "referrals", "--json"))} == {
        "R-STAT^PCPEHR": "pending", "R-ROUTINE^PCPEHR": "expired"}
