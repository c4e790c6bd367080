"""The worklist: what waits for a person, each row with why it is there and what clears it.

Two kinds of rows, oldest first within each: appointments the ledger could not link to a
referral (unmatched or ambiguous), then referrals whose patient did not come (`no_show`) and
that wait to be booked again.  Each row is the appointment as `hl7-engine appointments` shows
it, plus `kind`, `reason` and `action` in plain words, and the figures behind them
(`days_outside_window`, `days_since`, `waits_for`).

The reason of an unmatched appointment is worked out again when the worklist is read, the way
the ledger matched it: the keys its SCH-26/SCH-27 (or link fields) name, else the open
referrals of the same patient and specialty whose window holds its start.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from engine.ledger import lifecycle as lc
from engine.ledger.settings import DEFAULT_WINDOW_DAYS
from engine.mappings.changes import EI, PatientId
from engine.store.ledger import repository as store
from engine.store.ledger.views import WAITING, appointment_rows, referral_names
from engine.store.schema import appointment_keys, appointments, referrals
from engine.timestamps import as_utc, utc_text, whole_days

_NO_SHOW_APPOINTMENT = "noshow"


def worklist(conn: Connection, now: datetime, *, limit: int | None = None,
             window_days: int = DEFAULT_WINDOW_DAYS) -> list[dict[str, Any]]:
    """The first `limit` rows of the worklist at `now`."""
    q = (select(appointments).where(appointments.c.match.in_(WAITING))
         .order_by(appointments.c.created_at, appointments.c.id).limit(limit))
    rows = [_explained(conn, a, window_days) for a in appointment_rows(conn, q)]
    if limit is None or len(rows) < limit:
        rows += _no_shows(conn, now, None if limit is None else limit - len(rows))
    return rows


def count(conn: Connection) -> int:
    """How many rows `worklist` has without a limit."""
    waiting = select(func.count()).select_from(appointments).where(
        appointments.c.match.in_(WAITING))
    no_show = select(func.count()).select_from(referrals).where(
        referrals.c.status == lc.NO_SHOW)
    return int(conn.execute(waiting).scalar_one()) + int(conn.execute(no_show).scalar_one())


def _link(appointment: str, referral: str = "REFERRAL") -> str:
    return f"hl7-engine link {appointment} {referral}"


def _explained(conn: Connection, row: dict[str, Any], window_days: int) -> dict[str, Any]:
    """An unmatched or ambiguous appointment with its kind, reason and action."""
    out = {**row, "kind": "", "reason": "", "action": "", "waits_for": [],
           "days_outside_window": None, "days_since": None}
    appt = row["id"]
    if row["match"] == "ambiguous":
        names = row["candidates"]
        out.update(kind="ambiguous", reason=f"ambiguous between {_joined(names, 'and')}",
                   action=_link(appt, f"<{_joined(names, 'or')}>"))
        return out
    named = _keys_named(conn, appt)
    if named:
        keys = [key for _via, key in named]
        vias = "/".join(dict.fromkeys(via for via, _key in named))
        out.update(kind="orphan", waits_for=keys,
                   reason=f"orphan waiting for referral {_joined(keys, 'or')} (its {vias} "
                          f"names {'it' if len(keys) == 1 else 'them'})",
                   action="waits for the referral to arrive (it is linked then), or "
                          + _link(appt))
        return out
    out.update(_fallback(conn, row, window_days))
    return out


def _keys_named(conn: Connection, appointment: str) -> list[tuple[str, str]]:
    """(kind, EI text) of the referral keys an appointment's SCH-26/SCH-27/link fields carry."""
    key = EI.parse(appointment)
    q = (select(appointments.c.key_authority, appointment_keys.c.kind,
                appointment_keys.c.key_id, appointment_keys.c.key_authority.label("authority"))
         .join(appointment_keys, appointment_keys.c.appointment_id == appointments.c.id)
         .where(appointments.c.key_id == key.id).order_by(appointment_keys.c.id))
    return [(str(r.kind), EI(r.key_id, r.authority or "").text) for r in conn.execute(q)
            if (r.key_authority or "") == key.authority]


