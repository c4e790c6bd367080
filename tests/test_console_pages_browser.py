"""The console's message, worklist, referral and report pages in a real headless Chromium
(tests/browser.py) against the engine running as a subprocess: an operator opens a message from
the list and its raw body; a coordinator links an ambiguous appointment from the worklist
(accepting the confirm dialog) and sees the referral's timeline change; a viewer finds no patient
id on any page the menu offers.  Screenshots of each page are saved under each test's
tmp_path."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from browser import Browser
from console import Console, password, start_console
from enginectl import ambiguous_booking, sample_payload

from engine.mllp.blocking import MLLPClient

pytestmark = pytest.mark.slow

CHOSEN = "MFP-R-9001^PCPEHR"
PATIENT_IDS = ("100001", "200001", "TESTPATIENT")  # the samples' PID-3 and PID-5


@pytest.fixture(name="console", scope="module")
def console_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    console = start_console(tmp_path_factory.mktemp("console-pages-browser"))
    try:
        with MLLPClient("127.0.0.1", console.engine.port) as client:
            for payload in [*ambiguous_booking("9001", "9001", "9002"),
                            sample_payload("reject_type_unsupported.hl7")]:
                client.exchange(payload)
        yield console
    finally:
        console.stop()


@pytest.fixture(name="web")
def web_fixture(browser: Browser, console: Console) -> Browser:
    browser.base = f"http://{console.host}:{console.port}"
    return browser


def test_open_a_message_from_the_list(web: Browser) -> None:
    """An operator clicks the newest message in /messages and gets its page; the body shows
    only after **Show raw body**, one segment a line."""
    web.open("/messages")
    web.login("ops", password("ops"))
    web.wait(lambda d: d.current_url.endswith("/messages"))
    web.shot("messages")
    first = web.css("table.messages tbody a")
    message_id = first.text
    first.click()
    web.wait(lambda d: d.current_url.endswith(f"/messages/{message_id}"))
    assert web.text("h1") == f"Message {message_id}"
    assert "MSH|" not in web.driver.page_source
    web.shot("message")
    web.css("#show-raw").click()
    web.wait(lambda d: d.find_elements("css selector", "pre.hl7"))
    assert web.text("pre.hl7").startswith("MSH|")
    web.shot("message-raw")


def test_link_an_ambiguous_appointment_from_the_worklist(web: Browser) -> None:
    """A coordinator sees the ambiguous appointment with why; dismissing the confirm dialog
    links nothing; accepting it links the chosen referral and opens its page, whose status is
    now scheduled and whose timeline has new rows naming the appointment, the last one pending →
    scheduled."""
    path = "/referrals/" + CHOSEN.replace("^", "%5E")
    web.open(path)
    web.login("carol", password("carol"))
    web.wait(lambda d: d.find_elements("id", "timeline"))
    rows_before = len(web.driver.find_elements("css selector", "#timeline tbody tr"))
    assert web.text("#referral-status") == "pending"
    web.shot("referral-before")
    web.open("/worklist")
    row = web.css("tr.kind-ambiguous")
    assert "ambiguous between MFP-R-9001^PCPEHR and MFP-R-9002^PCPEHR" in row.text
    web.shot("worklist")
    button = next(b for b in row.find_elements("css selector", "button.link-button")
                  if b.text == f"Link to {CHOSEN}")
    button.click()
    web.wait(lambda d: _alert(d)).dismiss()
    assert web.driver.current_url.endswith("/worklist")
    button.click()
    web.wait(lambda d: _alert(d)).accept()
    web.wait(lambda d: d.current_url.endswith(path))
    assert web.text("#referral-status") == "scheduled"
    rows = web.driver.find_elements("css selector", "#timeline tbody tr")
    added = [r.text for r in rows[rows_before:]]
    assert added and all("SCHED-A-9001^SCHED" in text for text in added)
    assert "pending → scheduled" in added[-1]
    web.shot("referral-after")


def _alert(driver: object) -> object:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        return driver.switch_to.alert  # type: ignore[attr-defined]
    except NoAlertPresentException:
        return False


def test_a_viewer_sees_no_patient_id_anywhere(web: Browser) -> None:
    """Every page a viewer's menu offers, and the report grouped each way, has none of the
    samples' patient ids or names in its source; the patient pages answer 403."""
    web.open("/")
    web.login("vic", password("vic"))
    web.wait(lambda d: d.find_elements("css selector", "header nav a"))
    menu = [a.get_attribute("href") for a in web.driver.find_elements("css selector",
                                                                        "header nav a")]
    pages = [re.sub(r"^https?://[^/]+", "", str(h)) for h in menu]
    assert "/report" in pages and "/worklist" not in pages
    pages += [f"/report?days=30&by={g}" for g in ("specialty", "source", "priority")]
    for page in pages:
        web.open(page)
        web.wait(lambda d: d.find_elements("css selector", "main"))
        web.shot("viewer" + page.replace("/", "-").replace("?", "-").replace("&", "-"))
        source = web.driver.page_source
        assert not [p for p in PATIENT_IDS if p in source], page
    for forbidden in ("/worklist", "/referrals", "/messages/1"):
        web.open(forbidden)
        assert "needs the role" in web.driver.page_source
