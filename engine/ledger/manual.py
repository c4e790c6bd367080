"""A person's link of an appointment to a referral, shared by `hl7-engine link` and
`POST /api/appointments/{id}/link`: the checks, the ledger change and the event messages it
causes, in one transaction; the callers print or answer, and audit with their user."""

from __future__ import annotations

from datetime import datetime

from engine.config import Config
from engine.housekeeping import event_router
from engine.ledger import rules
from engine.mappings.changes import EI
from engine.store import Database, keylocks
from engine.store.ledger import ingest


class LinkNotFound(LookupError):
    """No appointment, or no referral, with the key given (the text says which)."""


class LinkRefused(Exception):
    """The link is not allowed (the text says why: the appointment is already matched)."""


def link(db: Database, config: Config | None, appointment: str, referral: str,
         now: datetime) -> str:
    """Link appointment `appointment` to referral `referral` (EI text) by hand (`via: manual`)
    and queue the referral events the `on:` routes of `config` want; the effect as a sentence.
    Raises `LinkNotFound` or `LinkRefused`."""
    appt_key, ref_key = EI.parse(appointment), EI.parse(referral)
    router = event_router(config)
    with db.begin() as conn:
        keylocks.lock(conn, ingest.link_keys(appt_key, ref_key))  # as an ingest batch would
        state = ingest.load_for(conn, {ref_key.id}, {appt_key.id}, [])
        appt = state.appointment_for(appt_key)
        if appt is None:
            raise LinkNotFound(f"no appointment {appt_key.text}")
        if not state.referral_ids_for(ref_key):
            raise LinkNotFound(f"no referral {ref_key.text}")
        if appt.row["match"] == "matched":
            raise LinkRefused(f"appointment {appt_key.text} is already matched to a referral; "
                              f"only unmatched and ambiguous appointments are linked by hand")
        events: list[tuple[int, str]] | None = [] if router else None
        effect = rules.link_manually(state, appt_key, ref_key, now, events)
        ingest.save(conn, state)
        if router and events:
            router.queue(conn, events, None, now)
    return effect
