"""The console's message, worklist, referral and report pages over real HTTP, against the
engine running as a subprocess with a real SQLite database: who may open which page (403),
the link form with and without its CSRF token, the raw body behind a POST, replay, the audit
events with the user's name, filters, errors and paging."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from console import Console, Visitor, start_console
from enginectl import ambiguous_booking, sample_payload

from engine.mllp.blocking import MLLPClient
from engine.parsing import parse

pytestmark = pytest.mark.slow

APPOINTMENT = "SCHED-A-8001^SCHED"
CHOSEN, OTHER = "MFP-R-8001^PCPEHR", "MFP-R-8002^PCPEHR"
PATIENT_IDS = ("100001", "200001", "TESTPATIENT")  # the samples' PID-3 and PID-5


def quoted(ident: str) -> str:
    return urllib.parse.quote(ident, safe="")


@pytest.fixture(name="console", scope="module")
def console_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    console = start_console(tmp_path_factory.mktemp("console_pages"))
    try:
        with MLLPClient("127.0.0.1", console.engine.port) as client:
            acks = [parse(client.exchange(p)[0])["MSA.1"]
                    for p in [*ambiguous_booking("8001", "8001", "8002"),
                              sample_payload("reject_type_unsupported.hl7")]]
        assert acks[:3] == ["AA"] * 3
        yield console
    finally:
        console.stop()


def visitor(console: Console, name: str) -> Visitor:
    v = console.visitor()
    assert v.login(name).status == 303
    return v


def audits(console: Console, event: str) -> list[tuple[str, ...]]:
    return [(e["user"], e.get("via", ""), str(e.get("endpoint", e.get("message_id", ""))))
            for e in console.engine.wait_for(event)]


def test_roles(console: Console) -> None:
    """A viewer gets 403 on the worklist, referrals and messages but sees the report; a
    coordinator gets 403 on messages; an operator opens them all."""
    pages = ("/worklist", "/referrals", f"/referrals/{quoted(CHOSEN)}", "/messages",
             "/messages/1", "/report")
    got = {name: [visitor(console, name).get(p).status for p in pages]
           for name in ("vic", "carol", "ops")}
    assert got == {"vic": [403, 403, 403, 403, 403, 200],
                   "carol": [200, 200, 200, 403, 403, 200],
                   "ops": [200] * 6}
    v = visitor(console, "carol")
    raw = v.post("/messages/1/raw", {"csrf": v.get("/worklist").csrf()})
    assert raw.status == 403 and "MSH|" not in raw.body


def test_worklist_explains_and_links_with_csrf(console: Console) -> None:
    """The ambiguous appointment is listed with why and a Link button per candidate; a link
    POST without the CSRF token is 403 and changes nothing; with it, the referral is linked
    (audited with the coordinator's name, via the console) and the browser is sent to the
    referral, whose timeline shows the link."""
    carol = visitor(console, "carol")
    page = carol.get("/worklist")
    assert page.status == 200
    assert f"ambiguous between {CHOSEN} and {OTHER}" in page.body
    action = f"/appointments/{quoted(APPOINTMENT)}/link"
    assert page.body.count(f'action="{action}"') == 3  # two candidates and a free one
    refused = carol.post(action, {"referral": CHOSEN})
    assert refused.status == 403
    assert "ambiguous between" in carol.get("/worklist").body
    done = carol.post(action, {"referral": CHOSEN, "csrf": page.csrf()})
    assert (done.status, done.location) == (303, f"/referrals/{quoted(CHOSEN)}")
    referral = carol.get(done.location or "")
    assert 'id="referral-status" class="status-scheduled"' in referral.body
    assert APPOINTMENT in referral.body and "by hand or by the clock" in referral.body
    events = console.engine.wait_for("audit.manual_link")
    assert [(e["user"], e["via"], e["referral"]) for e in events] == [
        ("carol", "console", CHOSEN)]
    again = carol.post(action, {"referral": OTHER, "csrf": page.csrf()})
    assert again.status == 409 and "already matched" in again.body
    assert "ambiguous between" not in carol.get("/worklist").body


def test_referral_pages(console: Console) -> None:
    """The list filters like the API (a bad filter is explained), pages with a Next link, and
    every view is audited; the referral page shows patient ids and links its messages only
    for an operator."""
    carol, ops = visitor(console, "carol"), visitor(console, "ops")
    listed = carol.get("/referrals?limit=1")
    assert listed.status == 200 and "100001" in listed.body
    assert len(re.findall(r'href="/referrals/MFP-R-', listed.body)) == 1
    following = re.search(r'href="(/referrals\?[^"]*cursor=[^"]+)" rel="next"', listed.body)
    assert following
    second = carol.get(following.group(1).replace("&amp;", "&"))
    assert len(re.findall(r'href="/referrals/MFP-R-', second.body)) == 1
    assert second.body != listed.body
    bad = carol.get("/referrals?since=yesterday")
    assert bad.status == 200 and "since: expected an ISO date" in bad.body
    assert "No referral matches." in carol.get("/referrals?specialty=NONE").body
    path = f"/referrals/{quoted(OTHER)}"
    assert 'href="/messages/' not in carol.get(path).body
    assert re.search(r'<a href="/messages/\d+">C-MFP-R-8002</a>', ops.get(path).body)
    assert carol.get("/referrals/NOPE%5EX").status == 404
    seen = [(e["user"], e["endpoint"]) for e in console.engine.wait_for("audit.api_read")]
    assert ("carol", "referrals") in seen and ("carol", "referral") in seen


def test_message_browser(console: Console) -> None:
    """The log lists newest first with filters and a Next link; a message page shows its ACK,
    ledger changes and deliveries; the body only after the POST with the CSRF token (audited
    with the operator's name); replay queues it again."""
    ops = visitor(console, "ops")
    page = ops.get("/messages")
    ids = [int(i) for i in re.findall(r'<a href="/messages/(\d+)">', page.body)]
    assert ids == sorted(ids, reverse=True) and len(ids) == 4
    one = ops.get("/messages?type=REF%5EI12&limit=1")
    assert len(re.findall(r'<a href="/messages/(\d+)">', one.body)) == 1 and 'rel="next"' in one.body
    assert "until: expected an ISO date" in ops.get("/messages?until=soon").body
    first = ops.get("/messages/1")
    assert first.status == 200 and "C-MFP-R-8001" in first.body and "AA" in first.body
    assert f'href="/referrals/{quoted(CHOSEN)}"' in first.body
    assert "MSH|" not in first.body and "100001" not in first.body
    assert ops.post("/messages/1/raw", {}).status == 403
    raw = ops.post("/messages/1/raw", {"csrf": first.csrf()})
    assert raw.status == 200 and "MSH|^~\\&amp;|" in raw.body and "100001" in raw.body
    events = console.engine.wait_for("audit.message_body_read")
    assert [(e["user"], e["via"], e["message_id"]) for e in events] == [("ops", "console", 1)]
    assert ops.post("/messages/999/raw", {"csrf": first.csrf()}).status == 404
    replayed = ops.post("/messages/1/replay", {"csrf": first.csrf(), "to": "files"})
    assert (replayed.status, replayed.location) == (303, "/messages/1?replayed=1")
    assert "Replayed: 1 queue row(s) added." in ops.get(replayed.location or "").body
    assert console.engine.wait_for("audit.queue_replay")[0]["user"] == "ops"


def test_report_has_charts_and_no_patient_data(console: Console) -> None:
    """A viewer sees the funnel tables and three SVG charts, grouped as asked; a bad period is
    explained; no patient id appears."""
    vic = visitor(console, "vic")
    page = vic.get("/report?days=30&by=specialty")
    assert page.status == 200 and page.body.count("<svg") == 3
    assert "Referrals booked within N days of receipt" in page.body
    assert "<th>specialty</th>" in page.body
    assert not any(p in page.body for p in PATIENT_IDS)
    for bad in ("/report?days=0", "/report?since=2026-13-01", "/report?by=patient"):
        answer = vic.get(bad)
        assert answer.status == 200 and 'role="alert"' in answer.body, bad


def test_pages_ask_strangers_to_log_in(console: Console, tmp_path: Path) -> None:
    """Without a session every page of this module sends the visitor to the login form."""
    stranger = console.visitor()
    for path in ("/messages", "/worklist", "/referrals", "/report"):
        reply = stranger.get(path)
        assert reply.status == 302 and (reply.location or "").startswith("/login?next=")
