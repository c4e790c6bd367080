"""Updates against the ledger, through the pipeline into a real database: the HL7 null `""`
deletes a stored value and an empty field keeps it (docs/ledger.md), and AE 204 is only for the
owning system (docs/hl7-rules.md)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from enginectl import sample_payload
from sqlalchemy import text

from engine.ack import AckBuilder
from engine.config import parse_config
from engine.parsing import parse
from engine.pipeline import Job, Pipeline
from engine.store.database import open_database
from engine.store.ledger.views import list_appointments, list_referrals

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)  # inside the samples' windows (RF1-8 2036-07-12)
CHANNEL = parse_config({"channels": [{
    "name": "referrals", "listen": {"port": 0},
    "accept": ["REF^I12-I15", "RRI^I12-I15", "SIU^S12-S26"]}]}).channels[0]
REF = sample_payload("ref_i12_v251.hl7")
SIU = sample_payload("siu_s12_v251.hl7")


def _edit(payload: bytes, segment: str, field: int, value: str, control: str,
          trigger: str | None = None) -> bytes:
    """The sample with one field of its first `segment` replaced, a new MSH-10, and maybe a new
    trigger (MSH-9.2)."""
    lines = payload.decode().split("\r")
    for i, line in enumerate(lines):
        fields = line.split("|")
        if fields[0] == "MSH":
            fields[9] = control
            if trigger:
                fields[8] = fields[8].replace("^I12^", f"^{trigger}^").replace(
                    "^S12^", f"^{trigger}^")
        if fields[0] == segment:
            fields += [""] * (field + 1 - len(fields))
            fields[field] = value
            lines[i] = "|".join(fields)
            segment = ""  # only the first one
        else:
            lines[i] = "|".join(fields)
    return "\r".join(lines).encode()


def _run(url: str, messages: list[bytes]) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    db = open_database(url)
    pipeline = Pipeline(db, {"referrals": AckBuilder()}, clock=lambda: NOW)
    results = [pipeline.process_batch([Job(CHANNEL, m, "x", NOW)])[0] for m in messages]
    pipeline.close()
    with db.connect() as conn:
        refs = {r["id"]: r for r in list_referrals(conn)}
        appts = {a["id"]: a for a in list_appointments(conn)}
    db.dispose()
    return [parse(r.acks[0])["MSA.1"] for r in results], refs, appts


def test_ref_i13_null_deletes_and_empty_keeps(db_url: str) -> None:
    """An I13 with `""` in RF1-2 and RF1-8 and the RT provider's PRD-4 deletes priority, window
    end and specialty; RF1-7 left empty keeps the window start."""
    update = _edit(REF, "RF1", 2, '""', "UPD-1", "I13")
    update = _edit(update, "RF1", 8, '""', "UPD-1")
    update = _edit(update, "RF1", 7, "", "UPD-1")
    lines = update.decode().split("\r")
    lines = [ln.replace("|NEURO^^^SOUTHHOSP|", '|""|') if ln.startswith("PRD|RT") else ln
             for ln in lines]
    acks, refs, _ = _run(db_url, [REF, "\r".join(lines).encode()])
    assert acks == ["AA", "AA"]
    ref = refs["MFP-R-1001^PCPEHR"]
    assert (ref["priority"], ref["specialty"], ref["window_end"]) == ("", "", None)
    assert ref["window_start"] == "2026-01-12T00:00:00Z"


def test_siu_s14_null_deletes_the_duration_and_specialty(db_url: str) -> None:
    """An S14 with `""` in SCH-9 and AIS-7 and in AIL-3 and AIS-3 deletes the appointment's
    duration and specialty; its start stays."""
    update = _edit(SIU, "SCH", 9, '""', "S14-1", "S14")
    for segment, field in (("AIS", 7), ("AIS", 3), ("AIL", 3)):
        update = _edit(update, segment, field, '""', "S14-1")
    acks, _, appts = _run(db_url, [REF, SIU, update])
    assert acks == ["AA", "AA", "AA"]
    appt = appts["SCHED-A-5001^SCHED"]
    assert (appt["duration_min"], appt["specialty"]) == (None, "")
    assert appt["start"] == "2026-03-02T09:00:00Z"


def test_unknown_key_is_204_only_from_its_owner(sqlite_url: str) -> None:
    """REF^I13 for an unknown RF1-6 `X^PCPEHR`: from PCPEHR (the owner) AE 204; an RRI^I13 for
    it from the specialist's system is accepted and changes nothing."""
    unknown = _edit(REF, "RF1", 6, "MFP-R-9999^PCPEHR", "UNK-1", "I13")
    from_specialist = (unknown.replace(b"|PCPEHR|NORTHCLINIC|", b"|SPECEHR|SOUTHHOSP|", 1)
                       .replace(b"REF^I13^REF_I12", b"RRI^I13^RRI_I12"))
    acks, refs, _ = _run(sqlite_url, [unknown, from_specialist])
    assert acks == ["AE", "AA"]
    assert refs == {}


