"""The ledger's row-level queries: referrals by key and by patient, patient ids, history
rows, the sweep's candidates, and what a referral-event message reads of a referral.

Plain synchronous functions over a Connection, inside the caller's transaction.  Ingest reads
and writes the ledger a batch at a time (engine.store.ledger.ingest).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, and_, or_, select

from engine.ledger.facts import AppointmentFacts, ReferralFacts
from engine.ledger.state import OVERDUE_MARK
from engine.mappings.changes import EI, PatientId, Provider, merge_patient_ids
from engine.store import sql
from engine.store.schema import referral_events, referral_patients, referrals

# The hot path runs on the driver (engine.store.sql); the fallback search, which needs
# datetimes back, and the CLI's views use SQLAlchemy Core.


def as_datetime(value: Any) -> datetime | None:
    """A datetime column read on the driver: SQLite gives text, PostgreSQL a datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _keys_named(conn: Connection, key: EI) -> list[tuple[int, str]]:
    """(referral id, kind) of every stored key matching `key`."""
    found = sql.rows(conn, "SELECT referral_id, key_authority, kind FROM referral_keys "
                           "WHERE key_id = ?", [key.id])
    return [(int(r[0]), str(r[2])) for r in found if key.matches(EI(key.id, r[1] or ""))]


def referral_ids_for(conn: Connection, key: EI, kinds: Iterable[str] | None = None) -> list[int]:
    """Referrals with a key matching `key` (EI equality: EI.1 equal, EI.2 equal when both have it), oldest first."""
    wanted = set(kinds) if kinds is not None else None
    return sorted({rid for rid, kind in _keys_named(conn, key)
                   if wanted is None or kind in wanted})


def insert_patients(conn: Connection, referral_id: int, ids: list[PatientId]) -> None:
    """The patient ids of a referral just created."""
    sql.insert_many(conn, "referral_patients", [
        {"referral_id": referral_id, "patient_id": p.id, "authority": p.authority,
         "authority_oid": p.oid} for p in ids])


def add_referral(conn: Connection, values: dict[str, Any]) -> int:
    return sql.insert(conn, "referrals", values)


def keys_of(conn: Connection, referral_id: int) -> list[tuple[str, EI]]:
    found = sql.rows(conn, "SELECT kind, key_id, key_authority FROM referral_keys "
                           "WHERE referral_id = ? ORDER BY id", [referral_id])
    return [(str(r[0]), EI(r[1], r[2] or "")) for r in found]


def add_patients(conn: Connection, referral_id: int, ids: Iterable[PatientId]) -> None:
    """Add the ids the referral does not have yet.  An id that merges into a stored one
    (`PatientId.merged`: the same CX.1 under the same namespace or OID) is not added again; what
    it adds to it (the OID of a stored `NS`, the namespace of a stored `&OID&ISO`) is filled in.
    Nothing stored is ever changed or deleted otherwise."""
    wanted = list(ids)
    if not wanted:
        return
    stored = [(int(r[0]), _patient(r[1], r[2], r[3])) for r in sql.rows(
        conn, "SELECT id, patient_id, authority, authority_oid FROM referral_patients "
              "WHERE referral_id = ? ORDER BY id", [referral_id])]
    fresh: list[PatientId] = []
    for p in wanted:
        for i, (row_id, have) in enumerate(stored):
            both = have.merged(p)
            if both is not None:
                if both != have:
                    sql.update(conn, "referral_patients", row_id,
                               {"authority": both.authority, "authority_oid": both.oid})
                    stored[i] = (row_id, both)
                break
        else:
            fresh.append(p)
    insert_patients(conn, referral_id, merge_patient_ids(sorted(fresh)))


def _patient(patient_id: Any, authority: Any, oid: Any) -> PatientId:
    return PatientId(str(patient_id), str(authority or ""), str(oid or ""))


