"""The ledger's queries: referrals and appointments by key, patients, keys and history rows.

Plain synchronous functions over a SQLAlchemy Connection (STYLE.md rule 9); the writer thread
calls them inside the batch transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, insert, or_, select, tuple_, update

from engine.mappings.changes import EI, PatientId
from engine.store.schema import (
    appointment_keys,
    appointments,
    referral_events,
    referral_keys,
    referral_patients,
    referrals,
)

# Statements are built once: building a Core statement per call (and its cache key) cost more
# than running it.  Inserts and updates take their columns from the parameters.
_KEYS_BY_ID = select(referral_keys.c.referral_id, referral_keys.c.key_authority,
                     referral_keys.c.kind).where(referral_keys.c.key_id == bindparam("key_id"))
_REFERRAL = select(referrals).where(referrals.c.id == bindparam("rid"))
_INSERT_REFERRAL = insert(referrals).returning(referrals.c.id)
_UPDATE_REFERRAL = update(referrals).where(referrals.c.id == bindparam("_rid"))
_KEYS_OF = select(referral_keys.c.kind, referral_keys.c.key_id, referral_keys.c.key_authority
                  ).where(referral_keys.c.referral_id == bindparam("rid")).order_by(
                      referral_keys.c.id)
_INSERT_KEY = insert(referral_keys)
_PATIENTS_OF = select(referral_patients.c.patient_id, referral_patients.c.authority).where(
    referral_patients.c.referral_id == bindparam("rid"))
_INSERT_PATIENT = insert(referral_patients)
_APPOINTMENTS_BY_KEY = select(appointments).where(
    appointments.c.key_id == bindparam("key_id")).order_by(appointments.c.id)
_INSERT_APPOINTMENT = insert(appointments).returning(appointments.c.id)
_UPDATE_APPOINTMENT = update(appointments).where(appointments.c.id == bindparam("_aid"))
_DELETE_APPOINTMENT_KEYS = appointment_keys.delete().where(
    appointment_keys.c.appointment_id == bindparam("aid"))
_INSERT_APPOINTMENT_KEY = insert(appointment_keys)
_ORPHANS = (select(appointments, appointment_keys.c.kind.label("via_kind"),
                   appointment_keys.c.key_authority.label("via_authority"))
            .join(appointment_keys, appointment_keys.c.appointment_id == appointments.c.id)
            .where(and_(appointment_keys.c.key_id == bindparam("key_id"),
                        appointments.c.match == "unmatched"))
            .order_by(appointments.c.id))
_OTHER_ACTIVE = select(appointments.c.id).where(and_(
    appointments.c.referral_id == bindparam("rid"), appointments.c.id != bindparam("aid"),
    appointments.c.status == "booked")).limit(1)
_INSERT_EVENT = insert(referral_events)
_KEY_TEXT = select(referrals.c.key_id, referrals.c.key_authority).where(
    referrals.c.id == bindparam("rid"))


def referral_ids_for(conn: Connection, key: EI, kinds: Iterable[str] | None = None) -> list[int]:
    """Referrals with a key matching `key` (EI equality, HL7-SPEC §6), oldest first."""
    wanted = set(kinds) if kinds is not None else None
    ids = {int(r.referral_id) for r in conn.execute(_KEYS_BY_ID, {"key_id": key.id})
           if key.matches(EI(key.id, r.key_authority)) and (wanted is None or r.kind in wanted)}
    return sorted(ids)


def key_kinds_for(conn: Connection, key: EI) -> set[str]:
    """The kinds (RF1-6, RF1-11, ORC-2, ORC-3) under which some referral has `key`."""
    return {str(r.kind) for r in conn.execute(_KEYS_BY_ID, {"key_id": key.id})
            if key.matches(EI(key.id, r.key_authority))}


def insert_keys(conn: Connection, referral_id: int, keys: list[tuple[str, EI]]) -> None:
    """The keys of a referral just created (no check against existing ones)."""
    if keys:
        conn.execute(_INSERT_KEY, [{"referral_id": referral_id, "kind": kind, "key_id": key.id,
                                    "key_authority": key.authority} for kind, key in keys])


def insert_patients(conn: Connection, referral_id: int, ids: list[PatientId]) -> None:
    """The patient ids of a referral just created."""
    if ids:
        conn.execute(_INSERT_PATIENT, [{"referral_id": referral_id, "patient_id": p.id,
                                        "authority": p.authority} for p in ids])


def referral(conn: Connection, referral_id: int) -> dict[str, Any]:
    return dict(conn.execute(_REFERRAL, {"rid": referral_id}).mappings().one())


def add_referral(conn: Connection, values: dict[str, Any]) -> int:
    return int(conn.execute(_INSERT_REFERRAL, values).scalar_one())


def set_referral(conn: Connection, referral_id: int, **values: Any) -> None:
    conn.execute(_UPDATE_REFERRAL, {"_rid": referral_id, **values})


def keys_of(conn: Connection, referral_id: int) -> list[tuple[str, EI]]:
    rows = conn.execute(_KEYS_OF, {"rid": referral_id})
    return [(r.kind, EI(r.key_id, r.key_authority)) for r in rows]


def add_keys(conn: Connection, referral_id: int, keys: Iterable[tuple[str, EI]]) -> list[EI]:
    """Add the keys the referral does not have yet; the ones added."""
    have = keys_of(conn, referral_id)
    added: list[EI] = []
    for kind, key in keys:
        if not key.id or any(k == kind and key.matches(h) for k, h in have):
            continue
        conn.execute(_INSERT_KEY, {"referral_id": referral_id, "kind": kind, "key_id": key.id,
                                   "key_authority": key.authority})
        have.append((kind, key))
        added.append(key)
    return added


def add_patients(conn: Connection, referral_id: int, ids: Iterable[PatientId]) -> None:
    have = {(r.patient_id, r.authority) for r in conn.execute(_PATIENTS_OF, {"rid": referral_id})}
    for p in ids:
        if (p.id, p.authority) not in have:
            conn.execute(_INSERT_PATIENT, {"referral_id": referral_id, "patient_id": p.id,
                                           "authority": p.authority})
            have.add((p.id, p.authority))


def referrals_of_patients(conn: Connection, ids: Iterable[PatientId],
                          statuses: Iterable[str]) -> list[dict[str, Any]]:
    """Referrals in `statuses` that share a (CX.1, CX.4.1) pair with `ids`."""
    pairs = [(p.id, p.authority) for p in ids]
    if not pairs:
        return []
    q = (select(referrals).distinct()
         .join(referral_patients, referral_patients.c.referral_id == referrals.c.id)
         .where(tuple_(referral_patients.c.patient_id, referral_patients.c.authority).in_(pairs))
         .where(referrals.c.status.in_(list(statuses))))
    return [dict(r) for r in conn.execute(q).mappings()]


def appointment_for(conn: Connection, key: EI) -> dict[str, Any] | None:
    for row in conn.execute(_APPOINTMENTS_BY_KEY, {"key_id": key.id}).mappings():
        if key.matches(EI(row["key_id"], row["key_authority"])):
            return dict(row)
    return None


def add_appointment(conn: Connection, values: dict[str, Any]) -> int:
    return int(conn.execute(_INSERT_APPOINTMENT, values).scalar_one())


def set_appointment(conn: Connection, appointment_id: int, **values: Any) -> None:
    conn.execute(_UPDATE_APPOINTMENT, {"_aid": appointment_id, **values})


def set_appointment_keys(conn: Connection, appointment_id: int,
                         keys: Iterable[tuple[str, EI]]) -> None:
    conn.execute(_DELETE_APPOINTMENT_KEYS, {"aid": appointment_id})
    rows = [{"appointment_id": appointment_id, "kind": kind, "key_id": key.id,
             "key_authority": key.authority} for kind, key in keys]
    if rows:
        conn.execute(_INSERT_APPOINTMENT_KEY, rows)


def orphans_for(conn: Connection, key: EI) -> list[tuple[dict[str, Any], str]]:
    """Unmatched appointments whose SCH-26/SCH-27 carry `key`, with the kind that matched."""
    out: list[tuple[dict[str, Any], str]] = []
    seen: set[int] = set()
    for row in conn.execute(_ORPHANS, {"key_id": key.id}).mappings():
        if key.matches(EI(key.id, row["via_authority"])) and row["id"] not in seen:
            seen.add(int(row["id"]))
            out.append((dict(row), str(row["via_kind"])))
    return out


def other_active(conn: Connection, referral_id: int, appointment_id: int) -> bool:
    """Does the referral have another booked appointment?"""
    return conn.execute(_OTHER_ACTIVE, {"rid": referral_id, "aid": appointment_id}
                        ).first() is not None


def event_row(*, at: datetime, event: str, message_id: int | None, control_id: str = "",
              referral_id: int | None = None, appointment_id: int | None = None,
              before: str | None = None, after: str | None = None, rule: str = ""
              ) -> dict[str, Any]:
    """One history row, as parameters for `insert_events`."""
    return {"referral_id": referral_id, "appointment_id": appointment_id,
            "message_id": message_id, "control_id": control_id, "at": at, "event": event,
            "status_before": before, "status_after": after, "rule": rule[:200]}


def insert_events(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(_INSERT_EVENT, rows)


def record(conn: Connection, **values: Any) -> None:
    """One history row, written now."""
    insert_events(conn, [event_row(**values)])


def key_text(conn: Connection, referral_id: int) -> str:
    row = conn.execute(_KEY_TEXT, {"rid": referral_id}).one()
    return EI(row.key_id, row.key_authority).text


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def any_of(*conditions: Any) -> Any:
    return or_(*conditions)
