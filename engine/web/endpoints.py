"""The JSON API's endpoints: plain blocking functions over a `Call`, run in the web's thread
pool (engine.web.api routes to them after the role check).

Each reads through the same view function as the matching command (`referrals --json`,
`referral --json`, `appointments`, `worklist`, `report`, `queue`, `tail`, `show`), so the JSON
objects are the CLI's.  Listings answer `{"items": [...], ...}`; `referrals` and `messages`
page by keyset (`next_cursor`, an opaque string to pass back as `cursor`).  Endpoints that
return patient data or a message body write an audit event with the API user's name.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.config import Config
from engine.ledger.lifecycle import STATUSES
from engine.logs import audit
from engine.store import Database
from engine.store.users import Principal
from engine.web.auth import ApiError

DEFAULT_LIMIT, MAX_LIMIT = 50, 500
REPORT_GROUPS = ("specialty", "source", "priority")
MESSAGE_STATUSES = ("accepted", "errored", "rejected")


@dataclass(frozen=True, slots=True)
class Call:
    """One API request as an endpoint sees it: the database, the config in force, the user,
    the query parameters (last value of each), the path's `*` segments (URL-decoded), now
    (naive UTC), a POST's JSON body (an object; empty without one; a page's: its form fields),
    and where the call came from (`api`, or `console` for the pages), which audit events name."""

    db: Database
    config: Config
    user: Principal
    params: dict[str, str]
    args: list[str]
    now: datetime
    body: dict[str, Any] = field(default_factory=dict)
    via: str = "api"


def _bad(detail: str) -> ApiError:
    return ApiError(400, "bad_request", detail)


def _limit(call: Call) -> int:
    text = call.params.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise _bad(f"limit: expected a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def encode_cursor(row_id: int | None) -> str | None:
    """The opaque cursor of a page's last row (None: no next page)."""
    if row_id is None:
        return None
    return base64.urlsafe_b64encode(str(row_id).encode("ascii")).decode("ascii").rstrip("=")


def _cursor(call: Call) -> int | None:
    text = call.params.get("cursor")
    if not text:
        return None
    try:
        value = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        if value.isdigit():
            return int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise _bad("cursor: not a cursor this API gave (pass next_cursor back as it is)")


def _time(call: Call, name: str) -> datetime | None:
    """An ISO date (`2026-12-01`, UTC midnight) or time (`2026-12-01T08:00:00Z`), naive UTC."""
    text = call.params.get(name)
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _bad(f"{name}: expected an ISO date or time, e.g. 2026-12-01 or "
                   f"2026-12-01T08:00:00Z") from None
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _choice(call: Call, name: str, choices: tuple[str, ...]) -> str | None:
    value = call.params.get(name) or None
    if value is not None and value not in choices:
        raise _bad(f"{name}: expected one of {', '.join(choices)}")
    return value


def _audit_read(call: Call, endpoint: str, **fields: Any) -> None:
    audit("audit.api_read", user=call.user.name, endpoint=endpoint, **fields)


def referrals(call: Call) -> dict[str, Any]:
    """`GET /api/referrals`: `referrals --json`'s objects, filtered, by id, a page at a time."""
    from engine.store.ledger.views import ReferralFilter, referral_page

    overdue = call.params.get("overdue", "") not in ("", "0", "false")
    which = ReferralFilter(status=_choice(call, "status", STATUSES),
                           overdue_at=call.now if overdue else None,
                           specialty=call.params.get("specialty") or None,
                           source=call.params.get("source") or None,
                           since=_time(call, "since"), until=_time(call, "until"))
    limit, after = _limit(call), _cursor(call) or 0
    with call.db.connect() as conn:
        items, last = referral_page(conn, which, after=after, limit=limit, now=call.now)
    _audit_read(call, "referrals", items=len(items))
    return {"items": items, "next_cursor": encode_cursor(last)}


def referral(call: Call) -> dict[str, Any]:
    """`GET /api/referrals/{id}`: `referral ID --json` (with its history); 404 if unknown."""
    from engine.mappings.changes import EI
    from engine.store.ledger.views import find_referral

    with call.db.connect() as conn:
        found = find_referral(conn, EI.parse(call.args[0]), call.now)
    if found is None:
        raise ApiError(404, "not_found", "no referral with this id")
    _audit_read(call, "referral", referral=found["id"])
    return found


