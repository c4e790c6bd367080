"""The mappers (docs/hl7-rules.md): REF/RRI, ORM/OMG/OSU and SIU messages to ledger changes, and the
AE content errors (table 0357 code and ERR location) each content sample must give.

Samples come from `samples/` as `hl7-engine send` sends them; the rules are also checked on
small inline messages, one per rule."""

from __future__ import annotations

from datetime import datetime

import pytest
from enginectl import sample_payload

from engine.errors import ContentError, Location
from engine.mappings.changes import (
    ACCEPT,
    BOOKED,
    CANCEL,
    CANCELLED,
    CLOSE,
    COMPLETE,
    COMPLETE_APPT,
    DELETED,
    EI,
    EXPIRE,
    KEEP,
    MODIFY,
    NOSHOW,
    NOTE,
    OPEN,
    REJECT,
    AppointmentChange,
    BadValue,
    Change,
    PatientId,
    Provider,
    ReferralChange,
    RequiredFieldMissing,
    RequiredSegmentMissing,
    UnknownCode,
)
from engine.mappings.dispatch import map_message
from engine.mappings.fields import (
    ei_from_wire,
    parse_dtm,
    patient_ids,
    read_dtm,
    read_ei,
    read_eis,
)
from engine.mappings.orders import map_order
from engine.mappings.referral import map_ref
from engine.mappings.rules import MappingRules
from engine.mappings.scheduling import map_siu
from engine.parsing import InboundMessage, parse

RULES = MappingRules(order_specialties={"CONSULT-NEUR": "NEUR"})
PID = "PID|1||123^^^HOSP^MR"
PID_IDS = (PatientId("123", "HOSP"),)


def sample(name: str) -> InboundMessage:
    """A sample as the sending tool delivers it (LF → CR)."""
    return parse(sample_payload(name))


def build(*segments: str) -> InboundMessage:
    """Parse segments joined by CR."""
    return parse("\r".join(segments).encode())


def seg(name: str, fields: dict[int, str]) -> str:
    """A segment line with the given 1-based fields, the others empty."""
    size = max(fields, default=0)
    return "|".join([name, *(fields.get(n, "") for n in range(1, size + 1))])


def msh(message_type: str, sender: str = "SENDER") -> str:
    """An MSH with standard delimiters and the given MSH-9 and MSH-3."""
    return f"MSH|^~\\&|{sender}|FAC|REFTRACK|HUB|20260101000000||{message_type}|CTRL-1|P|2.5.1"


def ref_msg(message_type: str = "REF^I12", rf1: dict[int, str] | None = None,
            *extra: str, pid: bool = True) -> InboundMessage:
    """A minimal REF/RRI: RF1 (status P, key K-1^NS), one RT PRD, PID, then `extra`."""
    segments = [msh(message_type), seg("RF1", {1: "P", 6: "K-1^NS"} | (rf1 or {})),
                seg("PRD", {1: "RT", 2: "DOC^ANN", 4: "NEURO", 7: "NPI1"})]
    if pid:
        segments.append(PID)
    return build(*segments, *extra)


def order_msg(message_type: str = "ORM^O01", orc: dict[int, str] | None = None,
              obr: dict[int, str] | None = None, *extra: str, pid: bool = True) -> InboundMessage:
    """A minimal order: [PID] ORC (NW, P-1^PL) OBR (CONSULT-NEUR), then `extra`."""
    segments = [msh(message_type)]
    if pid:
        segments.append(PID)
    segments.append(seg("ORC", {1: "NW", 2: "P-1^PL"} | (orc or {})))
    segments.append(seg("OBR", {1: "1", 4: "CONSULT-NEUR^Neurology consult^L"} | (obr or {})))
    return build(*segments, *extra)


def siu_msg(trigger: str = "S12", sch: dict[int, str] | None = None, *,
            tq1: dict[int, str] | None = None, ais: dict[int, str] | None = None,
            ail: dict[int, str] | None = None, aip: dict[int, str] | None = None,
            aig: dict[int, str] | None = None, pid: bool = True,
            rgs: bool = True) -> InboundMessage:
    """A minimal SIU: SCH (PL-1^P / FL-1^F, Booked), optional TQ1, PID, RGS and resources."""
    segments = [msh(f"SIU^{trigger}^SIU_S12"),
                seg("SCH", {1: "PL-1^P", 2: "FL-1^F", 25: "Booked"} | (sch or {}))]
    if tq1 is not None:
        segments.append(seg("TQ1", tq1))
    if pid:
        segments.append(PID)
    if rgs:
        segments.append("RGS|1|A")
    for name, fields in (("AIS", ais), ("AIG", aig), ("AIL", ail), ("AIP", aip)):
        if fields is not None:
            segments.append(seg(name, {1: "1", 2: "A"} | fields))
    return build(*segments)


def only(changes: list[Change]) -> ReferralChange:
    """The single referral change of a message."""
    assert len(changes) == 1
    change = changes[0]
    assert isinstance(change, ReferralChange)
    return change


def appointment(changes: list[Change]) -> AppointmentChange:
    """The single appointment change of a message."""
    assert len(changes) == 1
    change = changes[0]
    assert isinstance(change, AppointmentChange)
    return change


def assert_error(exc: ContentError, code: str, location: Location) -> None:
    """The error's table-0357 code and ERR location."""
    assert (exc.code, exc.location) == (code, location)


# --- shared field readers ------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("2026", datetime(2026, 1, 1)),
    ("202603", datetime(2026, 3, 1)),
    ("20260302", datetime(2026, 3, 2)),
    ("2026030209", datetime(2026, 3, 2, 9)),
    ("202603020930", datetime(2026, 3, 2, 9, 30)),
    ("20260302093015", datetime(2026, 3, 2, 9, 30, 15)),
    ("20260302093015.1234", datetime(2026, 3, 2, 9, 30, 15, 123400)),
    ("20260302093015.1234567", datetime(2026, 3, 2, 9, 30, 15, 123456)),
    ("20260302093000-0500", datetime(2026, 3, 2, 14, 30)),
    ("20260302013000+0200", datetime(2026, 3, 1, 23, 30)),
    ("20260101003000+0130", datetime(2025, 12, 31, 23, 0)),
    ("20260302+0000", datetime(2026, 3, 2)),
    ("202603020930-0330", datetime(2026, 3, 2, 13, 0)),
])
def test_parse_dtm_reads_every_precision_and_converts_offsets(value: str,
                                                               expected: datetime) -> None:
    """DTM/TS at any precision is a naive UTC datetime; an offset is subtracted, none means UTC."""
    assert parse_dtm(value) == expected


