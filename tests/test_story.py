"""The story corpus (`samples/story/`, told in its README) replayed over real loopback TCP into a
fresh ledger, on SQLite and on PostgreSQL: every ACK, the manual link of the ambiguous booking,
and the final state of every referral and appointment read back through the JSON CLI.

Projections are compared whole (every row, in order), so a missing or an extra referral or
appointment fails the test as surely as a wrong status.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from enginectl import SAMPLES, Engine, cli_stdout, write_config

from engine.mllp.blocking import MLLPClient
from engine.parsing import InboundMessage, parse

STORY = SAMPLES / "story"
FILES = sorted(p.name for p in STORY.glob("*.hl7"))
ORDER_SPECIALTIES = {"CONSULT-NEUR": "NEUR", "CONSULT-DERM": "DERM"}

# The files the ledger answers AE: (ERR-3, ERR location).  Every other file gets AA, except
# the 360X OMG with MSH-15/16 = NE/NE, which gets no ACK at all.
AE = {
    "040_orm_nw_dup_quebec_ae205.hl7": ("205", "ORC^1^2"),
    "070_ref_i12_nopid_ae100.hl7": ("100", "PID^1"),
    "110_orm_badorc1_romeo_ae103.hl7": ("103", "ORC^1^1"),
    "170_ref_i12_norf16_ae101.hl7": ("101", "RF1^1^6"),
    "240_siu_s12_badais4_ae102.hl7": ("102", "AIS^1^4"),
    "320_ref_i13_unknown_ae204.hl7": ("204", "RF1^1^6"),
}
NO_ACK = frozenset({"060_omg_o19_nene_sierra.hl7"})

# The story is dated September 2026 to March 2027 and replayed now, on the wall clock: a
# referral received after its window ended would be expired on arrival (docs/ledger.md "Late
# arrivals").  So every date in it is moved on by whole years, to begin next year.
YEARS = max(0, datetime.now(UTC).year + 1 - 2026)
_DATE = re.compile(rb"(?<![0-9])(202[67])(?=[0-9]{4})")


def later(date: str) -> str:
    """An ISO date or date-time of the story, moved on by YEARS."""
    return f"{int(date[:4]) + YEARS}{date[4:]}"

AMBIGUOUS, CHOSEN = "ST-A-6501^SCHED", "ST-R-2007^PCPEHR"


def payload(name: str) -> bytes:
    """A story file as a sender puts it on the wire: LF segment ends become CR; every date (an
    HL7 DTM from 2026 or 2027) moved on by YEARS."""
    raw = (STORY / name).read_bytes().replace(b"\n", b"\r")
    return _DATE.sub(lambda m: str(int(m[1]) + YEARS).encode(), raw)


def expected_acks(name: str) -> list[tuple[str, str, str]]:
    """(MSA-1, ERR-3, location) of every ACK the file should get."""
    if name in NO_ACK:
        return []
    if name in AE:
        return [("AE", *AE[name])]
    return [("AA", "", "")]


def ack_fields(ack: InboundMessage) -> tuple[str, str, str]:
    """MSA-1, the table-0357 code and the location, from ERR-2/3 (v2.5+) or ERR-1 (before)."""
    code = ack["ERR.3"] or ack["ERR.1.4"]
    where = ack.raw("ERR.2") or "^".join(ack.raw("ERR.1").split("^")[:3])
    return ack["MSA.1"], code, where


# --- expected final state --------------------------------------------------------------------


def _patients(n: int, home: str = "NORTHCLINIC") -> list[str]:
    """PID-3 pairs as the referrer sent them: its own MRN first, then SOUTHHOSP's."""
    return [f"1000{n}^{home}", f"2000{n}^SOUTHHOSP"]


def _referral(rid: str, status: str, source: str, priority: str, specialty: str,
              patients: list[str], appointments: list[str], window: tuple[str, str] | None,
              diagnoses: list[str], *, external: list[str] | None = None,
              filler: str | None = None, review: bool = False) -> dict[str, Any]:
    start, end = ((f"{later(window[0])}T00:00:00Z", f"{later(window[1])}T00:00:00Z") if window
                  else (None, None))
    return {"id": rid, "status": status, "source": source, "priority": priority,
            "specialty": specialty, "patient_ids": patients, "external_ids": external or [],
            "filler_order_number": filler, "appointments": appointments, "window_start": start,
            "window_end": end, "review": review, "diagnoses": diagnoses}


