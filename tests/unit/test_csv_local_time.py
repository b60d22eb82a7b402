"""CSV exports carry, next to each epoch-ms time, the same instant in the city's time zone
(`traffic.time_zone`) as ISO 8601 with the offset in force then: across daylight-saving changes too."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from api.app import create_app
from api.services import ApiServices
from citywatch.runtime import EmbeddedRuntime
from core.metrics import Metrics
from core.models import ViolationStatus
from core.settings import Settings
from store.sqlite_store import SqliteStore
from tests.support.alerts import violation
from tests.support.served_app import served


def utc_ms(*fields: int) -> int:
    return int(datetime(*fields, tzinfo=UTC).timestamp() * 1000)


# New York, 2026: clocks go forward at 02:00 EST on 8 March (07:00 UTC) and back at 02:00 EDT on
# 1 November (06:00 UTC), so 01:30 happens twice that night.
BEFORE_SPRING = utc_ms(2026, 3, 8, 6, 59, 59)
AFTER_SPRING = utc_ms(2026, 3, 8, 7, 0, 0)
FIRST_0130 = utc_ms(2026, 11, 1, 5, 30)
SECOND_0130 = utc_ms(2026, 11, 1, 6, 30)


def exported(tmp_path: Path, time_zone: str) -> list[dict[str, str]]:
    store = SqliteStore.in_directory(tmp_path)
    opened = msgspec.structs.replace(violation(1), start_time_ms=BEFORE_SPRING, updated_time_ms=AFTER_SPRING,
                                     detected_time_ms=AFTER_SPRING)
    cleared = msgspec.structs.replace(violation(2, status=ViolationStatus.CLEARED), start_time_ms=FIRST_0130,
                                      end_time_ms=SECOND_0130, updated_time_ms=SECOND_0130,
                                      detected_time_ms=None)
    store.write_violations([opened, cleared])
    store.flush()
    app = create_app(ApiServices(store=store, metrics=Metrics(), time_zone=time_zone))
    with served(app) as client:
        response = client.get("/v1/exports/violations.csv")
    assert response.status_code == 200
    return sorted(csv.DictReader(io.StringIO(response.text)), key=lambda row: row["violation_id"])


def test_local_times_follow_daylight_saving_time(tmp_path: Path):
    opened, cleared = exported(tmp_path, "America/New_York")
    assert opened["start_time_ms"] == str(BEFORE_SPRING)
    assert opened["start_time_local"] == "2026-03-08T01:59:59.000-05:00"
    assert opened["updated_time_local"] == "2026-03-08T03:00:00.000-04:00"  # one second later
    assert opened["detected_time_local"] == "2026-03-08T03:00:00.000-04:00"
    assert opened["end_time_ms"] == opened["end_time_local"] == ""  # still open
    # The repeated hour: the same wall time, told apart by its offset.
    assert cleared["start_time_local"] == "2026-11-01T01:30:00.000-04:00"
    assert cleared["end_time_local"] == "2026-11-01T01:30:00.000-05:00"
    assert cleared["detected_time_ms"] == cleared["detected_time_local"] == ""


def test_each_local_column_follows_its_epoch_column(tmp_path: Path):
    header = next(csv.reader(io.StringIO(",".join(exported(tmp_path, "UTC")[0]))))
    for name in ("start_time", "end_time", "updated_time", "detected_time"):
        assert header.index(f"{name}_local") == header.index(f"{name}_ms") + 1
    for row in exported(tmp_path / "again", "Asia/Shanghai"):
        for name in ("start_time", "end_time", "updated_time"):
            if row[f"{name}_ms"]:
                local = datetime.fromisoformat(row[f"{name}_local"])
                assert local.utcoffset() is not None and local.utcoffset().total_seconds() == 8 * 3600
                assert int(local.timestamp() * 1000) == int(row[f"{name}_ms"])


def test_the_api_of_citywatch_up_takes_the_city_time_zone_from_traffic_time_zone(tmp_path: Path):
    settings = Settings().with_overrides(store__data_dir=tmp_path, traffic__time_zone="America/New_York")
    runtime = EmbeddedRuntime(settings)
    try:
        assert runtime.api_services().time_zone == "America/New_York"
    finally:
        runtime.stop()  # closes what the runtime opened (its stores), though nothing was started
