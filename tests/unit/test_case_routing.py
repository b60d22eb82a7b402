"""Routing violations to cases: first matching route by type, grid, district, department tag and time of
day; the verification policy per case type; and the `cases` settings refusing what cannot work."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import pytest
import yaml

from core.case_settings import CasePriority, CaseSettings, Verification
from core.models import Violation
from core.settings import ConfigError, Settings
from processors.cases.routing import CaseRouter, Routed
from tests.support.alerts import violation

SHANGHAI = ZoneInfo("Asia/Shanghai")
ROUTES = CaseSettings.model_validate({
    "routes": [
        {"match": {"types": ["bin_overflow"], "districts": ["futian"],
                   "hours": ["22:00-24:00", "00:00-06:00"]},
         "department": "night-sanitation", "category": "0102", "priority": "urgent"},
        {"match": {"types": ["bin_overflow"], "grids": ["FT-11", "FT-12"]},
         "department": "sanitation", "category": "0101", "priority": "high"},
        {"match": {"departments": ["traffic"]}, "department": "traffic-police", "category": "0301"},
    ],
    "types": {"illegal_parking": {"verify": "person"}, "graffiti": {"verify": "sensor"}},
})


def at_local(v: Violation, hour: int, minute: int = 0) -> Violation:
    start = int(datetime(2026, 11, 26, hour, minute, tzinfo=SHANGHAI).timestamp() * 1000)
    return msgspec.structs.replace(v, start_time_ms=start, updated_time_ms=start)


def route(v: Violation) -> Routed | None:
    return CaseRouter(ROUTES, "Asia/Shanghai").route(v)


def test_a_daytime_overflow_in_a_routed_grid_goes_to_sanitation_at_the_bin() -> None:
    overflow = at_local(violation(1, type="bin_overflow", grid="FT-12", department="city", device="bin-7"),
                        10)
    assert route(overflow) == Routed(department="sanitation", category="0101", priority=CasePriority.HIGH,
                                     verify=Verification.SENSOR, place="bin-7")


@pytest.mark.parametrize(("hour", "minute", "department"), [
    (23, 30, "night-sanitation"), (0, 0, "night-sanitation"), (5, 59, "night-sanitation"),
    (6, 0, "sanitation"), (21, 59, "sanitation")])
def test_the_time_of_day_is_local_and_windows_may_be_split_across_midnight(hour: int, minute: int,
                                                                           department: str) -> None:
    overflow = at_local(violation(1, type="bin_overflow", grid="FT-11", district="futian"), hour, minute)
    routed = route(overflow)
    assert routed is not None and routed.department == department


def test_one_router_decides_each_violation_as_a_fresh_one_would_across_window_edges() -> None:
    """The router remembers its decisions per type, tags and part of the day: one router asked about
    violations all day long, in any order, answers what a fresh router answers for each, also where a
    window ends off the hour (by the minute) and for tags it saw at another time."""
    edges = CaseSettings.model_validate({"routes": [
        {"match": {"types": ["bin_overflow"], "hours": ["06:30-22:15"]}, "department": "day",
         "category": "0101"},
        {"match": {"types": ["bin_overflow"], "grids": ["FT-11"]}, "department": "grid", "category": "0101"},
        {"match": {}, "department": "rest", "category": "0199"},
    ]})
    remembering = CaseRouter(edges, "Asia/Shanghai")
    asked = [(hour, minute, grid, kind) for hour in (0, 6, 12, 22, 23) for minute in (0, 14, 15, 29, 30, 59)
             for grid in ("FT-11", "FT-12") for kind in ("bin_overflow", "bin_fire")]
    for hour, minute, grid, kind in asked + asked[::-1]:
        v = at_local(violation(1, type=kind, grid=grid, device="bin-1"), hour, minute)
        fresh = CaseRouter(edges, "Asia/Shanghai").route(v)
        assert remembering.route(v) == fresh, (hour, minute, grid, kind)
    night = at_local(violation(1, type="bin_overflow", grid="FT-12"), 22, 15)
    day = at_local(violation(1, type="bin_overflow", grid="FT-12"), 22, 14)
    assert [remembering.route(v).department for v in (day, night)] == ["day", "rest"]  # type: ignore[union-attr]


def test_a_route_may_match_on_the_department_tag_alone() -> None:
    routed = route(at_local(violation(1, type="illegal_parking", department="traffic"), 9))
    assert routed is not None
    assert (routed.department, routed.priority, routed.verify) == ("traffic-police", CasePriority.NORMAL,
                                                                  Verification.PERSON)


def test_a_violation_no_route_takes_opens_no_case() -> None:
    assert route(at_local(violation(1, type="bin_overflow", grid="LH-01", department="city"), 10)) is None


def test_without_routes_routing_is_off() -> None:
    assert not CaseRouter(CaseSettings(), "Asia/Shanghai").enabled
    assert CaseRouter(ROUTES, "Asia/Shanghai").enabled


def test_verification_defaults_to_the_sensors_where_the_clearing_is_the_evidence() -> None:
    defaults = CaseSettings()
    assert [defaults.verification_of(t) for t in ("bin_overflow", "illegal_parking", "water_black_odour",
                                                  "bin_fire", "pothole")] == [
        Verification.SENSOR, Verification.SENSOR, Verification.SENSOR, Verification.PERSON,
        Verification.PERSON]
    assert ROUTES.verification_of("illegal_parking") is Verification.PERSON
    assert ROUTES.verification_of("graffiti") is Verification.SENSOR


@pytest.mark.parametrize(("cases", "message"), [
    ({"routes": [{"department": "sanitation"}]}, "cases.routes.0.category: required key is missing"),
    ({"routes": [{"department": "s", "category": "1", "match": {"hours": ["22:00-06:00"]}}]},
     "ends before it starts"),
    ({"routes": [{"department": "s", "category": "1", "priority": "asap"}]}, "cases.routes.0.priority"),
    ({"types": {"bin_overflow": {"verify": "camera"}}}, "cases.types.bin_overflow.verify"),
    ({"route": []}, "cases.route: unknown key (did you mean 'routes'?)"),
])
def test_case_settings_refuse_what_cannot_work(cases: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings().with_overrides(source="test.yaml", cases=cases)
    assert message in str(refused.value)


def test_the_commented_example_in_the_shipped_configuration_is_valid() -> None:
    lines = (Path(__file__).resolve().parents[2] / "configs" / "citywatch.yaml").read_text().splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("# cases: "))
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    example = CaseSettings.model_validate(yaml.safe_load("\n".join(block))["cases"])
    assert [route.department for route in example.routes] == ["sanitation", "sanitation-night",
                                                              "traffic_police"]
    assert example.verification_of("illegal_parking") is Verification.PERSON