def expirable(conn: Connection, statuses: Iterable[str], now: datetime, received_before: datetime,
              limit: int | None = None) -> list[tuple[int, str, EI]]:
    """(id, status, key) of referrals in `statuses` past RF1-8, or, without RF1-8, received
    before `received_before`; the first `limit` of them by id."""
    q = select(referrals.c.id, referrals.c.status, referrals.c.key_id, referrals.c.key_authority
               ).where(and_(referrals.c.status.in_(list(statuses)), or_(
                   referrals.c.window_end < now,
                   and_(referrals.c.window_end.is_(None),
                        referrals.c.received_at < received_before)))).order_by(
                   referrals.c.id).limit(limit)
    return [(int(r.id), str(r.status), EI(r.key_id, r.key_authority or ""))
            for r in conn.execute(q)]


def overdue(conn: Connection, statuses: Iterable[str], now: datetime, limit: int | None = None
            ) -> list[tuple[int, str, EI, datetime]]:
    """(id, status, key, due_at) of referrals in `statuses` past their `due_at` that have no
    `sweep overdue` history row yet; the first `limit` of them by id."""
    marked = select(referral_events.c.id).where(
        referral_events.c.referral_id == referrals.c.id,
        referral_events.c.event == OVERDUE_MARK)
    q = (select(referrals.c.id, referrals.c.status, referrals.c.key_id,
                referrals.c.key_authority, referrals.c.due_at)
         .where(referrals.c.status.in_(list(statuses)), referrals.c.due_at < now,
                ~marked.exists())
         .order_by(referrals.c.id).limit(limit))
    return [(int(r.id), str(r.status), EI(r.key_id, r.key_authority or ""), r.due_at)
            for r in conn.execute(q)]


def lock_referrals(conn: Connection, referral_ids: list[int]) -> dict[int, str]:
    """The referrals' statuses, read again with their rows locked to the end of the transaction
    (PostgreSQL `FOR UPDATE`, in id order as an ingest batch locks them: engine.store.keylocks):
    engine processes sweeping the same database then expire or mark each referral once, and a
    batch that changed one meanwhile is read again.  SQLite serialises writers anyway and
    ignores the clause."""
    if not referral_ids:
        return {}
    return {int(r.id): str(r.status) for r in conn.execute(
        select(referrals.c.id, referrals.c.status).where(referrals.c.id.in_(referral_ids))
        .order_by(referrals.c.id).with_for_update())}


def marked_overdue(conn: Connection, referral_ids: list[int]) -> set[int]:
    """Those of the referrals that already have their `sweep overdue` history row."""
    if not referral_ids:
        return set()
    return {int(r[0]) for r in conn.execute(select(referral_events.c.referral_id).where(
        referral_events.c.referral_id.in_(referral_ids),
        referral_events.c.event == OVERDUE_MARK))}


def set_statuses(conn: Connection, referral_ids: list[int], status: str, at: datetime) -> None:
    """Move these referrals to `status` (one statement for all of them)."""
    sql.many(conn, "UPDATE referrals SET status = ?, updated_at = ? WHERE id = ?",
             [(status, at, rid) for rid in referral_ids])


def referrals_of_patients(conn: Connection, ids: Iterable[PatientId],
                          statuses: Iterable[str]) -> list[dict[str, Any]]:
    """Referrals in `statuses` with a patient id that `PatientId.matches` one of `ids`: CX.1
    equal, and the OIDs equal when both have one, else the same non-empty namespace.  An id
    with neither namespace nor OID is never compared (no bare MRNs across facilities)."""
    q = patients_query(ids, statuses)
    return [] if q is None else [dict(r) for r in conn.execute(q).mappings()]


