"""The part of the ledger that a batch of changes touches, held in memory: referrals with their
keys, patient ids and overdue mark, appointments with their keys, and the history rows waiting.

The store loads it (engine.store.ledger.repository) with every row the changes can reach, the
rules (engine.ledger.rules) read and change it in arrival order, so a later message sees an
earlier one's effect, and the store writes back what changed.  Rows created here carry a
provisional id (`is_new`) until the store gives them theirs.  No database.
"""

from __future__ import annotations

from _json import encode_basestring_ascii, make_encoder
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any

from engine.mappings.changes import BOOKED, EI, PatientId, Provider, merge_patient_ids

OVERDUE_MARK = "sweep overdue"  # the history row that marks a referral as reported overdue
NEW_ID = 1 << 60  # provisional ids start here: above any stored id, in creation order


def is_new(row_id: int) -> bool:
    """Was the row created in memory (its id provisional)?"""
    return row_id >= NEW_ID


@dataclass(slots=True)
class Referral:
    """A referral: its columns (`row`, without the id), keys and patient ids."""

    id: int
    row: dict[str, Any]
    keys: list[tuple[str, EI]] = field(default_factory=list)
    # [stored row id (None: new), the id]; `changed_patients` lists the stored rows changed
    patients: list[tuple[int | None, PatientId]] = field(default_factory=list)
    overdue: bool = False  # has its `sweep overdue` history row
    dirty: bool = False
    new_keys: list[tuple[str, EI]] = field(default_factory=list)
    changed_patients: set[int] = field(default_factory=set)

    @property
    def key(self) -> EI:
        return EI(str(self.row["key_id"]), str(self.row["key_authority"] or ""))


@dataclass(slots=True)
class Appointment:
    """An appointment: its columns (`row`, without the id) and the keys known of it (all of
    them once an SIU replaced them; of a stored one, those the batch's keys name)."""

    id: int
    row: dict[str, Any]
    keys: list[tuple[str, EI]] = field(default_factory=list)
    dirty: bool = False
    keys_replaced: bool = False

    @property
    def key(self) -> EI:
        return EI(str(self.row["key_id"]), str(self.row["key_authority"] or ""))


class Ledger:
    """The referrals and appointments a batch can reach, found by key, patient and link."""

    def __init__(self, referrals: Iterable[Referral] = (),
                 appointments: Iterable[Appointment] = ()) -> None:
        self.referrals: dict[int, Referral] = {}
        self.appointments: dict[int, Appointment] = {}
        self.history: list[dict[str, Any]] = []
        self._next = NEW_ID
        # Indexes by EI.1 / CX.1 / referral id; an entry may be stale (a key replaced, a link
        # moved): each look-up checks the row itself.
        self._by_key: dict[str, list[Referral]] = {}
        self._by_patient: dict[str, list[Referral]] = {}
        self._appointments_by_key: dict[str, list[Appointment]] = {}
        self._by_link: dict[str, list[Appointment]] = {}
        self._by_referral: dict[int, list[Appointment]] = {}
        for r in referrals:
            self._add_referral(r)
        for a in appointments:
            self._add_appointment(a)

    def _add_referral(self, r: Referral) -> None:
        self.referrals[r.id] = r
        for _kind, k in r.keys:
            _index(self._by_key, k.id, r)
        for _row, p in r.patients:
            _index(self._by_patient, p.id, r)

    def _add_appointment(self, a: Appointment) -> None:
        self.appointments[a.id] = a
        _index(self._appointments_by_key, str(a.row["key_id"]), a)
        for _kind, k in a.keys:
            _index(self._by_link, k.id, a)
        if a.row.get("referral_id") is not None:
            _index(self._by_referral, int(a.row["referral_id"]), a)

    def _new_id(self) -> int:
        self._next += 1
        return self._next

    # --- referrals ---------------------------------------------------------------------------

    def referral_ids_for(self, key: EI, kinds: Iterable[str] | None = None) -> list[int]:
        """Referrals with a key matching `key` (EI equality), oldest first."""
        near = self._by_key.get(key.id)
        if not near:  # a new key: no set to build
            return []
        wanted = set(kinds) if kinds is not None else None
        return sorted({r.id for r in near for kind, k in r.keys
                       if key.matches(k) and (wanted is None or kind in wanted)})

    def key_kinds_for(self, key: EI) -> frozenset[str]:
        """The kinds (RF1-6, RF1-11, ORC-2, ORC-3) under which some referral has `key`."""
        near = self._by_key.get(key.id)
        return frozenset({kind for r in near for kind, k in r.keys if key.matches(k)}
                         ) if near else _NO_KINDS

    def add_referral(self, row: dict[str, Any], keys: list[tuple[str, EI]],
                     patients: list[PatientId]) -> Referral:
        r = Referral(self._new_id(), row, list(keys), [(None, p) for p in patients],
                     dirty=True, new_keys=list(keys))
        self._add_referral(r)
        return r

    def update_referral(self, r: Referral, **values: Any) -> None:
        r.row.update(values)
        r.dirty = True

    def add_keys(self, r: Referral, keys: Iterable[tuple[str, EI]]) -> list[EI]:
        """Add the keys the referral does not have yet; the ones added."""
        added: list[EI] = []
        for kind, key in keys:
            if key.id and not any(k == kind and key.matches(h) for k, h in r.keys):
                r.keys.append((kind, key))
                r.new_keys.append((kind, key))
                _index(self._by_key, key.id, r)
                added.append(key)
        return added

    def add_patients(self, r: Referral, ids: Iterable[PatientId]) -> None:
        """Add the ids the referral does not have yet; one that merges into a stored id
        (`PatientId.merged`) fills in what it adds to it instead; nothing else changes."""
        fresh: list[PatientId] = []
        for p in ids:
            for i, (row_id, have) in enumerate(r.patients):
                both = have.merged(p)
                if both is not None:
                    if both != have:
                        r.patients[i] = (row_id, both)
                        if row_id is not None:
                            r.changed_patients.add(row_id)
                    break
            else:
                fresh.append(p)
        for p in merge_patient_ids(sorted(fresh)):
            r.patients.append((None, p))
            _index(self._by_patient, p.id, r)

    def referrals_of_patients(self, ids: Iterable[PatientId],
                              statuses: Iterable[str]) -> list[Referral]:
        """Referrals in `statuses` with a patient id that `PatientId.matches` one of `ids`."""
        wanted = [p for p in ids if p.authority or p.oid]
        allowed = set(statuses)
        near = {r.id: r for p in wanted for r in self._by_patient.get(p.id, ())}
        return [r for _, r in sorted(near.items()) if r.row["status"] in allowed
                and any(have.matches(p) for _, have in r.patients for p in wanted)]

    # --- appointments ------------------------------------------------------------------------

    def appointment_for(self, key: EI) -> Appointment | None:
        """The appointment with this key (EI equality), the oldest if several."""
        found = [a for a in self._appointments_by_key.get(key.id, ()) if key.matches(a.key)]
        return min(found, key=lambda a: a.id) if found else None

    def add_appointment(self, row: dict[str, Any]) -> Appointment:
        a = Appointment(self._new_id(), row, dirty=True)
        self._add_appointment(a)
        return a

    def update_appointment(self, a: Appointment, **values: Any) -> None:
        a.row.update(values)
        a.dirty = True
        if values.get("referral_id") is not None:
            _index(self._by_referral, int(values["referral_id"]), a)

    def set_appointment_keys(self, a: Appointment, keys: Iterable[tuple[str, EI]]) -> None:
        """Replace the appointment's keys (SCH-26, SCH-27, `ledger.link_fields`)."""
        a.keys = list(keys)
        a.keys_replaced = True
        for _kind, k in a.keys:
            _index(self._by_link, k.id, a)

    def orphans_for(self, key: EI) -> list[tuple[Appointment, str]]:
        """Unmatched appointments whose keys carry `key`, with the kind that matched first."""
        out: list[tuple[Appointment, str]] = []
        linked = self._by_link.get(key.id)
        if not linked:  # the usual case: no appointment waits for this key
            return out
        for a in sorted({a.id: a for a in linked}.values(), key=lambda a: a.id):
            if a.row["match"] != "unmatched":
                continue
            kind = next((kind for kind, k in a.keys if k.id == key.id and key.matches(k)), None)
            if kind is not None:
                out.append((a, kind))
        return out

    def other_active(self, referral_id: int, appointment_id: int) -> bool:
        """Does the referral have another booked appointment?"""
        return any(a.row["referral_id"] == referral_id and a.id != appointment_id
                   and a.row["status"] == BOOKED for a in self._by_referral.get(referral_id, ()))


