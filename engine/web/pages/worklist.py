"""The coordinators' worklist (`/worklist`): overdue referrals by priority with their days
overdue, then the appointments the ledger could not link (ambiguous with their candidate
referrals, unmatched with why), orphans waiting for their referral, and no-shows to rebook;
each row with the worklist's reason.  `POST /appointments/{id}/link` links one by hand through
the API's action (same checks, same audit event), then opens the referral."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from engine.web import actions as act
from engine.web import endpoints as ep
from engine.web.pages.core import Html, Page, PageCall, Redirect
from engine.web.pages.links import href

PAGE_ROWS = 100  # rows of each list on the page (the API and CLI page through the rest)

# The worklist's kinds, by section: (title, kinds, whether a Link form belongs to the row)
SECTIONS = (
    ("Appointments to link", ("ambiguous", "fits_now", "outside_window", "no_referral",
                              "no_match_data"), True),
    ("Orphans waiting for their referral", ("orphan",), True),
    ("No-shows to rebook", ("no_show",), False),
)


def by_priority(items: list[dict[str, Any]], deadlines: dict[str, float]
                ) -> list[tuple[str, list[dict[str, Any]]]]:
    """Overdue referrals grouped by priority, the most urgent priority (shortest deadline)
    first, the most overdue first within each; no priority shows as `-`."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        item["href"] = href("referrals", item["id"])
        groups.setdefault(str(item["priority"] or "").upper() or "-", []).append(item)
    late = max(deadlines.values(), default=0) + 1
    order = sorted(groups, key=lambda p: (deadlines.get(p, late), p))
    return [(p, sorted(groups[p], key=lambda r: (-(r["days_overdue"] or 0), r["id"])))
            for p in order]


def sections(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The worklist's rows in their sections, each row with its links."""
    for item in items:
        item["href"] = href("referrals", item["referral"])
        item["link_href"] = (f"{href('appointments', item['id'])}/link" if item["id"] else None)
        item["candidate_links"] = [(c, href("referrals", c)) for c in item["candidates"]]
        item["waits_for_links"] = [(c, href("referrals", c)) for c in item["waits_for"]]
    return [{"title": title, "linkable": linkable,
             "rows": [i for i in items if i["kind"] in kinds]}
            for title, kinds, linkable in SECTIONS]


def worklist_page(page: PageCall) -> Html:
    """`/worklist`: the API's worklist and overdue referrals (both audited as reads)."""
    limit = str(PAGE_ROWS)
    work = ep.worklist(replace(page.call, params={"limit": limit}))
    overdue = ep.referrals(replace(page.call, params={"overdue": "1", "limit": limit}))
    return Html("worklist.html", {
        "overdue": by_priority(overdue["items"], page.call.config.ledger.deadlines),
        "overdue_more": overdue["next_cursor"] is not None,
        "sections": sections(work["items"]), "total": work["total"],
        "shown": len(work["items"])})


def link_appointment(page: PageCall) -> Redirect:
    """POST `/appointments/{id}/link` (form field `referral`): the API's link action, audited
    with the user; then the referral's page, whose timeline shows the link."""
    done = act.link(page.call)
    return Redirect(href("referrals", done["referral"]) or "/worklist")


PAGES: tuple[Page, ...] = (
    (("worklist",), "GET", "coordinator", worklist_page),
    (("appointments", "*", "link"), "POST", "coordinator", link_appointment),
)
