"""`on:` routes: referral events from the ledger become `outbound` queue rows, in the
transaction that changed the ledger (the pipeline's batch, the sweep's, or `link`'s).

The ledger collects `(referral id, event name)` pairs in its Context only when an `EventRouter`
exists, and the facts of a referral are read only for an event some route takes: without `on:`
routes nothing is queried or built.  The delivery workers send these rows like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from engine.ack import ControlIds
from engine.config import Destination, Route
from engine.ledger.facts import ReferralFacts
from engine.outbound.status import OutboundStatus
from engine.parsing import parse
from engine.routes.events import DEFAULT_SENDER, build_rri
from engine.routes.transforms import apply as transform
from engine.store import Connection
from engine.store.ledger.repository import referral_facts
from engine.store.outbound import queue_rows

Event = tuple[int, str]  # (referral id, event name)

# MSH-10 of event messages: `EV` + a base-36 millisecond stamp of the process start + its pid +
# a counter.  One per process, shared by every router in it, so ids never repeat across the
# pipeline, the daily sweep, other processes (`hl7-engine sweep`, `link`) and restarts.
EVENT_CONTROL_IDS = ControlIds("EV")


@dataclass(frozen=True, slots=True)
class EventRouter:
    """The `on:` routes by event name, and who we are in MSH-3/4 per channel."""

    routes: dict[str, tuple[Route, ...]]
    # (channel, ack.application, ack.facility) in configuration order; "" = not configured
    senders: tuple[tuple[str, str, str], ...] = ()
    control_ids: Callable[[], str] = EVENT_CONTROL_IDS
    # per_key destinations: HL7 path of the order key, read from the generated message
    order_keys: dict[str, str] = field(default_factory=dict)

    def keyed(self, destinations: Iterable[Destination]) -> EventRouter:
        """The same router, filling the order key of rows for per_key destinations."""
        return replace(self, order_keys={d.name: d.order_key for d in destinations
                                         if d.order_key})

    @classmethod
    def of(cls, routes: Iterable[Route], senders: Iterable[tuple[str, str, str]],
           control_ids: Callable[[], str] | None = None) -> EventRouter | None:
        """None when no route has `on:` (the ledger then collects no events at all)."""
        by_event: dict[str, list[Route]] = {}
        for route in routes:
            for event in route.on:
                by_event.setdefault(event, []).append(route)
        if not by_event:
            return None
        return cls({e: tuple(rs) for e, rs in by_event.items()}, tuple(senders),
                   control_ids or EVENT_CONTROL_IDS)

    def sender(self, channel: str) -> tuple[str, str]:
        """MSH-3/4: the ack config of the referral's channel, else the first channel's, else
        REFTRACK/HUB, field by field."""
        own = [(a, f) for name, a, f in self.senders if name == channel]
        first = [(a, f) for _, a, f in self.senders[:1]]
        candidates = [*own, *first, DEFAULT_SENDER]
        return (next(a for a, _ in candidates if a), next(f for _, f in candidates if f))

    def rows(self, conn: Connection, events: Iterable[Event], message_id: int | None,
             now: datetime) -> list[dict[str, Any]]:
        """One queued `outbound` row per (event, route, destination) some `on:` route takes."""
        out: list[dict[str, Any]] = []
        facts: dict[int, ReferralFacts] = {}
        for referral_id, event in events:
            for route in self.routes.get(event, ()):
                if referral_id not in facts:
                    facts[referral_id] = referral_facts(conn, referral_id)
                payload, control_id = self._message(route, facts[referral_id], event, now)
                out += [{"destination": dest, "route": route.name, "message_id": message_id,
                         "control_id": control_id, "payload": payload, "status": OutboundStatus.QUEUED.value,
                         "attempts": 0, "last_error": "", "created_at": now, "event": event,
                         "referral_id": referral_id,
                         "order_key": self._order_key(dest, payload)} for dest in route.to]
        return out

    def queue(self, conn: Connection, events: Iterable[Event], message_id: int | None,
              now: datetime) -> int:
        """Write the rows now (sweep, link); how many."""
        rows = self.rows(conn, events, message_id, now)
        queue_rows(conn, rows)
        return len(rows)

    def _order_key(self, destination: str, payload: bytes) -> str:
        """For a per_key destination, the generated message's value at its path (PID.3.1 is
        in every RRI^I12 we build), cut to the column's 199 characters."""
        path = self.order_keys.get(destination)
        return parse(payload).get(path)[:199] if path else ""

    def _message(self, route: Route, facts: ReferralFacts, event: str, now: datetime
                 ) -> tuple[bytes, str]:
        control_id = self.control_ids()
        payload = build_rri(facts, event, control_id, now, self.sender(facts.channel))
        if route.transform:
            msg = transform(route.transform, parse(payload))
            return msg, parse(msg).header.control_id
        return payload, control_id
