"""Applying one message's changes to the ledger, inside the batch transaction.

`check` raises the content errors that need the ledger's state (204 unknown key, 205 duplicate
key) before anything is written, so an AE'd message changes nothing.  `apply` then writes the
referral or appointment, runs the lifecycle, matches appointments (by key, else by patient,
specialty and window), links orphans and records every change in the history.  It returns one
readable effect line per change, for `tail` (`referral MFP-R-1001^PCPEHR pending→accepted`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from engine.ledger import lifecycle as lc
from engine.ledger.settings import LedgerSettings
from engine.mappings import changes as c
from engine.mappings.changes import EI, AppointmentChange, Change, ReferralChange
from engine.store.ledger import repository as store

ORIGINATING = {"REF": "RF1-6", "ORM": "ORC-2", "OMG": "ORC-2"}
@dataclass(slots=True)
class Context:
    conn: Connection
    message_id: int | None
    control_id: str
    now: datetime
    settings: LedgerSettings
    effects: list[str] = field(default_factory=list)
    # History rows wait here; `flush` writes them in one statement (the pipeline once per batch).
    history: list[dict[str, Any]] = field(default_factory=list)
    # (referral id, `referral.<status>`) for each status reached; None (collect nothing) unless
    # an `on:` route exists.
    events: list[tuple[int, str]] | None = None

    def emit(self, referral_id: int, status: str) -> None:
        self.emit_event(referral_id, lc.EVENT_PREFIX + status)

    def emit_event(self, referral_id: int, event: str) -> None:
        if self.events is not None:
            self.events.append((referral_id, event))

    def record(self, **values: Any) -> None:
        self.history.append(store.event_row(at=self.now, message_id=self.message_id,
                                            control_id=self.control_id, **values))

    def flush(self) -> None:
        store.insert_events(self.conn, self.history)
        self.history.clear()


def check(conn: Connection, changes: Sequence[Change]) -> None:
    """Raise `DuplicateKey` (205) or `UnknownKey` (204) for the first change that has one."""
    opened: list[EI] = []
    for change in changes:
        if not isinstance(change, ReferralChange):
            continue
        kinds = store.key_kinds_for(conn, change.key)
        known = bool(kinds) or any(change.key.matches(k) for k in opened)
        if change.event == c.OPEN:
            if kinds & set(ORIGINATING.values()) or any(change.key.matches(k) for k in opened):
                raise c.DuplicateKey("a new referral or order whose key already exists",
                                     change.key_location)
            opened.append(change.key)
        elif not known and not change.if_known and _owns(change):
            raise c.UnknownKey("an update for a referral or order this ledger does not know",
                               change.key_location)


def _owns(change: ReferralChange) -> bool:
    """Is the sender (MSH-3.1) the system that owns the key?  Only the owning
    system's update for an unknown key is AE 204.  A key naming another system in EI.2 (an RRI
    from the specialist about a referral this hub never saw) is accepted and changes nothing.
    Without EI.2 the sender is taken as the owner."""
    authority = change.key.authority.upper()
    return not authority or not change.owner or authority == change.owner.upper()


def apply(ctx: Context, changes: Sequence[Change]) -> list[str]:
    """Write every change (after `check`); the effect lines."""
    for change in changes:
        if isinstance(change, ReferralChange):
            _referral(ctx, change)
        else:
            _appointment(ctx, change)
    return ctx.effects


# --- referrals -------------------------------------------------------------------------------


def _referral(ctx: Context, ch: ReferralChange) -> None:
    if ch.event == c.OPEN:
        _open(ctx, ch)
        return
    found = store.referral_ids_for(ctx.conn, ch.key)
    if not found:  # `if_known` (a result for an order that is no referral), or not the owner
        ctx.effects.append(f"referral {ch.key.text} unknown: no change")
        return
    rid = found[0]
    row = store.referral(ctx.conn, rid)
    added = store.add_keys(ctx.conn, rid, _extra_keys(ch))
    store.add_patients(ctx.conn, rid, ch.patient_ids)
    details = _details(ch) if ch.event == c.MODIFY else {}
    if details.get("priority") and details["priority"] != row["priority"]:
        details["due_at"] = ctx.settings.due(row["received_at"], details["priority"])
    after, rule = lc.referral_transition(row["status"], ch.event)
    store.set_referral(ctx.conn, rid, status=after, updated_at=ctx.now, **details)
    ctx.record(referral_id=rid, event=f"{ch.trigger} {ch.event}", before=row["status"],
               after=after, rule=rule)
    ctx.effects.append(_effect("referral", ch.key.text, row["status"], after, ch.event))
    if after != row["status"]:
        ctx.emit(rid, after)
    if "due_at" in details:  # a new priority: its deadline may have passed already
        _overdue_on_arrival(ctx, rid, ch.key, after, details["due_at"])
    for key in added:
        _link_orphans(ctx, rid, key)


def _open(ctx: Context, ch: ReferralChange) -> None:
    status = lc.opening_status(ch.status_code)
    rule = "new referral" + (" (RF1-1 A)" if status == lc.ACCEPTED else "")
    keys = _unique([(ORIGINATING.get(ch.source, "ORC-2"), ch.key), *_extra_keys(ch)])
    late = _expired_on_arrival(ctx, ch.window_end, keys)
    if late:
        status, rule = lc.EXPIRED, f"new referral received after its window ended ({late})"
    due = ctx.settings.due(ctx.now, ch.priority)
    values = {
        "key_id": ch.key.id, "key_authority": ch.key.authority, "source": ch.source,
        "owner": ch.owner, "status": status, "received_at": ctx.now, "updated_at": ctx.now,
        "due_at": due, "providers": "[]", "diagnoses": "[]", "priority": "", "specialty": "",
    }
    values.update(_details(ch))
    rid = store.add_referral(ctx.conn, values)
    store.insert_keys(ctx.conn, rid, keys)
    store.insert_patients(ctx.conn, rid, c.merge_patient_ids(sorted(set(ch.patient_ids))))
    ctx.record(referral_id=rid, event=f"{ch.trigger} open", before=None, after=status, rule=rule)
    ctx.effects.append(f"referral {ch.key.text} new→{status}"
                       + (" (received after its window ended)" if late else ""))
    ctx.emit(rid, status)
    _overdue_on_arrival(ctx, rid, ch.key, status, due)
    for _kind, key in keys:
        _link_orphans(ctx, rid, key)


def _expired_on_arrival(ctx: Context, window_end: datetime | None,
                        keys: list[tuple[str, EI]]) -> str:
    """A new referral whose window had ended when it arrived is expired at once, as the next
    sweep would expire it: unless an appointment booked before it (an orphan carrying one of
    its keys) is waiting, which makes it scheduled instead.  The window end as text, or ""."""
    if window_end is None or not lc.window_ended(window_end, ctx.now):
        return ""
    for _kind, key in keys:
        if any(appt["status"] == c.BOOKED for appt, _via in store.orphans_for(ctx.conn, key)):
            return ""
    return f"{window_end:%Y-%m-%dT%H:%M:%S}Z"


def _overdue_on_arrival(ctx: Context, rid: int, key: EI, status: str, due: datetime) -> None:
    """A message that sets a deadline already past (an update raising the priority of a
    referral received long ago) makes the referral overdue at once, with the mark and event
    the sweep gives (`sweep overdue`, `referral.overdue`), once per referral."""
    if not lc.overdue(status, due, ctx.now) or _marked_overdue(ctx, rid):
        return
    ctx.record(referral_id=rid, event=store.OVERDUE_MARK, before=status, after=status,
               rule=f"past its deadline to be scheduled ({due:%Y-%m-%dT%H:%M:%S}Z) "
                    "when the message arrived")
    ctx.effects.append(f"referral {key.text} {status}, overdue")
    ctx.emit_event(rid, lc.OVERDUE_EVENT)


def _marked_overdue(ctx: Context, rid: int) -> bool:
    """Has the referral its overdue mark, stored or waiting in this batch's history?"""
    return any(h["referral_id"] == rid and h["event"] == store.OVERDUE_MARK
               for h in ctx.history) or bool(store.marked_overdue(ctx.conn, [rid]))


