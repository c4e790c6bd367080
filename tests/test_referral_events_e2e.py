"""Referral events end to end (`on:` routes): the engine over real TCP into a real database sends
the referring system an RRI^I12 when its referral's status changes, when the sweep expires it or
finds it overdue, and when an operator links an appointment by hand."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from enginectl import Engine, delivered_files, run_cli, sample_payload, write_config
from sqlalchemy import select, update

from engine.mllp.blocking import MLLPClient
from engine.parsing import InboundMessage, parse
from engine.store.database import open_database
from engine.store.schema import outbound, referrals
from engine.validation import validate

EVENTS = ["referral.pending", "referral.scheduled", "referral.no_show", "referral.closed",
          "referral.expired", "referral.overdue"]


def _events_of(config: Path, referral: str) -> list[dict[str, Any]]:
    """The referral's event messages as `hl7-engine referral ID --json` lists them."""
    shown = run_cli("referral", referral, "--json", config=config)
    assert shown.returncode == 0, shown.stderr
    return list(json.loads(shown.stdout)["events"])


def _send(port: int, messages: list[bytes]) -> list[str]:
    with MLLPClient("127.0.0.1", port) as client:
        return [parse(client.exchange(m)[0])["MSA.1"] for m in messages]


def _obx(msg: InboundMessage, code: str) -> str:
    """OBX-5 (wire text) of the appointment OBX whose OBX-3.1 is `code`."""
    for n in range(1, msg.count("OBX") + 1):
        if msg[f"OBX[{n}].3.1"] == code:
            return msg.raw(f"OBX[{n}].5")
    return ""


def _ref(key: str, window_end: str) -> bytes:
    """ref_i12_v251 with its own RF1-6, MSH-10 and RF1-8."""
    raw = sample_payload("ref_i12_v251.hl7").replace(b"MFP-R-1001", key.encode())
    raw = raw.replace(b"REF-I12-V251", f"C-{key}".encode())
    return raw.replace(b"|20360712|", f"|{window_end}|".encode())


def test_status_changes_reach_the_referrer_as_rri_i12(tmp_path: Path, db_url: str) -> None:
    """REF, its retransmission, a duplicate-key REF (AE 205), the SIU^S12 that books it, an
    SIU^S26 no-show and an RRI with a final consult note give exactly four RRI^I12 files:
    pending, scheduled (with the appointment), no_show, closed; each names the original referral
    in RF1-6, goes to its owner and passes strict validation.  The AE'd message and the
    retransmission cause none."""
    out = tmp_path / "pcp"
    config = write_config(tmp_path, db_url, top={
        "destinations": [{"name": "pcp-ehr", "type": "file", "directory": str(out)}],
        "routes": [{"name": "loop-back-to-referrer", "on": EVENTS, "to": ["pcp-ehr"]}]})
    ref = _ref("MFP-R-1001", "20991231").replace(b"C-MFP-R-1001", b"REF-I12-V251")
    closing = sample_payload("rri_i12_v251.hl7").replace(b"RRI-I12-V251", b"RRI-CLOSE").replace(
        b"\rNTE|", b"\rOBR|1|||11488-4^Consult note^LN\rNTE|", 1)
    engine = Engine(config).start()
    try:
        assert _send(engine.port, [
            ref, ref, ref.replace(b"REF-I12-V251", b"REF-I12-DUP"),
            sample_payload("siu_s12_v251.hl7"), sample_payload("siu_s26_v251.hl7"), closing,
        ]) == ["AA", "AA", "AE", "AA", "AA", "AA"]
        files = delivered_files(out, 4)
        sent = _events_of(config, "MFP-R-1001^PCPEHR")
    finally:
        engine.stop()
    assert [(e["event"], e["message_id"], e["destination"]) for e in sent] == [
        ("referral.pending", 1, "pcp-ehr"), ("referral.scheduled", 3, "pcp-ehr"),
        ("referral.no_show", 4, "pcp-ehr"), ("referral.closed", 5, "pcp-ehr")]
    msgs = [parse(f.read_bytes()) for f in files]
    assert len(msgs) == 4
    assert [m.raw("RF1.1") for m in msgs] == [
        "P^Pending^HL70283", "SC^Scheduled^L", "NS^No show^L", "CL^Closed^L"]
    assert {(m.raw("MSH.9"), m["MSH.5"], m.raw("RF1.6"), m["MSA.2"]) for m in msgs} == {
        ("RRI^I12^RRI_I12", "PCPEHR", "MFP-R-1001^PCPEHR", "REF-I12-V251")}
    assert [m["MSH.10"] for m in msgs] == [e["control_id"] for e in sent]
    scheduled = msgs[1]
    assert (_obx(scheduled, "APPT-ID"), _obx(scheduled, "APPT-START"),
            _obx(scheduled, "APPT-DURATION"), _obx(scheduled, "APPT-STATUS")) == (
        "SCHED-A-5001^^^SCHED", "20260302090000+0000", "30", "Booked^Booked^HL70278")
    assert _obx(msgs[2], "APPT-ID") == "SCHED-A-5002^^^SCHED"
    assert msgs[3].raw("RF1.11") == "SH-R-7001^SOUTHHOSP"  # the RRI added the external id
    for f in files:
        assert validate(f.read_bytes()).errors == [], f.name