def patients_query(ids: Iterable[PatientId], statuses: Iterable[str]) -> Select[Any] | None:
    """The statement behind `referrals_of_patients` (None: no id can match).  The stored ids
    are found by CX.1 (`ix_referral_patients_patient`), their few rows filtered by authority,
    and the referrals read by primary key: its cost follows the patient, not the ledger."""
    wanted = [p for p in ids if p.authority or p.oid]
    if not wanted:
        return None
    rp = referral_patients.c
    same = or_(*(and_(rp.patient_id == p.id, _same_authority(p)) for p in wanted))
    ids_q = select(rp.referral_id).where(rp.patient_id.in_(sorted({p.id for p in wanted})), same)
    return (select(referrals).where(referrals.c.id.in_(ids_q))
            .where(referrals.c.status.in_(list(statuses))))


def _same_authority(p: PatientId) -> ColumnElement[bool]:
    """SQL for `PatientId.matches` past CX.1: a stored row's authority against `p`'s."""
    rp = referral_patients.c
    if not p.oid:  # only the namespace can be compared
        return rp.authority == p.authority
    by_oid = rp.authority_oid == p.oid
    if not p.authority:
        return by_oid
    return or_(by_oid, and_(rp.authority_oid == "", rp.authority == p.authority))


def insert_events(conn: Connection, rows: list[dict[str, Any]]) -> None:
    sql.insert_many(conn, "referral_events", rows)


_FACTS_COLUMNS = ("key_id, key_authority, status, owner, priority, window_start, window_end, "
                  "due_at, providers")


def referral_facts(conn: Connection, referral_id: int) -> ReferralFacts:
    """What a referral-event message carries (`on:` routes), in five indexed reads.  Called only
    for an event some route takes, so ingest pays nothing without `on:` routes."""
    found = sql.rows(conn, f"SELECT {_FACTS_COLUMNS} FROM referrals WHERE id = ?", [referral_id])
    key_id, authority, status, owner, priority, start, end, due, providers = found[0]
    channel, control_id, facility = _opening_message(conn, referral_id)
    return ReferralFacts(
        key=EI(key_id, authority or ""), status=str(status), owner=owner or "",
        priority=priority or "", window_start=as_datetime(start),
        window_end=as_datetime(end), due_at=as_datetime(due),
        external_ids=tuple(k for kind, k in keys_of(conn, referral_id)
                           if kind in ("RF1-11", "ORC-3")),
        patient_ids=tuple(_patient(p, a, o) for p, a, o in sql.rows(
            conn, "SELECT patient_id, authority, authority_oid FROM referral_patients "
                  "WHERE referral_id = ? ORDER BY id", [referral_id])),
        providers=tuple(Provider(str(p.get("role") or ""), str(p.get("id") or ""),
                                 str(p.get("name") or ""), str(p.get("location") or ""))
                        for p in json.loads(providers or "[]")),
        channel=channel, opening_control_id=control_id, owner_facility=facility,
        appointment=_latest_appointment(conn, referral_id),
    )


def _opening_message(conn: Connection, referral_id: int) -> tuple[str, str, str]:
    """(channel, MSH-10, MSH-4) of the message that opened the referral: its first history row."""
    found = sql.rows(conn, "SELECT m.channel, m.control_id, m.sending_facility "
                           "FROM referral_events e JOIN messages m ON m.id = e.message_id "
                           "WHERE e.referral_id = ? ORDER BY e.id LIMIT 1", [referral_id])
    if not found:
        return "", "", ""
    return str(found[0][0] or ""), str(found[0][1] or ""), str(found[0][2] or "")


def _latest_appointment(conn: Connection, referral_id: int) -> AppointmentFacts | None:
    """The linked appointment updated last (ties: the one created last)."""
    found = sql.rows(conn, "SELECT key_id, key_authority, status, start, duration_min "
                           "FROM appointments WHERE referral_id = ? "
                           "ORDER BY updated_at DESC, id DESC LIMIT 1", [referral_id])
    if not found:
        return None
    key_id, authority, status, start, duration = found[0]
    return AppointmentFacts(EI(key_id, authority or ""), str(status), as_datetime(start),
                            int(duration) if duration is not None else None)