def _unique(keys: list[tuple[str, EI]]) -> list[tuple[str, EI]]:
    out: list[tuple[str, EI]] = []
    for kind, key in keys:
        if key.id and not any(k == kind and key.matches(h) for k, h in out):
            out.append((kind, key))
    return out


def _extra_keys(ch: ReferralChange) -> list[tuple[str, EI]]:
    keys = [("RF1-11", k) for k in ch.external_ids]
    if ch.filler_order_number is not None:
        keys.append(("ORC-3", ch.filler_order_number))
    return keys


def _details(ch: ReferralChange) -> dict[str, Any]:
    """The descriptive fields a message carries (empty ones leave the stored value)."""
    out: dict[str, Any] = {}
    for name in ("priority", "specialty", "window_start", "window_end"):
        value = getattr(ch, name)
        if value:
            out[name] = value
    if ch.providers:
        out["providers"] = store.dumps([{"role": p.role, "id": p.id, "name": p.name,
                                         "location": p.location} for p in ch.providers])
    if ch.diagnoses:
        out["diagnoses"] = store.dumps(list(ch.diagnoses))
    for name in ch.cleared:  # `""` in an I13: deleted (README "The HL7 null")
        out[name] = None if name.startswith("window") else ""
    return out


def _effect(kind: str, key: str, before: str, after: str, event: str) -> str:
    if before == after:
        return f"{kind} {key} {after} ({event})"
    return f"{kind} {key} {before}→{after}"