# --- docs/hl7-rules.md conformance: orphans, S14 without a status, bare MRNs, PRD required ------------


def test_an_siu_naming_an_unknown_referral_waits_for_it_instead_of_the_fallback(
        db_url: str) -> None:
    """An SIU whose SCH-26 names a referral not stored yet is an orphan, even though the
    fallback would find another open referral of the same patient and specialty; when the
    named referral comes, the appointment is linked to it, via SCH-26."""
    other = _edit(REF, "RF1", 6, "OTHER-R-1^PCPEHR", "REF-OTHER")
    named = _edit(REF, "RF1", 6, "NAMED-R-2^PCPEHR", "REF-NAMED")
    siu = _edit(SIU, "SCH", 26, "NAMED-R-2^PCPEHR", "SIU-NAMED")
    acks, refs, appts = _run(db_url, [other, siu])
    assert acks == ["AA", "AA"]
    assert (appts["SCHED-A-5001^SCHED"]["match"], refs["OTHER-R-1^PCPEHR"]["status"]) == (
        "unmatched", "pending")
    acks, refs, appts = _run(db_url, [named])
    appt = appts["SCHED-A-5001^SCHED"]
    assert (acks, appt["match"], appt["referral"], appt["via"]) == (
        ["AA"], "matched", "NAMED-R-2^PCPEHR", "SCH-26")
    assert (refs["NAMED-R-2^PCPEHR"]["status"], refs["OTHER-R-1^PCPEHR"]["status"]) == (
        "scheduled", "pending")


def test_an_s14_without_a_status_keeps_the_cancelled_appointment_cancelled(db_url: str) -> None:
    """After S15 the appointment is cancelled and the referral awaits rebooking; an S14
    with an empty SCH-25 (a detail change) keeps both so; an S14 saying Booked books again."""
    cancel = _edit(SIU, "SCH", 25, "Cancelled", "SIU-S15", "S15")
    detail = _edit(SIU, "SCH", 25, "", "SIU-S14-DETAIL", "S14")
    waitlist = _edit(SIU, "SCH", 25, "Waitlist", "SIU-S14-WAIT", "S14")
    acks, refs, appts = _run(db_url, [REF, SIU, cancel, detail, waitlist])
    assert acks == ["AA"] * 5
    assert (appts["SCHED-A-5001^SCHED"]["status"], refs["MFP-R-1001^PCPEHR"]["status"]) == (
        "cancelled", "accepted")
    booked = _edit(SIU, "SCH", 25, "Booked", "SIU-S14-BOOKED", "S14")
    acks, refs, appts = _run(db_url, [booked])
    assert (appts["SCHED-A-5001^SCHED"]["status"], refs["MFP-R-1001^PCPEHR"]["status"]) == (
        "booked", "scheduled")


def test_bare_mrns_are_never_compared_by_the_fallback(db_url: str) -> None:
    """PID-3 ids without an assigning authority (CX.4) do not make a fallback match, even
    when the bare ids are equal; with the authority they do."""
    def bare(payload: bytes, control: str) -> bytes:
        return _edit(payload, "PID", 3, "555", control)

    ref = bare(REF, "REF-BARE")
    siu = bare(_edit(SIU, "SCH", 26, "", "SIU-BARE"), "SIU-BARE")
    _acks, _refs, appts = _run(db_url, [ref, siu])
    assert appts["SCHED-A-5001^SCHED"]["match"] == "unmatched"