REFERRALS = [  # in the order they were opened
    _referral("ST-R-2001^PCPEHR", "no_show", "REF", "R", "NEURO", _patients(21),
              ["ST-A-6001^SCHED", "ST-A-6002^SCHED"], ("2026-09-01", "2027-03-01"),
              ["G43.909"], external=["SH-R-9001^SOUTHHOSP"]),
    _referral("ST-R-2002^PCPEHR", "closed", "REF", "S", "CARDIO", _patients(22),
              ["ST-A-6101^SCHED"], ("2026-09-02", "2026-12-02"), ["R00.2"]),
    _referral("ST-ORD-3001^ORDERS", "completed", "ORM", "R", "NEUR", _patients(23, "WESTMED"),
              ["ST-A-6201^SCHED"], None, ["G40.909"], filler="ST-F-8001^SCHED"),
    _referral("ST-REF-3003^ORDERS", "scheduled", "OMG", "R", "", _patients(25, "WESTMED"),
              ["ST-A-6801^SCHED"], ("2026-09-03", "2026-10-03"), ["M54.50"],
              filler="ST-F-8003^SCHED"),
    _referral("ST-R-2005^PCPEHR", "scheduled", "REF", "R", "DERM", _patients(24),
              ["ST-A-6401^SCHED"], ("2026-09-04", "2027-03-04"), ["L30.9"]),
    _referral("ST-ORD-3002^ORDERS", "cancelled", "ORM", "R", "DERM", _patients(26, "WESTMED"),
              ["ST-A-6301^SCHED"], None, ["L70.0"], review=True),
    _referral("ST-R-2006^PCPEHR", "pending", "REF", "R", "ENT", _patients(27), [],
              ("2026-09-15", "2027-03-15"), ["H91.90"]),
    _referral("ST-R-2007^PCPEHR", "scheduled", "REF", "R", "ENT", _patients(27),
              ["ST-A-6501^SCHED"], ("2026-09-20", "2027-03-20"), ["J32.9"]),
    _referral("ST-R-2008^PCPEHR", "cancelled", "REF", "R", "DERM", _patients(29), [],
              ("2026-09-23", "2026-10-10"), ["L40.9"]),
    _referral("ST-R-2009^PCPEHR", "rejected", "REF", "S", "GI", _patients(30), [],
              ("2026-10-02", "2027-04-02"), ["K92.2"]),
]
REFERRAL_KEYS = {"id", "status", "source", "priority", "specialty", "patient_ids",
                 "external_ids", "filler_order_number", "appointments", "window_start",
                 "window_end", "providers", "diagnoses", "review", "received_at", "updated_at",
                 "due_at", "days_overdue"}
# Days to reach `scheduled`, by the referral's current priority (S 1, A 2, R 14), counted from
# when it was received.  ZULU (ST-R-2009) was opened R and raised to S by an I13: its deadline
# tightens to one day.
OPENING_DEADLINE_DAYS = {"ST-R-2002^PCPEHR": 1, "ST-R-2009^PCPEHR": 1}


def _appointment(aid: str, status: str, start: str, minutes: int, specialty: str,
                 patients: list[str], referral: str | None = None, via: str | None = None,
                 *, match: str | None = None, candidates: list[str] | None = None
                 ) -> dict[str, Any]:
    return {"id": aid, "status": status, "start": later(start), "duration_min": minutes,
            "specialty": specialty, "match": match or ("matched" if referral else "unmatched"),
            "referral": referral, "via": via, "candidates": candidates or [],
            "patient_ids": patients}


def _siu_patients(n: int, home: str = "NORTHCLINIC") -> list[str]:
    """PID-3 pairs as the scheduler sends them: SOUTHHOSP's MRN first."""
    return list(reversed(_patients(n, home)))


APPOINTMENTS = [  # in the order they were first seen
    _appointment("ST-A-6401^SCHED", "booked", "2026-10-20T14:00:00Z", 45, "DERM",
                 _siu_patients(24), "ST-R-2005^PCPEHR", "SCH-26"),
    _appointment("ST-A-6001^SCHED", "cancelled", "2026-10-05T09:00:00Z", 30, "NEURO",
                 _siu_patients(21), "ST-R-2001^PCPEHR", "SCH-26"),
    _appointment("ST-A-6101^SCHED", "complete", "2026-10-22T14:00:00Z", 30, "CARDIO",
                 _siu_patients(22), "ST-R-2002^PCPEHR", "fallback"),
    _appointment("ST-A-6201^SCHED", "booked", "2026-10-01T11:00:00Z", 60, "NEURO",
                 _siu_patients(23, "WESTMED"), "ST-ORD-3001^ORDERS", "SCH-26"),
    _appointment(AMBIGUOUS, "booked", "2026-11-16T10:00:00Z", 30, "ENT", _siu_patients(27),
                 CHOSEN, "manual"),
    _appointment("ST-A-6601^SCHED", "booked", "2026-11-05T09:00:00Z", 30, "NEURO",
                 _siu_patients(28)),
    _appointment("ST-A-6701^SCHED", "booked", "2026-10-20T09:00:00Z", 30, "DERM",
                 _siu_patients(29)),
    _appointment("ST-A-6801^SCHED", "booked", "2026-10-01T10:00:00Z", 30, "ORTHO",
                 _siu_patients(25, "WESTMED"), "ST-REF-3003^ORDERS", "SCH-26"),
    _appointment("ST-A-6002^SCHED", "noshow", "2026-10-20T09:30:00Z", 30, "NEURO",
                 _siu_patients(21), "ST-R-2001^PCPEHR", "SCH-27"),
    _appointment("ST-A-6301^SCHED", "booked", "2026-10-30T09:00:00Z", 30, "DERM",
                 _siu_patients(26, "WESTMED"), "ST-ORD-3002^ORDERS", "SCH-26"),
]
APPOINTMENT_KEYS = {"id", "status", "start", "duration_min", "specialty", "match", "referral",
                    "via", "candidates", "patient_ids", "created_at"}