# --- appointments ----------------------------------------------------------------------------


def _appointment(ctx: Context, ch: AppointmentChange) -> None:
    row = store.appointment_for(ctx.conn, ch.key)
    # An S14 that names no status keeps the stored one ("S14 with a non-status change:
    # unchanged"); one that creates the appointment (a feed started mid-stream) books it.
    keep = ch.status == c.KEEP and row is not None
    status = str(row["status"]) if keep and row is not None else ch.status or c.BOOKED
    values: dict[str, Any] = {
        "status": status, "filler_status": ch.filler_status, "updated_at": ctx.now,
        "patient_ids": store.dumps([p.text for p in ch.patient_ids]),
    }
    if ch.start is not None:
        values["start"] = ch.start
    if ch.duration_min is not None:
        values["duration_min"] = ch.duration_min
    if ch.specialty:
        values["specialty"] = ch.specialty
    for name in ch.cleared:  # `""` in an S14: deleted
        values[name] = "" if name == "specialty" else None
    if row is None:
        values.update(key_id=ch.key.id, key_authority=ch.key.authority, match="unmatched",
                      created_at=ctx.now, candidates="[]")
        aid = store.add_appointment(ctx.conn, values)
        row = {"id": aid, "status": None, "match": "unmatched", "referral_id": None,
               "start": ch.start, "specialty": ch.specialty}
    else:
        aid = int(row["id"])
        store.set_appointment(ctx.conn, aid, **values)
    store.set_appointment_keys(ctx.conn, aid, [(via, k) for via, keys in _links(ch)
                                               for k in keys],
                               fresh=row["status"] is None)
    ctx.record(appointment_id=aid, referral_id=row["referral_id"],
               event=f"SIU^{ch.trigger} {status}", before=row["status"], after=status,
               rule="appointment " + ("created" if row["status"] is None else "updated")
               + (" (no status named: kept)" if keep else "") + _duration_note(ch))
    effect = f"appointment {ch.key.text} {status}"
    rid = row["referral_id"]
    linked_now = False
    if rid is None and row["match"] == "unmatched":
        rid, effect = _match(ctx, aid, ch, effect)
        linked_now = rid is not None
    ctx.effects.append(effect)
    if rid is not None and (linked_now or not keep):
        _follow(ctx, int(rid), aid, status, ch.rescheduled, ch.trigger)


def _links(ch: AppointmentChange) -> list[tuple[str, tuple[EI, ...]]]:
    """The SIU's keys that name a referral, strongest first: SCH-26, SCH-27, then the
    channel's `ledger.link_fields`."""
    return [("SCH-26", ch.placer_order_numbers), ("SCH-27", ch.filler_order_numbers),
            *ch.other_keys]


def _links_named(links: list[tuple[str, tuple[EI, ...]]]) -> str:
    return "/".join(via for via, keys in links if keys)


def _duration_note(ch: AppointmentChange) -> str:
    """The duration's source field, and the sources when they disagree."""
    if not ch.duration_source:
        return ""
    note = f"; duration from {ch.duration_source}"
    return note + (f" (sources disagree: {ch.duration_conflict})" if ch.duration_conflict
                   else "")


