"""The REF/RRI mapper (docs/hl7-rules.md): referral messages to ledger changes and the AE content
errors (table 0357 code and ERR location) each REF content sample must give."""

from __future__ import annotations

from datetime import datetime

import pytest
from mapping_helpers import (
    PID,
    RULES,
    assert_error,
    build,
    msh,
    only,
    ref_msg,
    sample,
    seg,
)

from engine.errors import Location
from engine.mappings.changes import (
    ACCEPT,
    CANCEL,
    CLOSE,
    EI,
    EXPIRE,
    MODIFY,
    NOTE,
    OPEN,
    REJECT,
    BadValue,
    PatientId,
    Provider,
    ReferralChange,
    RequiredFieldMissing,
    RequiredSegmentMissing,
    UnknownCode,
)
from engine.mappings.referral import map_ref
from engine.mappings.rules import MappingRules

# --- REF / RRI -----------------------------------------------------------------------------


def test_ref_i12_sample_maps_every_field() -> None:
    """REF^I12 (2.5.1) opens MFP-R-1001^PCPEHR with PID-3, RF1, PRD, DG1 values as sent."""
    assert map_ref(sample("ref_i12_v251.hl7"), RULES) == [ReferralChange(
        event=OPEN,
        source="REF",
        key=EI("MFP-R-1001", "PCPEHR"),
        key_location=Location("RF1", 1, 6),
        trigger="REF^I12",
        owner="PCPEHR",
        status_code="P",
        patient_ids=(PatientId("100001", "NORTHCLINIC"), PatientId("200001", "SOUTHHOSP")),
        external_ids=(),
        filler_order_number=None,
        priority="R",
        specialty="NEURO",
        window_start=datetime(2026, 1, 12),
        window_end=datetime(2036, 7, 12),
        providers=(Provider("RP", "TESTNPI0001", "TESTDOC^REFERRING", "FAMMED"),
                   Provider("RT", "TESTNPI0002", "TESTDOC^NEURO", "NEURO")),
        diagnoses=("G43.909",),
    )]


def test_ref_i12_v23_sample_takes_specialty_from_the_rt_provider() -> None:
    """REF^I12 (2.3, two-component MSH-9): specialty is PRD(RT)-4.1, CARDIO."""
    change = only(map_ref(sample("ref_i12_v23.hl7"), RULES))
    assert (change.event, change.key, change.trigger, change.specialty) == (
        OPEN, EI("MFP-R-1002", "PCPEHR"), "REF^I12", "CARDIO")
    assert change.diagnoses == ("R00.2",)


def test_ref_i13_sample_is_a_modification() -> None:
    """REF^I13 with RF1-1 P changes details only: priority ASAP, window to 2026-08-12."""
    change = only(map_ref(sample("ref_i13_v251.hl7"), RULES))
    assert (change.event, change.priority, change.window_end, change.status_code) == (
        MODIFY, "A", datetime(2036, 8, 12), "P")


def test_ref_i14_sample_cancels() -> None:
    """REF^I14 cancels the referral."""
    change = only(map_ref(sample("ref_i14_v251.hl7"), RULES))
    assert (change.event, change.key, change.trigger) == (
        CANCEL, EI("MFP-R-1001", "PCPEHR"), "REF^I14")


def test_rri_i12_sample_accepts_with_external_ids() -> None:
    """RRI^I12 with RF1-1 A accepts; RF1-11 gives the referred-to system's id; owner is the
    RRI's sender."""
    change = only(map_ref(sample("rri_i12_v251.hl7"), RULES))
    assert (change.event, change.source, change.owner, change.trigger) == (
        ACCEPT, "REF", "SCHED", "RRI^I12")
    assert change.external_ids == (EI("SH-R-7001", "SOUTHHOSP"),)
    assert change.patient_ids == (PatientId("200001", "SOUTHHOSP"),
                                  PatientId("100001", "NORTHCLINIC"))


def test_ref_content_error_samples() -> None:
    """The manifest's ledger answers: no PID → 100 PID^1, empty RF1-6 → 101 RF1^1^6."""
    with pytest.raises(RequiredSegmentMissing) as no_pid:
        map_ref(sample("content_ref_no_pid.hl7"), RULES)
    assert_error(no_pid.value, "100", Location("PID", 1))
    with pytest.raises(RequiredFieldMissing) as no_key:
        map_ref(sample("content_ref_no_rf1_6.hl7"), RULES)
    assert_error(no_key.value, "101", Location("RF1", 1, 6))