def test_a_ref_without_any_prd_is_ae_100(db_url: str) -> None:
    """PID and at least one PRD are required in REF_I12: AE 100 at PRD^1, no referral."""
    lines = [ln for ln in REF.decode().split("\r") if not ln.startswith("PRD|")]
    db = open_database(db_url)
    pipeline = Pipeline(db, {"referrals": AckBuilder()}, clock=lambda: NOW)
    (result,) = pipeline.process_batch([Job(CHANNEL, "\r".join(lines).encode(), "x", NOW)])
    pipeline.close()
    with db.connect() as conn:
        assert list_referrals(conn) == []
    db.dispose()
    ack = parse(result.acks[0])
    assert (ack["MSA.1"], ack["ERR.3.1"], ack["ERR.2.1"], ack["ERR.2.2"]) == ("AE", "100",
                                                                            "PRD", "1")


def test_the_fallback_compares_specialties_through_the_channel_map(db_url: str) -> None:
    """A REF for NEURO (PRD-4.1) and an SIU whose location says NEUROLOGY (AIL-3.1) and whose
    service says NEUROCONS (AIS-3.1), without SCH-26: no fallback match as sent; with
    `ledger.specialties: {NEUROLOGY: NEURO}` on the channel, matched via fallback."""
    siu = _edit(SIU, "SCH", 26, "", "SIU-MAPPED")
    siu = siu.replace(b"AIL|1|A|NEURO^^^SOUTHHOSP|", b"AIL|1|A|NEUROLOGY^^^SOUTHHOSP|")
    results = [[(a["match"], a["via"], a["specialty"]) for a in _appointments_after(
        db_url, {"specialties": specialties}, [REF, siu])]
        for specialties in ({}, {"NEUROLOGY": "NEURO"})]
    assert results == [[("unmatched", None, "NEUROLOGY")], [("matched", "fallback", "NEURO")]]


def _appointments_after(db_url: str, ledger: dict[str, Any], messages: list[bytes]
                        ) -> list[dict[str, Any]]:
    """`messages` through a channel with these `ledger:` rules into an empty ledger: the
    appointments then.  (SQLite: a file per call; PostgreSQL, one database per test: emptied
    after the call.)"""
    channel = parse_config({"channels": [{
        "name": "referrals", "listen": {"port": 0}, "accept": ["REF^I12", "SIU^S12"],
        "ledger": ledger}]}).channels[0]
    url = db_url.replace("engine.db", f"ledger-{next(_FILES)}.db")
    db = open_database(url)
    pipeline = Pipeline(db, {"referrals": AckBuilder()}, clock=lambda: NOW)
    for m in messages:
        pipeline.process_batch([Job(channel, m, "x", NOW)])
    pipeline.close()
    with db.connect() as conn:
        found = list_appointments(conn)
    if not url.startswith("sqlite"):
        with db.begin() as conn:
            for table in ("referral_events", "appointment_keys", "appointments",
                          "referral_patients", "referral_keys", "referrals", "messages"):
                conn.execute(text(f"DELETE FROM {table}"))
    db.dispose()
    return found


_FILES = itertools.count()


def test_the_history_names_the_duration_source_and_a_conflict_is_a_warning(
        db_url: str) -> None:
    """Record the source field; if two sources disagree by more than 1 minute, warn": the
    appointment's history row says where its duration came from and which sources disagree,
    and `appointment.duration_conflict` is logged (field names and minutes only)."""
    from sqlalchemy import select
    from structlog.testing import capture_logs

    from engine.store.schema import referral_events

    siu = _edit(SIU, "AIS", 7, "45", "SIU-CLASH")
    with capture_logs() as logs:
        acks, _refs, appts = _run(db_url, [REF, siu])
    assert (acks, appts["SCHED-A-5001^SCHED"]["duration_min"]) == (["AA", "AA"], 30)
    db = open_database(db_url)
    with db.connect() as conn:
        rules = [r for (r,) in conn.execute(select(referral_events.c.rule).where(
            referral_events.c.event == "SIU^S12 booked"))]
    db.dispose()
    assert rules == ["appointment created; duration from SCH-9 (sources disagree: "
                     "SCH-9 30 min, AIS-7 45 min)"]
    assert [(e["control_id"], e["sources"]) for e in logs
            if e["event"] == "appointment.duration_conflict"] == [
        ("SIU-CLASH", "SCH-9 30 min, AIS-7 45 min")]


