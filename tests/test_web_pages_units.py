"""The console's message, worklist, referral and report pages without a server: their view
data (links, grouping, periods) and their templates rendered with a stand-in base template."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from jinja2 import ChoiceLoader, DictLoader, Environment, FileSystemLoader, select_autoescape

from engine.store.ledger.report import Period
from engine.web.auth import ApiError
from engine.web.pages import links, referrals, report, worklist

TEMPLATES = "engine/web/templates"
BASE = "{% block title %}{% endblock %}|{% block content %}{% endblock %}"
HOSTILE = '<b onmouseover="x">R&D</b>'
NOW = datetime(2026, 12, 4, 12, 0)


def render(template: str, **context: Any) -> str:
    env = Environment(loader=ChoiceLoader([DictLoader({"base.html": BASE}),
                                           FileSystemLoader(TEMPLATES)]),
                      autoescape=select_autoescape(default=True))
    return env.get_template(template).render({"csrf": "TOKEN", "now": NOW, "path": "/",
                                              **context})


class Forms(HTMLParser):
    """Every form's attributes and its inputs' (name, value)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "form":
            self.forms.append({**dict(attrs), "inputs": []})
        elif tag in ("input", "select") and self.forms:
            self.forms[-1]["inputs"].append((dict(attrs).get("name"), dict(attrs).get("value")))


def forms_of(html: str) -> list[dict[str, Any]]:
    parser = Forms()
    parser.feed(html)
    return parser.forms


def test_href_quotes_an_id_into_one_segment() -> None:
    """An EI's `^`, `&` and `/` cannot split or end the path."""
    assert links.href("referrals", "R-1^EHR&1.2/3") == "/referrals/R-1%5EEHR%261.2%2F3"
    assert links.href("messages", 12) == "/messages/12"
    assert links.href("referrals", None) is None


def test_next_href_keeps_the_filters() -> None:
    """The Next link carries the non-empty filters and the new cursor, never the old one."""
    got = links.next_href("/messages", {"channel": "in", "status": "", "cursor": "old"}, "Mg")
    assert got == "/messages?channel=in&cursor=Mg"
    assert links.next_href("/messages", {"channel": "in"}, None) is None


def test_overdue_by_priority_most_urgent_first() -> None:
    """Priorities by their deadline (S before A before R, unknown and none last), the most
    overdue first within one."""
    rows = [{"id": f"R{i}", "priority": p, "days_overdue": d}
            for i, (p, d) in enumerate([("R", 3), ("s", 1), ("R", 9), (None, 2), ("X", 4),
                                        ("A", 1)])]
    got = worklist.by_priority(rows, {"S": 1, "A": 2, "R": 14})
    assert [(p, [r["id"] for r in rs]) for p, rs in got] == [
        ("S", ["R1"]), ("A", ["R5"]), ("R", ["R2", "R0"]), ("-", ["R3"]), ("X", ["R4"])]
    assert got[0][1][0]["href"] == "/referrals/R1"


def _row(kind: str, **more: Any) -> dict[str, Any]:
    return {"id": "A-1^SCHED", "kind": kind, "reason": f"why {kind}", "referral": None,
            "candidates": [], "waits_for": [], "start": None, "specialty": "CARD",
            "patient_ids": ["P-9^HOSP"], **more}