@pytest.mark.parametrize("value", [
    "2024-13-45", "20241345", "2026030", "20260230", "20260302250000", "abcd", "",
    "20260302093000+2500", "20260302093000-05", "20260302.5", "00000101",
])
def test_parse_dtm_rejects_what_is_not_a_dtm(value: str) -> None:
    """Malformed text, impossible dates and bad offsets are not date/times."""
    assert parse_dtm(value) is None


def test_read_dtm_empty_and_null_are_absent_and_garbage_is_102() -> None:
    """An empty field and the HL7 null `""` read as None; garbage is BadValue at the given
    location, and the message names the field, not the value."""
    m = build(msh("REF^I12"), 'RF1|||||||""|20261399')
    assert read_dtm(m, "RF1.6", Location("RF1", 1, 6)) is None
    assert read_dtm(m, "RF1.7", Location("RF1", 1, 7)) is None
    with pytest.raises(BadValue) as err:
        read_dtm(m, "RF1.8", Location("RF1", 1, 8))
    assert_error(err.value, "102", Location("RF1", 1, 8))
    assert err.value.reason == "RF1-8 is not an HL7 date/time"
    assert "20261399" not in str(err.value)


def test_ei_from_wire_reads_ei1_and_ei2_decoded() -> None:
    """EI.1^EI.2 with escapes decoded; a CWE gives its code and text; no EI.1 is no EI."""
    m = build(msh("REF^I12"))
    assert ei_from_wire(m, "MFP-R-1001^PCPEHR^2.16.1^ISO") == EI("MFP-R-1001", "PCPEHR")
    assert ei_from_wire(m, "A\\S\\B^N\\T\\S") == EI("A^B", "N&S")
    assert ei_from_wire(m, "CONSULT-NEUR^Neurology consult^L") == EI("CONSULT-NEUR",
                                                                     "Neurology consult")
    assert ei_from_wire(m, "X-1") == EI("X-1", "")
    assert ei_from_wire(m, "^PCPEHR") is None
    assert ei_from_wire(m, '""') is None
    assert ei_from_wire(m, "") is None


def test_read_ei_takes_the_first_repetition_and_read_eis_all() -> None:
    """A repeating EI field: `read_ei` gives the first, `read_eis` every one with an EI.1."""
    m = build(msh("REF^I12"), "RF1|||||||||||A-1^X~^Y~B-2")
    assert read_ei(m, "RF1.11") == EI("A-1", "X")
    assert read_eis(m, "RF1.11") == (EI("A-1", "X"), EI("B-2", ""))
    assert read_eis(m, "RF1.6") == ()


def test_patient_ids_keep_cx41_and_cx42_and_skip_reps_without_cx1() -> None:
    """PID-3: CX.4.1 namespace and CX.4.2 OID both kept; no CX.1 → skipped; the CLI text is
    `CX.1^CX.4.1`, the OID standing in for an empty namespace."""
    m = build(msh("REF^I12"),
              "PID|1||111^^^NC&1.2.3&ISO^MR~222^^^&2.16.840.1&ISO^MR~^^^SH^MR~333~4\\S\\4^^^SH")
    ids = patient_ids(m)
    assert ids == (
        PatientId("111", "NC", "1.2.3"), PatientId("222", "", "2.16.840.1"), PatientId("333", ""),
        PatientId("4^4", "SH"))
    assert [p.text for p in ids] == ["111^NC", "222^2.16.840.1", "333^", "4^4^SH"]


@pytest.mark.parametrize(("cx", "expected"), [
    ("7^^^NS&1.2.840.1&ISO", PatientId("7", "NS", "1.2.840.1")),
    ("7^^^&1.2.840.1&ISO", PatientId("7", "", "1.2.840.1")),
    ("7^^^NS&1.2.840.1&iso", PatientId("7", "NS", "1.2.840.1")),
    ("7^^^NS", PatientId("7", "NS", "")),
    ("7^^^NS&&", PatientId("7", "NS", "")),
    ("7^^^NS&1.2.840.1", PatientId("7", "NS", "1.2.840.1")),  # CX.4.3 empty: an OID as written
    ("7^^^&1.2.840.1&DNS", PatientId("7", "", "")),  # not an ISO OID: no authority at all
    ("7^^^NS&1.2.840.1&UUID", PatientId("7", "NS", "")),
    ("7^^^NS&hosp.example.org&DNS", PatientId("7", "NS", "")),
    ("7^^^NS&not-an-oid&ISO", PatientId("7", "NS", "")),  # ISO, but not written as an OID
    ("7^^^NS&1840&ISO", PatientId("7", "NS", "")),  # one arc: not taken as an OID
    ('7^^^NS&""&ISO', PatientId("7", "NS", "")),
])
def test_patient_ids_take_cx42_as_the_oid_only_when_cx43_is_iso_or_empty(
        cx: str, expected: PatientId) -> None:
    """CX.4 = `NS&OID&ISO`: CX.4.2 is the OID when CX.4.3 is ISO (any case) or
    empty and CX.4.2 is written as an OID (digits and dots); any other universal id type is
    not an OID and is dropped."""
    assert patient_ids(build(msh("REF^I12"), f"PID|1||{cx}^MR")) == (expected,)


def test_patient_ids_without_pid_are_empty() -> None:
    """No PID segment, no patient identifiers."""
    assert patient_ids(build(msh("SIU^S12"))) == ()


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


# --- ORM / OMG / OSU -----------------------------------------------------------------------


def test_orm_o01_sample_maps_every_field() -> None:
    """ORM^O01 NW opens WM-ORD-3001^ORDERS; OBR-4.1 maps to NEUR; ORC-7.6 gives priority R."""
    assert map_order(sample("orm_o01_v24.hl7"), RULES) == [ReferralChange(
        event=OPEN,
        source="ORM",
        key=EI("WM-ORD-3001", "ORDERS"),
        key_location=Location("ORC", 1, 2),
        trigger="ORM^O01",
        owner="ORDERS",
        status_code="NW",
        patient_ids=(PatientId("300005", "WESTMED"), PatientId("200005", "SOUTHHOSP")),
        filler_order_number=None,
        priority="R",
        specialty="NEUR",
        providers=(Provider("OP", "TESTNPI0003", "TESTDOC^ORDERING"),),
        diagnoses=("G40.909",),
    )]