def test_ref_i13_unknown_sample_maps_cleanly() -> None:
    """204 is the ledger's: the mapper gives a MODIFY for MFP-R-9999 at RF1^1^6."""
    change = only(map_ref(sample("content_ref_i13_unknown.hl7"), RULES))
    assert (change.event, change.key, change.key_location) == (
        MODIFY, EI("MFP-R-9999", "PCPEHR"), Location("RF1", 1, 6))


def test_ref_without_rf1_is_101_at_rf1_6() -> None:
    """RF1 is optional in the structure but carries the key: its absence is 101 at RF1^1^6."""
    m = build(msh("REF^I12"), "PRD|RT", PID)
    with pytest.raises(RequiredFieldMissing) as err:
        map_ref(m, RULES)
    assert_error(err.value, "101", Location("RF1", 1, 6))


def test_ref_key_with_only_ei2_is_101() -> None:
    """RF1-6 with EI.2 but no EI.1 has no key."""
    with pytest.raises(RequiredFieldMissing) as err:
        map_ref(ref_msg("REF^I12", {6: "^NS"}), RULES)
    assert_error(err.value, "101", Location("RF1", 1, 6))


def test_rri_without_pid_is_100() -> None:
    """PID is required in RRI_I12 as in REF_I12."""
    with pytest.raises(RequiredSegmentMissing) as err:
        map_ref(ref_msg("RRI^I12", {1: "A"}, pid=False), RULES)
    assert_error(err.value, "100", Location("PID", 1))


@pytest.mark.parametrize(("field", "value"), [(7, "20261301"), (8, "soon")])
def test_ref_unparseable_window_is_102(field: int, value: str) -> None:
    """RF1-7 or RF1-8 present but not a date/time: 102 at that field, value not in the text."""
    with pytest.raises(BadValue) as err:
        map_ref(ref_msg("REF^I12", {field: value}), RULES)
    assert_error(err.value, "102", Location("RF1", 1, field))
    assert value not in str(err.value)


def test_ref_window_with_offset_is_utc() -> None:
    """RF1-7/RF1-8 with offsets become naive UTC."""
    change = only(map_ref(ref_msg("REF^I12", {7: "20260112080000-0500",
                                              8: "20260712+0100"}), RULES))
    assert (change.window_start, change.window_end) == (
        datetime(2026, 1, 12, 13), datetime(2026, 7, 11, 23))


@pytest.mark.parametrize(("status", "event"), [("P", OPEN), ("A", OPEN), ("", OPEN)])
def test_ref_i12_opens_and_keeps_rf1_1(status: str, event: str) -> None:
    """I12 always opens; RF1-1 (A: opened as accepted) travels in status_code."""
    change = only(map_ref(ref_msg("REF^I12", {1: f"{status}^x^HL70283" if status else ""}),
                          RULES))
    assert (change.event, change.status_code) == (event, status)


@pytest.mark.parametrize(("status", "event"), [
    ("A", ACCEPT), ("R", REJECT), ("E", EXPIRE), ("P", MODIFY), ("", MODIFY), ("a", ACCEPT),
])
def test_ref_i13_follows_rf1_1(status: str, event: str) -> None:
    """I13: RF1-1 A accepts, R rejects, E expires (case-insensitive); anything else modifies."""
    assert only(map_ref(ref_msg("REF^I13", {1: status}), RULES)).event == event


@pytest.mark.parametrize(("trigger", "event"), [("I14", CANCEL), ("I15", NOTE)])
def test_ref_i14_cancels_and_i15_notes_whatever_rf1_1(trigger: str, event: str) -> None:
    """I14 cancels and I15 (status request) is a note, even with RF1-1 A."""
    assert only(map_ref(ref_msg(f"REF^{trigger}", {1: "A"}), RULES)).event == event


@pytest.mark.parametrize("trigger", ["I12", "I13", "I14", "I15"])
@pytest.mark.parametrize(("status", "event"), [
    ("A", ACCEPT), ("R", REJECT), ("E", EXPIRE), ("P", NOTE), ("", NOTE),
])
def test_rri_follows_rf1_1(trigger: str, status: str, event: str) -> None:
    """RRI I12-I15: RF1-1 A accepts, R rejects, E expires; anything else is a note."""
    change = only(map_ref(ref_msg(f"RRI^{trigger}", {1: status}), RULES))
    assert (change.event, change.trigger) == (event, f"RRI^{trigger}")


