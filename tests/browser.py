"""A real headless Chromium for the console's browser tests (Debian's `chromium` and
`chromium-driver`, driven by Selenium): the `browser` fixture starts one per test with its own
profile folder under the test's tmp_path; `Browser.shot(name)` saves a screenshot in the test's
`screenshots` folder, which the suite prints when a browser test fails (conftest.py).

Without Chromium (or Selenium) the browser tests skip, unless REQUIRE_BROWSER=1 (CI), in which
case they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = ("chromium", "chromium-browser")
DRIVER = "chromedriver"
WAIT_S = 30.0  # the longest a test waits for the page to change (not a timing assert)


def _find() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None."""
    browser = next((found for name in CHROMIUM if (found := shutil.which(name))), None)
    driver = shutil.which(DRIVER)
    return (browser, driver) if browser and driver else None


def _unavailable(reason: str) -> None:
    if os.environ.get("REQUIRE_BROWSER", "") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}. Install Chromium and its driver "
                    "(Debian: apt-get install chromium chromium-driver).", pytrace=False)
    pytest.skip(reason)


@dataclass
class Browser:
    """A Chromium window (`driver`, a Selenium WebDriver) and where its screenshots go."""

    driver: Any
    shots: Path
    base: str = ""

    def shot(self, name: str) -> Path:
        """Save a screenshot of the page as it is now: `<shots>/<name>.png`."""
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def wait(self, condition: Any, timeout: float = WAIT_S) -> Any:
        """Wait until `condition(driver)` is truthy (Selenium's WebDriverWait)."""
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout).until(condition)

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def text(self, selector: str) -> str:
        return str(self.css(selector).text)

    def login(self, name: str, password: str) -> None:
        """Fill the login form (wherever the browser was sent to it) and send it."""
        self.wait(lambda d: "/login" in d.current_url)
        self.css("#name").clear()
        self.css("#name").send_keys(name)
        self.css("#password").send_keys(password)
        self.css("#login").click()


@pytest.fixture(name="browser")
def browser_fixture(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Browser]:
    """A headless Chromium with a profile of its own, quit after the test."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[test]')")
        raise
    found = _find()
    if found is None:
        _unavailable("chromium or chromedriver not found")
        raise AssertionError("unreachable")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,900", "--no-first-run",
                     f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=found[1]))
    browser = Browser(driver, tmp_path / "screenshots")
    request.node.screenshots = browser.shots  # for conftest's report hook
    try:
        yield browser
    finally:
        try:
            browser.shot("last")
        finally:
            driver.quit()
