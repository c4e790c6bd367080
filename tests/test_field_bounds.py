"""Every number the mappers read from a message is ASCII digits and bounded (docs/hl7-rules.md: an
unreadable or implausible value in a field we need is AE 102 at that field).

Non-ASCII digits ("²", Arabic-Indic) are no HL7 number, a date/time outside the years 1800-2999
is no date/time, an NM is at most 16 characters, and an appointment lasts at most a year.  Error
texts name the field and the rule, never the value.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from engine.errors import Location
from engine.mappings.changes import AppointmentChange, BadValue, ReferralChange
from engine.mappings.dispatch import map_message
from engine.mappings.fields import parse_dtm, read_nm
from engine.mappings.rules import MappingRules
from engine.mappings.scheduling import map_siu
from engine.parsing import InboundMessage, parse
from engine.parsing.escape import unescape
from engine.parsing.message import STANDARD, Path

ARABIC_2026 = "\u0662\u0660\u0662\u0666"  # "2026" in Arabic-Indic digits
RULES = MappingRules()
MAX_DURATION_MIN = 366 * 24 * 60  # a year of minutes


def siu(sch9: str = "", sch10: str = "", *, ais7: str = "", tq1: tuple[str, str] = ("", ""),
        start: str = "20260301090000") -> InboundMessage:
    """A minimal SIU^S12 with the given duration fields (SCH-9/10, AIS-7, TQ1-7/8)."""
    segments = [
        "MSH|^~\\&|S|F|REFTRACK|HUB|20260101||SIU^S12^SIU_S12|C1|P|2.5.1",
        "|".join(["SCH", "PL-1^P", "FL-1^F", *[""] * 6, sch9, sch10, f"^^^{start}",
                  *[""] * 13, "Booked"]),
    ]
    if any(tq1):
        segments.append(f"TQ1|1||||||{tq1[0]}|{tq1[1]}")
    segments += ["PID|1||123^^^HOSP^MR", "RGS|1", f"AIS|1||CONSULT||||{ais7}"]
    return parse("\r".join(segments).encode())


def appointment(msg: InboundMessage) -> AppointmentChange:
    (change,) = map_siu(msg, RULES)
    assert isinstance(change, AppointmentChange)
    return change


@pytest.mark.parametrize("value", [
    "20260302\u00b2", "\u00b2026", ARABIC_2026 + "0302", "2026\u0660\u0663\u0660\u0662",
    "\uff12\uff10\uff12\uff16",  # fullwidth
    "202603020930-\u0660\u0665\u0660\u0660",
])
def test_dtm_takes_ascii_digits_only(value: str) -> None:
    """A DTM written with digits other than ASCII 0-9 is not a date/time."""
    assert parse_dtm(value) is None


@pytest.mark.parametrize(("value", "expected"), [
    ("0000", None), ("00010101", None), ("1799", None), ("9999", None), ("99991231235959-1400", None),
    ("3000", None), ("1800", datetime(1800, 1, 1)), ("29991231", datetime(2999, 12, 31)),
    ("00010101000000+1400", None),
])
def test_dtm_years_are_1800_to_2999(value: str, expected: datetime | None) -> None:
    """Years outside 1800-2999 (placeholders such as 0000 or 9999) are no date/time, and an
    offset near the ends of the calendar never overflows."""
    assert parse_dtm(value) == expected


def test_a_start_in_year_9999_is_102_at_its_field() -> None:
    """An SIU whose only start is in year 9999 is AE 102 at SCH^1^11, value not in the text."""
    with pytest.raises(BadValue) as err:
        map_siu(siu(start="99991231235959-1400"), RULES)
    assert (err.value.code, err.value.location) == ("102", Location("SCH", 1, 11))
    assert "9999" not in err.value.reason


@pytest.mark.parametrize("value", [
    "\u00b2", "1\u00b2", "\u0663\u0660", "\uff13\uff10", "3\u0660", "1e3", "0x10", " 1 2",
    "1" * 17, "+" + "9" * 16, "0." + "0" * 15,
])
def test_nm_takes_ascii_digits_and_at_most_16_characters(value: str) -> None:
    """An NM with non-ASCII digits, an exponent, or more than 16 characters is 102."""
    msg = siu(value)
    with pytest.raises(BadValue) as err:
        read_nm(msg, "SCH.9", Location("SCH", 1, 9))
    assert (err.value.code, err.value.location) == ("102", Location("SCH", 1, 9))
    assert err.value.reason.startswith("SCH-9 is not an HL7 number")


def test_nm_of_16_characters_is_read() -> None:
    """Sixteen characters is still a number (the v2.5 NM length)."""
    assert read_nm(siu("-" + "1" * 15), "SCH.9", Location("SCH", 1, 9)) == -int("1" * 15)


@pytest.mark.parametrize(("sch9", "sch10"), [
    ("99999999999999999999", ""), (str(MAX_DURATION_MIN + 1), "MIN"),
    ("8785", "HOURS"), ("9999999999999999", "H"),
])
def test_an_implausible_sch9_duration_is_102_at_sch9(sch9: str, sch10: str) -> None:
    """SCH-9 beyond a year of minutes (or beyond an NM) is AE 102 at SCH^1^9: it would not
    fit the ledger's INTEGER column; the text names the field and the rule, not the value."""
    with pytest.raises(BadValue) as err:
        map_siu(siu(sch9, sch10), RULES)
    assert (err.value.code, err.value.location) == ("102", Location("SCH", 1, 9))
    assert sch9 not in err.value.reason


