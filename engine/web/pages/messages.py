"""The message browser (operator): `/messages` searches the log as GET /api/messages does
(same filters, keyset paging); `/messages/{id}` shows one message's ACKs, error, deliveries and
ledger changes; its raw body only after a POST (`/messages/{id}/raw`, audited); `/messages/{id}/
replay` queues it again.  Every read goes through the API's endpoint, so the objects, the
errors and the audit events are the API's."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from engine.web import actions as act
from engine.web import endpoints as ep
from engine.web.pages.core import Html, Page, PageCall, Redirect
from engine.web.pages.links import href, listing

FILTERS = ("channel", "sender", "type", "status", "control_id", "since", "until")


def message_list(page: PageCall) -> Html:
    """`/messages`: a page of the log, newest first, with the filter form."""
    context = listing(ep.messages, page.call, "/messages", FILTERS)
    for item in context["items"]:
        item["href"] = href("messages", item["id"])
    return Html("messages.html", {**context, "statuses": ep.MESSAGE_STATUSES})


def message_detail(page: PageCall) -> Html:
    """`/messages/{id}`: the log row, ACKs, error and location, deliveries and attempts,
    relayed ACKs and ledger changes (linked to their referral), and the body/replay buttons."""
    rec = ep.message(page.call)
    for change in rec["ledger_changes"]:
        change["href"] = href("referrals", change["referral"])
    replayed = page.call.params.get("replayed")
    return Html("message.html", {
        "message": rec, "replayed": replayed if replayed and replayed.isdigit() else None,
        "destinations": [d.name for d in page.call.config.destinations]})


def message_raw(page: PageCall) -> Html:
    """POST `/messages/{id}/raw`: the body decoded by its charset, one segment a line;
    audited like GET /api/messages/{id}/raw (410 once purged)."""
    raw = ep.message_raw(page.call)
    segments = [s for s in raw["raw"].replace("\r\n", "\r").replace("\n", "\r").split("\r") if s]
    return Html("message_raw.html", {"message_id": raw["id"], "charset": raw["charset"],
                                     "segments": segments, "href": href("messages", raw["id"])})


def message_replay(page: PageCall) -> Redirect:
    """POST `/messages/{id}/replay` (form field `to`: a destination, or empty for the routes
    as they are now): the API's replay, audited; back to the message page."""
    body: dict[str, Any] = {}
    if page.call.body.get("to"):
        body["to"] = page.call.body["to"]
    done = act.replay(replace(page.call, body=body))
    return Redirect(f"{href('messages', done['message_id'])}?replayed={len(done['queued'])}")


PAGES: tuple[Page, ...] = (
    (("messages",), "GET", "operator", message_list),
    (("messages", "*"), "GET", "operator", message_detail),
    (("messages", "*", "raw"), "POST", "operator", message_raw),
    (("messages", "*", "replay"), "POST", "operator", message_replay),
)
