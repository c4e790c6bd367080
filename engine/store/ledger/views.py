"""Read models for the CLI: referrals, appointments, history, as JSON-ready dicts.

Keys are snake_case and stable (the CLI's contract); ids print as HL7 EI text (`EI.1^EI.2`);
times as `engine.timestamps.utc_text` writes them (`2026-12-04T20:18:25Z`).  The worklist, which
explains its rows, is `engine.store.ledger.worklist`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, and_, func, select

from engine.ledger import lifecycle as lc
from engine.mappings.changes import EI, PatientId
from engine.store.schema import (
    appointments,
    outbound,
    referral_events,
    referral_keys,
    referral_patients,
    referrals,
)
from engine.timestamps import as_utc, utc_text, whole_days


def iso(value: datetime | str | None) -> str | None:
    """A stored time as every command shows it (`engine.timestamps.utc_text`)."""
    return utc_text(value)


# A stored history note may begin with a section-sign citation of a rule book users do not
# have (the sign, U+00A7, then a number such as 7 or 9.5); it is dropped when the note is shown.
_SECTION = re.compile(r"\(\s*\u00a7[^)]*\)|\u00a7\d+(?:\.\d+)*(?:\s*[-–,]\s*\u00a7?\d+(?:\.\d+)*)*")


def plain_note(rule: str | None) -> str | None:
    """A history note as users read it: without any section-number citation."""
    if not rule:
        return rule
    return re.sub(r"\s{2,}", " ", _SECTION.sub("", rule)).strip(" ;:")


def _ei(key_id: str, authority: str) -> str:
    return EI(key_id, authority).text


@dataclass(frozen=True, slots=True)
class ReferralFilter:
    """Which referrals a listing shows: in `status`; past their deadline to reach `scheduled`
    at `overdue_at`; of a `specialty` or a `source` (REF, ORM, OMG); received in
    [`since`, `until`)."""

    status: str | None = None
    overdue_at: datetime | None = None
    specialty: str | None = None
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_referrals(conn: Connection, *, status: str | None = None,
                   overdue_at: datetime | None = None, limit: int | None = None,
                   now: datetime | None = None) -> list[dict[str, Any]]:
    """Every referral (or those in `status`, or past their deadline to be scheduled at
    `overdue_at`), the first `limit` by id.  `days_overdue` is counted at `now` (else at
    `overdue_at`; None without either)."""
    which = ReferralFilter(status=status, overdue_at=overdue_at)
    q = _referrals_query(select(referrals), which).order_by(referrals.c.id)
    return _referral_rows(conn, q.limit(limit), now or overdue_at)


def count_referrals(conn: Connection, *, status: str | None = None,
                    overdue_at: datetime | None = None) -> int:
    """How many referrals `list_referrals` lists without a limit."""
    which = ReferralFilter(status=status, overdue_at=overdue_at)
    q = _referrals_query(select(func.count()).select_from(referrals), which)
    return int(conn.execute(q).scalar_one())


def referral_page(conn: Connection, which: ReferralFilter, *, after: int = 0, limit: int,
                  now: datetime | None = None) -> tuple[list[dict[str, Any]], int | None]:
    """One page of a listing (keyset paging): the first `limit` referrals by id after row id
    `after`, as `list_referrals` shows them, and the row id to continue after (None on the
    last page)."""
    ids = list(conn.execute(_referrals_query(select(referrals.c.id), which)
                            .where(referrals.c.id > after).order_by(referrals.c.id)
                            .limit(limit + 1)).scalars())
    page = ids[:limit]
    rows = _referral_rows(conn, select(referrals).where(referrals.c.id.in_(page))
                          .order_by(referrals.c.id), now or which.overdue_at)
    return rows, (int(page[-1]) if len(ids) > limit else None)


def _referrals_query(q: Select[Any], which: ReferralFilter) -> Select[Any]:
    if which.status:
        q = q.where(referrals.c.status == which.status)
    if which.overdue_at is not None:
        q = q.where(overdue(which.overdue_at))
    if which.specialty:
        q = q.where(referrals.c.specialty == which.specialty)
    if which.source:
        q = q.where(referrals.c.source == which.source)
    if which.since is not None:
        q = q.where(referrals.c.received_at >= which.since)
    if which.until is not None:
        q = q.where(referrals.c.received_at < which.until)
    return q


def _referral_rows(conn: Connection, q: Select[Any], now: datetime | None
                   ) -> list[dict[str, Any]]:
    rows = [dict(r) for r in conn.execute(q).mappings()]
    ids = [r["id"] for r in rows]
    keys = _grouped(conn, select(referral_keys).where(referral_keys.c.referral_id.in_(ids))
                    .order_by(referral_keys.c.id), "referral_id")
    patients = _grouped(conn, select(referral_patients).where(
        referral_patients.c.referral_id.in_(ids)).order_by(referral_patients.c.id), "referral_id")
    appts = _grouped(conn, select(appointments).where(appointments.c.referral_id.in_(ids))
                     .order_by(appointments.c.id), "referral_id")
    return [_referral(r, keys.get(r["id"], []), patients.get(r["id"], []),
                      appts.get(r["id"], []), now) for r in rows]


def days_overdue(status: str, due_at: datetime | str | None, now: datetime | None) -> int | None:
    """Whole days past the deadline to be scheduled, for a pending or accepted referral past it
    at `now`; None otherwise."""
    if now is None or due_at is None or status not in (lc.PENDING, lc.ACCEPTED):
        return None
    if as_utc(due_at) >= as_utc(now):
        return None
    return whole_days(now, due_at)


def overdue(now: datetime) -> ColumnElement[bool]:
    """Past its deadline to reach `scheduled` at `now`: pending or accepted, `due_at` before it."""
    return and_(referrals.c.status.in_([lc.PENDING, lc.ACCEPTED]), referrals.c.due_at < now)


def status_counts(conn: Connection) -> dict[str, int]:
    """How many referrals are in each status: every status of the lifecycle, 0 included."""
    found: dict[str, int] = dict(conn.execute(select(referrals.c.status, func.count())
                              .group_by(referrals.c.status)).tuples().all())
    return {status: int(found.get(status, 0)) for status in lc.STATUSES}


def overdue_counts(conn: Connection, now: datetime) -> dict[str, int]:
    """How many referrals are overdue at `now` (as `referrals --overdue` lists them), by
    priority code ("" when the referral has none)."""
    rows = conn.execute(select(referrals.c.priority, func.count()).where(overdue(now))
                        .group_by(referrals.c.priority)).tuples().all()
    out: dict[str, int] = {}
    for priority, n in rows:
        code = str(priority or "").upper()
        out[code] = out.get(code, 0) + int(n)
    return out


def _grouped(conn: Connection, q: Any, by: str) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for row in conn.execute(q).mappings():
        out.setdefault(int(row[by]), []).append(dict(row))
    return out


def _referral(r: dict[str, Any], keys: list[dict[str, Any]], patients: list[dict[str, Any]],
              appts: list[dict[str, Any]], now: datetime | None) -> dict[str, Any]:
    filler = next((k for k in keys if k["kind"] == "ORC-3"), None)
    return {
        "id": _ei(r["key_id"], r["key_authority"]),
        "status": r["status"],
        "source": r["source"],
        "priority": r["priority"],
        "specialty": r["specialty"],
        "patient_ids": [PatientId(p["patient_id"], p["authority"], p["authority_oid"]).text
                        for p in patients],
        "external_ids": [_ei(k["key_id"], k["key_authority"]) for k in keys
                         if k["kind"] == "RF1-11"],
        "filler_order_number": _ei(filler["key_id"], filler["key_authority"]) if filler else None,
        "appointments": [_ei(a["key_id"], a["key_authority"]) for a in appts],
        "window_start": iso(r["window_start"]),
        "window_end": iso(r["window_end"]),
        "providers": json.loads(r["providers"] or "[]"),
        "diagnoses": json.loads(r["diagnoses"] or "[]"),
        "review": bool(r["review"]),
        "received_at": iso(r["received_at"]),
        "updated_at": iso(r["updated_at"]),
        "due_at": iso(r["due_at"]),
        "days_overdue": days_overdue(r["status"], r["due_at"], now),
    }


def find_referral(conn: Connection, key: EI, now: datetime | None = None
                  ) -> dict[str, Any] | None:
    """One referral by any of its keys, with its history (`days_overdue` counted at `now`)."""
    from engine.store.ledger.repository import referral_ids_for

    found = referral_ids_for(conn, key)
    if not found:
        return None
    rows = _referral_rows(conn, select(referrals).where(referrals.c.id == found[0]), now)
    if not rows:
        return None
    out = rows[0]
    history = conn.execute(select(referral_events).where(
        referral_events.c.referral_id == found[0]).order_by(referral_events.c.id)).mappings().all()
    appts = appointment_names(conn, (h["appointment_id"] for h in history))
    out["history"] = [{
        "at": iso(h["at"]), "event": h["event"], "status_before": h["status_before"],
        "status_after": h["status_after"], "rule": plain_note(h["rule"]),
        "message_id": h["message_id"], "control_id": h["control_id"] or None,
        "appointment": appts.get(int(h["appointment_id"])) if h["appointment_id"] else None,
    } for h in history]
    out["events"] = events_sent(conn, found[0])
    return out


def events_sent(conn: Connection, referral_id: int) -> list[dict[str, Any]]:
    """The referral's event messages queued by `on:` routes, oldest first, with their state."""
    q = (select(outbound.c.id, outbound.c.event, outbound.c.route, outbound.c.destination,
                outbound.c.control_id, outbound.c.message_id, outbound.c.status,
                outbound.c.created_at, outbound.c.delivered_at)
         .where(outbound.c.referral_id == referral_id, outbound.c.event != "")
         .order_by(outbound.c.id))
    return [{"queue_id": r.id, "event": r.event, "route": r.route,
             "destination": r.destination, "control_id": r.control_id,
             "message_id": r.message_id, "status": r.status, "created_at": iso(r.created_at),
             "delivered_at": iso(r.delivered_at)} for r in conn.execute(q)]