def test_omg_o19_sample_uses_tq1() -> None:
    """OMG^O19 (360X request): source OMG, TQ1-7/TQ1-8 window, TQ1-9 priority, unmapped
    OBR-4 (LOINC 57133-1) gives no specialty."""
    change = only(map_order(sample("omg_o19_v251.hl7"), RULES))
    assert (change.event, change.source, change.key, change.trigger) == (
        OPEN, "OMG", EI("WM-REF-3002", "ORDERS"), "OMG^O19")
    assert (change.window_start, change.window_end, change.priority, change.specialty) == (
        datetime(2026, 1, 16), datetime(2036, 2, 15), "R", "")
    assert change.diagnoses == ("M54.50",)


def test_osu_o51_sample_confirms_an_omg_referral() -> None:
    """OSU^O51 ORC-1 SC / ORC-5 SC (360X confirmation) accepts; the key belongs to OMG;
    ORC-3 is the filler order number."""
    change = only(map_order(sample("osu_o51_v251.hl7"), RULES))
    assert (change.event, change.source, change.key, change.status_code) == (
        ACCEPT, "OMG", EI("WM-REF-3002", "ORDERS"), "SC/SC")
    assert (change.filler_order_number, change.owner, change.trigger) == (
        EI("SH-ORD-8001", "SCHED"), "SCHED", "OSU^O51")


def test_orm_bad_orc1_sample_is_103() -> None:
    """content_orm_bad_orc1.hl7: ORC-1 ZZ is outside table 0119 → 103 at ORC^1^1."""
    with pytest.raises(UnknownCode) as err:
        map_order(sample("content_orm_bad_orc1.hl7"), RULES)
    assert_error(err.value, "103", Location("ORC", 1, 1))


def test_orm_duplicate_sample_maps_cleanly() -> None:
    """205 is the ledger's: the mapper opens WM-ORD-3001 with its key at ORC^1^2."""
    change = only(map_order(sample("content_orm_nw_duplicate.hl7"), RULES))
    assert (change.event, change.key, change.key_location) == (
        OPEN, EI("WM-ORD-3001", "ORDERS"), Location("ORC", 1, 2))


@pytest.mark.parametrize(("control", "event"), [
    ("NW", OPEN), ("OK", ACCEPT), ("UA", REJECT),
    ("CA", CANCEL), ("OC", CANCEL), ("CR", CANCEL), ("DC", CANCEL), ("OD", CANCEL),
    ("UC", NOTE), ("XO", MODIFY), ("XX", MODIFY), ("XR", MODIFY),
    ("HD", NOTE), ("RL", NOTE), ("RP", NOTE), ("RO", NOTE), ("SN", NOTE), ("NA", NOTE),
    ("SC", NOTE), ("RE", NOTE), ("CH", NOTE), ("PA", NOTE), ("MC", NOTE),
])
@pytest.mark.parametrize("message_type", ["ORM^O01", "OMG^O19", "OSU^O51"])
def test_orc1_table(message_type: str, control: str, event: str) -> None:
    """ORC-1 (table 0119) → event, the same for ORM, OMG and OSU; status_code is ORC-1."""
    change = only(map_order(order_msg(message_type, {1: control}), RULES))
    assert (change.event, change.status_code) == (event, control)


@pytest.mark.parametrize(("status", "event"), [
    ("CM", COMPLETE), ("CA", CANCEL), ("DC", CANCEL), ("SC", ACCEPT), ("IP", ACCEPT),
    ("HD", NOTE), ("A", NOTE), ("", NOTE),
])
def test_orc1_sc_follows_orc5(status: str, event: str) -> None:
    """ORC-1 SC: ORC-5 CM completes, CA/DC cancel, SC/IP accept, anything else notes."""
    change = only(map_order(order_msg("ORM^O01", {1: "SC", 5: status}), RULES))
    assert (change.event, change.status_code) == (event, f"SC/{status}" if status else "SC")


def test_osu_dc_ca_discontinues() -> None:
    """360X discontinue: OSU ORC-1 DC with ORC-5 CA cancels, status_code DC/CA."""
    change = only(map_order(order_msg("OSU^O51", {1: "DC", 5: "CA"}), RULES))
    assert (change.event, change.status_code, change.source) == (CANCEL, "DC/CA", "OMG")


def test_orc1_is_read_case_insensitively() -> None:
    """A lower-case table 0119 code is still the code."""
    assert only(map_order(order_msg("ORM^O01", {1: "ok"}), RULES)).event == ACCEPT


def test_orc1_empty_is_101_and_unknown_is_103() -> None:
    """ORC-1 empty is a missing required field (101); an unknown code is 103."""
    with pytest.raises(RequiredFieldMissing) as empty:
        map_order(order_msg("ORM^O01", {1: ""}), RULES)
    assert_error(empty.value, "101", Location("ORC", 1, 1))
    with pytest.raises(UnknownCode) as unknown:
        map_order(order_msg("OMG^O19", {1: "ZX"}), RULES)
    assert_error(unknown.value, "103", Location("ORC", 1, 1))


@pytest.mark.parametrize("message_type", ["ORM^O01", "OMG^O19"])
def test_nw_without_pid_is_100(message_type: str) -> None:
    """A new ORM/OMG order needs its patient: no PID → 100 at PID^1."""
    with pytest.raises(RequiredSegmentMissing) as err:
        map_order(order_msg(message_type, pid=False), RULES)
    assert_error(err.value, "100", Location("PID", 1))


@pytest.mark.parametrize(("message_type", "control"), [
    ("ORM^O01", "CA"), ("OMG^O19", "SC"), ("OSU^O51", "NW"),
])
def test_pid_is_optional_outside_orm_omg_nw(message_type: str, control: str) -> None:
    """Updates (and OSU) need no PID; the change then has no patient ids."""
    change = only(map_order(order_msg(message_type, {1: control}, pid=False), RULES))
    assert change.patient_ids == ()


def test_nw_needs_orc2_even_with_obr2() -> None:
    """NW keys on ORC-2: empty → 101 at ORC^1^2, OBR-2 does not stand in."""
    with pytest.raises(RequiredFieldMissing) as err:
        map_order(order_msg("ORM^O01", {2: ""}, {2: "P-1^PL"}), RULES)
    assert_error(err.value, "101", Location("ORC", 1, 2))


