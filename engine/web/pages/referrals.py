"""The referral pages (coordinator): `/referrals` lists them with the API's filters (status,
overdue, specialty, source, since/until) and keyset paging; `/referrals/{id}` shows one with
its patient ids, due date, appointments and timeline, each status change with the HL7 message
behind it (a link for users who may see messages).  Both read through the API's endpoints, so
each view is audited like GET /api/referrals[/{id}]."""

from __future__ import annotations

from typing import Any

from engine.ledger.lifecycle import STATUSES
from engine.web import endpoints as ep
from engine.web.pages.core import Html, Page, PageCall
from engine.web.pages.links import href, listing

FILTERS = ("status", "overdue", "specialty", "source", "since", "until")


def referral_list(page: PageCall) -> Html:
    """`/referrals`: a page of referrals by id with the filter form."""
    context = listing(ep.referrals, page.call, "/referrals", FILTERS)
    for item in context["items"]:
        item["href"] = href("referrals", item["id"])
    return Html("referrals.html", {**context, "statuses": STATUSES})


def timeline(history: list[dict[str, Any]], messages_visible: bool) -> list[dict[str, Any]]:
    """The history rows, each with the path of its message when the user may open it."""
    return [{**h, "message_href": href("messages", h["message_id"])
             if messages_visible and h["message_id"] is not None else None}
            for h in history]


def appointments_of(found: dict[str, Any]) -> list[dict[str, Any]]:
    """The referral's appointments with the history rows that name each."""
    return [{"id": name, "events": [h for h in found["history"] if h["appointment"] == name]}
            for name in found["appointments"]]


def referral_detail(page: PageCall) -> Html:
    """`/referrals/{id}` (any of its keys): the API's referral with history."""
    found = ep.referral(page.call)
    return Html("referral.html", {
        "referral": found, "appointments": appointments_of(found),
        "timeline": timeline(found["history"], page.call.user.may("operator"))})


PAGES: tuple[Page, ...] = (
    (("referrals",), "GET", "coordinator", referral_list),
    (("referrals", "*"), "GET", "coordinator", referral_detail),
)
