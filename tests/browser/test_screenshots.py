"""The demo (`citywatch up --simulate`, the shipped configuration) in the browser: it opens without a key
on 127.0.0.1 and every view loads cleanly. With CONSOLE_SCREENSHOTS=<folder> set (`make screenshots`; not
a CITYWATCH_ name, which citywatch would read as configuration) each view is also saved there as PNG, as
README.md and docs/console.md show them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.support.browser import watched_page
from tests.support.process import REPO, CitywatchCommand, free_port
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

SCREENSHOTS = os.environ.get("CONSOLE_SCREENSHOTS")
# (view, file name, what the view must show before it is taken)
VIEWS = [("map", "map.png", "#open-list tr[data-id]"),
         ("queue", "queue.png", "#queue tbody tr[data-id]"),
         ("intersections", "intersection.png", "#intersection"),
         ("dispatch", "dispatch.png", "#bins-to-empty tr[data-device]"),
         ("stats", "statistics.png", "#by-type")]


class DemoProcess(CitywatchCommand):
    """`citywatch up --simulate` with the shipped configuration, on free ports and its own data directory."""

    def __init__(self, workdir: Path) -> None:
        port = free_port()
        super().__init__(workdir, "demo", {}, port, environment={
            "CITYWATCH_API__PORT": str(port), "CITYWATCH_STORE__DATA_DIR": str(workdir / "data"),
            "CITYWATCH_MQTT__EMBEDDED_PORT": "0"})

    def arguments(self) -> list[str]:
        return ["up", "--simulate"]


def violation_types(process: DemoProcess) -> set[str]:
    return {item["type"] for item in process.get("/v1/violations", limit=500)["items"]}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    process = DemoProcess(tmp_path_factory.mktemp("demo")).start()
    try:
        # Bins fill within seconds in the simulated district: wait for forecasts and open violations.
        wait_for(lambda: len(process.get("/v1/bins/predictions")["items"]) >= 10, 60, 0.5, "bin forecasts")
        wait_for(lambda: process.get("/v1/violations", status="open")["items"], 60, 0.5, "open violations")
        if SCREENSHOTS:  # pictures of the whole city: the camera and sensor incidents come within a minute
            wait_for(lambda: len(violation_types(process)) >= 10, 90, 1, "ten kinds of violation")
        yield process
    finally:
        process.stop()


def test_the_demo_opens_without_a_key_and_every_view_loads(browser: Browser, demo: DemoProcess) -> None:
    folder = REPO / SCREENSHOTS if SCREENSHOTS else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    with watched_page(browser, width=1400, height=860) as watched:
        page = watched.page
        page.goto(demo.base_url + "/")
        expect(page.locator("#nav")).to_be_visible()
        expect(page.locator("#sign-in")).to_be_hidden()
        expect(page.locator("#who")).to_have_text("open access (local demo)")
        expect(page.locator("#live")).to_have_text("● live")
        for view, file_name, shown in VIEWS:
            page.click(f"#nav a[data-view={view}]")
            expect(page.locator(".view[data-ready]")).to_have_count(1)
            expect(page.locator(shown).first).to_be_attached(timeout=15_000)
            if view == "queue":  # the evidence of the newest violation
                page.locator("#queue tbody tr[data-id]").first.click()
                expect(page.locator("#detail .evidence")).to_be_visible()
            if view == "map":
                page.wait_for_timeout(1000)  # let the canvas settle after fitting the grids
            if folder is not None:
                page.screenshot(path=str(folder / file_name))
        watched.assert_clean()