def test_worklist_sections_and_link_forms() -> None:
    """Ambiguous rows get a Link button per candidate (POST to the appointment's link path with
    the CSRF token, the referral and a confirm question) plus a free one; no-shows get none;
    each row shows why it is there."""
    items = [_row("ambiguous", candidates=["R-1^EHR", HOSTILE]), _row("orphan",
             waits_for=["R-3^EHR"]), _row("no_show", referral="R-4^EHR")]
    sections = worklist.sections(items)
    assert [len(s["rows"]) for s in sections] == [1, 1, 1]
    html = render("worklist.html", overdue=[], overdue_more=False, sections=sections,
                  total=3, shown=3)
    forms = forms_of(html)
    assert all(f["method"] == "post" and f["action"] == "/appointments/A-1%5ESCHED/link"
               for f in forms)
    assert all(("csrf", "TOKEN") in f["inputs"] and f["data-confirm"] for f in forms)
    chosen = [dict(f["inputs"])["referral"] for f in forms]
    assert chosen == ["R-1^EHR", HOSTILE, None, "R-3^EHR", None]
    assert "why ambiguous" in html and "why no_show" in html and "why orphan" in html
    assert HOSTILE not in html  # escaped
    assert 'href="/referrals/R-4%5EEHR"' in html


def test_timeline_links_messages_only_for_those_who_may_see_them() -> None:
    """A history row links its message for an operator, not for a coordinator; a row with no
    message links nothing."""
    history = [{"message_id": 7, "control_id": "C1"}, {"message_id": None, "control_id": None}]
    assert [h["message_href"] for h in referrals.timeline(history, True)] == ["/messages/7", None]
    assert [h["message_href"] for h in referrals.timeline(history, False)] == [None, None]


def test_report_period_from_days() -> None:
    """`days` N stands for since N days before until (or now); since given wins; a bad number
    or date is a 400 naming the field."""
    assert report.cohort_params({"days": "30"}, NOW) == {"since": "2026-11-04"}
    assert report.cohort_params({"days": "7", "until": "2026-02-01", "by": "source"}, NOW) == {
        "since": "2026-01-25", "until": "2026-02-01", "by": "source"}
    assert report.cohort_params({"days": "7", "since": "2026-01-01"}, NOW) == {
        "since": "2026-01-01"}
    for bad in ({"days": "0"}, {"days": "x"}, {"days": "7", "until": "tomorrow"}):
        with pytest.raises(ApiError) as caught:
            report.cohort_params(bad, NOW)
        assert caught.value.status == 400


@pytest.mark.parametrize(("days", "count", "step"), [(90, 13, 7), (10, 2, 7), (365, 25, 15),
                                                     (3, 1, 7)])
def test_report_slices_cover_the_period(days: int, count: int, step: int) -> None:
    """Consecutive slices of a week or more, at most 26, from since to until exactly."""
    p = Period(datetime(2026, 1, 1), datetime(2026, 1, 1) + timedelta(days=days))
    got = report.slices(p)
    assert len(got) == count
    assert got[0].since == p.since and got[-1].until == p.until
    assert all(a.until == b.since for a, b in zip(got, got[1:], strict=False))
    assert (got[0].until - got[0].since).days == min(step, days)


def test_report_template_renders_charts_and_tables() -> None:
    """The charts are inserted as SVG (not escaped), the tables' cells escaped."""
    from engine.web.charts import bar_chart

    html = render("report.html", form={"since": "", "until": "", "days": "", "by": ""},
                  groups=("specialty",), error=None,
                  report={"period": {"since": "a", "until": "b"}, "as_of": "c"},
                  tables=[("booking", ["referrals", "received"],
                           [{"referrals": HOSTILE, "received": "3"}])],
                  charts={k: bar_chart([("x", 1)], title=k) for k in
                          ("booked_within", "days_to_schedule", "over_time")})
    assert html.count("<svg") == 3 and HOSTILE not in html
    body = html.split("|", 1)[1]
    ET.fromstring(body[body.index("<svg"):body.index("</svg>") + 6])


MESSAGE = {"id": 5, "received_at": "t", "channel": "in", "peer": "p", "sender": "APP^FAC",
           "type": "REF^I12", "control_id": HOSTILE, "version": "2.5.1", "size": 10,
           "digest": "ab" * 32, "status": "errored", "ack": "AE", "error_code": "207",
           "error_location": "PID.3", "error_text": "bad", "control_id_reused": False,
           "retransmissions": 0, "ledger_effect": None, "purged_at": None,
           "ledger_changes": [{"referral": "R-1^EHR", "href": "/referrals/R-1%5EEHR",
                               "appointment": None, "event": "opened", "status_before": None,
                               "status_after": "pending", "rule": None}],
           "deliveries": [{"queue_id": 1, "destination": "files", "status": "delivered",
                           "attempts": [{"at": "t", "ack": "AA", "error": None, "ms": 3}]}],
           "relayed_acks": []}