def list_appointments(conn: Connection, *, worklist: bool = False, limit: int | None = None
                      ) -> list[dict[str, Any]]:
    """Every appointment, the first `limit` by id; with `worklist`, the unmatched and
    ambiguous ones, oldest first."""
    q = select(appointments)
    if worklist:
        q = q.where(appointments.c.match.in_(WAITING)).order_by(
            appointments.c.created_at, appointments.c.id)
    else:
        q = q.order_by(appointments.c.id)
    return appointment_rows(conn, q.limit(limit))


WAITING = ("unmatched", "ambiguous")  # the matches that put an appointment on the worklist


def count_appointments(conn: Connection, *, worklist: bool = False) -> int:
    """How many appointments `list_appointments` lists without a limit."""
    q = select(func.count()).select_from(appointments)
    if worklist:
        q = q.where(appointments.c.match.in_(WAITING))
    return int(conn.execute(q).scalar_one())


NAMES_AT_ONCE = 500  # row ids per `IN (...)` of the name look-ups


def _names(conn: Connection, table: Any, ids: Iterable[Any]) -> dict[int, str]:
    wanted = sorted({int(i) for i in ids if i is not None})
    out: dict[int, str] = {}
    for start in range(0, len(wanted), NAMES_AT_ONCE):
        chunk = wanted[start:start + NAMES_AT_ONCE]
        out.update((int(r.id), _ei(r.key_id, r.key_authority)) for r in conn.execute(
            select(table.c.id, table.c.key_id, table.c.key_authority)
            .where(table.c.id.in_(chunk))))
    return out


