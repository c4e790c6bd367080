"""Every page of the console: the `PAGES` of each page module, in one table of the shape of
engine.web.api.ROUTES (path segments with "*", method, lowest role, handler)."""

from __future__ import annotations

from engine.web.pages import dashboard, login, messages, queues, referrals, report, worklist
from engine.web.pages.core import Page

# One entry per page module.
MODULES = (
    login,
    dashboard,
    queues,
    messages,
    worklist,
    referrals,
    report,
)

ROUTES: tuple[Page, ...] = tuple(page for module in MODULES for page in module.PAGES)
