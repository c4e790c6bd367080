"""The ledger's rules on a state in memory, with no database: matching (by key, by patient,
ambiguous, orphans), the transitions an appointment causes, the 204/205 checks, and a later
change in a batch seeing an earlier one's effect."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from engine.errors import Location
from engine.ledger import lifecycle as lc
from engine.ledger import rules
from engine.ledger.settings import LedgerSettings
from engine.ledger.state import Appointment, Ledger, Referral, dumps, is_new, providers_json
from engine.mappings import changes as c
from engine.mappings.changes import EI, AppointmentChange, Change, PatientId, ReferralChange

NOW = datetime(2026, 3, 1, 9, 0)
MRN = PatientId("MRN-1", "HOSP")
HERE = Location.parse("RF1^1^6")


def _ref(key: str, event: str = c.OPEN, **values: object) -> ReferralChange:
    return ReferralChange(event, "REF", EI(key, "PCP"), HERE, "REF^I12", owner="PCP",
                          **values)  # type: ignore[arg-type]


def _siu(key: str, status: str = c.BOOKED, **values: object) -> AppointmentChange:
    return AppointmentChange("S12", EI(key, "SCHED"), status, **values)  # type: ignore[arg-type]


def _stored(rid: int, key: str, status: str, **row: object) -> Referral:
    values = {"key_id": key, "key_authority": "PCP", "status": status, "review": False,
              "priority": "R", "specialty": "CARD", "window_start": None, "window_end": None,
              "received_at": datetime(2026, 2, 1), "due_at": datetime(2026, 2, 15), **row}
    return Referral(rid, values, [("RF1-6", EI(key, "PCP"))], [(rid * 10, MRN)])


def _run(ledger: Ledger, *changes: Change) -> list[str]:
    ctx = rules.Context(ledger, 1, "C-1", NOW, LedgerSettings(), events=[])
    return rules.apply(ctx, changes)


def test_an_appointment_naming_a_referral_in_sch26_is_matched_and_schedules_it() -> None:
    ledger = Ledger([_stored(7, "R-1", lc.PENDING)])
    lines = _run(ledger, _siu("A-1", placer_order_numbers=(EI("R-1", "PCP"),)))
    (appt,) = ledger.appointments.values()
    assert (appt.row["match"], appt.row["referral_id"], appt.row["via"]) == ("matched", 7,
                                                                            "SCH-26")
    assert is_new(appt.id)  # matched before it is stored: no follow-up update
    assert ledger.referrals[7].row["status"] == lc.SCHEDULED
    assert lines == ["appointment A-1^SCHED booked, matched via SCH-26",
                     "referral R-1^PCP pending→scheduled"]


def test_the_fallback_matches_by_patient_specialty_and_window() -> None:
    ledger = Ledger([_stored(7, "R-1", lc.ACCEPTED)])
    _run(ledger, _siu("A-1", patient_ids=(MRN,), specialty="card",
                      start=datetime(2026, 3, 10)))
    (appt,) = ledger.appointments.values()
    assert (appt.row["match"], appt.row["via"]) == ("matched", "fallback")


def test_a_bare_mrn_or_another_specialty_never_matches_by_fallback() -> None:
    ledger = Ledger([_stored(7, "R-1", lc.PENDING)])
    _run(ledger, _siu("A-1", patient_ids=(PatientId("MRN-1", ""),), specialty="CARD",
                      start=datetime(2026, 3, 10)),
         _siu("A-2", patient_ids=(MRN,), specialty="DERM", start=datetime(2026, 3, 10)))
    assert [a.row["match"] for a in ledger.appointments.values()] == ["unmatched", "unmatched"]
    assert ledger.referrals[7].row["status"] == lc.PENDING


def test_two_candidates_leave_the_appointment_ambiguous() -> None:
    ledger = Ledger([_stored(7, "R-1", lc.PENDING), _stored(8, "R-2", lc.PENDING)])
    lines = _run(ledger, _siu("A-1", patient_ids=(MRN,), specialty="CARD",
                              start=datetime(2026, 3, 10)))
    (appt,) = ledger.appointments.values()
    assert (appt.row["match"], appt.row["candidates"]) == ("ambiguous", [7, 8])
    assert lines == ["appointment A-1^SCHED booked, ambiguous"]


def test_an_orphan_waits_for_its_referral_and_is_linked_when_it_opens() -> None:
    """The SIU comes first, naming a referral key no referral has (no fallback for it); the
    REF later in the same batch sees it and links it."""
    ledger = Ledger()
    first = _run(ledger, _siu("A-1", placer_order_numbers=(EI("R-9", "PCP"),),
                              patient_ids=(MRN,), specialty="CARD",
                              start=datetime(2026, 3, 10)))
    assert first == ["appointment A-1^SCHED booked, unmatched "
                     "(waits for the referral its SCH-26 names)"]
    second = _run(ledger, _ref("R-9", patient_ids=(MRN,)))
    (ref,) = ledger.referrals.values()
    (appt,) = ledger.appointments.values()
    assert (appt.row["referral_id"], appt.row["via"], ref.row["status"]) == (
        ref.id, "SCH-26", lc.SCHEDULED)
    assert second == ["referral R-9^PCP new→pending", "appointment A-1^SCHED linked via SCH-26",
                      "referral R-9^PCP pending→scheduled"]


def test_cancelling_the_last_booked_appointment_reopens_the_referral() -> None:
    booked = {"key_id": "A-1", "key_authority": "SCHED", "status": c.BOOKED, "match": "matched",
              "referral_id": 7}
    ledger = Ledger([_stored(7, "R-1", lc.SCHEDULED)], [Appointment(3, dict(booked))])
    _run(ledger, AppointmentChange("S15", EI("A-1", "SCHED"), c.CANCELLED))
    assert ledger.referrals[7].row["status"] == lc.ACCEPTED
    other = Appointment(4, {**booked, "key_id": "A-2"})
    ledger = Ledger([_stored(7, "R-1", lc.SCHEDULED)], [Appointment(3, dict(booked)), other])
    _run(ledger, AppointmentChange("S15", EI("A-1", "SCHED"), c.CANCELLED))
    assert ledger.referrals[7].row["status"] == lc.SCHEDULED  # another booking is left


def test_a_later_change_in_the_batch_sees_an_earlier_ones_effect() -> None:
    """Open, accept, book, then a second open of the same key: 205 from the state alone."""
    ledger = Ledger()
    _run(ledger, _ref("R-1"))
    _run(ledger, _ref("R-1", event=c.ACCEPT))
    _run(ledger, _siu("A-1", placer_order_numbers=(EI("R-1", "PCP"),)))
    (ref,) = ledger.referrals.values()
    assert ref.row["status"] == lc.SCHEDULED
    assert [h["event"] for h in ledger.history] == [
        "REF^I12 open", "REF^I12 accept", "SIU^S12 booked", "link via SCH-26", "SIU^S12"]
    with pytest.raises(c.DuplicateKey):
        rules.check(ledger, [_ref("R-1")])


def test_an_update_for_an_unknown_key_from_its_owner_is_204() -> None:
    with pytest.raises(c.UnknownKey):
        rules.check(Ledger(), [_ref("R-1", event=c.ACCEPT)])
    rules.check(Ledger(), [_ref("R-1", event=c.ACCEPT, if_known=True)])  # no error


def test_a_raised_priority_past_its_deadline_marks_the_referral_overdue_once() -> None:
    ledger = Ledger([_stored(7, "R-1", lc.PENDING, priority="R")])
    ctx = rules.Context(ledger, 1, "C-1", NOW, LedgerSettings(), events=[])
    rules.apply(ctx, [_ref("R-1", event=c.MODIFY, priority="S"),
                      _ref("R-1", event=c.MODIFY, priority="A")])
    assert [h["event"] for h in ledger.history].count("sweep overdue") == 1
    assert ctx.events == [(7, lc.OVERDUE_EVENT)]


def test_dumps_writes_what_the_json_module_writes() -> None:
    encoder = json.JSONEncoder(separators=(",", ":"), default=str)
    for value in ([], ["G43.909"], ("A", "B"), "text", ["x\"y\\z\n\u00e9\u2603"],
                  [{"role": "RP", "id": "1", "name": "DOC^A", "location": ""}],
                  [1, 2.5, None, True, float("nan")], {"at": datetime(2026, 1, 1)}):
        assert dumps(value) == encoder.encode(value)


def test_providers_json_is_dumps_of_the_providers() -> None:
    providers = (c.Provider("RP", "NPI-1", "DOC^A\u00e9", "FAM\"MED"), c.Provider("RT"))
    assert providers_json(providers) == dumps([
        {"role": p.role, "id": p.id, "name": p.name, "location": p.location} for p in providers])
    assert providers_json(()) == dumps([])
