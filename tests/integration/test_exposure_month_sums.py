"""SQLite's month sums of the exposure totals (store/sqlite_store.py): any day range, whole months or not,
sums to what the daily totals sum to, after totals are replaced, devices move and totals are deleted, and
a file written before the sums existed gains them when opened."""

from __future__ import annotations

import random
import sqlite3
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

import pytest

from core.models import ExposureTotal
from store.base import ExposureQuery
from store.sqlite_store import SqliteStore
from tests.support.stores import KEEP_ALL

pytestmark = pytest.mark.integration

PLACES = [{"intersection": "x-1", "grid": "g-1", "district": "north"},
          {"intersection": "x-2", "grid": "g-1", "district": "north"},
          {"grid": "g-2", "district": "south"}]
RANGES = [("2026-10-01", "2026-12-31"), ("2026-10-15", "2026-12-02"), ("2026-11-01", "2026-11-30"),
          ("2026-11-03", "2026-11-09"), ("2026-09-20", "2026-10-31"), ("2026-12-01", "2027-01-31")]


def written(rng: random.Random, days: int = 92) -> list[ExposureTotal]:
    totals = []
    for n in range(days):
        day = (date(2026, 10, 1) + timedelta(days=n)).isoformat()
        for device in ("cam-1", "cam-2", "bin-1"):
            tags = rng.choice(PLACES)  # a device may move between days
            for counter in ("stop_line_crossings", "red_light_crossings"):
                totals.append(ExposureTotal(day=day, device_id=device, counter=counter,
                                            value=float(rng.randint(1, 500)), tags=tags))
            # Time in minutes of whole milliseconds, as the engine reports it: not exact in binary.
            totals.append(ExposureTotal(day=day, device_id=device, counter="air_sensor_minutes",
                                        value=rng.randint(1, 86_400_000) / 60_000, tags=tags))
    return totals


def expected(latest: dict[tuple[str, str, str], ExposureTotal], group_by: str, first: str,
             last: str) -> dict[tuple[str, str], float]:
    # Summed in whole milliseconds (integers): the exact sum, whatever the order of additions.
    ms: dict[tuple[str, str], int] = defaultdict(int)
    for total in latest.values():
        if first <= total.day <= last:
            place = "" if group_by == "city" else total.tags.get(group_by) if group_by != "device" \
                else total.device_id
            if place or group_by == "city":
                ms[(place or "", total.counter)] += round(total.value * 60_000)
    return {key: value / 60_000 for key, value in ms.items()}


def sums(store: SqliteStore, group_by: str, first: str, last: str) -> dict[tuple[str, str], float]:
    return {(s.place, s.counter): s.value
            for s in store.exposure_sums(ExposureQuery(first_day=first, last_day=last, group_by=group_by))}


def test_any_range_sums_as_the_daily_totals_do_after_replacements(tmp_path: Path) -> None:
    rng = random.Random(11)
    store = SqliteStore.in_directory(tmp_path, KEEP_ALL)
    latest: dict[tuple[str, str, str], ExposureTotal] = {}
    for _ in range(3):  # running totals written again, some devices moved
        batch = written(rng)
        store.write_exposures(batch)
        latest.update({(t.day, t.device_id, t.counter): t for t in batch})
    store.flush()
    for group_by in ("intersection", "grid", "district", "city", "device"):
        for first, last in RANGES:
            assert sums(store, group_by, first, last) == expected(latest, group_by, first, last), (
                group_by, first, last)
    store.close()


def test_a_file_from_before_the_month_sums_gains_them_when_opened(tmp_path: Path) -> None:
    rng = random.Random(12)
    store = SqliteStore.in_directory(tmp_path, KEEP_ALL)
    batch = written(rng)
    store.write_exposures(batch)
    store.close()
    with sqlite3.connect(next(tmp_path.glob("*.sqlite3"))) as old:  # as an older citywatch left it
        for trigger in ("insert", "update", "delete"):
            old.execute(f"DROP TRIGGER exposure_month_sums_{trigger}")
        old.execute("DROP TABLE exposure_month_sums")
    reopened = SqliteStore.in_directory(tmp_path, KEEP_ALL)
    latest = {(t.day, t.device_id, t.counter): t for t in batch}
    assert sums(reopened, "district", "2026-11-01", "2026-11-30") == expected(latest, "district",
                                                                               "2026-11-01", "2026-11-30")
    reopened.close()
