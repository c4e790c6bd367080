"""Referral events (`on:` routes): the RRI^I12 builder byte for byte, HL7 escaping, strict
structure validation with hl7apy, the MSH-3/4 fallbacks, and the `on:` configuration errors."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from engine.config import ConfigError, load_config, parse_config
from engine.ledger.facts import AppointmentFacts, ReferralFacts
from engine.mappings.changes import EI, PatientId, Provider
from engine.parsing import parse
from engine.routes.event_queue import EventRouter
from engine.routes.events import build_rri
from engine.validation import validate

NOW = datetime(2026, 3, 2, 9, 15, 7)
FACTS = ReferralFacts(
    key=EI("MFP-R-1001", "PCPEHR"), status="scheduled", owner="PCPEHR", priority="R",
    window_start=datetime(2026, 1, 12), window_end=datetime(2026, 7, 12),
    due_at=datetime(2026, 1, 26, 9, 30),
    external_ids=(EI("SH-R-7001", "SOUTHHOSP"),),
    patient_ids=(PatientId("100001", "NORTHCLINIC"), PatientId("200001", "SOUTHHOSP")),
    providers=(Provider("RP", "TESTNPI0001", "TESTDOC^REFERRING", "FAMMED"),
               Provider("RT", "TESTNPI0002", "TESTDOC^NEURO", "NEURO")),
    channel="referrals", opening_control_id="REF-I12-V251", owner_facility="NORTHCLINIC",
    appointment=AppointmentFacts(EI("SCHED-A-5001", "SCHED"), "booked",
                                 datetime(2026, 3, 2, 9, 0), 30),
)
EXPECTED = (
    b"MSH|^~\\&|REFTRACK|HUB|PCPEHR|NORTHCLINIC|20260302091507+0000||RRI^I12^RRI_I12|EV1|P|2.5.1\r"
    b"MSA|AA|REF-I12-V251\r"
    b"RF1|SC^Scheduled^L|R^Routine^HL70280||||MFP-R-1001^PCPEHR|20260112|20260712|||"
    b"SH-R-7001^SOUTHHOSP\r"
    b"PRD|RP|TESTDOC^REFERRING||FAMMED|||TESTNPI0001\r"
    b"PRD|RT|TESTDOC^NEURO||NEURO|||TESTNPI0002\r"
    b"PID|1||100001^^^NORTHCLINIC~200001^^^SOUTHHOSP||^^^^^^U\r"
    b"OBR|1|||APPT^Referral appointment^L\r"
    b"OBX|1|CX|APPT-ID^Appointment identifier (SCH-2)^L||SCHED-A-5001^^^SCHED||||||F\r"
    b"OBX|2|TS|APPT-START^Appointment start^L||20260302090000+0000||||||F\r"
    b"OBX|3|NM|APPT-DURATION^Appointment duration^L||30|min^minutes^ANS+|||||F\r"
    b"OBX|4|CE|APPT-STATUS^Appointment status^L||Booked^Booked^HL70278||||||F\r"
)


def _errors(raw: bytes) -> list[str]:
    return validate(raw).errors


def test_scheduled_event_is_built_byte_for_byte() -> None:
    """referral.scheduled for a referral with two providers, an external id and a linked
    appointment gives exactly the documented RRI^I12 (README "Referral events")."""
    assert build_rri(FACTS, "referral.scheduled", "EV1", NOW, ("REFTRACK", "HUB")) == EXPECTED


def test_rf1_1_follows_the_event_with_table_0283_or_local_codes() -> None:
    """RF1-1 is the event's status: table 0283 for pending/accepted/rejected/expired, a local
    code (coding system L) for the others; overdue carries the referral's current status."""
    def rf1_1(event: str, status: str = "scheduled") -> str:
        facts = ReferralFacts(key=EI("K"), status=status)
        return parse(build_rri(facts, event, "EV1", NOW)).raw("RF1.1")

    assert rf1_1("referral.pending") == "P^Pending^HL70283"
    assert rf1_1("referral.expired") == "E^Expired^HL70283"
    assert rf1_1("referral.no_show") == "NS^No show^L"
    assert rf1_1("referral.closed") == "CL^Closed^L"
    assert rf1_1("referral.overdue", status="accepted") == "A^Accepted^HL70283"


