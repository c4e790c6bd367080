"""The ledger's queries: referrals and appointments by key, patients, keys and history rows.

Plain synchronous functions over a SQLAlchemy Connection (STYLE.md rule 9); the writer thread
calls them inside the batch transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select, tuple_, update

from engine.mappings.changes import EI, PatientId
from engine.store.schema import (
    appointment_keys,
    appointments,
    referral_events,
    referral_keys,
    referral_patients,
    referrals,
)


def referral_ids_for(conn: Connection, key: EI, kinds: Iterable[str] | None = None) -> list[int]:
    """Referrals with a key matching `key` (EI equality, HL7-SPEC §6), oldest first."""
    q = select(referral_keys.c.referral_id, referral_keys.c.key_authority, referral_keys.c.kind
               ).where(referral_keys.c.key_id == key.id)
    wanted = set(kinds) if kinds is not None else None
    ids = {int(r.referral_id) for r in conn.execute(q)
           if key.matches(EI(key.id, r.key_authority)) and (wanted is None or r.kind in wanted)}
    return sorted(ids)


def referral(conn: Connection, referral_id: int) -> dict[str, Any]:
    return dict(conn.execute(select(referrals).where(referrals.c.id == referral_id))
                .mappings().one())


def add_referral(conn: Connection, values: dict[str, Any]) -> int:
    result = conn.execute(insert(referrals).values(**values).returning(referrals.c.id))
    return int(result.scalar_one())


def set_referral(conn: Connection, referral_id: int, **values: Any) -> None:
    conn.execute(update(referrals).where(referrals.c.id == referral_id).values(**values))


def keys_of(conn: Connection, referral_id: int) -> list[tuple[str, EI]]:
    rows = conn.execute(select(referral_keys.c.kind, referral_keys.c.key_id,
                               referral_keys.c.key_authority)
                        .where(referral_keys.c.referral_id == referral_id)
                        .order_by(referral_keys.c.id))
    return [(r.kind, EI(r.key_id, r.key_authority)) for r in rows]


def add_keys(conn: Connection, referral_id: int, keys: Iterable[tuple[str, EI]]) -> list[EI]:
    """Add the keys the referral does not have yet; the ones added."""
    have = keys_of(conn, referral_id)
    added: list[EI] = []
    for kind, key in keys:
        if not key.id or any(k == kind and key.matches(h) for k, h in have):
            continue
        conn.execute(insert(referral_keys).values(referral_id=referral_id, kind=kind,
                                                  key_id=key.id, key_authority=key.authority))
        have.append((kind, key))
        added.append(key)
    return added


def add_patients(conn: Connection, referral_id: int, ids: Iterable[PatientId]) -> None:
    have = {(r.patient_id, r.authority) for r in conn.execute(
        select(referral_patients.c.patient_id, referral_patients.c.authority)
        .where(referral_patients.c.referral_id == referral_id))}
    for p in ids:
        if (p.id, p.authority) not in have:
            conn.execute(insert(referral_patients).values(referral_id=referral_id,
                                                          patient_id=p.id, authority=p.authority))
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
    for row in conn.execute(select(appointments).where(appointments.c.key_id == key.id)
                            .order_by(appointments.c.id)).mappings():
        if key.matches(EI(row["key_id"], row["key_authority"])):
            return dict(row)
    return None


def add_appointment(conn: Connection, values: dict[str, Any]) -> int:
    result = conn.execute(insert(appointments).values(**values).returning(appointments.c.id))
    return int(result.scalar_one())


def set_appointment(conn: Connection, appointment_id: int, **values: Any) -> None:
    conn.execute(update(appointments).where(appointments.c.id == appointment_id).values(**values))


def set_appointment_keys(conn: Connection, appointment_id: int,
                         keys: Iterable[tuple[str, EI]]) -> None:
    conn.execute(appointment_keys.delete().where(
        appointment_keys.c.appointment_id == appointment_id))
    for kind, key in keys:
        conn.execute(insert(appointment_keys).values(appointment_id=appointment_id, kind=kind,
                                                     key_id=key.id, key_authority=key.authority))


def orphans_for(conn: Connection, key: EI) -> list[tuple[dict[str, Any], str]]:
    """Unmatched appointments whose SCH-26/SCH-27 carry `key`, with the kind that matched."""
    q = (select(appointments, appointment_keys.c.kind.label("via_kind"),
                appointment_keys.c.key_authority.label("via_authority"))
         .join(appointment_keys, appointment_keys.c.appointment_id == appointments.c.id)
         .where(and_(appointment_keys.c.key_id == key.id, appointments.c.match == "unmatched")))
    out: list[tuple[dict[str, Any], str]] = []
    seen: set[int] = set()
    for row in conn.execute(q.order_by(appointments.c.id)).mappings():
        if key.matches(EI(key.id, row["via_authority"])) and row["id"] not in seen:
            seen.add(int(row["id"]))
            out.append((dict(row), str(row["via_kind"])))
    return out


def other_active(conn: Connection, referral_id: int, appointment_id: int) -> bool:
    """Does the referral have another booked appointment?"""
    q = select(appointments.c.id).where(and_(
        appointments.c.referral_id == referral_id, appointments.c.id != appointment_id,
        appointments.c.status == "booked"))
    return conn.execute(q.limit(1)).first() is not None


def record(conn: Connection, *, at: datetime, event: str, message_id: int | None,
           control_id: str = "", referral_id: int | None = None,
           appointment_id: int | None = None, before: str | None = None,
           after: str | None = None, rule: str = "") -> None:
    """One history row."""
    conn.execute(insert(referral_events).values(
        referral_id=referral_id, appointment_id=appointment_id, message_id=message_id,
        control_id=control_id, at=at, event=event, status_before=before, status_after=after,
        rule=rule[:200]))


def key_text(conn: Connection, referral_id: int) -> str:
    row = conn.execute(select(referrals.c.key_id, referrals.c.key_authority)
                       .where(referrals.c.id == referral_id)).one()
    return EI(row.key_id, row.key_authority).text


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def any_of(*conditions: Any) -> Any:
    return or_(*conditions)