def test_update_falls_back_to_obr2_and_obr3() -> None:
    """Outside NW an empty ORC-2 takes OBR-2 (key still located at ORC^n^2); an empty ORC-3
    takes OBR-3 as filler order number."""
    change = only(map_order(order_msg("ORM^O01", {1: "CA", 2: ""},
                                      {2: "P-9^PL", 3: "F-9^FL"}), RULES))
    assert (change.key, change.key_location, change.filler_order_number) == (
        EI("P-9", "PL"), Location("ORC", 1, 2), EI("F-9", "FL"))


def test_update_without_any_placer_number_is_101() -> None:
    """ORC-2 and OBR-2 both empty → 101 at ORC^1^2."""
    with pytest.raises(RequiredFieldMissing) as err:
        map_order(order_msg("ORM^O01", {1: "CA", 2: ""}), RULES)
    assert_error(err.value, "101", Location("ORC", 1, 2))


def test_orc3_wins_over_obr3() -> None:
    """ORC-3 is the filler order number when both are valued."""
    change = only(map_order(order_msg("ORM^O01", {1: "OK", 3: "F-1^FL"}, {3: "F-2^FL"}), RULES))
    assert change.filler_order_number == EI("F-1", "FL")


def test_one_change_per_orc_group() -> None:
    """Each ORC pairs with its own OBR, TQ1 and DG1s; key_location carries the ORC number."""
    m = build(msh("OMG^O19"), PID,
              "ORC|NW|P-1^PL", "TQ1|1||||||20260101|20260201|S", "OBR|1|P-1^PL||CONSULT-NEUR",
              "DG1|1||A01", "DG1|2||A02",
              "ORC|NW|P-2^PL", "OBR|1|P-2^PL||OTHER", "DG1|3||B01")
    first, second = map_order(m, RULES)
    assert isinstance(first, ReferralChange) and isinstance(second, ReferralChange)
    assert (first.key, first.key_location, first.specialty, first.diagnoses,
            first.priority, first.window_end) == (
        EI("P-1", "PL"), Location("ORC", 1, 2), "NEUR", ("A01", "A02"), "S",
        datetime(2026, 2, 1))
    assert (second.key, second.key_location, second.specialty, second.diagnoses,
            second.priority, second.window_end) == (
        EI("P-2", "PL"), Location("ORC", 2, 2), "", ("B01",), "", None)


def test_errors_name_the_failing_orc() -> None:
    """A bad ORC-1 in the second group is 103 at ORC^2^1."""
    m = build(msh("ORM^O01"), PID, "ORC|NW|P-1^PL", "OBR|1", "ORC|QQ|P-2^PL", "OBR|2")
    with pytest.raises(UnknownCode) as err:
        map_order(m, RULES)
    assert_error(err.value, "103", Location("ORC", 2, 1))


def test_omg_prior_results_are_not_orders() -> None:
    """An OMG prior-results group (PID, ORC, OBR, OBX inside the order) adds no change and its
    ORC-1 is not checked; its OBR/DG1 do not leak into the order."""
    m = build(msh("OMG^O19"), PID, "ORC|NW|P-1^PL", "OBR|1|P-1^PL||CONSULT-NEUR", "DG1|1||A01",
              "PID|1||999^^^OLD", "ORC|RE|OLD-1", "OBR|1|OLD-1||PRIOR", "OBX|1|ST|X||y",
              "DG1|2||Z99")
    change = only(map_order(m, RULES))
    assert (change.key, change.specialty, change.diagnoses) == (
        EI("P-1", "PL"), "NEUR", ("A01",))


def test_prior_results_pid_is_not_the_patient() -> None:
    """A PID inside OMG prior results is no patient for a new order: still 100 at PID^1."""
    m = build(msh("OMG^O19"), "ORC|NW|P-1^PL", "OBR|1|P-1^PL", "PID|1||999^^^OLD",
              "OBR|2|OLD-1", "OBX|1|ST|X||y")
    with pytest.raises(RequiredSegmentMissing) as err:
        map_order(m, RULES)
    assert_error(err.value, "100", Location("PID", 1))


def test_order_without_orc_is_100() -> None:
    """ORC is required in every order structure: none → 100 at ORC^1."""
    with pytest.raises(RequiredSegmentMissing) as err:
        map_order(build(msh("ORM^O01"), PID, "OBR|1|P-1"), RULES)
    assert_error(err.value, "100", Location("ORC", 1))


@pytest.mark.parametrize(("orc7", "tq1", "obr27", "priority"), [
    ("^^^^^S", "TQ1|1||||||||A", "^^^^^R", "S"),
    ("", "TQ1|1||||||||A", "^^^^^R", "A"),
    ("", "TQ1|1", "^^^^^R", "R"),
    ("", "TQ1|1", "", ""),
])
def test_priority_precedence(orc7: str, tq1: str, obr27: str, priority: str) -> None:
    """Priority is ORC-7.6, then TQ1-9.1, then OBR-27.6: the first non-empty."""
    m = build(msh("OMG^O19"), PID, seg("ORC", {1: "NW", 2: "P-1", 7: orc7}), tq1,
              seg("OBR", {1: "1", 27: obr27}))
    assert only(map_order(m, RULES)).priority == priority


@pytest.mark.parametrize(("field", "tq1"), [
    (7, "TQ1|1||||||2026-01-01|20260201"), (8, "TQ1|1||||||20260101|next week"),
])
def test_unparseable_tq1_dates_are_102(field: int, tq1: str) -> None:
    """TQ1-7 / TQ1-8 present but not date/times → 102 at TQ1^1^7 / TQ1^1^8."""
    with pytest.raises(BadValue) as err:
        map_order(order_msg("OMG^O19", None, None, tq1), RULES)
    assert_error(err.value, "102", Location("TQ1", 1, field))


def test_tq1_needed_by_with_offset_is_utc() -> None:
    """TQ1-8 "needed by" with an offset becomes naive UTC."""
    m = build(msh("OMG^O19"), PID, "ORC|NW|P-1", "TQ1|1|||||||20260215170000-0700", "OBR|1")
    change = only(map_order(m, RULES))
    assert (change.window_start, change.window_end) == (None, datetime(2026, 2, 16))


