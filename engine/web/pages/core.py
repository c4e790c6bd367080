"""The pages' contract: what a page handler is given (`PageCall`), what it answers (`Html`, a
template to render, or `Redirect`), and how a page module lists its pages (`PAGES`, a tuple of
`Page`, the same shape as engine.web.api.ROUTES).

A handler is a plain blocking function run in the web's thread pool, after the framework
(engine.web.pages.site) has checked the login, the role and, for a POST, the CSRF token.  It may
raise engine.web.auth.ApiError: the visitor gets an error page with its status.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.web.endpoints import Call

ANONYMOUS = "anonymous"  # a page's lowest role when it needs no login (the login form)


@dataclass(frozen=True, slots=True)
class PageCall:
    """One page request as a handler sees it: the `Call` (db, config, user, params, args, now,
    body: a POST's form fields) and the session's CSRF token, for the forms it renders.
    `connections` holds each channel's open MLLP connections when the request came in."""

    call: Call
    csrf: str
    connections: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Html:
    """Render `template` (a file under engine/web/templates/) with `context`."""

    template: str
    context: dict[str, Any]
    status: int = 200


@dataclass(frozen=True, slots=True)
class Redirect:
    """Send the browser to `location`, a path on this site (e.g. "/referrals/12")."""

    location: str


Handler = Callable[[PageCall], Html | Redirect]
# (path segments with "*" for one segment, method, lowest role, handler)
Page = tuple[tuple[str, ...], str, str, Handler]


def local_path(text: str | None, default: str = "/") -> str:
    """`text` if it is a path on this site (`/...`, not `//host` nor `/\\host`), else
    `default`: where a `next=` or a redirect may send the browser."""
    if (not text or not text.startswith("/") or text.startswith(("//", "/\\"))
            or any(c in text for c in "\\\r\n\t") or any(ord(c) < 32 for c in text)):
        return default
    return text