def test_message_page_buttons_post_with_csrf() -> None:
    """The body is behind a POST form with the CSRF token; replay is a POST with a confirm
    question; the error and its location show; the control id is escaped."""
    html = render("message.html", message=MESSAGE, replayed=None, destinations=["files"])
    forms = {f["action"]: f for f in forms_of(html)}
    assert set(forms) == {"/messages/5/raw", "/messages/5/replay"}
    assert all(f["method"] == "post" and ("csrf", "TOKEN") in f["inputs"]
               for f in forms.values())
    assert "data-confirm" in forms["/messages/5/replay"]
    assert "207" in html and "PID.3" in html and 'href="/referrals/R-1%5EEHR"' in html
    assert HOSTILE not in html


def test_list_templates_show_the_next_link_and_errors() -> None:
    """The lists link each row, show a Next link only when there is a next page, and show a
    bad filter's detail."""
    html = render("messages.html", items=[{**MESSAGE, "href": "/messages/5"}],
                  filters={"status": "errored"}, statuses=("accepted", "errored"), error=None,
                  next_href="/messages?cursor=NQ")
    assert 'href="/messages/5"' in html and 'href="/messages?cursor=NQ"' in html
    assert '<option value="errored" selected>' in html
    html = render("referrals.html", items=[], filters={"overdue": ""}, statuses=("pending",),
                  error="since: expected an ISO date", next_href=None)
    assert "since: expected an ISO date" in html and "rel=\"next\"" not in html
    assert "No referral matches." in html


def test_raw_and_referral_templates() -> None:
    """The raw body shows one segment a line, escaped; the referral page shows its patient ids,
    due date and timeline with message links where given."""
    html = render("message_raw.html", message_id=5, charset="latin-1", href="/messages/5",
                  segments=["MSH|^~\\&|A", f"PID|||{HOSTILE}"])
    assert "MSH|^~\\&amp;|A\nPID" in html and HOSTILE not in html
    ref = {"id": "R-1^EHR", "status": "scheduled", "review": False, "patient_ids": ["P-9^HOSP"],
           "priority": "R", "specialty": "CARD", "source": "REF", "received_at": "t0",
           "due_at": "2026-12-18T00:00:00Z", "days_overdue": None, "window_start": None,
           "window_end": None, "external_ids": [], "filler_order_number": None, "events": []}
    timeline = [{"at": "t1", "event": "opened", "status_before": None, "status_after": "pending",
                 "appointment": None, "message_id": 7, "control_id": "C7",
                 "message_href": "/messages/7", "rule": None},
                {"at": "t2", "event": "manual_link", "status_before": "pending",
                 "status_after": "scheduled", "appointment": "A-1^S", "message_id": None,
                 "control_id": None, "message_href": None, "rule": None}]
    html = render("referral.html", referral=ref, timeline=timeline,
                  appointments=[{"id": "A-1^S", "events": timeline[1:]}])
    assert "P-9^HOSP" in html and "2026-12-18T00:00:00Z" in html
    assert '<a href="/messages/7">C7</a>' in html and "by hand or by the clock" in html


def test_report_charts_of_an_empty_period_say_so() -> None:
    """No referral received: every chart says there is no data rather than drawing zeros."""
    drawn = report.charts(report.Series([], [(Period(NOW, NOW + timedelta(days=7)),
                                              {"closed_loop_rate": None,
                                               "scheduled_rate": None})]), 0)
    assert all("No data for this period" in str(svg) for svg in drawn.values())