# --- docs/hl7-rules.md: assigning authorities as `NS&OID&ISO` --------------------------------------


@pytest.mark.parametrize(("ref_cx", "siu_cx", "match"), [
    pytest.param("555^^^NORTH&1.2.840.9&ISO", "555^^^SOUTH&1.2.840.9&ISO", "matched",
                 id="same-oid-other-namespaces"),
    pytest.param("555^^^NORTH&1.2.840.9&ISO", "555^^^&1.2.840.9&ISO", "matched",
                 id="same-oid-with-and-without-namespace"),
    pytest.param("555^^^&1.2.840.9&ISO", "555^^^NORTH&1.2.840.9&ISO", "matched",
                 id="same-oid-without-and-with-namespace"),
    pytest.param("555^^^NORTH&1.2.840.9&ISO", "555^^^NORTH&1.2.840.8&ISO", "unmatched",
                 id="same-namespace-other-oids"),
    pytest.param("555^^^NORTH", "555^^^NORTH", "matched", id="same-namespace-no-oids"),
    pytest.param("555^^^NORTH", "555^^^NORTH&1.2.840.9&ISO", "matched",
                 id="same-namespace-one-oid"),
    pytest.param("555^^^NORTH", "555^^^&1.2.840.9&ISO", "unmatched",
                 id="namespace-against-oid-only"),
    pytest.param("555^^^&1.2.840.9&DNS", "555^^^&1.2.840.9&DNS", "unmatched",
                 id="not-an-iso-oid"),
])
def test_the_fallback_compares_oids_when_both_have_one_else_namespaces(
        db_url: str, ref_cx: str, siu_cx: str, match: str) -> None:
    """CX.4 = `NS&OID&ISO`: the REF's and the SIU's only PID-3 ids differ in CX.4; the
    SIU has no SCH-26, so only the fallback (same patient, specialty, window) can link it."""
    ref = _edit(REF, "PID", 3, ref_cx + "^MR", "REF-CX4")
    siu = _edit(_edit(SIU, "SCH", 26, "", "SIU-CX4"), "PID", 3, siu_cx + "^MR", "SIU-CX4")
    acks, refs, appts = _run(db_url, [ref, siu])
    appt = appts["SCHED-A-5001^SCHED"]
    assert (acks, appt["match"]) == (["AA", "AA"], match)
    if match == "matched":
        assert (appt["via"], refs["MFP-R-1001^PCPEHR"]["status"]) == ("fallback", "scheduled")


def test_a_referral_that_learns_its_patients_oid_compares_by_it(db_url: str) -> None:
    """REF with `555^^^NORTH`, then an I13 naming `NORTH&1.2.840.9&ISO`: the stored id gains
    the OID (still one id, shown `555^NORTH`), so an SIU from NORTH with another OID is another
    patient and one carrying only the OID is this one."""
    ref = _edit(REF, "PID", 3, "555^^^NORTH^MR", "REF-NS")
    update = _edit(_edit(REF, "PID", 3, "555^^^NORTH&1.2.840.9&ISO^MR", "I13-OID", "I13"),
                   "RF1", 1, "", "I13-OID")
    other = _edit(_edit(SIU, "SCH", 26, "", "SIU-OTHER"), "PID", 3,
                  "555^^^NORTH&1.2.840.8&ISO^MR", "SIU-OTHER")
    acks, refs, appts = _run(db_url, [ref, update, other])
    assert (acks, refs["MFP-R-1001^PCPEHR"]["patient_ids"]) == (["AA"] * 3, ["555^NORTH"])
    assert appts["SCHED-A-5001^SCHED"]["match"] == "unmatched"
    same = _edit(_edit(_edit(SIU, "SCH", 26, "", "SIU-SAME"), "SCH", 2, "SCHED-A-5002^SCHED",
                       "SIU-SAME"), "PID", 3, "555^^^&1.2.840.9&ISO^MR", "SIU-SAME")
    _acks, _refs, appts = _run(db_url, [same])
    assert (appts["SCHED-A-5002^SCHED"]["match"], appts["SCHED-A-5002^SCHED"]["via"]) == (
        "matched", "fallback")