def _fallback(conn: Connection, row: dict[str, Any], window_days: int) -> dict[str, Any]:
    """Why the fallback (same patient, same specialty, start inside the window) found nothing:
    what is missing, no open referral, or the nearest referral's window missed by N days."""
    appt = row["id"]
    missing = [what for what, value in (("patient id", row["patient_ids"]),
                                        ("specialty", row["specialty"]),
                                        ("start", row["start"])) if not value]
    if missing:
        return {"kind": "no_match_data",
                "reason": f"no {_joined(missing, 'or')} to match it to a referral by",
                "action": _link(appt)}
    start = as_utc(row["start"])
    found = [r for r in store.referrals_of_patients(conn, _patients(row["patient_ids"]),
                                                    lc.MATCHABLE)
             if str(r["specialty"]).upper() == str(row["specialty"]).upper()]
    names = referral_names(conn, (r["id"] for r in found))
    if not found:
        return {"kind": "no_referral",
                "reason": "no open referral for this patient and specialty",
                "action": f"{_link(appt)} once the referral is known"}
    misses = sorted((_days_outside(r, start, window_days), names[int(r["id"])]) for r in found)
    fits = [name for days, name in misses if days == 0]
    if fits:  # the referral came after the booking: the ledger matches only when an SIU arrives
        return {"kind": "fits_now",
                "reason": f"referral {_joined(fits, 'and')} now "
                          f"fit{'s' if len(fits) == 1 else ''} (it arrived after the booking)",
                "action": _link(appt, fits[0] if len(fits) == 1 else
                                f"<{_joined(fits, 'or')}>")}
    days, name = misses[0]
    return {"kind": "outside_window", "days_outside_window": days,
            "reason": f"outside the window of referral {name} by {days} "
                      f"day{'' if days == 1 else 's'}",
            "action": f"{_link(appt, name)} if it is for that referral"}


def _days_outside(r: dict[str, Any], start: datetime, window_days: int) -> int:
    """Calendar days between `start` and the referral's window (RF1-7..RF1-8, the default
    window from its receipt when RF1-8 is empty); 0 inside it, at least 1 outside."""
    received = as_utc(r["received_at"])
    first = as_utc(r["window_start"]) if r["window_start"] else received
    last = as_utc(r["window_end"]) if r["window_end"] else received + timedelta(days=window_days)
    if first <= start <= last:
        return 0
    edge = first if start < first else last
    return max(1, abs((start.date() - edge.date()).days))


def _patients(texts: Iterable[str]) -> list[PatientId]:
    """The appointment's stored `CX.1^CX.4` texts as ids to look referrals up by; the text
    keeps one of namespace and OID, so an OID-looking one is tried as either."""
    out: list[PatientId] = []
    for text in texts:
        ident, _, authority = str(text).partition("^")
        out.append(PatientId(ident, authority))
        if authority.replace(".", "").isdigit():
            out.append(PatientId(ident, "", authority))
    return out


def _no_shows(conn: Connection, now: datetime, limit: int | None) -> list[dict[str, Any]]:
    """Referrals in `no_show`, the longest waiting first, each with its missed appointment."""
    q = (select(referrals.c.id, referrals.c.key_id, referrals.c.key_authority,
                referrals.c.updated_at).where(referrals.c.status == lc.NO_SHOW)
         .order_by(referrals.c.updated_at, referrals.c.id).limit(limit))
    out = []
    for r in conn.execute(q).all():
        referral = EI(r.key_id, r.key_authority or "").text
        missed = appointment_rows(conn, select(appointments).where(
            appointments.c.referral_id == r.id).order_by(
            (appointments.c.status == _NO_SHOW_APPOINTMENT).desc(),
            appointments.c.updated_at.desc(), appointments.c.id.desc()).limit(1))
        row: dict[str, Any] = missed[0] if missed else {
            "id": None, "status": None, "start": None, "duration_min": None, "specialty": "",
            "match": "matched", "referral": referral, "via": None, "candidates": [],
            "patient_ids": [], "created_at": None}
        since = row["start"] or utc_text(r.updated_at)
        days = whole_days(now, since) if since else None
        ago = "" if days is None else (f", {days} day{'' if days == 1 else 's'} ago" if days >= 0
                                       else f", in {-days} day{'' if days == -1 else 's'}")
        out.append({**row, "kind": "no_show", "waits_for": [], "days_outside_window": None,
                    "days_since": days,
                    "reason": f"no-show for referral {referral}{ago}: needs rebooking",
                    "action": f"book again (an SIU whose SCH-26 names {referral} links it)"})
    return out


def _joined(items: list[str], word: str) -> str:
    """`A`, `A and B`, `A, B and C`."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {word} {items[-1]}"
