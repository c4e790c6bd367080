"""The dashboard (`/`, viewer and up): per channel its connections, messages per minute over the
last hour (an SVG chart, engine.web.charts), accepted/errored/rejected counts and the
age of its last message; per destination its queue; the ledger's open and overdue referrals and
the appointments waiting for a match.  The figures panel reloads itself from `/dashboard/panel`
every `REFRESH_S` seconds.

Only counts, states and ages: no patient data and no message body, for any role.  A
destination's last error text is shown to operators only (a remote system's error may quote a
message).
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from engine.ledger import lifecycle as lc
from engine.store.ledger.views import count_appointments
from engine.store.traffic import channel_traffic
from engine.web.charts import line_chart
from engine.web.pages.core import Html, Page, PageCall
from engine.web.snapshot import read_snapshot

REFRESH_S = 5


def figures(page: PageCall) -> dict[str, Any]:
    """Everything the panel shows, read now through the metrics' snapshot (the `queue`
    command's rows, referrals by status, overdue by priority), the worklist's count and the
    channels' traffic view."""
    call = page.call
    names = [ch.name for ch in call.config.channels]
    snap = read_snapshot(call.db, call.config, call.now)  # what /metrics reads
    with call.db.connect() as conn:
        channels = channel_traffic(conn, names, call.now)
        waiting = count_appointments(conn, worklist=True)
    overdue = snap.overdue
    for channel in channels:
        channel["connections"] = int(page.connections.get(channel["channel"], 0))
        channel["chart"] = _chart(channel["channel"], channel["per_minute"])
    ledger = {"open": sum(n for s, n in snap.referrals.items() if s in lc.OPEN),
              "overdue": dict(sorted(overdue.items())), "overdue_total": sum(overdue.values()),
              "unmatched_appointments": waiting}
    return {"channels": channels, "queues": snap.queues, "ledger": ledger,
            "show_errors": call.user.may("operator"), "refresh_s": REFRESH_S}


def _chart(channel: str, per_minute: list[int]) -> Markup:
    """The messages-per-minute chart (SVG), the oldest minute first."""
    points = [(f"-{len(per_minute) - 1 - i}", float(n)) for i, n in enumerate(per_minute)]
    return line_chart({channel: points}, title=f"{channel}: messages per minute, last hour",
                      x_label="minutes ago", y_label="messages")


def dashboard(page: PageCall) -> Html:
    """`GET /`: the dashboard."""
    return Html("dashboard.html", figures(page))


def panel(page: PageCall) -> Html:
    """`GET /dashboard/panel`: the figures alone (what the dashboard reloads)."""
    return Html("dashboard_panel.html", figures(page))


PAGES: tuple[Page, ...] = (
    ((), "GET", "viewer", dashboard),
    (("dashboard", "panel"), "GET", "viewer", panel),
)
