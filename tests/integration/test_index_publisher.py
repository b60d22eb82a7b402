"""The scheduled publisher as `citywatch up` and the api role compose it: once a period has ended and the
allowed lateness has passed, its report is published in the background, once, under the real clock."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from citywatch.indices import IndexComponents
from core.models import ExposureTotal
from core.settings import Settings
from processors.indices.periods import local_day
from store.sqlite_store import SqliteStore
from tests.support.stores import KEEP_ALL
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def test_yesterdays_report_is_published_in_the_background(tmp_path: Path) -> None:
    settings = Settings().with_overrides(store__data_dir=str(tmp_path), indices__reports__periods=["day"],
                                         indices__reports__allowed_lateness_h=0,
                                         indices__reports__check_interval_s=0.05)
    yesterday = local_day(time.time_ns() // 1_000_000, settings.traffic.time_zone) - timedelta(days=1)
    store = SqliteStore.in_directory(tmp_path / "events", KEEP_ALL)
    tags = {"intersection": "x-1", "grid": "g-1", "district": "north"}
    store.write_exposures([
        ExposureTotal(day=yesterday.isoformat(), device_id="cam-1", counter="stop_line_crossings",
                      value=40_000, tags=tags),
        ExposureTotal(day=yesterday.isoformat(), device_id="cam-1", counter="red_light_crossings", value=10,
                      tags=tags)])
    store.flush()
    components = IndexComponents(settings, store, cases=None)
    components.start()
    try:
        report_id = f"day-{yesterday.isoformat()}"
        wait_for(lambda: components.reports.exists(report_id), timeout_s=10)
        time.sleep(0.2)  # several more checks: none publishes it again
        report = components.reports.get(report_id)
        assert report is not None and report["published_by"] == "schedule"
        [x1] = report["indices"]["traffic"]["levels"]["intersection"]
        assert x1["components"][0]["rate"] == 10 / 40_000
        assert [r.report_id for r in components.reports.list()] == [report_id]
    finally:
        components.stop()
        store.close()