def test_an_implausible_ais7_duration_is_102_at_ais7() -> None:
    """AIS-7 beyond a year of minutes, as the only duration, is AE 102 at AIS^1^7."""
    with pytest.raises(BadValue) as err:
        map_siu(siu(ais7=str(MAX_DURATION_MIN + 1)), RULES)
    assert err.value.reason == (f"AIS-7 is not a plausible duration (more than "
                                f"{MAX_DURATION_MIN} minutes)")
    assert err.value.location == Location("AIS", 1, 7)


def test_a_year_is_still_a_duration() -> None:
    """Exactly the bound (366 days of minutes) is a duration."""
    assert appointment(siu(str(MAX_DURATION_MIN))).duration_min == MAX_DURATION_MIN


def test_a_tq1_span_longer_than_a_year_gives_no_duration() -> None:
    """TQ1-7..TQ1-8 spanning more than a year bounds a series, not an appointment: like an end
    before the start, it gives no duration, and the later AIS-7 is used."""
    change = appointment(siu(ais7="30", tq1=("20260301", "20280301")))
    assert (change.duration_min, change.duration_source) == (30, "AIS-7")


@pytest.mark.parametrize("body", ["X0D  \\", "X 0D \\", "X  0D\\", "X\u0660D\\"])
def test_hex_escapes_take_ascii_hex_digits_only(body: str) -> None:
    """`\\Xhh\\` is pairs of ASCII hex digits; anything else inside is kept as data."""
    value = "\\" + body
    assert unescape(value, STANDARD) == value


@pytest.mark.parametrize("path", ["PID.\u0663", "PID[\u0662].3", "PID.3.\u00b2"])
def test_paths_take_ascii_digits_only(path: str) -> None:
    """An HL7 path's indexes are ASCII digits."""
    with pytest.raises(KeyError):
        Path.parse(path)


# --- text that must fit the ledger's columns (PostgreSQL refuses longer values) --------------

REF = ("MSH|^~\\&|S|F|REFTRACK|HUB|20260101||REF^I12|C1|P|2.5.1",
       "RF1|P|R|Med||O|{key}|||||{ext}", "PRD|RT|DOC^A|||||NPI1^NPI", "PID|1||{mrn}^^^HOSP^MR")


def ref(key: str = "REF-1^ISSUER", ext: str = "", mrn: str = "123") -> InboundMessage:
    """A minimal REF^I12 with the given RF1-6, RF1-11 and PID-3 CX.1."""
    lines = [line.format(key=key, ext=ext, mrn=mrn) for line in REF]
    return parse("\r".join(lines).encode())


