"""The console's links and lists: the path of a referral, appointment or message, and a
keyset-paged list's page (its items, the Next link with the same filters and the page's cursor,
or the detail of a bad filter)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from engine.web.auth import ApiError
from engine.web.endpoints import Call


def href(kind: str, ident: str | int | None) -> str | None:
    """`/{kind}/{id}` with the id as one URL segment (an EI's `^` and `&` quoted); None for
    no id."""
    return None if ident is None else f"/{kind}/{quote(str(ident), safe='')}"


def next_href(path: str, params: dict[str, str], cursor: str | None) -> str | None:
    """The Next link of a keyset-paged list: the non-empty filters and `cursor`; None on the
    last page."""
    if cursor is None:
        return None
    kept = {k: v for k, v in params.items() if v and k != "cursor"}
    return f"{path}?{urlencode({**kept, 'cursor': cursor})}"


def listing(read: Callable[[Call], dict[str, Any]], call: Call, path: str,
            filters: tuple[str, ...]) -> dict[str, Any]:
    """A paged API list as a page's context: `items`, `filters` (the form's values),
    `next_href` and `error` (a bad filter's detail, shown above the form, with no items)."""
    values = {k: call.params.get(k, "") for k in filters}
    out: dict[str, Any] = {"items": [], "filters": values, "next_href": None, "error": None}
    try:
        found = read(call)
    except ApiError as exc:
        if exc.status != 400:
            raise
        return {**out, "error": exc.detail}
    more = {**values, "limit": call.params.get("limit", "")}
    return {**out, "items": found["items"],
            "next_href": next_href(path, more, found["next_cursor"])}