def test_providers_from_orc12_else_obr16() -> None:
    """Every ORC-12 repetition is an OP provider (XCN.1, XCN.2^XCN.3); OBR-16 stands in for
    an empty ORC-12."""
    both = order_msg("ORM^O01", {12: "N1^DOE^JO~N2^ROE"}, {16: "N3^POE^AL"})
    fallback = order_msg("ORM^O01", None, {16: "N3^POE^AL"})
    assert only(map_order(both, RULES)).providers == (
        Provider("OP", "N1", "DOE^JO"), Provider("OP", "N2", "ROE"))
    assert only(map_order(fallback, RULES)).providers == (Provider("OP", "N3", "POE^AL"),)


def test_map_order_ignores_other_messages() -> None:
    """map_order gives nothing outside ORM^O01, OMG^O19 and OSU^O51."""
    assert map_order(order_msg("ORM^O02"), RULES) == []
    assert map_order(sample("ref_i12_v251.hl7"), RULES) == []


# --- SIU -----------------------------------------------------------------------------------


def test_siu_s12_sample_maps_every_field() -> None:
    """SIU^S12 (2.5.1): booked, start SCH-11.4, 30 min, AIL-3.1 specialty, SCH-26 link."""
    assert map_siu(sample("siu_s12_v251.hl7"), RULES) == [AppointmentChange(
        trigger="S12",
        key=EI("SCHED-A-5001", "SCHED"),
        status=BOOKED,
        rescheduled=False,
        filler_status="Booked^Booked^HL70278",
        start=datetime(2026, 3, 2, 9, 0),
        duration_min=30,
        duration_source="SCH-9",
        specialty="NEURO",
        placer_order_numbers=(EI("MFP-R-1001", "PCPEHR"),),
        filler_order_numbers=(),
        patient_ids=(PatientId("200001", "SOUTHHOSP"), PatientId("100001", "NORTHCLINIC")),
    )]


def test_siu_s12_v23_sample() -> None:
    """SIU^S12 (2.3, no SCH-26): booked at 2026-03-05 14:00 for 30 min, no placer link."""
    change = appointment(map_siu(sample("siu_s12_v23.hl7"), RULES))
    assert (change.key, change.status, change.start, change.duration_min, change.specialty,
            change.placer_order_numbers) == (
        EI("SCHED-A-5101", "SCHED"), BOOKED, datetime(2026, 3, 5, 14), 30, "CARDIO", ())


@pytest.mark.parametrize(("name", "trigger", "status", "filler_status"), [
    ("siu_s15_v251.hl7", "S15", CANCELLED, "Cancelled^Cancelled^HL70278"),
    ("siu_s26_v251.hl7", "S26", NOSHOW, "Noshow^Noshow^HL70278"),
    ("crlf_terminators.hl7", "S14", BOOKED, "Booked^Booked^HL70278"),
])
def test_siu_status_samples(name: str, trigger: str, status: str, filler_status: str) -> None:
    """S15 cancels, S26 is a no-show, S14 with SCH-25 Booked stays booked; SCH-25 is kept as
    sent, coding system included."""
    change = appointment(map_siu(sample(name), RULES))
    assert (change.trigger, change.status, change.filler_status) == (
        trigger, status, filler_status)


def test_siu_bad_ais4_sample_is_102() -> None:
    """content_siu_bad_ais4.hl7: AIS-4 is the only start and unreadable → 102 at AIS^1^4."""
    with pytest.raises(BadValue) as err:
        map_siu(sample("content_siu_bad_ais4.hl7"), RULES)
    assert_error(err.value, "102", Location("AIS", 1, 4))


@pytest.mark.parametrize(("trigger", "status", "rescheduled"), [
    ("S12", COMPLETE_APPT, False), ("S13", BOOKED, True), ("S15", CANCELLED, False),
    ("S16", CANCELLED, False), ("S17", DELETED, False), ("S26", NOSHOW, False),
])
def test_siu_trigger_table(trigger: str, status: str, rescheduled: bool) -> None:
    """Triggers with a fixed status ignore SCH-25 (here Complete), except S12, which lets
    complete the appointment; S13 marks a reschedule."""
    change = appointment(map_siu(siu_msg(trigger, {25: "Complete"}), RULES))
    assert (change.trigger, change.status, change.rescheduled, change.filler_status) == (
        trigger, status, rescheduled, "Complete")


@pytest.mark.parametrize(("filler", "status"), [
    ("Booked", BOOKED), ("pending", KEEP), ("WAITLIST", KEEP), ("Overbook", BOOKED),
    ("Started", BOOKED), ("Complete", COMPLETE_APPT), ("NOSHOW", NOSHOW),
    ("Cancelled", CANCELLED), ("Deleted", DELETED), ("Dc", CANCELLED), ("dc", CANCELLED),
    ("Blocked", KEEP), ("Scheduled^^CSI", BOOKED), ("", KEEP),
])
def test_s14_status_follows_sch25(filler: str, status: str) -> None:
    """S14: SCH-25.1 (table 0278, any case) gives the status; local words read as booked;
    Pending, Waitlist, Blocked (no booking) and an empty SCH-25 keep the stored status (KEEP);
    filler_status keeps SCH-25 as sent (the raw value, a local word's coding system too)."""
    change = appointment(map_siu(siu_msg("S14", {25: filler}), RULES))
    assert (change.status, change.rescheduled, change.filler_status) == (status, False, filler)


@pytest.mark.parametrize("trigger", ["S18", "S19", "S20", "S21", "S22"])
def test_s18_to_s22_follow_sch25_like_s14(trigger: str) -> None:
    """Service/resource events keep SCH-25's status."""
    change = appointment(map_siu(siu_msg(trigger, {25: "Complete"}), RULES))
    assert change.status == COMPLETE_APPT


@pytest.mark.parametrize("trigger", ["S23", "S24", "S25"])
def test_blocked_slots_and_queries_have_no_effect(trigger: str) -> None:
    """S23/S24 (blocked slots) and S25 give no change, and need no RGS or key."""
    assert map_siu(siu_msg(trigger, {1: "", 2: ""}, rgs=False), RULES) == []


def test_siu_without_rgs_is_100() -> None:
    """RGS is required in SIU: none → 100 at RGS^1."""
    with pytest.raises(RequiredSegmentMissing) as err:
        map_siu(siu_msg("S12", rgs=False), RULES)
    assert_error(err.value, "100", Location("RGS", 1))


