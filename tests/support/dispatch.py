"""Builders for dispatch tests: a depot in Futian with its transfer station, bin forecasts, violations."""

from __future__ import annotations

import datetime as dt
from typing import Any

from core.dispatch_settings import DispatchSettings
from core.models import Evidence, Location, Prediction, Severity, Violation
from processors.dispatch.model import Plan

DAY = dt.date(2026, 12, 7)
# 2026-12-07 06:00 in Asia/Shanghai: the early shift's start.
EARLY_START_MS = int(dt.datetime(2026, 12, 6, 22, 0, tzinfo=dt.UTC).timestamp() * 1000)
HOUR_MS = 3_600_000
DEPOT = (22.535, 114.02)
# The plan of the early shift of DAY at the Futian depot, as the API names it.
EARLY_PLAN = "/v1/dispatch/plans/2026-12-07.futian.early"
# A `dispatch` configuration section with one truck, for tests that run citywatch as a process.
ONE_TRUCK_CONFIG: dict[str, Any] = {
    "time_zone": "Asia/Shanghai",
    "depots": [{
        "depot_id": "futian", "lat": DEPOT[0], "lon": DEPOT[1],
        "transfer_station": {"station_id": "xiaping", "lat": 22.56, "lon": 114.0, "unload_s": 600},
        "trucks": [{"truck_id": "FT-01", "capacity_bins": 10}],
        "shifts": [{"shift_id": "early", "start": "06:00", "end": "14:00"}],
    }],
}


def dispatch_settings(*, trucks: int = 2, capacity_bins: int | None = 10, capacity_l: float | None = None,
                      early: tuple[str, str] = ("06:00", "14:00"), **extra: Any) -> DispatchSettings:
    truck = {"capacity_bins": capacity_bins} if capacity_l is None else {"capacity_l": capacity_l}
    return DispatchSettings.model_validate({
        "time_zone": "Asia/Shanghai", "iterations": 300, "time_budget_s": 60, **extra,
        "depots": [{
            "depot_id": "futian", "lat": DEPOT[0], "lon": DEPOT[1],
            "transfer_station": {"station_id": "xiaping", "lat": 22.56, "lon": 114.00, "unload_s": 600},
            "trucks": [{"truck_id": f"T{number}", **truck} for number in range(1, trucks + 1)],
            "shifts": [{"shift_id": "early", "start": early[0], "end": early[1]},
                       {"shift_id": "late", "start": "14:00", "end": "22:00"}],
        }],
    })


def forecast(device_id: str, *, full_in_h: float | None, fill: float = 50.0, lat_offset: float = 0.0,
             lon_offset: float = 0.0, at_ms: int = EARLY_START_MS, located: bool = True,
             slope_pct_per_h: float = 5.0) -> Prediction:
    """A bin forecast made at `at_ms`, predicting full `full_in_h` hours after the early shift starts."""
    return Prediction(
        type="bin_full", device_id=device_id, computed_time_ms=at_ms,
        predicted_time_ms=None if full_in_h is None else EARLY_START_MS + int(full_in_h * HOUR_MS),
        value=fill, details={"slope_pct_per_h": slope_pct_per_h},
        location=Location(DEPOT[0] + 0.01 + lat_offset, DEPOT[1] + lon_offset) if located else None,
        tags={"district": "futian"})


def open_violation(device_id: str, type: str) -> Violation:
    return Violation(violation_id=f"{type}-{device_id}", type=type, severity=Severity.HIGH,
                     device_id=device_id, start_time_ms=EARLY_START_MS - HOUR_MS,
                     updated_time_ms=EARLY_START_MS - HOUR_MS, location=Location(*DEPOT),
                     evidence=Evidence(event_ids=["e1"]), tags={"district": "futian"})


def grid_of_bins(count: int, *, full_in_h: float | None = 3.0, prefix: str = "bin") -> list[Prediction]:
    """`count` bins on a 1 km grid north-east of the depot (about 150 m apart)."""
    side = max(1, int(count ** 0.5))
    return [forecast(f"{prefix}-{number:03d}", full_in_h=full_in_h, lat_offset=(number // side) * 0.0014,
                     lon_offset=(number % side) * 0.0014) for number in range(count)]


def assert_within_limits(plan: Plan) -> None:
    """No truck over its capacity, every stop inside the shift, every truck back by the shift's end."""
    for route in plan.routes:
        loads = [stop.load_after for stop in route.stops]
        assert loads == sorted(loads) and all(load <= route.capacity for load in loads), route.truck_id
        etas = [stop.eta_ms for stop in route.stops]
        assert etas == sorted(etas), route.truck_id
        assert all(plan.shift.start_ms <= eta <= plan.shift.end_ms for eta in etas), route.truck_id
        if route.stops:
            assert route.transfer_eta_ms <= route.return_ms <= plan.shift.end_ms, route.truck_id


def served(plan: Plan) -> list[str]:
    return sorted(stop.device_id for route in plan.routes for stop in route.stops)
