"""The web console in a real headless Chromium (tests/browser.py) against the engine running as
a subprocess: logging in (and a wrong password), the dashboard's figures changing by themselves
after samples arrive over MLLP (a viewer seeing no patient id), and an operator pausing and
resuming a destination from /queues (confirm dialogs, CSRF, audit).  Screenshots of each page
are saved under each test's tmp_path."""

from __future__ import annotations

import pytest
from browser import Browser
from console import (
    Console,
    console_fixture,  # noqa: F401 - the module's engine
    password,
)
from enginectl import send_samples

pytestmark = pytest.mark.slow

SAMPLES = ("ref_i12_v251.hl7", "ref_i12_v23.hl7")
PATIENT_IDS = ("100001", "200001", "100002", "200002", "TESTPATIENT")


@pytest.fixture(name="web")
def web_fixture(browser: Browser, console: Console) -> Browser:
    browser.base = f"http://{console.host}:{console.port}"
    return browser


def test_log_in_and_a_wrong_password(web: Browser) -> None:
    """A stranger lands on the login form; a wrong password shows an error and stays there; the
    right one opens the page first asked for, with the user's name and role in the header."""
    web.open("/queues")
    web.wait(lambda d: "/login" in d.current_url)
    web.shot("login-form")
    web.login("carol", "not her password")
    web.wait(lambda d: d.find_elements("id", "login-error"))
    assert "wrong user name or password" in web.text("#login-error")
    web.shot("login-wrong-password")
    web.login("carol", password("carol"))
    web.wait(lambda d: d.current_url.endswith("/queues"))
    assert web.text(".user-name") == "carol" and web.text(".role") == "coordinator"
    web.shot("queues-after-login")


def test_the_dashboard_refreshes_itself(web: Browser, console: Console) -> None:
    """A viewer's dashboard: after two referrals arrive over MLLP, the channel's accepted count
    goes up by two and the ledger's open count with it, without a reload of the page; the page
    never shows a patient id or name."""
    web.open("/")
    web.login("vic", password("vic"))
    web.wait(lambda d: d.find_elements("css selector", "#channels td.accepted"))
    before = int(web.text("tr[data-channel='referrals'] td.accepted"))
    open_before = int(web.text("#ledger td.open"))
    web.driver.execute_script("window.notReloaded = true;")
    web.shot("dashboard-before")
    send_samples(console.engine.port, SAMPLES)
    web.wait(lambda d: int(d.find_element(
        "css selector", "tr[data-channel='referrals'] td.accepted").text) == before + 2)
    assert int(web.text("#ledger td.open")) == open_before + 2
    assert web.driver.execute_script("return window.notReloaded === true;")
    assert web.css("#panel").get_attribute("data-refreshed-at")
    web.shot("dashboard-after")
    source = web.driver.page_source
    assert not [p for p in PATIENT_IDS if p in source]


def test_pause_and_resume_a_destination(web: Browser, console: Console) -> None:
    """An operator pauses `files` from /queues (accepting the confirm dialog): the page comes
    back saying so with the state `paused`; dismissing the dialog does nothing; resume brings it
    back to `running`; both are audited with the operator's name."""
    web.open("/queues")
    web.login("ops", password("ops"))
    web.wait(lambda d: d.current_url.endswith("/queues"))
    row = "tr[data-destination='files']"
    web.css(f"{row} button.pause").click()
    web.wait(lambda d: d.switch_to.alert).dismiss()
    assert web.text(f"{row} td.state") == "running"
    web.css(f"{row} button.pause").click()
    web.wait(lambda d: d.switch_to.alert).accept()
    web.wait(lambda d: d.find_elements("id", "flash"))
    assert web.text("#flash") == "files: paused."
    assert web.text(f"{row} td.state") == "paused"
    web.shot("queues-paused")
    web.css(f"{row} button.resume").click()
    web.wait(lambda d: d.switch_to.alert).accept()
    web.wait(lambda d: d.find_element("id", "flash").text == "files: resumed.")
    assert web.text(f"{row} td.state") == "running"
    web.shot("queues-resumed")
    audits = [(e["event"], e["user"]) for e in console.engine.events()
              if e.get("event") in ("audit.queue_pause", "audit.queue_resume")]
    assert audits == [("audit.queue_pause", "ops"), ("audit.queue_resume", "ops")]