def test_values_holding_delimiters_are_escaped() -> None:
    """A referral id with `|` and `^`, an authority with `&`, a provider name with `|`, a
    location with `~` and `\\` are written with \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ and read back intact."""
    facts = ReferralFacts(
        key=EI("R|1^2", "A&B"), status="pending", owner="PCP|EHR",
        patient_ids=(PatientId("1|2", "NS^X"),),
        providers=(Provider("RP", "N^1", "O'NEIL|X^ANN", "WARD~1\\B"),))
    raw = build_rri(facts, "referral.pending", "EV|1", NOW)
    text = raw.decode()
    assert "RF1|P^Pending^HL70283|||||R\\F\\1\\S\\2^A\\T\\B\r" in text
    assert "PRD|RP|O'NEIL\\F\\X^ANN||WARD\\R\\1\\E\\B|||N\\S\\1\r" in text
    assert "PID|1||1\\F\\2^^^NS\\S\\X||^^^^^^U\r" in text
    msg = parse(raw)
    assert (msg["RF1.6.1"], msg["RF1.6.2"], msg["MSH.5"], msg["MSH.10"]) == (
        "R|1^2", "A&B", "PCP|EHR", "EV|1")
    assert (msg["PRD.2.1"], msg["PRD.4.1"], msg["PID.3.1"]) == ("O'NEIL|X", "WARD~1\\B", "1|2")
    assert _errors(raw) == []


def test_overdue_event_carries_a_note_with_the_due_date() -> None:
    """referral.overdue ends with an NTE (source O) naming the due date; RF1-1 is the current
    status, and the message still validates."""
    facts = ReferralFacts(key=EI("K", "A"), status="pending", due_at=datetime(2026, 1, 26, 9, 30),
                          patient_ids=(PatientId("1", "A"),))
    raw = build_rri(facts, "referral.overdue", "EV2", NOW)
    assert raw.endswith(b"NTE|1|O|Referral overdue: not scheduled by its due date "
                        b"2026-01-26T09:30:00Z\r")
    assert parse(raw)["RF1.1.1"] == "P"
    assert _errors(raw) == []


def test_without_providers_a_bare_prd_rp_is_written() -> None:
    """RRI_I12 needs at least one PRD: with no stored provider it is `PRD|RP`; an order's
    ordering provider (OP) is written as the referring provider (RP)."""
    bare = build_rri(ReferralFacts(key=EI("K"), status="pending",
                                   patient_ids=(PatientId("1", "A"),)), "referral.pending", "E", NOW)
    assert b"\rPRD|RP\r" in bare and b"MSA" not in bare
    assert _errors(bare) == []
    ordered = ReferralFacts(key=EI("K"), status="pending", patient_ids=(PatientId("1", "A"),),
                            providers=(Provider("OP", "D1", "DOC^A"),))
    assert b"\rPRD|RP|DOC^A|||||D1\r" in build_rri(ordered, "referral.pending", "E", NOW)


def test_built_messages_pass_strict_structure_validation() -> None:
    """The full byte-exact case, a UTF-8 one (MSH-18 then says so) and one per event name
    validate against hl7apy's RRI_I12 (v2.5.1) with no error."""
    assert _errors(EXPECTED) == []
    accented = ReferralFacts(key=EI("K"), status="closed", patient_ids=(PatientId("1", "A"),),
                             providers=(Provider("RT", "", "MÜLLER^JOSÉ", "NEURO"),))
    raw = build_rri(accented, "referral.closed", "EV3", NOW)
    assert parse(raw)["MSH.18"] == "UNICODE UTF-8" and "MÜLLER" in raw.decode("utf-8")
    assert _errors(raw) == []
    for event in ("referral.pending", "referral.accepted", "referral.rejected",
                  "referral.rescheduled", "referral.completed", "referral.cancelled",
                  "referral.expired", "referral.overdue"):
        assert _errors(build_rri(FACTS, event, "EV4", NOW)) == [], event