@pytest.mark.parametrize(("message_type", "note", "event"), [
    ("RRI^I12", "OBX|1|FT|11488-4^Consult note^LN||text||||||F", CLOSE),
    ("RRI^I12", "OBX|1|FT|11488-4^Consult note^LN||text||||||f", CLOSE),
    ("RRI^I12", "OBX|1|FT|11488-4^Consult note^LN||text", CLOSE),
    ("RRI^I12", "OBX|1|FT|11488-4^Consult note^LN||text||||||P", ACCEPT),
    ("RRI^I12", "OBX|1|FT|8302-2^Height^LN||text||||||F", ACCEPT),
    ("RRI^I12", "OBR|1|||11488-4^Consult note^LN", CLOSE),
    ("RRI^I12", "OBR|1|||11488-4^Consult note^LN|||||||||||||||||||||P", ACCEPT),
    ("RRI^I15", "OBR|1|||11488-4^Consult note^LN", CLOSE),
    ("REF^I13", "OBX|1|FT|11488-4^Consult note^LN||text||||||F", CLOSE),
    ("REF^I12", "OBX|1|FT|11488-4^Consult note^LN||text||||||F", OPEN),
    ("REF^I14", "OBX|1|FT|11488-4^Consult note^LN||text||||||F", CANCEL),
])
def test_final_consult_note_closes_rri_and_i13(message_type: str, note: str, event: str) -> None:
    """A final consult note (OBR-4.1 / OBX-3.1 in closing_codes, OBX-11 or OBR-25 F when
    given) closes an RRI or REF^I13 even with RF1-1 A; other REF events ignore it."""
    m = ref_msg(message_type, {1: "A"}, "OBR|1|||CONSULT^Consult", note)
    assert only(map_ref(m, RULES)).event == event


def test_closing_codes_come_from_the_rules() -> None:
    """A configured closing code closes; the default LOINC code then no longer does."""
    rules = MappingRules(closing_codes=frozenset({"CNOTE"}))
    local = ref_msg("RRI^I12", {1: "P"}, "OBX|1|FT|CNOTE^Local note||x||||||F")
    loinc = ref_msg("RRI^I12", {1: "P"}, "OBX|1|FT|11488-4^Consult note^LN||x||||||F")
    assert only(map_ref(local, rules)).event == CLOSE
    assert only(map_ref(loinc, rules)).event == NOTE


def test_ref_repeating_fields_and_decoded_names() -> None:
    """Every RF1-11 repetition, every DG1-3.1 and every PRD are kept; PRD-2 is decoded
    `family^given`, the family alone without a given name; RF1-2.1 is the priority."""
    m = build(msh("REF^I12", sender="EHR^x"),
              seg("RF1", {1: "P", 2: "S^STAT", 6: "K-1^NS", 11: "X-1^PAY~X-2^RT"}),
              "PRD|RP~PP|O\\T\\NEIL^PAT|||||NPI9^NPI",
              "PRD|CP|SOLO",
              PID, "DG1|1||A01^a^I10", "DG1|2||B02^b^I10", "DG1|3||")
    change = only(map_ref(m, RULES))
    assert change.external_ids == (EI("X-1", "PAY"), EI("X-2", "RT"))
    assert change.diagnoses == ("A01", "B02")
    assert change.providers == (Provider("RP", "NPI9", "O&NEIL^PAT", ""),
                                Provider("CP", "", "SOLO"))
    assert (change.priority, change.specialty, change.owner) == ("S", "", "EHR")


def test_ref_with_custom_delimiters_sample() -> None:
    """`#$*?%` delimiters: the same values come out as with the standard set."""
    change = only(map_ref(sample("delim_custom.hl7"), RULES))
    assert (change.key, change.patient_ids, change.specialty, change.window_end) == (
        EI("MFP-R-1007", "PCPEHR"), (PatientId("100009", "NORTHCLINIC"),), "NEURO",
        datetime(2036, 7, 31))
    assert change.providers[1] == Provider("RT", "TESTNPI0002", "TESTDOC^NEURO", "NEURO")


def test_map_ref_ignores_other_messages() -> None:
    """map_ref gives nothing for a non-REF message or an unknown REF trigger."""
    assert map_ref(sample("siu_s12_v251.hl7"), RULES) == []
    assert map_ref(ref_msg("REF^I16"), RULES) == []



@pytest.mark.parametrize(("message_type", "raises"), [
    ("REF^I12", True), ("REF^I13", True), ("RRI^I12", True), ("RRI^I14", True),
    ("REF^I14", False), ("REF^I15", False),
])
def test_rf1_1_outside_table_0283_is_103_where_it_is_acted_on(message_type: str,
                                                              raises: bool) -> None:
    """RF1-1 decides I12's opening status and I13's and every RRI's event: a code outside
    table 0283 (A, E, P, R) there is AE 103 at RF1-1; I14 and I15 do not read it."""
    msg = ref_msg(message_type, {1: "ZZ"})
    if raises:
        with pytest.raises(UnknownCode) as err:
            map_ref(msg, RULES)
        assert_error(err.value, "103", Location("RF1", 1, 1))
    else:
        assert only(map_ref(msg, RULES)).status_code == "ZZ"
