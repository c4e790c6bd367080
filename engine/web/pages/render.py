"""The pages' templates: one Jinja2 environment over engine/web/templates/ (autoescaped), and
the context every template gets besides its own: `user` (the Principal), `csrf` (the session's
token, for forms), `now` (naive UTC) and `path` (the page's path), plus `nav`, the menu entries
this user's role may open."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from engine.store.users import Principal

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

# (label, path, lowest role): the menu of base.html
NAV = (("Dashboard", "/", "viewer"), ("Messages", "/messages", "operator"),
       ("Queues", "/queues", "viewer"), ("Worklist", "/worklist", "coordinator"),
       ("Referrals", "/referrals", "coordinator"), ("Report", "/report", "viewer"))

_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                   trim_blocks=True, lstrip_blocks=True)


def environment() -> Environment:
    """The environment (for a page module that adds a filter or a global at import)."""
    return _env


def render(template: str, context: dict[str, Any], *, user: Principal, csrf: str,
           now: datetime, path: str) -> str:
    """The page `template` rendered with its context and the base one."""
    nav = [(label, href) for label, href, role in NAV if user.may(role)]
    base = {"user": user, "csrf": csrf, "now": now, "path": path, "nav": nav}
    return _env.get_template(template).render({**base, **context})
