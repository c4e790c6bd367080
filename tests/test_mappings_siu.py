"""The SIU mapper (docs/hl7-rules.md): scheduling messages to appointment changes (status, start,
duration, specialty) and the AE content errors each SIU sample must give."""

from __future__ import annotations

from datetime import datetime

import pytest
from mapping_helpers import (
    PID_IDS,
    RULES,
    appointment,
    assert_error,
    build,
    msh,
    sample,
    siu_msg,
)

from engine.errors import Location
from engine.mappings.changes import (
    BOOKED,
    CANCELLED,
    COMPLETE_APPT,
    DELETED,
    EI,
    KEEP,
    NOSHOW,
    AppointmentChange,
    BadValue,
    PatientId,
    RequiredFieldMissing,
    RequiredSegmentMissing,
)
from engine.mappings.scheduling import map_siu
from engine.parsing import InboundMessage, parse

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



def test_sch25_is_kept_in_standard_delimiters_from_a_custom_set() -> None:
    """A sender with `#$*?%` delimiters: SCH-25 `Scheduled$$CSI` is kept as
    `Scheduled^^CSI`, and a `^` inside its text is escaped as `\\S\\`."""
    msg = parse(b"MSH#$*?%#SCHED#SOUTH#REFTRACK#HUB#20260101##SIU$S14#C1#P#2.5.1\r"
                b"SCH#PL-1#FL-1" + b"#" * 23 + b"Sched^uled$$CSI\rRGS#1#A\r")
    assert appointment(map_siu(msg, RULES)).filler_status == "Sched\\S\\uled^^CSI"