def test_siu_without_sch_is_100() -> None:
    """SCH is required in SIU: none → 100 at SCH^1."""
    with pytest.raises(RequiredSegmentMissing) as err:
        map_siu(build(msh("SIU^S12"), "RGS|1"), RULES)
    assert_error(err.value, "100", Location("SCH", 1))


def test_siu_key_is_sch2_else_sch1_else_101() -> None:
    """The appointment key is SCH-2 (filler), else SCH-1 (placer); both empty → 101 SCH^1^2."""
    assert appointment(map_siu(siu_msg("S12"), RULES)).key == EI("FL-1", "F")
    assert appointment(map_siu(siu_msg("S12", {2: ""}), RULES)).key == EI("PL-1", "P")
    with pytest.raises(RequiredFieldMissing) as err:
        map_siu(siu_msg("S12", {1: "", 2: '""'}), RULES)
    assert_error(err.value, "101", Location("SCH", 1, 2))


START_SOURCES = {
    "SCH": 20260301080000, "TQ1": 20260302080000, "AIS": 20260303080000,
    "AIL": 20260304080000, "AIP": 20260305080000, "AIG": 20260306080000,
}


def start_msg(present: set[str], bad: str = "") -> InboundMessage:
    """An S12 whose start fields are valued only for the `present` sources (`bad` unreadable)."""
    def value(name: str) -> str:
        if name == bad:
            return "20261340"
        return str(START_SOURCES[name]) if name in present else ""
    return siu_msg(
        "S12", {11: f"^^^{value('SCH')}" if value("SCH") else ""},
        tq1={1: "1", 7: value("TQ1")}, ais={3: "SVC", 4: value("AIS")},
        ail={3: "LOC", 6: value("AIL")}, aip={3: "DOC", 6: value("AIP")},
        aig={3: "RES", 4: "T", 8: value("AIG")})


@pytest.mark.parametrize(("present", "day"), [
    ({"SCH", "TQ1", "AIS", "AIL", "AIP", "AIG"}, 1),
    ({"TQ1", "AIS", "AIL", "AIP", "AIG"}, 2),
    ({"AIS", "AIL", "AIP", "AIG"}, 3),
    ({"AIL", "AIP", "AIG"}, 4),
    ({"AIP", "AIG"}, 5),
    ({"AIG"}, 6),
])
def test_start_time_precedence(present: set[str], day: int) -> None:
    """Start is the first non-empty of SCH-11.4, TQ1-7, AIS-4, AIL-6, AIP-6, AIG-8."""
    assert appointment(map_siu(start_msg(present), RULES)).start == datetime(2026, 3, day, 8)


def test_no_start_field_gives_no_start() -> None:
    """No start field valued → start None."""
    assert appointment(map_siu(start_msg(set()), RULES)).start is None


@pytest.mark.parametrize(("source", "location"), [
    ("SCH", Location("SCH", 1, 11)), ("TQ1", Location("TQ1", 1, 7)),
    ("AIS", Location("AIS", 1, 4)), ("AIL", Location("AIL", 1, 6)),
    ("AIP", Location("AIP", 1, 6)), ("AIG", Location("AIG", 1, 8)),
])
def test_unreadable_start_is_102_where_it_was_read(source: str, location: Location) -> None:
    """The start field used but unreadable → 102 at that field."""
    with pytest.raises(BadValue) as err:
        map_siu(start_msg({source}, bad=source), RULES)
    assert_error(err.value, "102", location)


def test_unread_start_fields_are_not_checked() -> None:
    """A bad AIS-4 behind a valued SCH-11.4 is not the start and raises nothing."""
    m = siu_msg("S12", {11: "^^^20260301080000"}, ais={3: "SVC", 4: "2024-13-45"})
    assert appointment(map_siu(m, RULES)).start == datetime(2026, 3, 1, 8)


def test_start_with_offset_is_utc() -> None:
    """An SCH-11.4 start with an offset becomes naive UTC."""
    m = siu_msg("S12", {11: "^^^20260302090000+0100"})
    assert appointment(map_siu(m, RULES)).start == datetime(2026, 3, 2, 8)


@pytest.mark.parametrize(("sch9", "sch10", "tq1", "ais", "minutes"), [
    ("30", "min^minutes^ANS+", None, None, 30),
    ("45", "", None, None, 45),
    ("2", "h^hours^ANS+", None, None, 120),
    ("1.5", "HOUR", None, None, 90),
    ("", "", {7: "20260302090000", 8: "20260302094500"}, None, 45),
    ("", "", {7: "20260302090000-0100", 8: "20260302110000+0000"}, None, 60),
    ("", "", {7: "20260302090000"}, {7: "20", 8: "min"}, 20),
    ("", "", None, {7: "1", 8: "h"}, 60),
    ("10", "wk", None, {7: "25"}, 25),
    ("", "", {7: "20260302100000", 8: "20260302090000"}, None, None),
    ("", "", None, None, None),
])
def test_duration_precedence_and_units(sch9: str, sch10: str, tq1: dict[int, str] | None,
                                       ais: dict[int, str] | None, minutes: int | None) -> None:
    """Duration: SCH-9 in SCH-10 units (minutes by default, hours ×60), then TQ1-8 minus
    TQ1-7, then AIS-7 in AIS-8 units; unknown units or an end before the start fall through."""
    m = siu_msg("S12", {9: sch9, 10: sch10}, tq1=tq1,
                ais=None if ais is None else {3: "SVC"} | ais)
    assert appointment(map_siu(m, RULES)).duration_min == minutes


@pytest.mark.parametrize(("sch", "ais", "location"), [
    ({9: "thirty"}, None, Location("SCH", 1, 9)),
    ({9: "-5"}, None, Location("SCH", 1, 9)),
    ({}, {3: "SVC", 7: "1e3"}, Location("AIS", 1, 7)),
])
def test_unreadable_duration_is_102(sch: dict[int, str], ais: dict[int, str] | None,
                                    location: Location) -> None:
    """An SCH-9 / AIS-7 duration that is not a non-negative number → 102 at that field."""
    with pytest.raises(BadValue) as err:
        map_siu(siu_msg("S12", sch, ais=ais), RULES)
    assert_error(err.value, "102", location)


