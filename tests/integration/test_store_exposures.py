"""Exposure totals (the denominators of the indices) on both backends: a total replaces the previous total
of its (day, device, counter) and is never added to it, and sums per place follow the device's tags."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.models import ExposureTotal
from store.base import ExposureQuery, ExposureSum, Store
from tests.support.influxdb import InfluxServer
from tests.support.stores import open_store, settle

pytestmark = pytest.mark.integration

NORTH_A = {"intersection": "x-1", "grid": "g-1", "district": "north"}
NORTH_B = {"intersection": "x-2", "grid": "g-1", "district": "north"}
SOUTH_BIN = {"grid": "g-9", "district": "south"}


@pytest.fixture(params=["embedded", "influxdb"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          influx_server: InfluxServer) -> Iterator[Store]:
    opened = open_store(request.param, tmp_path_factory.mktemp(request.param), influx_server)
    yield opened
    opened.close()


def total(day: str, device: str, counter: str, value: float, tags: dict[str, str]) -> ExposureTotal:
    return ExposureTotal(day=day, device_id=device, counter=counter, value=value, tags=tags)


def sums(store: Store, group_by: str, first: str = "2026-11-01", last: str = "2026-11-30",
         counters: tuple[str, ...] = ()) -> list[ExposureSum]:
    return store.exposure_sums(ExposureQuery(first_day=first, last_day=last, group_by=group_by,
                                             counters=counters))


def test_a_later_total_replaces_the_earlier_one_and_a_replay_changes_nothing(store: Store) -> None:
    running = [total("2026-11-03", "cam-1", "stop_line_crossings", n, NORTH_A) for n in (1, 2, 5)]
    store.write_exposures(running)
    store.write_exposures(running[-1:])  # the same total delivered again
    settle(store)
    assert sums(store, "device") == [ExposureSum("cam-1", "stop_line_crossings", 5.0)]


def test_sums_per_place_follow_the_device_tags_and_the_day_range(store: Store) -> None:
    store.write_exposures([
        total("2026-11-03", "cam-1", "stop_line_crossings", 100, NORTH_A),
        total("2026-11-03", "cam-1", "red_light_crossings", 2, NORTH_A),
        total("2026-11-04", "cam-1", "stop_line_crossings", 50, NORTH_A),
        total("2026-11-03", "cam-2", "stop_line_crossings", 30, NORTH_B),
        total("2026-11-03", "bin-1", "bin_minutes", 1440, SOUTH_BIN),
        total("2026-12-01", "cam-1", "stop_line_crossings", 7, NORTH_A),  # next month: outside
    ])
    settle(store)
    assert sums(store, "intersection") == [
        ExposureSum("x-1", "red_light_crossings", 2.0),
        ExposureSum("x-1", "stop_line_crossings", 150.0),
        ExposureSum("x-2", "stop_line_crossings", 30.0),
    ]
    assert sums(store, "district", counters=("stop_line_crossings",)) == [
        ExposureSum("north", "stop_line_crossings", 180.0)]
    assert sums(store, "city") == [
        ExposureSum("", "bin_minutes", 1440.0),
        ExposureSum("", "red_light_crossings", 2.0),
        ExposureSum("", "stop_line_crossings", 180.0),
    ]
    assert sums(store, "grid", first="2026-11-04", last="2026-12-01") == [
        ExposureSum("g-1", "stop_line_crossings", 57.0)]


def test_an_unknown_place_kind_is_refused_by_name(store: Store) -> None:
    with pytest.raises(ValueError, match="cannot be grouped by 'street'"):
        sums(store, "street")


def test_a_device_moved_to_another_grid_leaves_no_total_behind_in_the_old_one(store: Store) -> None:
    moved = {"intersection": "x-1", "grid": "g-2", "district": "north"}
    store.write_exposures([total("2026-11-03", "cam-1", "stop_line_crossings", 10, NORTH_A)])
    store.write_exposures([total("2026-11-03", "cam-1", "stop_line_crossings", 12, moved)])
    settle(store)
    assert sums(store, "grid") == [ExposureSum("g-2", "stop_line_crossings", 12.0)]
    assert sums(store, "city") == [ExposureSum("", "stop_line_crossings", 12.0)]


def test_names_with_spaces_commas_and_quotes_are_kept_exactly(store: Store) -> None:
    odd = {"intersection": "Main St, \"north\" gate", "grid": "g=1", "district": "old town"}
    store.write_exposures([total("2026-11-03", "cam 1,a=b", "stop_line_crossings", 3, odd)])
    settle(store)
    assert sums(store, "device") == [ExposureSum("cam 1,a=b", "stop_line_crossings", 3.0)]
    assert sums(store, "intersection") == [ExposureSum("Main St, \"north\" gate", "stop_line_crossings", 3.0)]
    assert sums(store, "district") == [ExposureSum("old town", "stop_line_crossings", 3.0)]
