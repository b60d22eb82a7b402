"""`citywatch up` killed mid-day: the day's exposure totals count on from what was stored.

The rule state is saved on a clean stop only, so after a kill the engine starts from an older state (here:
none). Without taking over the stored totals, the first count after the restart would replace the day's
total with the count since the restart. (Totals are written at most once a second: the kill comes once the
readings' totals are stored, which is what a restart can take over.)
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from citywatch.mqtt_publisher import MqttPublisher
from store.base import ExposureQuery, ExposureSum
from store.sqlite_store import FILE_NAME, SqliteStore
from tests.support.process import CitywatchProcess, bins
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

MINUTE_MS = 60_000


def reading(time_ms: int) -> bytes:
    return json.dumps({"device_id": "bin-a", "kind": "bin", "time": time_ms,
                       "attributes": {"fill_pct": 20.0}}).encode()


def publish_minutes(publisher: MqttPublisher, first_ms: int, count: int) -> None:
    for minute in range(count):
        publisher.publish("citywatch/events/bin-a", reading(first_ms + minute * MINUTE_MS), wait=True)


def wait_stored(app: CitywatchProcess, total: int) -> None:
    wait_for(lambda: app.get("/v1/status")["events_total"] >= total, 20,
             message=f"{total} readings stored")


def stored_bin_minutes(data_dir: Path) -> float:
    """The day's stored sensor minutes, read beside the running process (read-only, as any reader)."""
    with closing(sqlite3.connect(f"file:{data_dir / FILE_NAME}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT sum(value) FROM exposure_totals WHERE counter = 'bin_minutes'").fetchone()
    return float(row[0] or 0)


def test_a_kill_does_not_shrink_the_days_totals(mosquitto_url: str, tmp_path: Path) -> None:
    # Local days in UTC, so the test can keep its readings on one day. No lateness allowance: each reading
    # is judged (and counted) as soon as it is stored.
    config = {"devices": bins("bin-a"), "traffic": {"time_zone": "UTC"},
              "pipeline": {"allowed_lateness_ms": 0},
              "mqtt": {"url": mosquitto_url, "client_id": f"citywatch-{tmp_path.name}"}}
    now = datetime.now(UTC)
    if now.hour == 0 and now.minute < 45:
        now -= timedelta(hours=1)  # the readings below stay on one UTC day
    first_ms = int(now.timestamp() * 1000) - 40 * MINUTE_MS
    app = CitywatchProcess(tmp_path, config).start()
    publisher = MqttPublisher(mosquitto_url, "test-exposures-restart").connect()
    try:
        publish_minutes(publisher, first_ms, 11)  # ten minutes between the first and the last
        wait_stored(app, 11)
        wait_for(lambda: stored_bin_minutes(tmp_path / "data") == 10, 10, message="ten minutes stored")
        app.kill()
        app.start()
        publish_minutes(publisher, first_ms + 20 * MINUTE_MS, 6)  # five more minutes (the gap is unseen)
        wait_stored(app, 6)
        assert app.stop() == 0
    finally:
        publisher.close()
        app.kill()
    store = SqliteStore.in_directory(tmp_path / "data")
    try:
        day = now.date().isoformat()
        sums = store.exposure_sums(ExposureQuery(first_day=day, last_day=day, group_by="device",
                                                 counters=("bin_minutes",)))
    finally:
        store.close()
    assert sums == [ExposureSum("bin-a", "bin_minutes", 15.0)]
    assert "counting on from 1 stored totals" in app.log()
