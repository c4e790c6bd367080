"""The ledger's rules for one message's changes, on the ledger state in memory (no database).

`check` raises the content errors that need the ledger's state (204 unknown key, 205 duplicate
key) before anything changes, so an AE'd message changes nothing.  `apply` then creates or
updates the referral or appointment, runs the lifecycle, matches appointments (by key, else by
patient, specialty and window: decided before the appointment is stored), links orphans and
records every change in the history.  It returns one readable effect line per change, for
`tail` (`referral MFP-R-1001^PCPEHR pending→accepted`).  engine.store.ledger loads the state
and writes back what changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from engine.ledger import lifecycle as lc
from engine.ledger import state
from engine.ledger.settings import LedgerSettings
from engine.ledger.state import OVERDUE_MARK, Appointment, Ledger, Referral, event_row
from engine.mappings import changes as c
from engine.mappings.changes import EI, AppointmentChange, Change, ReferralChange

ORIGINATING = {"REF": "RF1-6", "ORM": "ORC-2", "OMG": "ORC-2"}
_ORIGINATING_KINDS = frozenset(ORIGINATING.values())


@dataclass(slots=True)
class Context:
    ledger: Ledger
    message_id: int | None
    control_id: str
    now: datetime
    settings: LedgerSettings
    effects: list[str] = field(default_factory=list)
    # (referral id, `referral.<status>`) for each status reached; None (collect nothing) unless
    # an `on:` route exists.
    events: list[tuple[int, str]] | None = None

    def emit(self, referral_id: int, status: str) -> None:
        if self.events is not None:
            self.events.append((referral_id, lc.EVENT_PREFIX + status))

    def emit_event(self, referral_id: int, event: str) -> None:
        if self.events is not None:
            self.events.append((referral_id, event))

    def record(self, *, event: str, rule: str = "", referral_id: int | None = None,
               appointment_id: int | None = None, before: str | None = None,
               after: str | None = None) -> None:
        self.ledger.history.append(event_row(self.now, event, self.message_id, self.control_id,
                                             referral_id, appointment_id, before, after, rule))
        referral = self.ledger.referrals.get(referral_id or 0) if after is not None else None
        if referral is not None:
            marked(referral, after, self.now)


def marked(referral: Referral, status: str | None, at: datetime) -> None:
    """Keep on the referral's row what a history row of status `status` at `at` says for the
    report: its first `scheduled` time, and whether it was ever seen or a no-show."""
    row = referral.row
    if status == lc.SCHEDULED and (row.get("first_scheduled_at") is None
                                   or at < row["first_scheduled_at"]):
        row["first_scheduled_at"] = at
    elif status in (lc.COMPLETED, lc.CLOSED):
        row["ever_seen"] = True
    elif status == lc.NO_SHOW:
        row["ever_no_show"] = True
    else:
        return
    referral.dirty = True


def check(ledger: Ledger, changes: Sequence[Change]) -> None:
    """Raise `DuplicateKey` (205) or `UnknownKey` (204) for the first change that has one."""
    opened: list[EI] = []
    for change in changes:
        if not isinstance(change, ReferralChange):
            continue
        kinds = ledger.key_kinds_for(change.key)
        again = bool(opened) and any(change.key.matches(k) for k in opened)
        if change.event == c.OPEN:
            if again or kinds & _ORIGINATING_KINDS:
                raise c.DuplicateKey("a new referral or order whose key already exists",
                                     change.key_location)
            opened.append(change.key)
        elif not kinds and not again and not change.if_known and _owns(change):
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
    found = ctx.ledger.referral_ids_for(ch.key)
    if not found:  # `if_known` (a result for an order that is no referral), or not the owner
        ctx.effects.append(f"referral {ch.key.text} unknown: no change")
        return
    ref = ctx.ledger.referrals[found[0]]
    before = str(ref.row["status"])
    added = ctx.ledger.add_keys(ref, _extra_keys(ch))
    ctx.ledger.add_patients(ref, ch.patient_ids)
    details = _details(ch, {}) if ch.event == c.MODIFY else {}
    if details.get("priority") and details["priority"] != ref.row["priority"]:
        details["due_at"] = ctx.settings.due(ref.row["received_at"], details["priority"])
    after, rule = lc.referral_transition(before, ch.event)
    ctx.ledger.update_referral(ref, status=after, updated_at=ctx.now, **details)
    ctx.record(referral_id=ref.id, event=f"{ch.trigger} {ch.event}", before=before,
               after=after, rule=rule)
    ctx.effects.append(_effect("referral", ch.key.text, before, after, ch.event))
    if after != before:
        ctx.emit(ref.id, after)
    if "due_at" in details:  # a new priority: its deadline may have passed already
        _overdue_on_arrival(ctx, ref, ch.key, after, details["due_at"])
    for key in added:
        _link_orphans(ctx, ref.id, key)


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
        "review": False, "window_start": None, "window_end": None, "first_scheduled_at": None,
        "ever_seen": False, "ever_no_show": False,  # every column: the store writes the row as is
    }
    _details(ch, values)
    ref = ctx.ledger.add_referral(values, keys, state.distinct_patients(ch.patient_ids))
    ctx.record(referral_id=ref.id, event=f"{ch.trigger} open", before=None, after=status,
               rule=rule)
    ctx.effects.append(f"referral {ch.key.text} new→{status}"
                       + (" (received after its window ended)" if late else ""))
    ctx.emit(ref.id, status)
    _overdue_on_arrival(ctx, ref, ch.key, status, due)
    for _kind, key in keys:
        _link_orphans(ctx, ref.id, key)


def _expired_on_arrival(ctx: Context, window_end: datetime | None,
                        keys: list[tuple[str, EI]]) -> str:
    """A new referral whose window had ended when it arrived is expired at once, as the next
    sweep would expire it: unless an appointment booked before it (an orphan carrying one of
    its keys) is waiting, which makes it scheduled instead.  The window end as text, or ""."""
    if window_end is None or not lc.window_ended(window_end, ctx.now):
        return ""
    for _kind, key in keys:
        if any(a.row["status"] == c.BOOKED for a, _via in ctx.ledger.orphans_for(key)):
            return ""
    return f"{window_end:%Y-%m-%dT%H:%M:%S}Z"


def _overdue_on_arrival(ctx: Context, ref: Referral, key: EI, status: str, due: datetime
                        ) -> None:
    """A message that sets a deadline already past (an update raising the priority of a
    referral received long ago) makes the referral overdue at once, with the mark and event
    the sweep gives (`sweep overdue`, `referral.overdue`), once per referral."""
    if not lc.overdue(status, due, ctx.now) or ref.overdue:
        return
    ref.overdue = True
    ctx.record(referral_id=ref.id, event=OVERDUE_MARK, before=status, after=status,
               rule=f"past its deadline to be scheduled ({due:%Y-%m-%dT%H:%M:%S}Z) "
                    "when the message arrived")
    ctx.effects.append(f"referral {key.text} {status}, overdue")
    ctx.emit_event(ref.id, lc.OVERDUE_EVENT)


def _unique(keys: list[tuple[str, EI]]) -> list[tuple[str, EI]]:
    out: list[tuple[str, EI]] = []
    for kind, key in keys:
        if key.id and not (out and any(k == kind and key.matches(h) for k, h in out)):
            out.append((kind, key))
    return out


def _extra_keys(ch: ReferralChange) -> list[tuple[str, EI]]:
    keys = [("RF1-11", k) for k in ch.external_ids] if ch.external_ids else []
    if ch.filler_order_number is not None:
        keys.append(("ORC-3", ch.filler_order_number))
    return keys


def _details(ch: ReferralChange, out: dict[str, Any]) -> dict[str, Any]:
    """`out` with the descriptive fields a message carries (empty ones leave the stored value)."""
    if ch.priority:
        out["priority"] = ch.priority
    if ch.specialty:
        out["specialty"] = ch.specialty
    if ch.window_start:
        out["window_start"] = ch.window_start
    if ch.window_end:
        out["window_end"] = ch.window_end
    if ch.providers:
        out["providers"] = state.providers_json(ch.providers)
    if ch.diagnoses:
        out["diagnoses"] = state.strings_json(ch.diagnoses)  # a JSON array
    for name in ch.cleared:  # `""` in an I13: deleted (README "The HL7 null")
        out[name] = None if name.startswith("window") else ""
    return out


def _effect(kind: str, key: str, before: str, after: str, event: str) -> str:
    if before == after:
        return f"{kind} {key} {after} ({event})"
    return f"{kind} {key} {before}→{after}"


# --- appointments ----------------------------------------------------------------------------


def _appointment(ctx: Context, ch: AppointmentChange) -> None:
    appt = ctx.ledger.appointment_for(ch.key)
    # An S14 that names no status keeps the stored one ("S14 with a non-status change:
    # unchanged"); one that creates the appointment (a feed started mid-stream) books it.
    keep = ch.status == c.KEEP and appt is not None
    status = str(appt.row["status"]) if keep and appt is not None else ch.status or c.BOOKED
    values = _appointment_values(ctx, ch, status)
    before: str | None = None
    if appt is None:
        values.update(key_id=ch.key.id, key_authority=ch.key.authority, match="unmatched",
                      created_at=ctx.now, candidates="[]", referral_id=None, via=None)
        appt = ctx.ledger.add_appointment(values)
    else:
        before = str(appt.row["status"])
        ctx.ledger.update_appointment(appt, **values)
    ctx.ledger.set_appointment_keys(appt, [(via, k) for via, keys in _links(ch) for k in keys])
    ctx.record(appointment_id=appt.id, referral_id=appt.row["referral_id"],
               event=f"SIU^{ch.trigger} {status}", before=before, after=status,
               rule="appointment " + ("created" if before is None else "updated")
               + (" (no status named: kept)" if keep else "") + _duration_note(ch))
    effect = f"appointment {ch.key.text} {status}"
    rid = appt.row["referral_id"]
    linked_now = False
    if rid is None and appt.row["match"] == "unmatched":
        rid, effect = _match(ctx, appt, ch, effect)
        linked_now = rid is not None
    ctx.effects.append(effect)
    if rid is not None and (linked_now or not keep):
        _follow(ctx, int(rid), appt, status, ch.rescheduled, ch.trigger)


def _appointment_values(ctx: Context, ch: AppointmentChange, status: str) -> dict[str, Any]:
    """The columns an SIU sets (empty fields leave the stored value; `""` deletes it)."""
    values: dict[str, Any] = {
        "status": status, "filler_status": ch.filler_status, "updated_at": ctx.now,
        "patient_ids": state.strings_json([p.text for p in ch.patient_ids]),
    }
    if ch.start is not None:
        values["start"] = ch.start
    if ch.duration_min is not None:
        values["duration_min"] = ch.duration_min
    if ch.specialty:
        values["specialty"] = ch.specialty
    for name in ch.cleared:  # `""` in an S14: deleted
        values[name] = "" if name == "specialty" else None
    return values


def _links(ch: AppointmentChange) -> list[tuple[str, tuple[EI, ...]]]:
    """The SIU's keys that name a referral, strongest first: SCH-26, SCH-27, then the
    channel's `ledger.link_fields`."""
    return [("SCH-26", ch.placer_order_numbers), ("SCH-27", ch.filler_order_numbers),
            *ch.other_keys]