WORKLIST_BEFORE_LINK = [
    (AMBIGUOUS, "ambiguous", None, ["ST-R-2006^PCPEHR", "ST-R-2007^PCPEHR"]),
    ("ST-A-6601^SCHED", "unmatched", None, []),
    ("ST-A-6701^SCHED", "unmatched", None, []),
    # OSCAR missed ST-A-6002: the no-show waits to be booked again.
    ("ST-A-6002^SCHED", "matched", "ST-R-2001^PCPEHR", []),
]
WORKLIST_AFTER_LINK = WORKLIST_BEFORE_LINK[1:]
# Why each row is on the worklist (its `kind` and the start of its `reason`).
WORKLIST_REASONS = [
    ("ambiguous", "ambiguous between ST-R-2006^PCPEHR and ST-R-2007^PCPEHR"),
    ("no_referral", "no open referral for this patient and specialty"),  # WHISKEY
    ("no_referral", "no open referral for this patient and specialty"),  # XRAY's is cancelled
    ("no_show", "no-show for referral ST-R-2001^PCPEHR"),
]

# (event, status before, status after, appointment, MSH-10) of every history row.
HISTORY = {
    # Looked up by its RF1-11 key, SOUTHHOSP's id: any key finds the referral.
    "SH-R-9001^SOUTHHOSP": ("ST-R-2001^PCPEHR", [
        ("REF^I12 open", None, "pending", None, "ST-010-REF-I12"),
        ("RRI^I12 accept", "pending", "accepted", None, "ST-080-RRI-I12"),
        ("link via SCH-26", None, None, "ST-A-6001^SCHED", "ST-120-SIU-S12"),
        ("SIU^S12", "accepted", "scheduled", "ST-A-6001^SCHED", "ST-120-SIU-S12"),
        ("SIU^S15 cancelled", "booked", "cancelled", "ST-A-6001^SCHED", "ST-250-SIU-S15"),
        ("SIU^S15", "scheduled", "accepted", "ST-A-6001^SCHED", "ST-250-SIU-S15"),
        ("link via SCH-27", None, None, "ST-A-6002^SCHED", "ST-280-SIU-S12"),
        ("SIU^S12", "accepted", "scheduled", "ST-A-6002^SCHED", "ST-280-SIU-S12"),
        ("SIU^S26 noshow", "booked", "noshow", "ST-A-6002^SCHED", "ST-360-SIU-S26"),
        ("SIU^S26", "scheduled", "no_show", "ST-A-6002^SCHED", "ST-360-SIU-S26"),
    ]),
    "ST-R-2002^PCPEHR": ("ST-R-2002^PCPEHR", [
        ("REF^I12 open", None, "pending", None, "ST-020-REF-I12-V23"),
        ("link via fallback", None, None, "ST-A-6101^SCHED", "ST-130-SIU-S12-V23"),
        ("SIU^S12", "pending", "scheduled", "ST-A-6101^SCHED", "ST-130-SIU-S12-V23"),
        ("SIU^S13 booked", "booked", "booked", "ST-A-6101^SCHED", "ST-260-SIU-S13-V23"),
        ("SIU^S13", "scheduled", "rescheduled", "ST-A-6101^SCHED", "ST-260-SIU-S13-V23"),
        ("SIU^S14 complete", "booked", "complete", "ST-A-6101^SCHED", "ST-370-SIU-S14-V23"),
        ("SIU^S14", "rescheduled", "completed", "ST-A-6101^SCHED", "ST-370-SIU-S14-V23"),
        ("RRI^I12 close", "completed", "closed", None, "ST-380-RRI-NOTE"),
    ]),
    "ST-ORD-3002^ORDERS": ("ST-ORD-3002^ORDERS", [
        ("ORM^O01 open", None, "pending", None, "ST-100-ORM-NW"),
        ("ORM^O01 cancel", "pending", "cancelled", None, "ST-160-ORM-CA"),
        ("link via SCH-26", None, None, "ST-A-6301^SCHED", "ST-340-SIU-S12"),
        ("review", None, None, "ST-A-6301^SCHED", "ST-340-SIU-S12"),
        ("SIU^S12", "cancelled", "cancelled", "ST-A-6301^SCHED", "ST-340-SIU-S12"),
    ]),
    CHOSEN: (CHOSEN, [
        ("REF^I12 open", None, "pending", None, "ST-190-REF-I12"),
        ("link via manual", None, None, AMBIGUOUS, None),
        ("SIU^manual", "pending", "scheduled", AMBIGUOUS, None),
    ]),
}


