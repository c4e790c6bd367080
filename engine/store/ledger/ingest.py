"""What ingest reads and writes of the ledger: the state a batch of changes can reach, loaded
with a few `IN (...)` queries for the whole batch, and what the rules changed in it, written
back with one statement per table (engine.ledger.state, engine.ledger.rules).  On SQLite the
state is read in one statement, its rows tagged with the query they answer (`_at_once`).

The state holds every referral whose key a change names or whose patient an appointment's
fallback could match, every appointment a change names or that waits (unmatched) for one of
those keys, and the appointments of those referrals (a cancel looks for another booked one).
Rows created in memory get their ids here, just before they are inserted.

On PostgreSQL the appointments and referrals are read with their rows locked (`FOR UPDATE`,
the referrals in id order) after the batch's advisory key locks: the lock order of
engine.store.keylocks, which says why.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from engine.ledger import rules
from engine.ledger.state import OVERDUE_MARK, Appointment, Ledger, Referral, is_new
from engine.mappings.changes import EI, AppointmentChange, Change, PatientId
from engine.store import Connection, keylocks, sql
from engine.store.keylocks import keys_named as keys_named  # where the batch's keys are named
from engine.store.ledger.repository import as_datetime
from engine.store.schema import appointments, column_names, referrals

REFERRAL = column_names(referrals, ("id",))
APPOINTMENT = column_names(appointments, ("id",))
_WHEN = {"window_start", "window_end", "received_at", "updated_at", "due_at", "start",
         "created_at", "first_scheduled_at"}
# What an appointment created in memory holds when the rules did not set it (the columns'
# defaults); a new referral's row has every column (engine.ledger.rules._open).
_DEFAULTS: dict[str, Any] = {"start": None, "duration_min": None, "specialty": "", "via": None,
                             "referral_id": None}


def load(conn: Connection, changes: Sequence[Change]) -> Ledger:
    """The ledger state `changes` can reach (see the module's text)."""
    keys = keys_named(changes)
    siu = [ch for ch in changes if isinstance(ch, AppointmentChange)]
    return load_for(conn, keys, {ch.key.id for ch in siu}, [
        p for ch in siu if ch.specialty and ch.start is not None for p in ch.patient_ids])


def load_for(conn: Connection, keys: set[str], appointment_keys: set[str],
             patients: list[PatientId]) -> Ledger:
    """The referrals with these keys or a patient id matching one of `patients`, the
    appointments with these keys (EI.1) or waiting for one of `keys`, and those referrals'
    appointments: on SQLite one statement (`_at_once`), on PostgreSQL three that lock the rows
    in turn; then two more when some referral is found."""
    patient_ids = sorted({p.id for p in patients if p.authority or p.oid})
    if conn.dialect.name == "sqlite":
        found, refs = _at_once(conn, sorted(keys), sorted(appointment_keys), patient_ids)
    else:
        found = {}
        _appointments(conn, "key_id", sorted(appointment_keys), found, _FOR_UPDATE)
        _orphans(conn, sorted(keys), found, f"{_FOR_UPDATE} OF a")
        linked = sorted({int(a.row["referral_id"]) for a in found.values()
                         if a.row["referral_id"]})
        refs = _referrals(conn, sorted(keys), patient_ids, linked, _FOR_UPDATE)
    _details(conn, refs)
    _appointments(conn, "referral_id", sorted(refs), found)
    return Ledger(refs.values(), found.values())


_FOR_UPDATE = " FOR UPDATE"  # PostgreSQL: the rows a batch reads stay its own until it commits


def _in(conn: Connection, head: str, values: Sequence[Any], tail: str = "") -> list[tuple[Any, ...]]:
    """`head IN (values) tail`: none when `values` is empty."""
    if not values:
        return []
    return sql.rows(conn, f"{head} IN ({_marks(values)}){tail}", values)


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def _patient(patient_id: Any, authority: Any, oid: Any) -> PatientId:
    return PatientId(str(patient_id), str(authority or ""), str(oid or ""))


def _row(columns: tuple[str, ...], values: Sequence[Any]) -> dict[str, Any]:
    row = dict(zip(columns, values, strict=True))
    for name in _WHEN.intersection(row):
        row[name] = as_datetime(row[name])
    return row


def _referral(values: Sequence[Any]) -> Referral:
    """A referral read as its id, then its columns."""
    ref = Referral(int(values[0]), _row(REFERRAL, values[1:]))
    for flag in ("review", "ever_seen", "ever_no_show"):
        ref.row[flag] = bool(ref.row[flag])
    return ref


def _referrals(conn: Connection, keys: list[str], patient_ids: list[str], ids: list[int],
               lock: str = "") -> dict[int, Referral]:
    """The referrals with a key among `keys` (EI.1), a patient id among `patient_ids` (CX.1;
    the rules compare the authorities) or an id among `ids`, by id; `lock`: their rows locked
    in id order."""
    wanted = _referral_ids(keys, patient_ids, [(f"SELECT id FROM referrals WHERE id IN "
                                                f"({_marks(ids)})", ids)] if ids else [])
    if not wanted:
        return {}
    union, values = _joined(wanted)
    rows = sql.rows(conn, f"SELECT id, {', '.join(REFERRAL)} FROM referrals WHERE id IN ("
                          f"{union}) ORDER BY id{lock}", values)
    return {int(r[0]): _referral(r) for r in rows}


def _joined(queries: list[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    """Queries joined by UNION ALL, and their values in the same order.  Where they feed an
    `id IN (...)`, which takes each id once anyway, UNION's own distinct step would only cost
    (SQLite builds a temporary table for it)."""
    return " UNION ALL ".join(q for q, _ in queries), [v for _, values in queries for v in values]


def _referral_ids(keys: list[str], patient_ids: list[str], linked: list[tuple[str, list[Any]]]
                  ) -> list[tuple[str, list[Any]]]:
    """The queries (and their values) of the ids of the referrals with a key among `keys` or a
    patient id among `patient_ids`, then the `linked` ones."""
    parts = [(f"SELECT referral_id FROM referral_keys WHERE key_id IN ({_marks(keys)})", keys),
             (f"SELECT referral_id FROM referral_patients WHERE patient_id IN "
              f"({_marks(patient_ids)})", patient_ids)]
    return [(q, v) for q, v in parts if v] + linked


_A_COLUMNS = ", ".join(f"a.{c}" for c in APPOINTMENT)
_PAD = ", NULL" * (len(REFERRAL) - len(APPOINTMENT))  # an appointment row as wide as a referral
_BY_KEY = "FROM appointments a WHERE a.key_id IN ({})"
_WAITING = ("FROM appointment_keys k JOIN appointments a ON a.id = k.appointment_id "
            "WHERE a.match = 'unmatched' AND k.key_id IN ({})")


def _at_once(conn: Connection, keys: list[str], appointment_keys: list[str],
             patient_ids: list[str]) -> tuple[dict[int, Appointment], dict[int, Referral]]:
    """SQLite: what `_appointments` by key, `_orphans` and `_referrals` (of those keys and
    patient ids, and linked to those appointments) read, in one statement: each row tagged
    with its query, then the appointment's id and key's id (`_orphans`' order)."""
    parts: list[tuple[str, list[Any]]] = []
    linked: list[tuple[str, list[Any]]] = []
    if appointment_keys:
        by_key = _BY_KEY.format(_marks(appointment_keys))
        parts.append((f"SELECT 0, a.id, 0, NULL, NULL, NULL, {_A_COLUMNS}{_PAD} {by_key}",
                      appointment_keys))
        linked.append((f"SELECT a.referral_id {by_key}", appointment_keys))
    if keys:
        waiting = _WAITING.format(_marks(keys))
        parts.append((f"SELECT 1, a.id, k.id, k.kind, k.key_id, k.key_authority, {_A_COLUMNS}"
                      f"{_PAD} {waiting}", keys))
        linked.append((f"SELECT a.referral_id {waiting}", keys))
    wanted = _referral_ids(keys, patient_ids, linked)
    if wanted:
        union, values = _joined(wanted)
        parts.append((f"SELECT 2, id, 0, NULL, NULL, NULL, {', '.join(REFERRAL)} FROM referrals "
                      f"WHERE id IN ({union})", values))
    found: dict[int, Appointment] = {}
    refs: dict[int, Referral] = {}
    if not parts:
        return found, refs
    statement, values = _joined(parts)
    for r in sql.rows(conn, f"{statement} ORDER BY 1, 2, 3", values):
        if r[0] == 2:
            refs[int(r[1])] = _referral(r[1:2] + r[6:])
            continue
        appt = _appointment(found, r[1], r[6:6 + len(APPOINTMENT)])
        if r[0] == 1:
            appt.keys.append((str(r[3]), EI(r[4], r[5] or "")))
    return found, refs


def _details(conn: Connection, refs: dict[int, Referral]) -> None:
    """The referrals' keys, patient ids and overdue marks, in one statement."""
    rids = sorted(refs)
    if not rids:
        return
    marks = _marks(rids)
    for tag, row_id, rid, a, b, c in sql.rows(
            conn, "SELECT 0, id, referral_id, kind, key_id, key_authority FROM referral_keys "
                  f"WHERE referral_id IN ({marks}) UNION ALL "
                  "SELECT 1, id, referral_id, patient_id, authority, authority_oid "
                  f"FROM referral_patients WHERE referral_id IN ({marks}) UNION ALL "
                  "SELECT 2, id, referral_id, event, event, event FROM referral_events "
                  f"WHERE referral_id IN ({marks}) AND event = ? ORDER BY 1, 2",
            [*rids, *rids, *rids, OVERDUE_MARK]):
        ref = refs[int(rid)]
        if tag == 0:
            ref.keys.append((str(a), EI(b, c or "")))
        elif tag == 1:
            ref.patients.append((int(row_id), _patient(a, b, c)))
        else:
            ref.overdue = True


def _appointments(conn: Connection, column: str, values: list[Any],
                  found: dict[int, Appointment], lock: str = "") -> None:
    for r in _in(conn, f"SELECT id, {', '.join(APPOINTMENT)} FROM appointments WHERE {column}",
                 values, f" ORDER BY id{lock}" if lock else ""):
        _appointment(found, r[0], r[1:])


def _appointment(found: dict[int, Appointment], row_id: Any, values: Sequence[Any]
                 ) -> Appointment:
    """The appointment with this id in `found`, read from `values` the first time (one comes
    once per key it waits under)."""
    appt = found.get(int(row_id))
    if appt is None:
        appt = found[int(row_id)] = Appointment(int(row_id), _row(APPOINTMENT, values))
    return appt


def _orphans(conn: Connection, keys: list[str], found: dict[int, Appointment],
             lock: str = "") -> None:
    """Unmatched appointments with a link key among `keys`, with those keys."""
    if not keys:
        return
    for r in sql.rows(conn, f"SELECT a.id, k.kind, k.key_id, k.key_authority, {_A_COLUMNS} "
                            f"{_WAITING.format(_marks(keys))} ORDER BY a.id, k.id{lock}", keys):
        _appointment(found, r[0], r[4:]).keys.append((str(r[1]), EI(r[2], r[3] or "")))


# --- writing back ----------------------------------------------------------------------------


def save(conn: Connection, ledger: Ledger, tops: dict[str, int] | None = None) -> dict[int, int]:
    """Write what the rules changed, one statement per table and kind; the ids given to the rows
    created in memory (provisional id → stored id), on SQLite past the largest ids in `tops`
    when given (`sql.new_ids`; `IDS` names the tables)."""
    new_refs = sorted((r for r in ledger.referrals.values() if is_new(r.id)), key=_ID)
    new_appts = sorted((a for a in ledger.appointments.values() if is_new(a.id)), key=_ID)
    given = sql.new_ids(conn, {"referrals": len(new_refs), "appointments": len(new_appts)}, tops)
    ids = dict(zip([r.id for r in new_refs], given["referrals"], strict=True))
    ids.update(zip([a.id for a in new_appts], given["appointments"], strict=True))
    _save_referrals(conn, ledger.referrals.values(), ids)
    _save_appointments(conn, ledger.appointments.values(), ids)
    real = ids.get  # real(id, id): the stored id of a row created in memory, else the id itself
    sql.insert_rows(conn, "referral_events", _EVENT, [
        (real(h["referral_id"], h["referral_id"]), real(h["appointment_id"], h["appointment_id"]),
         *_EVENT_REST(h)) for h in ledger.history])
    return ids


IDS = ("referrals", "appointments")  # the tables whose rows `save` gives ids
# A history row (engine.ledger.state.event_row): its two row ids, then the rest as it is.
_EVENT = ("referral_id", "appointment_id", "message_id", "control_id", "at", "event",
          "status_before", "status_after", "rule")
_EVENT_REST = operator.itemgetter(*_EVENT[2:])
_COLUMNS = {"referrals": operator.itemgetter(*REFERRAL),
            "appointments": operator.itemgetter(*APPOINTMENT)}
_REFERRAL_AT = APPOINTMENT.index("referral_id")
_CANDIDATES_AT = APPOINTMENT.index("candidates")


_ID = operator.attrgetter("id")  # the sort key of referrals and appointments


def _values(table: str, row: dict[str, Any], ids: dict[int, int]) -> tuple[Any, ...]:
    """A row's columns in order (an appointment's with the defaults filled in, its referral id
    and candidates, a list: JSON, with stored ids)."""
    if table != "appointments":
        out: tuple[Any, ...] = _COLUMNS[table](row)
        return out
    values = list(_COLUMNS[table]({**_DEFAULTS, **row}))
    values[_REFERRAL_AT] = ids.get(values[_REFERRAL_AT], values[_REFERRAL_AT])
    if isinstance(values[_CANDIDATES_AT], list):
        values[_CANDIDATES_AT] = json.dumps([ids.get(c, c) for c in values[_CANDIDATES_AT]],
                                            separators=(",", ":"))
    return tuple(values)


def _upsert(conn: Connection, table: str, columns: tuple[str, ...],
            rows: list[tuple[int, dict[str, Any]]], ids: dict[int, int]) -> None:
    """Insert the new rows (provisional ids) and update the changed stored ones."""
    new: list[tuple[Any, ...]] = []
    changed: list[tuple[Any, ...]] = []
    for rid, row in rows:
        if is_new(rid):
            new.append((ids[rid], *_values(table, row, ids)))
        else:
            changed.append((*_values(table, row, ids), rid))
    sql.insert_rows(conn, table, ("id", *columns), new)
    sql.update_rows(conn, table, columns, changed)


def _save_referrals(conn: Connection, refs: Iterable[Referral], ids: dict[int, int]) -> None:
    refs = sorted(refs, key=_ID)
    _upsert(conn, "referrals", REFERRAL, [(r.id, r.row) for r in refs if r.dirty], ids)
    sql.insert_rows(conn, "referral_keys", _KEY, [
        (ids.get(r.id, r.id), kind, k.id, k.authority) for r in refs for kind, k in r.new_keys])
    sql.insert_rows(conn, "referral_patients", _PATIENT, [
        (ids.get(r.id, r.id), p.id, p.authority, p.oid) for r in refs
        for row_id, p in r.patients if row_id is None])
    sql.many(conn, "UPDATE referral_patients SET authority = ?, authority_oid = ? WHERE id = ?",
             [(p.authority, p.oid, row_id) for r in refs for row_id, p in r.patients
              if row_id in r.changed_patients])


_KEY = ("referral_id", "kind", "key_id", "key_authority")
_PATIENT = ("referral_id", "patient_id", "authority", "authority_oid")


def _save_appointments(conn: Connection, appts: Iterable[Appointment], ids: dict[int, int]) -> None:
    appts = sorted(appts, key=_ID)
    _upsert(conn, "appointments", APPOINTMENT, [(a.id, a.row) for a in appts if a.dirty], ids)
    replaced = [a for a in appts if a.keys_replaced]
    sql.many(conn, "DELETE FROM appointment_keys WHERE appointment_id = ?",
             [(a.id,) for a in replaced if not is_new(a.id)])
    sql.insert_rows(conn, "appointment_keys", ("appointment_id", *_KEY[1:]), [
        (ids.get(a.id, a.id), kind, k.id, k.authority) for a in replaced for kind, k in a.keys])


def link_manually(conn: Connection, appointment: EI, referral: EI, now: datetime,
                  events: list[tuple[int, str]] | None = None) -> str:
    """`hl7-engine link` in the caller's transaction (engine.ledger.rules.link_manually), after
    the advisory locks of both keys (engine.store.keylocks)."""
    keylocks.lock(conn, link_keys(appointment, referral))
    state = load_for(conn, {referral.id}, {appointment.id}, [])
    effect = rules.link_manually(state, appointment, referral, now, events)
    save(conn, state)
    return effect


def link_keys(appointment: EI, referral: EI) -> list[int]:
    """The advisory lock keys of a manual link (engine.store.keylocks), sorted."""
    return sorted({keylocks.key_of("appointment", appointment.id),
                   keylocks.key_of("key", referral.id)})
