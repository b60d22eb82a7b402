"""Headless Chromium (the system package) driven by Playwright, with every request outside this machine
refused and recorded, and every console error and page error collected (tests/browser/)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, Route

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox: the tests run as root in containers; the rest keeps the browser off the network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def launch(playwright: Playwright) -> Browser:
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.fail("the browser tests need Chromium from the system packages: apt-get install -y chromium")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@dataclass
class WatchedPage:
    """A page with what went wrong on it: console errors, uncaught errors, requests that left the machine."""

    page: Page
    context: BrowserContext
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    transferred_bytes: int = 0

    def assert_clean(self) -> None:
        assert self.external_requests == [], f"requests outside this machine: {self.external_requests}"
        assert self.page_errors == [], f"uncaught errors: {self.page_errors}"
        assert self.console_errors == [], f"console errors: {self.console_errors}"


@contextmanager
def watched_page(browser: Browser, width: int = 1400, height: int = 860) -> Iterator[WatchedPage]:
    context = browser.new_context(viewport={"width": width, "height": height}, service_workers="block")
    page = context.new_page()
    watched = WatchedPage(page, context)

    def only_local(route: Route) -> None:
        host = urlsplit(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
            route.continue_()
        else:
            watched.external_requests.append(route.request.url)
            route.abort()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.console_errors.append(f"{message.text} ({message.location.get('url')})")

    context.route("**/*", only_local)
    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.page_errors.append(str(error)))
    try:
        yield watched
    finally:
        context.close()
