"""Every page of the console: the `PAGES` of each page module, in one table of the shape of
engine.web.api.ROUTES (path segments with "*", method, lowest role, handler)."""

from __future__ import annotations

from engine.web.pages import dashboard, login, queues
from engine.web.pages.core import Page

# One entry per page module.  The message, worklist, referral and report pages are added here.
MODULES = (
    login,
    dashboard,
    queues,
)

ROUTES: tuple[Page, ...] = tuple(page for module in MODULES for page in module.PAGES)