@pytest.mark.parametrize(("kwargs", "where"), [
    ({"key": "K" * 200}, Location("RF1", 1, 6)),
    ({"key": "K^" + "A" * 200}, Location("RF1", 1, 6)),
    ({"ext": "E" * 200}, Location("RF1", 1, 11)),
    ({"mrn": "9" * 200}, Location("PID", 1, 3)),
])
def test_an_identifier_longer_than_its_column_is_102(kwargs: dict[str, str],
                                                     where: Location) -> None:
    """An id part over 199 characters would fail the batch's commit on PostgreSQL: AE 102 at
    its field (cut, it could match another id), the text naming the limit, not the value."""
    with pytest.raises(BadValue) as err:
        map_message(ref(**kwargs), RULES)
    assert (err.value.code, err.value.location) == ("102", where)
    assert "is longer than 199 characters" in err.value.reason


SIU = (b"MSH|^~\\&|S|F|REFTRACK|HUB|20260101||SIU^S12^SIU_S12|C1|P|2.5.1",
       b"SCH|PL-1^P|FL-1^F", b"RGS|1", b"AIL|1||" + b"L" * 100)


def test_an_sch2_longer_than_its_column_is_102() -> None:
    """The appointment key (SCH-2) over 199 characters: AE 102 at SCH^1^2."""
    msg = parse(b"\r".join(seg.replace(b"FL-1^F", b"F" * 200 + b"^F") for seg in SIU))
    with pytest.raises(BadValue) as err:
        map_message(msg, RULES)
    assert err.value.location == Location("SCH", 1, 2)


def test_priority_and_specialty_are_cut_to_their_columns() -> None:
    """Descriptive codes are kept as sent where they fit and cut where they do not, like SCH-25:
    RF1-2 to 8 characters, a specialty to 64."""
    lines = list(REF)
    lines[1] = "RF1|P|" + "R" * 20 + "|Med||O|{key}"
    lines[2] = "PRD|RT|DOC^A||" + "S" * 100 + "|||NPI1^NPI"
    msg = parse("\r".join(line.format(key="K1", ext="", mrn="1") for line in lines).encode())
    (change,) = map_message(msg, RULES)
    assert isinstance(change, ReferralChange)
    assert (change.priority, len(change.specialty)) == ("R" * 8, 64)
    (appt,) = map_message(parse(b"\r".join(SIU)), RULES)
    assert isinstance(appt, AppointmentChange) and appt.specialty == "L" * 64


@pytest.mark.parametrize(("kwargs", "where"), [
    ({"key": "K\x001"}, Location("RF1", 1, 6)),
    ({"ext": "E\x00"}, Location("RF1", 1, 11)),
    ({"mrn": "\x00123"}, Location("PID", 1, 3)),
])
def test_an_identifier_with_a_nul_is_102(kwargs: dict[str, str], where: Location) -> None:
    """PostgreSQL keeps no NUL in text (the batch's commit would fail): an id holding one is
    AE 102 at its field."""
    with pytest.raises(BadValue) as err:
        map_message(ref(**kwargs), RULES)
    assert (err.value.code, err.value.location) == ("102", where)
    assert err.value.reason.endswith("or holds a NUL")


def test_descriptive_codes_lose_their_nuls() -> None:
    """A NUL in RF1-2, a specialty or SCH-25 is dropped; the rest is kept."""
    lines = list(REF)
    lines[1] = "RF1|P|R\x00|Med||O|{key}"
    msg = parse("\r".join(line.format(key="K1", ext="", mrn="1") for line in lines).encode())
    (change,) = map_message(msg, RULES)
    assert isinstance(change, ReferralChange) and change.priority == "R"
    siu_lines = [*SIU[:2], b"RGS|1", b"AIL|1||NEU\x00RO"]
    siu_lines[1] += b"|" * 23 + b"Boo\x00ked"
    (appt,) = map_message(parse(b"\r".join(siu_lines)), RULES)
    assert isinstance(appt, AppointmentChange)
    assert (appt.specialty, appt.filler_status) == ("NEURO", "Booked")
