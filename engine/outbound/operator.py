"""Operator actions on destinations and their queues (`pause`, `resume`, `retry`, `release`,
`replay` to one destination or through the routes): plain functions over the store
(`engine.store.outbound` owns the queries), shared by the CLI and the JSON API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.config import Config
from engine.errors import BodyPurged, HL7Error
from engine.parsing import parse
from engine.routes.enqueue import Enqueuer, Routed
from engine.store import Connection
from engine.store.outbound import (
    queue_replay,
    queue_row,
    release,
    request_retry,
    set_paused,
    state,
    stored_message,
    take_retry,
)

# The store's destination-state functions, reached through this module by its callers:
__all__ = ["release", "request_retry", "set_paused", "state", "take_retry"]


def replay(conn: Connection, message_id: int, destination: str, now: datetime,
           key_path: str = "") -> int | None:
    """Queue a stored message again, as it was received; the new queue id, or None.  For a
    per_key destination (`key_path`), the row's order key is the message's value there.
    Raises `BodyPurged` when retention emptied its body: an empty payload is never queued."""
    row = stored_message(conn, message_id)
    if row is None:
        return None
    if row.purged_at is not None:
        raise BodyPurged(message_id, row.purged_at)
    return queue_replay(conn, message_id, row, destination, now, _key(row.raw, key_path))


def _key(raw: bytes, path: str) -> str:
    if not path:
        return ""
    try:
        return parse(raw).get(path)[:199]
    except HL7Error:
        return ""  # a message that never parsed shares the lane of rows without a key


class NotRoutable(Exception):
    """`replay` without `--to` of a message its channel's routes cannot take (the text says
    why: not accepted, its channel gone, or no route's filter takes it now)."""


def replay_routed(conn: Connection, message_id: int, config: Config, now: datetime
                  ) -> list[tuple[str, str, int]] | None:
    """Queue a stored message again through its channel's routes as they are configured now
    (filters, transforms, per_key order keys), as if it had just been accepted, without
    touching the ledger; (route, destination, queue id) of each row, or None when there is no
    such message.  Raises `BodyPurged`, or `NotRoutable` with the reason."""
    row = stored_message(conn, message_id)
    if row is None:
        return None
    if row.purged_at is not None:
        raise BodyPurged(message_id, row.purged_at)
    if row.status != "accepted":
        raise NotRoutable(f"message {message_id} was not accepted (status {row.status}): routes "
                          f"take accepted messages only; --to DEST sends it as received")
    if row.channel not in {ch.name for ch in config.channels}:
        raise NotRoutable(f"message {message_id} came in on channel {row.channel!r}, which the "
                          f"configuration no longer has; --to DEST sends it as received")
    enqueuer = Enqueuer()
    enqueuer.route(config.routes)
    enqueuer.order_by(config.destinations)
    rows = enqueuer.rows(Routed(row.channel, parse(row.raw), True, row.control_id, message_id,
                                False), now)
    if not rows:
        raise NotRoutable(f"no route from channel {row.channel} takes message {message_id} now")
    return [(r["route"], r["destination"], queue_row(conn, r)) for r in rows]


class UnknownDestination(LookupError):
    """A destination name the configuration does not have (`known`: the names it has)."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no destination {name!r} (known: {', '.join(known) or 'none'})")
        self.name, self.known = name, known


class UnknownMessage(LookupError):
    """No stored message with this id."""


DESTINATION_ACTIONS = ("pause", "resume", "retry", "release")


def destination_action(conn: Connection, config: Config, verb: str, name: str,
                       outbound_id: int | None = None) -> dict[str, Any]:
    """`pause`, `resume`, `retry` or `release` (all dead letters, or `outbound_id`) on a
    configured destination, as the CLI and the API do it: what changed.  Raises
    `UnknownDestination`."""
    check_destination(config, name)
    if verb in ("pause", "resume"):
        set_paused(conn, name, verb == "pause")
        return {"destination": name, "state": "paused" if verb == "pause" else "running"}
    if verb == "retry":
        request_retry(conn, name)
        return {"destination": name, "retry": True}
    if verb == "release":
        return {"destination": name, "released": release(conn, name, outbound_id)}
    raise ValueError(f"not a destination action: {verb}")


def replay_message(conn: Connection, config: Config, message_id: int, to: str | None,
                   now: datetime) -> list[dict[str, Any]]:
    """`replay`: to destination `to` as received, or (None) through the routes as they are
    now; one `{"route", "destination", "queue_id"}` per queued row.  Raises
    `UnknownDestination`, `UnknownMessage`, `BodyPurged` or `NotRoutable`."""
    if to is not None:
        check_destination(config, to)
        key_path = next(d.order_key for d in config.destinations if d.name == to)
        queued = replay(conn, message_id, to, now, key_path)
        if queued is None:
            raise UnknownMessage(f"no message with id {message_id}")
        return [{"route": None, "destination": to, "queue_id": queued}]
    routed = replay_routed(conn, message_id, config, now)
    if routed is None:
        raise UnknownMessage(f"no message with id {message_id}")
    return [{"route": route, "destination": dest, "queue_id": queue_id}
            for route, dest, queue_id in routed]


def replay_audit(message_id: int, to: str | None,
                 queued: list[dict[str, Any]]) -> dict[str, Any]:
    """`audit.queue_replay`'s fields: to one destination, or through the routes."""
    if to is not None:
        return {"destination": to, "message_id": message_id}
    return {"message_id": message_id, "destinations": sorted({q["destination"] for q in queued})}


def check_destination(config: Config, name: str) -> None:
    """Raises `UnknownDestination` unless `config` has destination `name`."""
    names = {d.name for d in config.destinations}
    if name not in names:
        raise UnknownDestination(name, sorted(names))