def _duration_note(ch: AppointmentChange) -> str:
    """The duration's source field, and the sources when they disagree."""
    if not ch.duration_source:
        return ""
    note = f"; duration from {ch.duration_source}"
    return note + (f" (sources disagree: {ch.duration_conflict})" if ch.duration_conflict
                   else "")


def _match(ctx: Context, appt: Appointment, ch: AppointmentChange, effect: str
           ) -> tuple[int | None, str]:
    """Identifier first (SCH-26, then SCH-27), then the fallback (same patient, specialty, start
    in the window).  An SIU whose SCH-26/27 name no referral yet is an orphan (it came before
    its REF or order) and waits for that key: the fallback would link it to another referral
    of the patient."""
    links = _links(ch)
    for via, keys in links:
        found = ctx.ledger.referral_ids_for(keys[0]) if len(keys) == 1 else sorted(
            {rid for k in keys for rid in ctx.ledger.referral_ids_for(k)})  # one: sorted, unique
        if len(found) == 1:
            return _link(ctx, appt, found[0], via), f"{effect}, matched via {via}"
        if len(found) > 1:
            _ambiguous(ctx, appt, found)
            return None, f"{effect}, ambiguous"
    if any(keys for _via, keys in links):
        named = "/".join(via for via, keys in links if keys)
        return None, f"{effect}, unmatched (waits for the referral its {named} names)"
    if ch.patient_ids and ch.specialty and ch.start is not None:
        found = sorted(r.id for r in ctx.ledger.referrals_of_patients(
            ch.patient_ids, lc.MATCHABLE) if _fallback_fits(ctx, r.row, ch))
        if len(found) == 1:
            return _link(ctx, appt, found[0], "fallback"), f"{effect}, matched via fallback"
        if len(found) > 1:
            _ambiguous(ctx, appt, found)
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