# --- helpers ---------------------------------------------------------------------------------


def cli_json(config: Path, *args: str) -> Any:
    return json.loads(cli_stdout(config, *args, "--json"))


def replay(port: int) -> dict[str, list[tuple[str, str, str]]]:
    """Send every story file in order on one connection; the ACK fields each got."""
    got: dict[str, list[tuple[str, str, str]]] = {}
    with MLLPClient("127.0.0.1", port) as client:
        for name in FILES:
            wanted = expected_acks(name)
            acks = client.exchange(payload(name), max(len(wanted), 1),
                                   timeout=10 if wanted else 0.5)
            control_id = parse(payload(name))["MSH.10"]
            assert [parse(a)["MSA.2"] for a in acks] == [control_id] * len(acks), name
            got[name] = [ack_fields(parse(a)) for a in acks]
    return got


def project_referral(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in REFERRALS[0]}


def project_appointment(a: dict[str, Any]) -> dict[str, Any]:
    return {k: a[k] for k in APPOINTMENTS[0]}


def worklist(config: Path) -> list[tuple[str, str, str | None, list[str]]]:
    return [(a["id"], a["match"], a["referral"], a["candidates"])
            for a in cli_json(config, "worklist")]


# --- the test --------------------------------------------------------------------------------


def test_story_corpus_final_state_through_the_cli(db_url: str, tmp_path: Path) -> None:
    """Replaying the story corpus gives each file its ACK (AA, AE with the right ERR-3 and
    location, or nothing for NE/NE); the ambiguous booking waits on the worklist until
    `hl7-engine link` resolves it; then every referral and appointment has exactly the state the
    story README gives, histories included; and resending the whole corpus changes nothing."""
    assert len(FILES) == 38, FILES
    config = write_config(tmp_path, db_url, ledger={"order_specialties": ORDER_SPECIALTIES})
    engine = Engine(config).start()
    try:
        got = replay(engine.port)
        assert got == {name: expected_acks(name) for name in FILES}
        assert worklist(config) == WORKLIST_BEFORE_LINK
        reasons = [(w["kind"], w["reason"]) for w in cli_json(config, "worklist")]
        assert [(kind, reason[:len(want)]) for (kind, reason), (_, want) in zip(
            reasons, WORKLIST_REASONS, strict=True)] == WORKLIST_REASONS

        linked = cli_stdout(config, "link", AMBIGUOUS, CHOSEN)
        assert linked.strip() == (f"appointment {AMBIGUOUS} linked to referral {CHOSEN} "
                                  "(manual)")

        referrals = cli_json(config, "referrals")
        appointments = cli_json(config, "appointments")
        assert [set(r) for r in referrals] == [REFERRAL_KEYS] * len(referrals)
        assert [project_referral(r) for r in referrals] == REFERRALS
        assert [set(a) for a in appointments] == [APPOINTMENT_KEYS] * len(appointments)
        assert [project_appointment(a) for a in appointments] == APPOINTMENTS
        assert worklist(config) == WORKLIST_AFTER_LINK
        assert_deadlines(referrals)
        for key, (rid, rows) in HISTORY.items():
            found = cli_json(config, "referral", key)
            assert found["id"] == rid
            assert project_referral(found) == project_referral(
                next(r for r in referrals if r["id"] == rid))
            assert [(h["event"], h["status_before"], h["status_after"], h["appointment"],
                     h["control_id"]) for h in found["history"]] == rows, key

        # Every file again: each is a retransmission, answered as before and applied never.
        assert replay(engine.port) == got
        assert cli_json(config, "referrals") == referrals
        assert cli_json(config, "appointments") == appointments
    finally:
        assert engine.stop() == 0


def assert_deadlines(referrals: list[dict[str, Any]]) -> None:
    """due_at is received_at plus the deadline of the referral's opening priority."""
    for r in referrals:
        days = OPENING_DEADLINE_DAYS.get(r["id"], 14)
        due = datetime.fromisoformat(r["due_at"]) - datetime.fromisoformat(r["received_at"])
        assert due == timedelta(days=days), r["id"]