def test_sweep_sends_expired_and_overdue_once(tmp_path: Path, db_url: str) -> None:
    """`hl7-engine sweep` expires a referral past RF1-8 and reports one past its due date as
    overdue: two RRI^I12 reach a real MLLP downstream, with no message id behind them.  A second
    sweep and the sweep of a restarted engine queue nothing more."""
    from sink import Sink

    sink = Sink()
    config = write_config(tmp_path, db_url, top={
        "destinations": [{"name": "pcp-ehr", "type": "mllp", "host": "127.0.0.1",
                          "port": sink.port, "ack_timeout_s": 5,
                          "retry": {"initial_s": 0.1, "max_s": 1, "max_attempts": 5}}],
        "routes": [{"name": "loop", "on": EVENTS, "to": ["pcp-ehr"]}]})
    engine = Engine(config).start()
    db = open_database(db_url)
    try:
        assert _send(engine.port, [_ref("R-OLD", "20991231"), _ref("R-LATE", "20991231")]) \
            == ["AA", "AA"]
        with db.begin() as conn:  # R-OLD's window ends, R-LATE's deadline passes, after receipt
            conn.execute(update(referrals).where(referrals.c.key_id == "R-OLD")
                         .values(window_end=datetime(2020, 1, 1)))
            conn.execute(update(referrals).where(referrals.c.key_id == "R-LATE")
                         .values(due_at=datetime(2020, 1, 1, 8, 0)))
        first, second = run_cli("sweep", config=config), run_cli("sweep", config=config)
        assert first.stdout.splitlines() == [
            "referral R-OLD^PCPEHR pending→expired", "referral R-LATE^PCPEHR pending, overdue",
            "1 referral(s) expired, 1 newly overdue, 2 event message(s) queued"]
        assert second.stdout.splitlines() == [
            "0 referral(s) expired, 0 newly overdue, 0 event message(s) queued"]
        deadline = time.monotonic() + 15
        while len(sink.received) < 4 and time.monotonic() < deadline:  # 2 pending + 2 sweep
            time.sleep(0.1)
        engine.stop()
        engine.start()  # its start-up sweep finds nothing new
        deadline = time.monotonic() + 15
        while len(engine.wait_for("ledger.sweep")) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        sweeps = engine.wait_for("ledger.sweep")
    finally:
        engine.stop()
        sink.close()
    assert [(s["expired"], s["overdue"], s["events_queued"]) for s in sweeps] == [
        (0, 0, 0), (0, 0, 0)]
    with db.connect() as conn:
        rows = conn.execute(select(outbound.c.event, outbound.c.message_id)
                            .order_by(outbound.c.id)).all()
    db.dispose()
    assert [tuple(r) for r in rows] == [
        ("referral.pending", 1), ("referral.pending", 2),
        ("referral.expired", None), ("referral.overdue", None)]
    received = [parse(m) for m in sink.received]
    assert [(m.raw("RF1.6"), m.raw("RF1.1")) for m in received] == [
        ("R-OLD^PCPEHR", "P^Pending^HL70283"), ("R-LATE^PCPEHR", "P^Pending^HL70283"),
        ("R-OLD^PCPEHR", "E^Expired^HL70283"), ("R-LATE^PCPEHR", "P^Pending^HL70283")]
    assert received[3]["NTE.3"] == ("Referral overdue: not scheduled by its due date "
                                    "2020-01-01T08:00:00Z")
    assert all(validate(m).errors == [] for m in sink.received)


