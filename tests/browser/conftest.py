"""The console in headless Chromium against a real `citywatch up` (with a real Mosquitto) on free ports."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from bench.intersection_feed import CAMERA, INTERSECTION, SIGNALS, scenario_config
from citywatch.mqtt_publisher import MqttPublisher
from tests.support.browser import launch
from tests.support.process import REPO, CitywatchProcess

GEO = REPO / "configs" / "geo"
BIN_TAGS = {"grid": "FT-11", "district": "futian", "department": "sanitation"}
BINS = [f"bin-b{n}" for n in range(1, 9)]


def create_key(config: Path, scopes: str) -> str:
    """A key made the way an operator makes one, `citywatch keys create`; its token."""
    out = subprocess.run([sys.executable, "-m", "citywatch.cli", "keys", "--config", str(config), "create",
                          "--name", f"console-{scopes.replace(':', '-')}", "--scopes", scopes], cwd=REPO,
                         check=True, capture_output=True, text=True).stdout
    return out.split("token (shown once, only its hash is stored): ")[1].strip()


# Per module, not per session: Playwright's sync API keeps an event loop running in the test process
# while it is open, and tests of other modules run after these in the same process (asyncio.run refuses).
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@dataclass
class City:
    """A running citywatch with keys of several scopes and a publisher on its broker."""

    process: CitywatchProcess
    publisher: MqttPublisher
    admin_key: str
    reader_key: str  # violations:read and readings:read, without plates

    @property
    def url(self) -> str:
        return self.process.base_url

    def api(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.url + path, params=params, timeout=10,
                             headers={"Authorization": f"Bearer {self.admin_key}"})
        response.raise_for_status()
        return response.json()

    def send(self, device: str, kind: str, at_ms: int, **attributes: Any) -> None:
        body = {"device_id": device, "kind": kind, "time": at_ms, "attributes": attributes}
        self.publisher.publish(f"citywatch/events/{device}", json.dumps(body, ensure_ascii=False).encode(),
                               wait=True)

    def red_light(self, track_id: str, plate: str) -> None:
        """A car entering the north stop line 0.4 s into red: a red_light violation with its plate and phase.
        Times from now on: the rules judge on event time, and older events would come too late."""
        now_ms = int(time.time() * 1000)
        self.send(SIGNALS, "signal", now_ms, intersection=INTERSECTION, phase="north_through", state="red")
        self.send(CAMERA, "track", now_ms + 400, track_id=track_id, stage="new", label="car",
                  zones=["stop_north"], plate=plate, snapshot_url=f"http://nvr.example/{track_id}.jpg")

    def filling(self, device: str, start_pct: float, pct_per_step: float) -> None:
        """Readings of a bin filling at a steady rate: enough for a forecast of when it is full."""
        now_ms = int(time.time() * 1000)
        for step in range(5):
            self.send(device, "bin", now_ms + step * 100, fill_pct=start_pct + step * pct_per_step)

    def signal_changes(self, *changes: tuple[int, str, str]) -> None:
        """(seconds ago, phase, state) changes of the demo intersection's signal controller: stored for the
        timeline (too old for the rules to judge, which these tests do not need)."""
        now_ms = int(time.time() * 1000)
        for ago_s, phase, state in changes:
            self.send(SIGNALS, "signal", now_ms - ago_s * 1000, intersection=INTERSECTION, phase=phase,
                      state=state)

    def overflow(self, device: str) -> None:
        now_ms = int(time.time() * 1000)
        for offset, fill in ((0, 95.0), (100, 96.0), (200, 97.0)):
            self.send(device, "bin", now_ms + offset, fill_pct=fill)


def city_config(mosquitto_url: str, name: str) -> dict[str, Any]:
    scenario = scenario_config()
    bins = [{"device_id": d, "kind": "bin", "lat": 22.535 + i * 0.001, "lon": 114.045, "tags": BIN_TAGS}
            for i, d in enumerate(BINS)]
    return {**scenario, "devices": [*scenario["devices"], *bins],
            "geo": {"grids_file": str(GEO / "grids.geojson"),
                    "districts_file": str(GEO / "districts.geojson")},
            "pipeline": {"allowed_lateness_ms": 300},
            "alerts": {"stream_heartbeat_s": 1.0},
            "mqtt": {"url": mosquitto_url, "client_id": f"citywatch-{name}"},
            "api": {"auth": "required"}}


@pytest.fixture(scope="module")
def city(mosquitto_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    workdir: Path = tmp_path_factory.mktemp("console")
    process = CitywatchProcess(workdir, city_config(mosquitto_url, workdir.name))
    admin_key = create_key(process.config_path, "admin")
    reader_key = create_key(process.config_path, "violations:read,readings:read")
    process.start()
    publisher = MqttPublisher(mosquitto_url, f"test-console-{workdir.name}").connect()
    try:
        yield City(process, publisher, admin_key, reader_key)
    finally:
        publisher.close()
        process.stop()