def appointments(call: Call) -> dict[str, Any]:
    """`GET /api/appointments`: `appointments --json`'s first `limit`, and how many in all."""
    from engine.store.ledger.views import count_appointments, list_appointments

    with call.db.connect() as conn:
        items = list_appointments(conn, limit=_limit(call))
        total = count_appointments(conn)
    _audit_read(call, "appointments", items=len(items))
    return {"items": items, "total": total}


def worklist(call: Call) -> dict[str, Any]:
    """`GET /api/worklist`: `worklist --json`'s first `limit`, and how many in all."""
    from engine.store.ledger import worklist as wl

    with call.db.connect() as conn:
        items = wl.worklist(conn, call.now, limit=_limit(call),
                            window_days=call.config.ledger.default_window_days)
        total = wl.count(conn)
    _audit_read(call, "worklist", items=len(items))
    return {"items": items, "total": total}


def report(call: Call) -> dict[str, Any]:
    """`GET /api/report`: `report --json` (counts only) for since/until (YYYY-MM-DD) and by."""
    from engine.store.database import snapshot
    from engine.store.ledger.report import PeriodError, build_report, period

    by = _choice(call, "by", REPORT_GROUPS)
    try:
        cohort = period(call.now, call.params.get("since") or None,
                        call.params.get("until") or None)
    except PeriodError as exc:
        raise _bad(str(exc).removeprefix("--")) from None
    with snapshot(call.db) as conn:
        return build_report(conn, cohort, call.now, by)


def queue(call: Call) -> dict[str, Any]:
    """`GET /api/queue`: `queue --json`'s rows, one per destination (no payloads)."""
    from engine.outbound.views import queue_state

    return {"items": queue_state(call.db, call.config.destinations, call.now)}


def messages(call: Call) -> dict[str, Any]:
    """`GET /api/messages`: the message log (`tail --json`'s objects), newest first."""
    from engine.store.messages import MessageFilter, log_record, message_page

    which = MessageFilter(channel=call.params.get("channel") or None,
                          sender=call.params.get("sender") or None,
                          message_type=call.params.get("type") or None,
                          status=_choice(call, "status", MESSAGE_STATUSES),
                          control_id=call.params.get("control_id") or None,
                          since=_time(call, "since"), until=_time(call, "until"))
    limit, before = _limit(call), _cursor(call)
    with call.db.connect() as conn:
        rows, last = message_page(conn, which, before=before, limit=limit)
    return {"items": [log_record(r) for r in rows], "next_cursor": encode_cursor(last)}


def _message_id(call: Call) -> int:
    text = call.args[0]
    if not text.isdigit():
        raise ApiError(404, "not_found", "no message with this id")
    return int(text)


def message(call: Call) -> dict[str, Any]:
    """`GET /api/messages/{id}`: `show --json` without the body: the log row, its ledger
    changes, deliveries and relayed ACKs."""
    from engine.store.ledger.views import changes_of_message
    from engine.store.messages import log_record, message_row
    from engine.store.queue import deliveries_of
    from engine.store.relayed import relayed_of
    from engine.timestamps import utc_text

    message_id = _message_id(call)
    with call.db.connect() as conn:
        row = message_row(conn, message_id)
        if row is None:
            raise ApiError(404, "not_found", "no message with this id")
        rec = log_record(row)
        rec["purged_at"] = utc_text(row.purged_at)
        rec["ledger_changes"] = changes_of_message(conn, message_id)
        rec["deliveries"] = deliveries_of(conn, message_id)
        rec["relayed_acks"] = relayed_of(conn, message_id)
    return rec


def message_raw(call: Call) -> dict[str, Any]:
    """`GET /api/messages/{id}/raw`: the body as text in the charset the parser read it in;
    audited (`audit.message_body_read`); 410 once retention purged it."""
    from engine.parsing.parser import decode
    from engine.store.messages import message_row
    from engine.timestamps import utc_text

    message_id = _message_id(call)
    with call.db.connect() as conn:
        row = message_row(conn, message_id, with_raw=True)
    if row is None:
        raise ApiError(404, "not_found", "no message with this id")
    if row.purged_at is not None:
        raise ApiError(410, "gone", f"the body was purged at {utc_text(row.purged_at)} "
                                    "(retention)")
    audit("audit.message_body_read", user=call.user.name, message_id=message_id,
          digest=row.digest[:16], via=call.via)
    text, charset = decode(row.raw)
    return {"id": message_id, "charset": charset, "raw": text}
