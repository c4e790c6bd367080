"""The ORM/OMG/OSU mapper (docs/hl7-rules.md): order messages to referral changes and the AE
content errors each order sample must give."""

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
    order_msg,
    sample,
    seg,
)

from engine.errors import Location
from engine.mappings.changes import (
    ACCEPT,
    CANCEL,
    COMPLETE,
    EI,
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
from engine.mappings.orders import map_order
from engine.mappings.rules import MappingRules

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



@pytest.mark.parametrize("control", ["IP", "ZZ", "N W"])
def test_orc1_outside_table_0119_is_103_and_every_table_code_is_taken(control: str) -> None:
    """A code outside table 0119 (IP is an ORC-5 order status, not an order control) is
    AE 103 at ORC-1; a table code this engine does not act on (RE, observations to follow) is
    recorded without a change, not rejected."""
    with pytest.raises(UnknownCode) as err:
        map_order(order_msg("ORM^O01", {1: control}), RULES)
    assert_error(err.value, "103", Location("ORC", 1, 1))



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