def referral_names(conn: Connection, ids: Iterable[Any]) -> dict[int, str]:
    """The EI text of the referrals with these row ids (None ignored), by row id."""
    return _names(conn, referrals, ids)


def appointment_names(conn: Connection, ids: Iterable[Any]) -> dict[int, str]:
    """The EI text of the appointments with these row ids (None ignored), by row id."""
    return _names(conn, appointments, ids)


def appointment_rows(conn: Connection, q: Select[Any]) -> list[dict[str, Any]]:
    """The appointments `q` selects (whole rows), as the CLI shows them."""
    rows = conn.execute(q).mappings().all()
    refs = referral_names(conn, [a["referral_id"] for a in rows] + [
        i for a in rows for i in json.loads(a["candidates"] or "[]")])
    return [{
        "id": _ei(a["key_id"], a["key_authority"]),
        "status": a["status"],
        "start": iso(a["start"]),
        "duration_min": a["duration_min"],
        "specialty": a["specialty"],
        "match": a["match"],
        "referral": refs.get(int(a["referral_id"])) if a["referral_id"] else None,
        "via": a["via"],
        "candidates": [refs.get(int(i), str(i)) for i in json.loads(a["candidates"] or "[]")],
        "patient_ids": json.loads(a["patient_ids"] or "[]"),
        "created_at": iso(a["created_at"]),
    } for a in rows]


def changes_of_message(conn: Connection, message_id: int) -> list[dict[str, Any]]:
    """Every ledger change one message made (the other direction of a referral's history)."""
    rows = conn.execute(select(referral_events).where(referral_events.c.message_id == message_id)
                        .order_by(referral_events.c.id)).mappings().all()
    refs = referral_names(conn, (h["referral_id"] for h in rows))
    appts = appointment_names(conn, (h["appointment_id"] for h in rows))
    return [{
        "referral": refs.get(int(h["referral_id"])) if h["referral_id"] else None,
        "appointment": appts.get(int(h["appointment_id"])) if h["appointment_id"] else None,
        "event": h["event"], "status_before": h["status_before"],
        "status_after": h["status_after"], "rule": plain_note(h["rule"]),
    } for h in rows]