def _link(ctx: Context, appt: Appointment, rid: int, via: str) -> int:
    ctx.ledger.update_appointment(appt, match="matched", referral_id=rid, via=via,
                                  candidates="[]")
    ctx.record(appointment_id=appt.id, referral_id=rid, event=f"link via {via}",
               rule=f"matched via {via}")
    return rid


def _ambiguous(ctx: Context, appt: Appointment, candidates: list[int]) -> None:
    ctx.ledger.update_appointment(appt, match="ambiguous", referral_id=None, via=None,
                                  candidates=candidates)  # the store writes the list as JSON
    ctx.record(appointment_id=appt.id, event="ambiguous",
               rule=f"{len(candidates)} candidates: never resolved automatically")


def _follow(ctx: Context, rid: int, appt: Appointment, status: str, rescheduled: bool,
            trigger: str) -> None:
    """The linked referral follows its appointment (the scheduling rows of the lifecycle)."""
    ref = ctx.ledger.referrals[rid]
    before = str(ref.row["status"])
    if before == lc.CANCELLED and status == c.BOOKED and not ref.row["review"]:
        ctx.ledger.update_referral(ref, review=True)
        ctx.record(referral_id=rid, appointment_id=appt.id, event="review",
                   rule="booking for a cancelled referral: flagged for review")
    after, rule = lc.appointment_transition(before, status, rescheduled,
                                            ctx.ledger.other_active(rid, appt.id))
    if after != before:
        ctx.ledger.update_referral(ref, status=after, updated_at=ctx.now)
        ctx.effects.append(_effect("referral", ref.key.text, before, after, trigger))
        ctx.emit(rid, after)
    ctx.record(referral_id=rid, appointment_id=appt.id, event=f"SIU^{trigger}",
               before=before, after=after, rule=rule)


def _link_orphans(ctx: Context, rid: int, key: EI) -> None:
    """An SIU stored before its referral is linked when the referral appears or gains the key."""
    for appt, via in ctx.ledger.orphans_for(key):
        _link(ctx, appt, rid, via)
        ctx.effects.append(f"appointment {appt.key.text} linked via {via}")
        _follow(ctx, rid, appt, str(appt.row["status"]), False, "orphan")


def link_manually(ledger: Ledger, appointment: EI, referral: EI, now: datetime,
                  events: list[tuple[int, str]] | None = None) -> str:
    """`hl7-engine link`: a human resolution, recorded as `via: manual`; the referral events it
    causes go to `events` when given."""
    appt = ledger.appointment_for(appointment)
    if appt is None:
        raise LookupError(f"no appointment {appointment.text}")
    found = ledger.referral_ids_for(referral)
    if not found:
        raise LookupError(f"no referral {referral.text}")
    ctx = Context(ledger, None, "", now, LedgerSettings(), events=events)
    _link(ctx, appt, found[0], "manual")
    _follow(ctx, found[0], appt, str(appt.row["status"]), False, "manual")
    return f"appointment {appointment.text} linked to referral {referral.text} (manual)"
