"""Fixtures of the console tests: a real `spendgate serve` and a real headless Chromium.

The service runs as `tests/test_client.py` runs it (`reliability.harness.Cluster`): PostgreSQL +
its own redis-server, two replicas (a console session must work on both); `EmbeddedService`
runs the default deployment instead: SQLite, no Redis. The browser is Debian's `chromium` driven
by `chromium-driver` through Selenium; without them the browser tests are skipped with a message
saying what to install — never silently.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from console.helpers import EmbeddedService
from reliability.harness import Cluster


#: The flags the console tests launch Chromium with (besides a fresh --user-data-dir).
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,800",
)


def _browser_binaries() -> tuple[str, str] | None:
    browser = next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="session")
def browser_binaries() -> tuple[str, str]:
    found = _browser_binaries()
    if found is None:
        pytest.skip("no headless browser: install Debian's `chromium` and `chromium-driver` "
                    "(apt-get install -y chromium chromium-driver) to run the console's browser tests")
    return found


@pytest.fixture(scope="module")
def browser(browser_binaries: tuple[str, str]) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser_binaries[0]
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP violations show up there
    profile = tempfile.mkdtemp(prefix="spendgate-console-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(browser_binaries[1]))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    """PostgreSQL + Redis, two replicas sharing the admin token."""
    service = Cluster(tmp_path_factory.mktemp("console-pg"), replicas=2)
    try:
        await service.start()
        yield service
    finally:
        await service.stop()


@pytest.fixture(scope="module")
async def embedded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    service = EmbeddedService(tmp_path_factory.mktemp("console-sqlite"), replicas=1)
    try:
        await service.start()
        yield service
    finally:
        await service.stop()
