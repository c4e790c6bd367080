"""Operator actions on destinations and their queues (`pause`, `resume`, `retry`, `release`,
`replay` to one destination or through the routes): plain functions over the store, shared by
the CLI, the JSON API and the delivery workers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from engine.config import Config
from engine.errors import BodyPurged, HL7Error
from engine.parsing import parse
from engine.routes.enqueue import Enqueuer, Routed
from engine.store import sql
from engine.store.schema import destination_state, messages, outbound


def _ensure(conn: Connection, name: str) -> None:
    if conn.execute(select(destination_state.c.name).where(
            destination_state.c.name == name)).first() is None:
        conn.execute(insert(destination_state).values(name=name, paused=False,
                                                      retry_now=False))


def set_paused(conn: Connection, name: str, paused: bool) -> None:
    """Paused destinations keep queueing; nothing is sent until `resume`."""
    _ensure(conn, name)
    conn.execute(update(destination_state).where(destination_state.c.name == name)
                 .values(paused=paused))


def request_retry(conn: Connection, name: str) -> None:
    """The destination's worker retries its head now, forgetting the backoff."""
    _ensure(conn, name)
    conn.execute(update(destination_state).where(destination_state.c.name == name)
                 .values(retry_now=True))


def state(conn: Connection, name: str) -> tuple[bool, bool]:
    """(paused, retry requested) of a destination."""
    row = conn.execute(select(destination_state.c.paused, destination_state.c.retry_now)
                       .where(destination_state.c.name == name)).first()
    return (bool(row.paused), bool(row.retry_now)) if row else (False, False)


def take_retry(conn: Connection, name: str) -> bool:
    """Consume a pending retry request."""
    paused, wanted = state(conn, name)
    if wanted:
        conn.execute(update(destination_state).where(destination_state.c.name == name)
                     .values(retry_now=False))
    return wanted


def release(conn: Connection, name: str, outbound_id: int | None = None) -> int:
    """Dead letters (all, or one) go back into the queue with their attempts reset; not those
    whose payload retention purged (there is nothing left to send)."""
    q = update(outbound).where(outbound.c.destination == name, outbound.c.status == "dead",
                               outbound.c.purged_at.is_(None))
    if outbound_id is not None:
        q = q.where(outbound.c.id == outbound_id)
    return int(conn.execute(q.values(status="queued", attempts=0)).rowcount)


def replay(conn: Connection, message_id: int, destination: str, now: datetime,
           key_path: str = "") -> int | None:
    """Queue a stored message again, as it was received; the new queue id, or None.  For a
    per_key destination (`key_path`), the row's order key is the message's value there.
    Raises `BodyPurged` when retention emptied its body: an empty payload is never queued."""
    row = conn.execute(select(messages.c.raw, messages.c.control_id, messages.c.purged_at)
                       .where(messages.c.id == message_id)).first()
    if row is None:
        return None
    if row.purged_at is not None:
        raise BodyPurged(message_id, row.purged_at)
    result = conn.execute(insert(outbound).values(
        destination=destination, route="replay", message_id=message_id,
        control_id=row.control_id, payload=row.raw, status="queued", attempts=0,
        last_error="", created_at=now, order_key=_key(row.raw, key_path))
        .returning(outbound.c.id))
    return int(result.scalar_one())


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
    row = conn.execute(select(messages.c.raw, messages.c.control_id, messages.c.purged_at,
                              messages.c.channel, messages.c.status)
                       .where(messages.c.id == message_id)).first()
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
    return [(r["route"], r["destination"], sql.insert(conn, "outbound", r)) for r in rows]


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