def test_tq1_end_unreadable_for_duration_is_102() -> None:
    """TQ1-8 needed for the duration but unreadable → 102 at TQ1^1^8."""
    with pytest.raises(BadValue) as err:
        map_siu(siu_msg("S12", tq1={7: "20260302090000", 8: "later"}), RULES)
    assert_error(err.value, "102", Location("TQ1", 1, 8))


def test_specialty_is_ail3_then_ais3() -> None:
    """Specialty: AIL-3.1, else AIS-3.1, else empty."""
    both = siu_msg("S12", ais={3: "SVC^Service"}, ail={3: "CARD^^^SOUTH"})
    ais_only = siu_msg("S12", ais={3: "SVC^Service"})
    assert appointment(map_siu(both, RULES)).specialty == "CARD"
    assert appointment(map_siu(ais_only, RULES)).specialty == "SVC"
    assert appointment(map_siu(siu_msg("S12"), RULES)).specialty == ""


def test_order_numbers_and_patient() -> None:
    """Every SCH-26 / SCH-27 repetition is a link key; PID-3 gives the patient when present."""
    m = siu_msg("S12", {26: "R-1^PCP~O-2^ORD", 27: "F-1^FIL"})
    change = appointment(map_siu(m, RULES))
    assert (change.placer_order_numbers, change.filler_order_numbers, change.patient_ids) == (
        (EI("R-1", "PCP"), EI("O-2", "ORD")), (EI("F-1", "FIL"),), PID_IDS)
    assert appointment(map_siu(siu_msg("S12", pid=False), RULES)).patient_ids == ()


# --- dispatch ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), [
    ("ref_i12_v251.hl7", ReferralChange), ("rri_i12_v251.hl7", ReferralChange),
    ("orm_o01_v24.hl7", ReferralChange), ("omg_o19_v251.hl7", ReferralChange),
    ("osu_o51_v251.hl7", ReferralChange), ("siu_s12_v251.hl7", AppointmentChange),
])
def test_map_message_dispatches_on_msh9(name: str, kind: type) -> None:
    """MSH-9.1 picks the mapper: REF/RRI, ORM/OMG/OSU, SIU; the result equals the mapper's."""
    m = sample(name)
    changes = map_message(m, RULES)
    assert len(changes) == 1 and isinstance(changes[0], kind)
    direct = {"REF": map_ref, "RRI": map_ref, "SIU": map_siu}.get(m.header.message_type,
                                                                   map_order)
    assert changes == direct(m, RULES)


@pytest.mark.parametrize("message_type", ["ACK^I12", "ADT^A01", "MDM^T02"])
def test_map_message_ignores_other_types(message_type: str) -> None:
    """Any other message type maps to nothing."""
    assert map_message(build(msh(message_type), PID), RULES) == []


@pytest.mark.parametrize(("name", "error", "code", "location"), [
    ("content_ref_no_pid.hl7", RequiredSegmentMissing, "100", Location("PID", 1)),
    ("content_ref_no_rf1_6.hl7", RequiredFieldMissing, "101", Location("RF1", 1, 6)),
    ("content_siu_bad_ais4.hl7", BadValue, "102", Location("AIS", 1, 4)),
    ("content_orm_bad_orc1.hl7", UnknownCode, "103", Location("ORC", 1, 1)),
])
def test_map_message_content_samples(name: str, error: type[ContentError], code: str,
                                     location: Location) -> None:
    """Every mapper-side content sample gives the manifest's ledger code and location."""
    with pytest.raises(error) as err:
        map_message(sample(name), RULES)
    assert_error(err.value, code, location)


# --- the HL7 null `""` deletes, an empty field changes nothing (docs/hl7-rules.md) ------------


def test_ref_i13_null_fields_are_cleared_and_empty_ones_are_not() -> None:
    """REF^I13 with `""` in RF1-2, RF1-8 and the RT provider's PRD-4 clears priority, window end
    and specialty; RF1-7 left empty is no change."""
    msg = build(msh("REF^I13"), seg("RF1", {1: "P", 2: '""', 6: "K-1^NS", 8: '""'}),
                seg("PRD", {1: "RT", 2: "DOC^ANN", 4: '""', 7: "NPI1"}), PID)
    change = only(map_ref(msg, RULES))
    assert change.cleared == frozenset({"priority", "window_end", "specialty"})
    assert (change.priority, change.window_end, change.specialty) == ("", None, "")


@pytest.mark.parametrize("message_type", ["REF^I12", "RRI^I13", "REF^I14"])
def test_null_clears_nothing_outside_ref_i13(message_type: str) -> None:
    """Only an update (REF^I13) deletes: a new referral, an RRI or a cancel reads `""` as empty."""
    msg = ref_msg(message_type, {2: '""', 8: '""'})
    assert only(map_ref(msg, RULES)).cleared == frozenset()


def test_siu_s14_null_fields_are_cleared() -> None:
    """S14 with `""` in SCH-9 and AIS-3 and every start field null clears duration, specialty
    and start; the same message as S12 clears nothing."""
    sch, ais = {9: '""', 11: '^^^""'}, {3: '""', 4: '""'}
    change = appointment(map_siu(siu_msg("S14", sch, ais=ais), RULES))
    assert change.cleared == frozenset({"start", "duration_min", "specialty"})
    assert appointment(map_siu(siu_msg("S12", sch, ais=ais), RULES)).cleared == frozenset()


def test_siu_s14_start_is_not_cleared_while_another_start_field_has_a_value() -> None:
    """SCH-11.4 `""` but AIS-4 valued: the start is AIS-4, not deleted."""
    change = appointment(map_siu(siu_msg("S14", {11: '^^^""'}, ais={4: "20260301090000"}),
                                 RULES))
    assert "start" not in change.cleared
    assert change.start == datetime(2026, 3, 1, 9, 0)


# --- `ledger.specialties`: one map for every specialty code (docs/hl7-rules.md) ----------------

MAPPED = MappingRules(specialties={"NEURO": "NEUR", "NEUROCONS": "NEUR", "DRN": "NEUR",
                                   "CONSULT-NEUR": "NEUR", "NPI1": "CARD"})


def test_ref_specialty_is_prd_rt_4_mapped_or_as_sent() -> None:
    assert only(map_ref(ref_msg(), MAPPED)).specialty == "NEUR"
    assert only(map_ref(ref_msg(), RULES)).specialty == "NEURO"  # no map: as sent