def test_msh_3_4_come_from_the_referrals_channel_then_the_first_then_defaults() -> None:
    """MSH-3/4 of an event message: the ack config of the channel the referral came in on, else
    the first channel's, else REFTRACK/HUB, field by field."""
    cfg = parse_config({
        "channels": [{"name": "a", "listen": {"port": 0}, "accept": ["REF^I12"],
                      "ack": {"application": "FIRSTAPP"}},
                     {"name": "b", "listen": {"port": 0}, "accept": ["REF^I12"],
                      "ack": {"application": "BAPP", "facility": "BFAC"}}],
        "destinations": [{"name": "d", "type": "file", "directory": "x"}],
        "routes": [{"name": "r", "on": ["referral.closed"], "to": ["d"]}]})
    router = EventRouter.of(cfg.routes, [(c.name, c.ack.application, c.ack.facility)
                                         for c in cfg.channels])
    assert router is not None
    assert router.sender("b") == ("BAPP", "BFAC")
    assert router.sender("a") == ("FIRSTAPP", "HUB")
    assert router.sender("") == ("FIRSTAPP", "HUB")
    assert EventRouter.of((), []) is None
    assert EventRouter.of(parse_config({**_base(), "routes": [
        {"name": "m", "from": "referrals", "to": ["pcp"]}]}).routes, []) is None


def _base() -> dict[str, Any]:
    return {"channels": [{"name": "referrals", "listen": {"port": 0}, "accept": ["REF^I12"]}],
            "destinations": [{"name": "pcp", "type": "file", "directory": "x"}]}


def _problems(routes: list[Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({**_base(), "routes": routes})
    return info.value.problems


def test_on_routes_parse_and_dedupe_their_events() -> None:
    """An `on:` route keeps its events (duplicates once), has no channel, and may transform."""
    routes = parse_config({**_base(), "routes": [{
        "name": "loop", "on": ["referral.closed", "referral.overdue", "referral.closed"],
        "transform": [{"set": {"MSH.5": "PCP"}}], "to": ["pcp"]}]}).routes
    assert [(r.name, r.source, r.on, len(r.transform)) for r in routes] == [
        ("loop", "", ("referral.closed", "referral.overdue"), 1)]


def test_on_route_config_errors_name_their_yaml_path() -> None:
    """from: and on: together or neither, an unknown event (listing the valid ones), `when:`
    on an `on:` route, and an empty `on:` list are each reported with their YAML path."""
    valid = ("referral.pending, referral.accepted, referral.rejected, referral.scheduled, "
             "referral.rescheduled, referral.completed, referral.no_show, referral.cancelled, "
             "referral.expired, referral.closed, referral.overdue")
    assert _problems([
        {"name": "a", "to": ["pcp"]},
        {"name": "b", "from": "referrals", "on": ["referral.closed"], "to": ["pcp"]},
        {"name": "c", "on": ["referral.closed", "referral.booked"], "to": ["pcp"]},
        {"name": "d", "on": ["referral.closed"], "when": {"type": ["REF^I12"]}, "to": ["pcp"]},
        {"name": "e", "on": [], "to": ["pcp"]},
    ]) == [
        "routes[0]: give either from: (a channel) or on: (referral events)",
        "routes[1]: give either from: (a channel) or on: (referral events), not both",
        f"routes[2].on[1]: unknown referral event 'referral.booked' (expected one of: {valid})",
        "routes[3].when: not allowed on an on: route (referral events are not filtered by "
        "message content)",
        "routes[4].on: expected a non-empty list",
    ]


def test_unquoted_on_key_in_yaml_is_the_events_key(tmp_path: Path) -> None:
    """YAML 1.1 reads a bare `on:` as the boolean true; the config loader keeps keys as
    strings, so `on:` written as in the README works (and `off`/`yes` values stay booleans)."""
    path = tmp_path / "channels.yaml"
    path.write_text(
        "channels:\n"
        "  - name: referrals\n"
        "    listen: {port: 0}\n"
        "    accept: [REF^I12]\n"
        "    framing: {tolerate_missing_cr: off}\n"
        "destinations:\n"
        "  - {name: pcp-ehr, type: file, directory: out}\n"
        "routes:\n"
        "  - name: loop-back-to-referrer\n"
        "    on: [referral.scheduled, referral.no_show, referral.closed]\n"
        "    to: [pcp-ehr]\n")
    config = load_config(path)
    assert config.routes[0].on == ("referral.scheduled", "referral.no_show", "referral.closed")
    assert config.channels[0].tolerate_missing_cr is False