def test_the_cli_shows_patient_ids_as_cx1_and_namespace_or_else_oid(db_url: str) -> None:
    """`referrals --json` keeps `CX.1^CX.4.1`: the namespace when there is one (its OID is
    stored, not shown), the OID when there is none, and nothing for a bare id.  `556^^^NORTH`
    and `556^^^NORTH&OID&ISO` in one PID-3 are one id."""
    ref = _edit(REF, "PID", 3, "555^^^&1.2.840.9&ISO~556^^^NORTH~556^^^NORTH&1.2.840.9&ISO~557",
                "REF-CLI")
    _acks, refs, _ = _run(db_url, [ref])
    assert refs["MFP-R-1001^PCPEHR"]["patient_ids"] == ["555^1.2.840.9", "556^NORTH", "557^"]


def test_an_orphan_is_linked_when_its_order_gains_the_filler_number_it_names(
        db_url: str) -> None:
    """Re-evaluate orphans when a referral ... gains keys (RF1-11, ORC-3)": an SIU whose
    SCH-27 names a filler order number arrives first (orphan); the order opens without it
    (still unmatched); an ORC SC carrying that ORC-3 links the appointment via SCH-27."""
    channel = parse_config({"channels": [{
        "name": "referrals", "listen": {"port": 0},
        "accept": ["ORM^O01", "SIU^S12-S26"]}]}).channels[0]
    siu = _edit(_edit(SIU, "SCH", 26, "", "SIU-FILLER"), "SCH", 27, "F-77^SPEC", "SIU-FILLER")
    order = sample_payload("orm_o01_v24.hl7")
    status = _edit(_edit(order, "ORC", 1, "SC", "ORM-SC"), "ORC", 3, "F-77^SPEC", "ORM-SC")
    db = open_database(db_url)
    pipeline = Pipeline(db, {"referrals": AckBuilder()}, clock=lambda: NOW)
    seen = []
    for m in (siu, order, status):
        (result,) = pipeline.process_batch([Job(channel, m, "x", NOW)])
        with db.connect() as conn:
            (appt,) = list_appointments(conn)
        seen.append((parse(result.acks[0])["MSA.1"], appt["match"], appt["via"]))
    pipeline.close()
    db.dispose()
    assert seen == [("AA", "unmatched", None), ("AA", "unmatched", None),
                    ("AA", "matched", "SCH-27")]


def test_configured_link_fields_link_after_sch26_and_wait_as_orphans(db_url: str) -> None:
    """The third link rule, off by default: with `ledger.link_fields: [SCH.4]` an SIU whose SCH-4 placer
    group carries the referral's key (and no SCH-26) is linked via SCH-4, also when it comes
    first (an orphan linked when the REF arrives); without the setting SCH-4 is not read."""
    siu = _edit(_edit(SIU, "SCH", 26, "", "SIU-GROUP"), "SCH", 4, "MFP-R-1001^PCPEHR",
                "SIU-GROUP")
    other_patient = siu.replace(b"200001^^^SOUTHHOSP", b"299999^^^SOUTHHOSP").replace(
        b"100001^^^NORTHCLINIC", b"199999^^^NORTHCLINIC")  # so no fallback can link it
    seen = [[(a["match"], a["referral"], a["via"]) for a in _appointments_after(
        db_url, {"link_fields": link_fields} if link_fields else {}, [other_patient, REF])]
        for link_fields in ([], ["SCH.4"])]  # the SIU first: an orphan until the REF comes
    assert seen == [[("unmatched", None, None)], [("matched", "MFP-R-1001^PCPEHR", "SCH-4")]]
