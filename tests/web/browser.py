"""
A real browser for the web UI's end-to-end tests: Debian's ``chromium`` driven through
its ``chromedriver`` by Selenium, headless. Without them the tests skip with the reason,
or fail when ``VMSNAP_REQUIRE_BROWSER=1`` (as ``.ci/run`` sets).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 30.0
SCREENSHOTS = Path(os.environ.get("VMSNAP_UI_SCREENSHOTS", "build/ui-screenshots"))


def require_browser() -> None:
    """Skip (or fail, under VMSNAP_REQUIRE_BROWSER=1) without chromium and its driver."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if not missing:
        return
    reason = f"the browser tests need {', '.join(missing)} (Debian: chromium chromium-driver)"
    if os.environ.get("VMSNAP_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def start_browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def until(
    driver: Any, condition: Callable[[Any], Any], what: str, timeout_s: float = WAIT_S
) -> Any:
    """
    Selenium's WebDriverWait for ``condition``; the failure names ``what``. The page
    updates itself live, so an element the condition found may be replaced before it is
    read: that look is retried, not a failure.
    """
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(
        driver,
        timeout_s,
        poll_frequency=0.05,
        ignored_exceptions=[StaleElementReferenceException],
    )
    return wait.until(condition, what)


def screenshot(driver: Any, name: str, *, full: bool = True) -> Path:
    """
    The whole page (up to 2400 px high), or only what the window shows (``full=False``),
    as ``SCREENSHOTS/name.png``.
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    if not full:
        driver.save_screenshot(str(path))
        return path
    size = driver.get_window_size()
    height = driver.execute_script("return document.documentElement.scrollHeight;")
    driver.set_window_size(size["width"], min(max(int(height) + 140, 600), 2400))
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.set_window_size(size["width"], size["height"])
    return path