def _match(ctx: Context, aid: int, ch: AppointmentChange, effect: str) -> tuple[int | None, str]:
    """Identifier first (SCH-26, then SCH-27), then the fallback (same patient, specialty, start
    in the window).  An SIU whose SCH-26/27 name no referral yet is an orphan (it came before
    its REF or order) and waits for that key: the fallback would link it to another referral
    of the patient."""
    links = _links(ch)
    for via, keys in links:
        found = sorted({rid for k in keys for rid in store.referral_ids_for(ctx.conn, k)})
        if len(found) == 1:
            return _link(ctx, aid, found[0], via), f"{effect}, matched via {via}"
        if len(found) > 1:
            _ambiguous(ctx, aid, found)
            return None, f"{effect}, ambiguous"
    if any(keys for _via, keys in links):
        return None, f"{effect}, unmatched (waits for the referral its {_links_named(links)} names)"
    if ch.patient_ids and ch.specialty and ch.start is not None:
        found = sorted(int(r["id"]) for r in store.referrals_of_patients(
            ctx.conn, ch.patient_ids, lc.MATCHABLE) if _fallback_fits(ctx, r, ch))
        if len(found) == 1:
            return _link(ctx, aid, found[0], "fallback"), f"{effect}, matched via fallback"
        if len(found) > 1:
            _ambiguous(ctx, aid, found)
            return None, f"{effect}, ambiguous"
    return None, f"{effect}, unmatched"


def _fallback_fits(ctx: Context, r: dict[str, Any], ch: AppointmentChange) -> bool:
    """Same specialty, start inside RF1-7..RF1-8 (the default window when RF1-8 is empty)."""
    if str(r["specialty"]).upper() != ch.specialty.upper() or ch.start is None:
        return False
    start = r["window_start"] or r["received_at"]
    end = r["window_end"] or r["received_at"] + timedelta(
        days=ctx.settings.default_window_days)
    return bool(start <= ch.start <= end)


def _link(ctx: Context, aid: int, rid: int, via: str) -> int:
    store.set_appointment(ctx.conn, aid, match="matched", referral_id=rid, via=via,
                          candidates="[]")
    ctx.record(appointment_id=aid, referral_id=rid, event=f"link via {via}",
               rule=f"matched via {via}")
    return rid


def _ambiguous(ctx: Context, aid: int, candidates: list[int]) -> None:
    store.set_appointment(ctx.conn, aid, match="ambiguous", referral_id=None, via=None,
                          candidates=store.dumps(candidates))
    ctx.record(appointment_id=aid, event="ambiguous",
               rule=f"{len(candidates)} candidates: never resolved automatically")


def _follow(ctx: Context, rid: int, aid: int, status: str, rescheduled: bool,
            trigger: str) -> None:
    """The linked referral follows its appointment (the scheduling rows of the lifecycle)."""
    row = store.referral(ctx.conn, rid)
    if row["status"] == lc.CANCELLED and status == c.BOOKED and not row["review"]:
        store.set_referral(ctx.conn, rid, review=True)
        ctx.record(referral_id=rid, appointment_id=aid, event="review",
                   rule="booking for a cancelled referral: flagged for review")
    after, rule = lc.appointment_transition(row["status"], status, rescheduled,
                                            store.other_active(ctx.conn, rid, aid))
    if after != row["status"]:
        store.set_referral(ctx.conn, rid, status=after, updated_at=ctx.now)
        ctx.effects.append(_effect("referral", EI(row["key_id"], row["key_authority"]).text,
                                   row["status"], after, trigger))
        ctx.emit(rid, after)
    ctx.record(referral_id=rid, appointment_id=aid, event=f"SIU^{trigger}",
               before=row["status"], after=after, rule=rule)


def _link_orphans(ctx: Context, rid: int, key: EI) -> None:
    """An SIU stored before its referral is linked when the referral appears or gains the key."""
    for appt, via in store.orphans_for(ctx.conn, key):
        _link(ctx, int(appt["id"]), rid, via)
        ctx.effects.append(f"appointment {EI(appt['key_id'], appt['key_authority']).text} "
                           f"linked via {via}")
        _follow(ctx, rid, int(appt["id"]), appt["status"], False, "orphan")


def link_manually(conn: Connection, appointment: EI, referral: EI, now: datetime,
                  events: list[tuple[int, str]] | None = None) -> str:
    """`hl7-engine link`: a human resolution, recorded as `via: manual`; the referral events it
    causes go to `events` when given."""
    appt = store.appointment_for(conn, appointment)
    if appt is None:
        raise LookupError(f"no appointment {appointment.text}")
    found = store.referral_ids_for(conn, referral)
    if not found:
        raise LookupError(f"no referral {referral.text}")
    ctx = Context(conn, None, "", now, LedgerSettings(), events=events)
    _link(ctx, int(appt["id"]), found[0], "manual")
    _follow(ctx, found[0], int(appt["id"]), appt["status"], False, "manual")
    ctx.flush()
    return f"appointment {appointment.text} linked to referral {referral.text} (manual)"
