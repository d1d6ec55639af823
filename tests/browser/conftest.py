"""Browser tests: the portal in real headless Chromium (Debian's, driven by Playwright), against a devhost.

Chromium is the machine's (`/usr/bin/chromium`, installed by `make tools` and `.ci/run`); Playwright
never downloads a browser. Every page of a test is watched: a request to anything but loopback is
aborted and fails the test, so the portal is shown to work offline, with no asset from a CDN.
Screenshots go to docs/img/ (docs/portal.md shows them).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Route, sync_playwright

from tests.conftest import ROOT
from tests.e2e.conftest import Devhost, started_devhost

CHROMIUM = Path(os.environ.get("VENDING_CHROMIUM", "/usr/bin/chromium"))
# The flags the machine needs: no sandbox as root, no GPU, and none of Chromium's own calls home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = ROOT / "docs" / "img"


def loopback(url: str) -> bool:
    """Say whether a URL stays on this machine (or is no network at all: data:, blob:, about:)."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about", "chrome-error"):
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Outside:
    """The requests a page tried to make off the machine (each was aborted)."""

    urls: list[str] = field(default_factory=list)

    def guard(self, route: Route) -> None:
        url = route.request.url
        if loopback(url):
            route.continue_()
        else:
            self.urls.append(url)
            route.abort()


# Module-scoped, not session-scoped: Playwright's sync API runs an event loop in the main thread while
# it is started, and the tests after these (asyncio.run in the function-app tests) need none running.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: the browser tests use Debian's chromium (make tools installs it: apt-get install chromium)"
    )
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    """A devhost of its own for a module of browser tests (nobody signed in)."""
    with started_devhost(tmp_path_factory.mktemp("portal"), user=None) as host:
        yield host


@pytest.fixture
def outside() -> Outside:
    return Outside()


@pytest.fixture
def context(browser: Browser, outside: Outside) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) whose every request off loopback is refused and recorded."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    ctx.route("**/*", outside.guard)
    yield ctx
    ctx.close()
    assert outside.urls == [], f"the portal tried to leave the machine: {outside.urls}"


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def screenshot(page: Page, name: str) -> Path:
    """Write a full-page screenshot to docs/img/<name>.png (shown in docs/portal.md)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
