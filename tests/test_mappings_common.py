"""The mappers' shared parts (docs/hl7-rules.md): the field readers (DTM, EI, CX), dispatch on
MSH-9, the HL7 null `""` against an empty field, and `ledger.specialties` across families."""

from __future__ import annotations

from datetime import datetime

import pytest
from mapping_helpers import (
    MAPPED,
    PID,
    RULES,
    appointment,
    assert_error,
    build,
    msh,
    only,
    order_msg,
    ref_msg,
    sample,
    sample_lines,
    seg,
    siu_msg,
)

from engine.errors import ContentError, Location
from engine.mappings.changes import (
    EI,
    AppointmentChange,
    BadValue,
    PatientId,
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
from engine.mappings.scheduling import map_siu

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
