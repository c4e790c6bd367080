"""The JSON API's write actions: plain blocking functions over a `Call`, run in the web's
thread pool like the reads.  Each does what its command does, through the same function
(`link`: engine.ledger.manual; the queue actions: engine.outbound.operator), and writes the same
audit event with the API user's name.  Answers are `{"ok": true, ...what changed}`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.errors import BodyPurged
from engine.logs import audit
from engine.web.auth import ApiError
from engine.web.endpoints import Call


def _text(call: Call, name: str, required: bool) -> str | None:
    value = call.body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "bad_request", f"{name}: expected a non-empty string")
    return value.strip()


def link(call: Call) -> dict[str, Any]:
    """`POST /api/appointments/{id}/link` `{"referral": EI}`: `hl7-engine link`; audited
    `audit.manual_link`; 404 unknown appointment or referral, 409 not allowed."""
    from engine.ledger.manual import LinkNotFound, LinkRefused
    from engine.ledger.manual import link as link_by_hand

    appointment, referral = call.args[0], _text(call, "referral", True)
    assert referral is not None
    try:
        effect = link_by_hand(call.db, call.config, appointment, referral, call.now)
    except LinkNotFound as exc:
        raise ApiError(404, "not_found", str(exc).strip("'\"")) from None
    except LinkRefused as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    audit("audit.manual_link", user=call.user.name, appointment=appointment,
          referral=referral, via=call.via)
    return {"ok": True, "appointment": appointment, "referral": referral, "effect": effect}


def _destination(verb: str) -> Callable[[Call], dict[str, Any]]:
    def action(call: Call) -> dict[str, Any]:
        from engine.outbound import operator

        outbound_id = None
        if verb == "release" and call.body.get("id") is not None:
            outbound_id = call.body["id"]
            if not isinstance(outbound_id, int) or isinstance(outbound_id, bool):
                raise ApiError(400, "bad_request", "id: expected a whole number")
        try:
            with call.db.begin() as conn:
                done = operator.destination_action(conn, call.config, verb, call.args[0],
                                                   outbound_id)
        except operator.UnknownDestination as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        audit(f"audit.queue_{verb}", user=call.user.name, destination=call.args[0], via=call.via)
        return {"ok": True, **done}

    action.__name__ = action.__qualname__ = verb
    action.__doc__ = f"`POST /api/destinations/{{name}}/{verb}`: `hl7-engine {verb}`; audited."
    return action


pause, resume, retry, release = (_destination(v) for v in ("pause", "resume", "retry",
                                                            "release"))


def replay(call: Call) -> dict[str, Any]:
    """`POST /api/messages/{id}/replay` `{"to": DEST}` (optional): `hl7-engine replay`;
    audited `audit.queue_replay`; 404 unknown message or destination, 409 body purged or not
    routable."""
    from engine.outbound import operator

    if not call.args[0].isdigit():
        raise ApiError(404, "not_found", "no message with this id")
    message_id, to = int(call.args[0]), _text(call, "to", False)
    try:
        with call.db.begin() as conn:
            queued = operator.replay_message(conn, call.config, message_id, to, call.now)
    except (operator.UnknownDestination, operator.UnknownMessage) as exc:
        raise ApiError(404, "not_found", str(exc).strip("'\"")) from None
    except BodyPurged as exc:
        raise ApiError(409, "conflict", f"{exc}; nothing to replay") from None
    except operator.NotRoutable as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    audit("audit.queue_replay", user=call.user.name, via=call.via,
          **operator.replay_audit(message_id, to, queued))
    return {"ok": True, "message_id": message_id, "queued": queued}
