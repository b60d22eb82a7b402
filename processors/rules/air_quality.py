"""Air quality: trailing 1-hour and 24-hour means of PM2.5 and PM10 per sensor, in event time.

A pollutant whose valid 24-hour mean (at least `min_hours_24h` hours with readings) is above the limit
of the standard in force (`standard`, one of the versioned `standards` in the configuration: grade II
of GB 3095-2026 in its transition period by default, GB 3095-2012 selectable) opens an exceedance
violation for that pollutant; a valid mean at or below the limit clears it. Every violation reports
the 1-hour and 24-hour means, the IAQI of each pollutant, the AQI and its category from the configured
HJ 633 breakpoint table. State per sensor is bounded: 60 minute buckets and 25 hour buckets per pollutant.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from core.exposures import EXPOSURE_PAIRS
from core.models import Event, Severity, Violation
from core.sanitation_settings import AirQualitySettings
from processors.devices import DeviceLookup, Thresholds
from processors.rule import Emitter, Rule
from processors.rules import air_standards
from processors.rules._common import (
    Reporting,
    ZoneThresholds,
    clear_violation,
    count_reporting,
    number,
    open_violation,
)
from processors.rules.rolling_mean import RollingMean, daily_window, hourly_window

TYPE = "air_quality_exceedance"
POLLUTANTS = ("pm25_ugm3", "pm10_ugm3")
_RECENT = 10
EXPOSURE = next(pair for pair in EXPOSURE_PAIRS if pair.rule == "air_quality")
# Readings further apart than this many expected intervals leave a gap that is not sensor time (the
# missing-report bound the other sanitation rules default to).
REPORTING_GAP_INTERVALS = 1.5


class PollutantState(msgspec.Struct):
    hour: RollingMean
    day: RollingMean
    open_violation: Violation | None = None


class AirState(msgspec.Struct):
    pollutants: dict[str, PollutantState] = {}
    # Newest readings, as evidence: (event id, event time, pm2.5 or -1, pm10 or -1).
    recent: list[tuple[str, int, float, float]] = []
    # The newest reading counted in the air-sensor minutes (docs/denominators.md).
    reporting: Reporting | None = None


class AirQualityRule(Rule[AirState]):
    name: ClassVar[str] = TYPE
    kinds: ClassVar[frozenset[str]] = frozenset({"air"})
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"pm25_ugm3", "pm10_ugm3"})
    state_type: ClassVar[type[msgspec.Struct]] = AirState

    def __init__(self, settings: AirQualitySettings, devices: DeviceLookup | None = None,
                 zones: ZoneThresholds | None = None, *, kinds: ZoneThresholds | None = None) -> None:
        self.settings = settings
        self.limits = settings.standards[settings.standard]
        self.thresholds = Thresholds(devices, zones, kinds)
        self.state_ttl_ms = settings.state_ttl_s * 1000

    def setting(self, event: Event, name: str, default: float) -> float:
        return self.thresholds.value(TYPE, name, default, device_id=event.device_id, kind=event.kind)

    def on_event(self, state: AirState | None, event: Event, out: Emitter) -> AirState | None:
        values = {name: number(event, name) for name in POLLUTANTS}
        if all(value is None for value in values.values()):
            return state
        state = state or AirState()
        state.recent = [*state.recent, (event.event_id, event.event_time_ms,
                                        _or_missing(values["pm25_ugm3"]), _or_missing(values["pm10_ugm3"]))
                        ][-_RECENT:]
        for name, value in values.items():
            pollutant = state.pollutants.get(name)
            if pollutant is None:
                pollutant = state.pollutants[name] = PollutantState(hour=hourly_window(), day=daily_window())
            if value is not None:
                pollutant.hour.add(event.event_time_ms, value)
                pollutant.day.add(event.event_time_ms, value)
            else:
                pollutant.hour.evict(event.event_time_ms)
                pollutant.day.evict(event.event_time_ms)
        for name, pollutant in state.pollutants.items():
            mean = pollutant.day.mean()
            if mean is None or pollutant.day.coverage < self.setting(event, "min_hours_24h",
                                                                      self.settings.min_hours_24h):
                continue  # not enough data for a valid 24-hour mean: no judgement either way
            # Override names are the limit fields: pm25_24h_ugm3, pm10_24h_ugm3.
            limit_name = f"{name.removesuffix('_ugm3')}_24h_ugm3"
            default: float = getattr(self.limits, limit_name)
            limit = self.setting(event, limit_name, default)
            exceeded = mean > limit
            if exceeded == (pollutant.open_violation is not None):
                continue  # no change: the means and AQI are only worked out for a state change
            details = {"pollutant": name, "limit_24h_ugm3": limit, "standard": self.settings.standard,
                       **self.summary(state, event)}
            if exceeded and pollutant.open_violation is None:
                pm25 = name == "pm25_ugm3"
                evidence = [(event_id, time_ms, pm25_value if pm25 else pm10_value)
                            for event_id, time_ms, pm25_value, pm10_value in state.recent
                            if (pm25_value if pm25 else pm10_value) >= 0]
                evidence = evidence or [(event.event_id, event.event_time_ms, mean)]
                # The exceedance began with this reading (its valid 24-hour mean first went above the
                # limit); `evidence` is the bounded list of newest readings and never moves the start.
                pollutant.open_violation = open_violation(
                    TYPE, f"{event.device_id}/{name}", event, evidence,
                    Severity.HIGH if mean > 2 * limit else Severity.MEDIUM, details,
                    begun_by=(event.event_id, event.event_time_ms))
                out.violation(pollutant.open_violation)
            elif not exceeded and pollutant.open_violation is not None:
                out.violation(clear_violation(pollutant.open_violation, event, {"cleared": details}))
                pollutant.open_violation = None
        # Out of standard while the 24-hour mean of a pollutant is judged above its limit.
        out_of_standard = any(p.open_violation is not None for p in state.pollutants.values())
        state.reporting = count_reporting(
            out, state.reporting, event, out_of_standard, (EXPOSURE.observed, EXPOSURE.breaking),
            self.thresholds.devices, lambda: REPORTING_GAP_INTERVALS)
        return state

    def summary(self, state: AirState, event: Event) -> dict[str, Any]:
        """Means, coverage, IAQI per pollutant and the AQI with its category (24-hour means), with the
        validity settings that apply to the event's sensor."""
        table = self.settings.aqi_table
        min_minutes_1h = self.setting(event, "min_minutes_1h", self.settings.min_minutes_1h)
        min_hours_24h = self.setting(event, "min_hours_24h", self.settings.min_hours_24h)
        result: dict[str, Any] = {"aqi_table": table}
        indices = []
        for name, pollutant in state.pollutants.items():
            hour_mean, day_mean = pollutant.hour.mean(), pollutant.day.mean()
            valid_hour = (hour_mean is not None
                          and pollutant.hour.covered_ms >= min_minutes_1h * 60_000)
            valid_day = day_mean is not None and pollutant.day.coverage >= min_hours_24h
            result[f"{name}_1h_mean"] = None if hour_mean is None else round(hour_mean, 2)
            result[f"{name}_1h_valid"] = valid_hour
            result[f"{name}_24h_mean"] = None if day_mean is None else round(day_mean, 2)
            result[f"{name}_24h_hours"] = pollutant.day.coverage
            if valid_day and day_mean is not None:
                index = air_standards.iaqi(table, name, day_mean)
                result[f"{name}_iaqi"] = index
                indices.append(index)
        if indices:
            aqi = max(indices)
            result["aqi"] = aqi
            result["aqi_category"], result["aqi_category_zh"] = air_standards.category(aqi)
        return result


def _or_missing(value: float | None) -> float:
    return -1.0 if value is None else value