def test_ref_without_prd_rt_4_falls_back_to_mapped_obr_4_then_the_rt_provider_id() -> None:
    """Without PRD(RT)-4, OBR-4.1 (or PR1-3.1), then the RT provider's id, each only
    through the map; nothing mapped: no specialty."""
    plain = ref_msg("REF^I12")
    no_location = build(*[ln if not ln.startswith("PRD|") else
                          seg("PRD", {1: "RT", 2: "DOC^ANN", 7: "NPI1"})
                          for ln in sample_lines(plain)])
    with_obr = build(*sample_lines(no_location), seg("OBR", {1: "1", 4: "CONSULT-NEUR^x^L"}))
    assert only(map_ref(with_obr, MAPPED)).specialty == "NEUR"
    assert only(map_ref(no_location, MAPPED)).specialty == "CARD"  # PRD-7.1 NPI1
    assert only(map_ref(no_location, RULES)).specialty == ""


def test_siu_specialty_is_the_first_mapped_of_ail_ais_aip_else_ail_or_ais_as_sent() -> None:
    """AIL-3.1, AIS-3.1, AIP-3.1 through the map, first mapped wins; without a mapped one,
    AIL-3.1, else AIS-3.1 as sent (an AIP person id is never a specialty unmapped)."""
    both = siu_msg(ail={3: "CLINIC9"}, ais={3: "NEUROCONS"}, aip={3: "DRN"})
    assert appointment(map_siu(both, MAPPED)).specialty == "NEUR"  # AIS mapped, AIL not
    assert appointment(map_siu(both, RULES)).specialty == "CLINIC9"
    only_aip = siu_msg(aip={3: "DRN^DOC"})
    assert appointment(map_siu(only_aip, MAPPED)).specialty == "NEUR"
    assert appointment(map_siu(only_aip, RULES)).specialty == ""


def test_order_specialty_through_order_specialties_then_specialties() -> None:
    assert only(map_order(order_msg(), RULES)).specialty == "NEUR"
    assert only(map_order(order_msg(), MAPPED)).specialty == "NEUR"
    assert only(map_order(order_msg(obr={4: "OTHER"}), MAPPED)).specialty == ""


def sample_lines(msg: InboundMessage) -> list[str]:
    """The message's segments as lines again (MSH rebuilt with its separator)."""
    return ["|".join(s if s[0] != "MSH" else (s[0], *s[2:])) for s in msg.segments]


@pytest.mark.parametrize("control", ["IP", "ZZ", "N W"])
def test_orc1_outside_table_0119_is_103_and_every_table_code_is_taken(control: str) -> None:
    """A code outside table 0119 (IP is an ORC-5 order status, not an order control) is
    AE 103 at ORC-1; a table code this engine does not act on (RE, observations to follow) is
    recorded without a change, not rejected."""
    with pytest.raises(UnknownCode) as err:
        map_order(order_msg("ORM^O01", {1: control}), RULES)
    assert_error(err.value, "103", Location("ORC", 1, 1))


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


def test_duration_records_its_source_and_names_sources_that_disagree() -> None:
    """The first of SCH-9/10, TQ1-8 minus TQ1-7, AIS-7/8 is the duration and its field is
    recorded; later sources more than a minute off are named; a later unreadable one is
    ignored (only the one used must read)."""
    agree = appointment(map_siu(siu_msg(sch={9: "30", 10: "min"}, ais={7: "31", 8: "min"}),
                                RULES))
    assert (agree.duration_min, agree.duration_source, agree.duration_conflict) == (
        30, "SCH-9", "")
    clash = appointment(map_siu(siu_msg(sch={9: "30", 10: "min"},
                                        tq1={7: "20260302090000", 8: "20260302100000"},
                                        ais={7: "45", 8: "min"}), RULES))
    assert (clash.duration_min, clash.duration_source, clash.duration_conflict) == (
        30, "SCH-9", "SCH-9 30 min, TQ1-8 60 min, AIS-7 45 min")
    later_bad = appointment(map_siu(siu_msg(sch={9: "30", 10: "min"},
                                            ais={7: "forty", 8: "min"}), RULES))
    assert (later_bad.duration_min, later_bad.duration_source, later_bad.duration_conflict) \
        == (30, "SCH-9", "")
    with pytest.raises(BadValue):
        map_siu(siu_msg(sch={9: "half an hour"}, ais={7: "45", 8: "min"}), RULES)


def test_referred_to_provider_of_an_order_comes_from_the_configured_field() -> None:
    """No standard ORC/OBR field names the referred-to provider; `ledger.referred_to`
    says which does (here OBR-28), read in each order's own OBR, as role RT; without it,
    none.  Its id, or OBR-24, gives the specialty through `ledger.specialties` when OBR-4
    maps to nothing."""
    rules = MappingRules(referred_to="OBR.28", specialties={"NPI9": "CARD", "NRO": "NEUR"})
    msg = build(msh("ORM^O01"), PID,
                seg("ORC", {1: "NW", 2: "P-1^PL"}), seg("OBR", {1: "1", 4: "X1", 28: "NPI9^SPEC^SAM"}),
                seg("ORC", {1: "NW", 2: "P-2^PL"}), seg("OBR", {1: "2", 4: "X2", 24: "NRO"}))
    first, second = map_order(msg, rules)
    assert isinstance(first, ReferralChange) and isinstance(second, ReferralChange)
    assert [(p.role, p.id, p.name) for p in first.providers] == [("RT", "NPI9", "SPEC^SAM")]
    assert (first.specialty, second.specialty, second.providers) == ("CARD", "NEUR", ())
    assert only(map_order(order_msg(obr={28: "NPI9^SPEC^SAM"}), RULES)).providers == ()


def test_sch25_is_kept_in_standard_delimiters_from_a_custom_set() -> None:
    """A sender with `#$*?%` delimiters: SCH-25 `Scheduled$$CSI` is kept as
    `Scheduled^^CSI`, and a `^` inside its text is escaped as `\\S\\`."""
    msg = parse(b"MSH#$*?%#SCHED#SOUTH#REFTRACK#HUB#20260101##SIU$S14#C1#P#2.5.1\r"
                b"SCH#PL-1#FL-1" + b"#" * 23 + b"Sched^uled$$CSI\rRGS#1#A\r")
    assert appointment(map_siu(msg, RULES)).filler_status == "Sched\\S\\uled^^CSI"
