"""Patient identity by assigning authority (docs/hl7-rules.md): the rule (`PatientId.matches`), the
same rule in the fallback's SQL on a real database, how a referral's stored ids take in new ones
(`add_patients`), and the ids a referral event echoes."""

from __future__ import annotations

import itertools
from datetime import datetime

import pytest
from sqlalchemy import Engine, text

from engine.ledger import lifecycle as lc
from engine.mappings.changes import PatientId, merge_patient_ids
from engine.routes.events import build_rri
from engine.store.database import open_database
from engine.store.ledger import repository as store

NOW = datetime(2026, 11, 28, 9, 0)
OID_A, OID_B = "1.2.840.1", "1.2.840.2"


@pytest.mark.parametrize(("a", "b", "same"), [
    (PatientId("7", "NS", OID_A), PatientId("7", "OTHER", OID_A), True),  # OIDs decide
    (PatientId("7", "NS", OID_A), PatientId("7", "", OID_A), True),
    (PatientId("7", "NS", OID_A), PatientId("7", "NS", OID_B), False),  # same NS, other OID
    (PatientId("7", "NS"), PatientId("7", "NS"), True),
    (PatientId("7", "NS"), PatientId("7", "NS", OID_A), True),  # one has no OID: the NS
    (PatientId("7", "NS"), PatientId("7", "", OID_A), False),  # nothing shared to compare
    (PatientId("7", "NS"), PatientId("7", "OTHER"), False),
    (PatientId("7", "NS", OID_A), PatientId("8", "NS", OID_A), False),  # CX.1 differs
    (PatientId("7", ""), PatientId("7", ""), False),  # bare MRNs never match
    (PatientId("7", "", OID_A), PatientId("7", "", OID_A), True),
])
def test_the_rule_compares_oids_when_both_have_one_else_namespaces(
        a: PatientId, b: PatientId, same: bool) -> None:
    """CX.1 equal and (both OIDs and equal, or one without an OID and the same non-empty
    namespace); symmetric."""
    assert (a.matches(b), b.matches(a)) == (same, same)


def test_merged_fills_in_what_one_side_lacks_and_never_joins_strangers() -> None:
    """`NS` and `NS&OID` are one id (`NS&OID`), so are `&OID` and `NS&OID`; `NS` and `&OID`
    cannot be told to be one, nor can two OIDs or two namespaces that differ."""
    ns, oid, both = PatientId("7", "NS"), PatientId("7", "", OID_A), PatientId("7", "NS", OID_A)
    assert (ns.merged(both), both.merged(ns), oid.merged(both)) == (both, both, both)
    assert ns.merged(oid) is None
    assert both.merged(PatientId("7", "NS", OID_B)) is None
    assert both.merged(PatientId("7", "OTHER", OID_A)) is None
    assert PatientId("7", "").merged(PatientId("7", "")) == PatientId("7", "")
    assert PatientId("7", "").merged(ns) is None
    assert merge_patient_ids([ns, oid, both, PatientId("8", "NS")]) == [
        both, oid, PatientId("8", "NS")]


# --- the same rule in SQL --------------------------------------------------------------------

# Every combination of CX.1, namespace and OID (with none): 2 x 3 x 3 ids.
UNIVERSE = [PatientId(i, ns, oid) for i, ns, oid in itertools.product(
    ("7", "8"), ("", "NS", "OTHER"), ("", OID_A, OID_B))]


def _referral(db: Engine, ids: list[PatientId], status: str = lc.PENDING) -> int:
    with db.begin() as conn:
        rid = store.add_referral(conn, {
            "key_id": f"K{len(ids)}-{ids[0].text if ids else ''}", "source": "REF",
            "status": status, "received_at": NOW, "updated_at": NOW})
        store.insert_patients(conn, rid, ids)
    return rid