def test_orphan_link_and_manual_link_send_scheduled(tmp_path: Path, sqlite_url: str) -> None:
    """An SIU that arrives before its REF is linked when the REF opens it: that one REF causes
    pending then scheduled.  `hl7-engine link` of an unmatched appointment schedules a second
    referral: its event has no message id and carries the linked appointment."""
    out = tmp_path / "pcp"
    config = write_config(tmp_path, sqlite_url, top={
        "destinations": [{"name": "pcp-ehr", "type": "file", "directory": str(out)}],
        "routes": [{"name": "loop", "on": EVENTS, "to": ["pcp-ehr"]}]})
    unmatched = sample_payload("siu_s12_v251.hl7").replace(b"SIU-S12-V251", b"SIU-LONE").replace(
        b"SCHED-A-5001", b"SCHED-A-9009").replace(
        b"|Booked^Booked^HL70278|MFP-R-1001^PCPEHR", b"|Booked^Booked^HL70278|").replace(
        b"AIL|1|A|NEURO", b"AIL|1|A|CARDIO")
    engine = Engine(config).start()
    try:
        assert _send(engine.port, [
            sample_payload("siu_s12_v251.hl7"), sample_payload("ref_i12_v251.hl7"),
            _ref("MFP-R-2002", "20991231"), unmatched]) == ["AA"] * 4
        linked = run_cli("link", "SCHED-A-9009^SCHED", "MFP-R-2002^PCPEHR", config=config)
        assert linked.returncode == 0, linked.stderr
        files = delivered_files(out, 4)
        first = _events_of(config, "MFP-R-1001^PCPEHR")
        second = _events_of(config, "MFP-R-2002^PCPEHR")
    finally:
        engine.stop()
    assert [(e["event"], e["message_id"]) for e in first] == [
        ("referral.pending", 2), ("referral.scheduled", 2)]
    assert [(e["event"], e["message_id"]) for e in second] == [
        ("referral.pending", 3), ("referral.scheduled", None)]
    last = parse(files[-1].read_bytes())
    assert (last.raw("RF1.6"), last.raw("RF1.1"), _obx(last, "APPT-ID")) == (
        "MFP-R-2002^PCPEHR", "SC^Scheduled^L", "SCHED-A-9009^^^SCHED")
    assert validate(files[-1].read_bytes()).errors == []


def test_check_config_reports_on_route_errors(tmp_path: Path) -> None:
    """`hl7-engine check-config` prints `on:` route problems with their YAML paths, exit 2."""
    config = write_config(tmp_path, "sqlite:///x.db", top={
        "destinations": [{"name": "pcp-ehr", "type": "file", "directory": "x"}],
        "routes": [{"name": "ok", "on": ["referral.closed"], "to": ["pcp-ehr"]},
                   {"name": "both", "from": "referrals", "on": ["referral.closed"],
                    "to": ["pcp-ehr"]},
                   {"name": "typo", "on": ["referral.schedule"], "to": ["pcp-ehr"]}]})
    shown = run_cli("check-config", config=config)
    assert shown.returncode == 2
    lines = shown.stderr.splitlines()
    assert lines[0] == (f"{config}: routes[1]: give either from: (a channel) or on: (referral "
                        "events), not both")
    assert lines[1].startswith(f"{config}: routes[2].on[0]: unknown referral event "
                               "'referral.schedule' "
                               "(expected one of: referral.pending, ")
    assert len(lines) == 2
