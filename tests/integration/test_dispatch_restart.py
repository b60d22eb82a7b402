"""`citywatch up` as a real process keeps its dispatch plans in `dispatch.sqlite3`: a plan made before a
restart is served, and re-planned, after it (docs/dispatch.md, "Where plans are kept")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.dispatch import EARLY_PLAN, ONE_TRUCK_CONFIG
from tests.support.process import CitywatchProcess

pytestmark = pytest.mark.integration



@pytest.fixture
def app(mosquitto_url: str, tmp_path: Path) -> Iterator[CitywatchProcess]:
    config = {"dispatch": ONE_TRUCK_CONFIG,
              "mqtt": {"url": mosquitto_url, "client_id": f"citywatch-{tmp_path.name}"}}
    process = CitywatchProcess(tmp_path, config).start()
    yield process
    process.kill()


def test_a_plan_made_before_a_restart_is_served_and_replanned_after_it(app: CitywatchProcess,
                                                                       tmp_path: Path) -> None:
    made = httpx.post(f"{app.base_url}/v1/dispatch/plans", timeout=30,
                      json={"depot_id": "futian", "shift_id": "early", "date": "2026-12-07"})
    assert made.status_code == 201, made.text
    assert app.stop() == 0
    assert (tmp_path / "data" / "dispatch.sqlite3").exists()

    app.start()
    assert app.get(EARLY_PLAN) == made.json()
    assert [item["plan_id"] for item in app.get("/v1/dispatch/plans")["items"]] == [made.json()["plan_id"]]
    replanned = httpx.post(f"{app.base_url}{EARLY_PLAN}/replan", timeout=30)
    assert replanned.status_code == 200 and replanned.json()["revision"] == 2
    assert app.stop() == 0