def test_the_fallback_query_finds_exactly_what_the_rule_says(db_url: str) -> None:
    """One referral per id of UNIVERSE; for each id of UNIVERSE (and for pairs of them),
    `referrals_of_patients` finds exactly the referrals whose id `matches` (none for a bare
    id), on SQLite and PostgreSQL."""
    db = open_database(db_url)
    rids = {_referral(db, [p]): p for p in UNIVERSE}
    with db.connect() as conn:
        for wanted in [[p] for p in UNIVERSE] + [list(ab) for ab in zip(
                UNIVERSE, reversed(UNIVERSE), strict=True)]:
            found = {int(r["id"]) for r in store.referrals_of_patients(conn, wanted,
                                                                       lc.MATCHABLE)}
            expected = {rid for rid, p in rids.items() if any(p.matches(w) for w in wanted)}
            assert (wanted, found) == (wanted, expected)
    db.dispose()


def test_the_fallback_query_keeps_to_matchable_statuses_and_returns_a_referral_once(
        sqlite_url: str) -> None:
    """A referral with two ids that both match is found once; a closed one is not found."""
    db = open_database(sqlite_url)
    twice = _referral(db, [PatientId("7", "NS"), PatientId("7", "", OID_A)])
    _referral(db, [PatientId("7", "NS", OID_A)], status=lc.CLOSED)
    with db.connect() as conn:
        found = store.referrals_of_patients(
            conn, [PatientId("7", "NS", OID_A)], lc.MATCHABLE)
    db.dispose()
    assert [r["id"] for r in found] == [twice]


def test_the_fallback_query_starts_from_the_patient_index_on_sqlite(sqlite_url: str) -> None:
    """The candidate ids are searched by CX.1 through `ix_referral_patients_patient`, and the
    referrals are never scanned (a scan by status costs the whole open ledger per booking)."""
    db = open_database(sqlite_url)
    q = store.patients_query([PatientId("7", "NS", OID_A), PatientId("8", "", OID_B)],
                             lc.MATCHABLE)
    assert q is not None
    with db.connect() as conn:
        sql = str(q.compile(conn, compile_kwargs={"literal_binds": True}))
        plan = [str(r[3]) for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql))]
    db.dispose()
    assert any("ix_referral_patients_patient (patient_id=?)" in step for step in plan), plan
    assert not any(step.startswith("SCAN") for step in plan), plan


# --- a referral's stored ids -----------------------------------------------------------------


def _stored(db: Engine, rid: int) -> list[tuple[str, str, str]]:
    with db.connect() as conn:
        return [(str(a), str(b), str(c)) for a, b, c in conn.execute(text(
            "SELECT patient_id, authority, authority_oid FROM referral_patients "
            "WHERE referral_id = :r ORDER BY id"), {"r": rid})]


def test_add_patients_fills_in_a_stored_id_and_adds_only_new_ones(db_url: str) -> None:
    """`NS` then `NS&OID`: the stored row gains the OID; `&OID` adds nothing; `NS&OTHER-OID`
    and a bare `7` are other ids and get rows; a bare `7` again adds nothing."""
    db = open_database(db_url)
    rid = _referral(db, [PatientId("7", "NS")])
    for ids in ([PatientId("7", "NS", OID_A)], [PatientId("7", "", OID_A)],
                [PatientId("7", "NS", OID_B), PatientId("7", "")], [PatientId("7", "")]):
        with db.begin() as conn:
            store.add_patients(conn, rid, ids)
    assert _stored(db, rid) == [("7", "NS", OID_A), ("7", "", ""), ("7", "NS", OID_B)]
    db.dispose()


def test_a_referral_event_echoes_the_stored_ids_as_before(sqlite_url: str) -> None:
    """Referral events only echo ids: PID-3 is `CX.1^^^CX.4.1`, the OID standing in for an
    empty namespace, read back from the database with the OID kept apart."""
    db = open_database(sqlite_url)
    rid = _referral(db, [PatientId("7", "NS", OID_A), PatientId("8", "", OID_B)])
    with db.begin() as conn:
        facts = store.referral_facts(conn, rid)
    db.dispose()
    assert facts.patient_ids == (PatientId("7", "NS", OID_A), PatientId("8", "", OID_B))
    pid = next(s for s in build_rri(facts, "referral.pending", "C1", NOW).split(b"\r")
               if s.startswith(b"PID|"))
    assert pid == b"PID|1||7^^^NS~8^^^1.2.840.2||^^^^^^U"