def distinct_patients(ids: tuple[PatientId, ...]) -> list[PatientId]:
    """A new referral's patient ids: `merge_patient_ids` of the distinct ids, sorted.  Ids of
    different CX.1 (the usual PID-3) never merge and sort as their CX.1 do: sorted by it alone,
    without the set and the dataclass comparisons."""
    if len({p.id for p in ids}) == len(ids):
        return sorted(ids, key=_CX1)
    return merge_patient_ids(sorted(set(ids)))


_CX1 = attrgetter("id")


_NO_KINDS: frozenset[str] = frozenset()  # a key no referral has (the usual new key)


def _index(index: dict[Any, list[Any]], key: Any, row: Any) -> None:
    """Add `row` under `key` (once)."""
    rows = index.get(key)
    if rows is None:
        index[key] = [row]
    elif not any(have is row for have in rows):
        rows.append(row)


def event_row(at: datetime, event: str, message_id: int | None, control_id: str = "",
              referral_id: int | None = None, appointment_id: int | None = None,
              before: str | None = None, after: str | None = None, rule: str = ""
              ) -> dict[str, Any]:
    """One history row (`referral_events`), as the store inserts it (the rules pass the values
    in order: keywords cost a dict per row)."""
    return {"referral_id": referral_id, "appointment_id": appointment_id,
            "message_id": message_id, "control_id": control_id, "at": at, "event": event,
            "status_before": before, "status_after": after, "rule": rule[:200]}


# `json.JSONEncoder(separators=(",", ":"), default=str).encode`, without what that method
# builds again for every value (its C encoder, with a dict to detect cycles: a ledger value is
# lists and dicts of strings, never circular): the same text in a quarter to half the time.
_JSON = make_encoder(None, str, encode_basestring_ascii, None, ":", ",", False, False, True)


def dumps(value: Any) -> str:
    """JSON as the ledger's text columns hold it (providers, diagnoses, patient ids)."""
    return "".join(_JSON(value, 0))


def strings_json(values: Iterable[str]) -> str:
    """`dumps` of a sequence of strings (diagnosis codes, patient ids' texts), written directly:
    the same text in about a third of the encoder's time."""
    return "[" + ",".join(map(encode_basestring_ascii, values)) + "]"


def providers_json(providers: Iterable[Provider]) -> str:
    """`dumps` of the providers as role/id/name/location objects, written directly: the same
    text (their fields are strings) without a dict per provider or the encoder's walk over
    them, which cost twice as much."""
    q = encode_basestring_ascii
    return "[" + ",".join([f'{{"role":{q(p.role)},"id":{q(p.id)},"name":{q(p.name)},'
                           f'"location":{q(p.location)}}}' for p in providers]) + "]"
