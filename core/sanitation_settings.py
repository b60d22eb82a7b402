"""Settings of the sanitation and environment rules (bins, public toilets, air, water, device health).

Kept apart from core/settings.py so that file only gains one field per rule. Every default here is
explained, with its source, in docs/rules-sanitation.md.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_WEEK_S = 7 * 24 * 3600


def _max_gap_intervals() -> Any:
    return Field(
        1.5, gt=1, description="Readings further apart than this many of the device's "
        "`expected_interval_s` are not in a row: a missing report breaks the run (devices without an "
        "expected interval are not checked).")


class BinOverflowSettings(_Section):
    enabled: bool = True
    open_pct: float = Field(90.0, gt=0, le=100, description="Fill at or above this opens (per reading).")
    clear_pct: float = Field(30.0, ge=0, lt=100, description="Fill below this clears (the bin was emptied).")
    consecutive: int = Field(2, ge=1, description="Readings at or above open_pct in a row needed to open.")
    max_gap_intervals: float = _max_gap_intervals()
    state_ttl_s: int = Field(_WEEK_S, gt=0, description="Forget a bin silent this long (event time).")


class BinNearFullSettings(_Section):
    enabled: bool = True
    horizon_s: float = Field(2 * 3600, gt=0, description="Alert when the bin is predicted full within this.")
    min_points: int = Field(4, ge=3, description="Readings since the last emptying needed before a forecast.")
    max_points: int = Field(48, ge=4, description="Newest readings kept per bin for the fit (bounds state).")
    fit_window_s: float = Field(
        4 * 3600, gt=0, description="Only readings this recent are fitted (fill rates change over a day).")
    outlier_pct: float = Field(
        8.0, gt=0, description="A reading this many fill points off the first fit (and 3x the typical "
        "residual) is dropped as an outlier before the refit; at most one per fit.")
    emptied_drop_pct: float = Field(
        25.0, gt=0,
        description="A fill this many points below the previous reading means the bin was emptied.")
    state_ttl_s: int = Field(_WEEK_S, gt=0, description="Forget a bin silent this long (event time).")


class BinFireSettings(_Section):
    enabled: bool = True
    open_c: float = Field(60.0, description="Temperature at or above this opens (possible fire).")
    clear_c: float = Field(50.0, description="Temperature below this clears.")
    consecutive: int = Field(1, ge=1, description="Readings at or above open_c in a row needed to open.")
    max_gap_intervals: float = _max_gap_intervals()
    state_ttl_s: int = Field(_WEEK_S, gt=0, description="Forget a bin silent this long (event time).")


class BinTiltSettings(_Section):
    enabled: bool = True
    open_deg: float = Field(45.0, ge=0, le=180, description="Tilt at or above this opens (knocked over).")
    clear_deg: float = Field(20.0, ge=0, le=180, description="Tilt below this clears (set upright).")
    consecutive: int = Field(1, ge=1, description="Readings at or above open_deg in a row needed to open.")
    max_gap_intervals: float = _max_gap_intervals()
    state_ttl_s: int = Field(_WEEK_S, gt=0, description="Forget a bin silent this long (event time).")


class BinLidOpenSettings(_Section):
    enabled: bool = True
    open_after_s: float = Field(
        900, gt=0, description="A lid reported open for at least this long (event time) opens a violation.")
    state_ttl_s: int = Field(_WEEK_S, gt=0, description="Forget a bin silent this long (event time).")


class ToiletOdourSettings(_Section):
    enabled: bool = True
    nh3_mgm3: float = Field(
        1.0, gt=0, description="Ammonia limit in mg/m3 (GB/T 17217 class II toilet: 1; class I 0.3, III 3).")
    h2s_mgm3: float = Field(0.01, gt=0, description="Hydrogen sulphide limit in mg/m3 (GB/T 17217: 0.01).")
    temperature_c: float = Field(
        25.0, description="Air temperature used to turn ppm readings into mg/m3 (at 101.325 kPa).")
    consecutive: int = Field(
        2, ge=1, description="Readings above a limit in a row needed to open (one flush is a spike).")
    max_gap_intervals: float = _max_gap_intervals()
    state_ttl_s: int = Field(_WEEK_S, gt=0, description="Forget a sensor silent this long (event time).")


class AirLimits(_Section):
    pm25_24h_ugm3: float = Field(gt=0, description="PM2.5 24-hour mean limit, micrograms per cubic metre.")
    pm10_24h_ugm3: float = Field(gt=0, description="PM10 24-hour mean limit, micrograms per cubic metre.")


def _default_air_standards() -> dict[str, AirLimits]:
    return {
        # GB 3095-2026, grade II 24-hour limits in their transition period (from 2026-03-01).
        "GB3095-2026-transition": AirLimits(pm25_24h_ugm3=60, pm10_24h_ugm3=120),
        # GB 3095-2012, grade II 24-hour limits.
        "GB3095-2012": AirLimits(pm25_24h_ugm3=75, pm10_24h_ugm3=150),
    }


class AirQualitySettings(_Section):
    enabled: bool = True
    standard: str = Field("GB3095-2026-transition", description="Which entry of `standards` is in force.")
    standards: dict[str, AirLimits] = Field(
        default_factory=_default_air_standards,
        description="Named, versioned sets of grade II 24-hour limits; `standard` picks one.")
    aqi_table: str = Field("HJ633-2026", description="IAQI breakpoint table: HJ633-2026 or HJ633-2012.")
    min_minutes_1h: int = Field(
        45, ge=1, le=60,
        description="Minutes of the hour the readings must span for a valid 1-hour mean (GB 3095: 45).")
    min_hours_24h: int = Field(
        20, ge=1, le=24, description="Hours with readings needed for a valid 24-hour mean (GB 3095: 20).")
    state_ttl_s: int = Field(2 * 24 * 3600, gt=0, description="Forget a sensor silent this long.")

    @model_validator(mode="after")
    def _standard_is_defined(self) -> AirQualitySettings:
        if self.standard not in self.standards:
            raise ValueError(f"standard {self.standard!r} is not one of {sorted(self.standards)}")
        if self.aqi_table not in ("HJ633-2026", "HJ633-2012"):
            raise ValueError(f"aqi_table {self.aqi_table!r} is not HJ633-2026 or HJ633-2012")
        return self


class ConstructionDustSettings(_Section):
    enabled: bool = True
    pm10_1h_ugm3: float = Field(
        150.0, gt=0, description="1-hour PM10 mean above this at a site sensor opens (local standards vary).")
    site_tag: str = Field("site", description="Device tag that marks a site sensor ...")
    site_value: str = Field("construction", description="... and the value it must have.")
    min_minutes_1h: int = Field(
        45, ge=1, le=60, description="Minutes of the hour the readings must span for a valid 1-h mean.")
    max_gap_intervals: float = Field(
        1.5, gt=1, description="Readings further apart than this many of the sensor's "
        "`expected_interval_s` leave a gap that does not count towards `min_minutes_1h`.")
    state_ttl_s: int = Field(2 * 24 * 3600, gt=0, description="Forget a sensor silent this long.")


class WaterBlackOdourSettings(_Section):
    enabled: bool = True
    transparency_light_cm: float = Field(25.0, description="Transparency at or below this: lightly black.")
    transparency_heavy_cm: float = Field(10.0, description="Transparency below this: heavily black.")
    shallow_depth_cm: float = Field(25.0, description="Below this water depth the transparency limit ...")
    shallow_ratio: float = Field(0.4, gt=0, le=1, description="... is this share of the depth.")
    do_light_mgl: float = Field(2.0, description="Dissolved oxygen at or below this: lightly black.")
    do_heavy_mgl: float = Field(0.2, description="Dissolved oxygen below this: heavily black.")
    orp_light_mv: float = Field(50.0, description="Redox potential at or below this: lightly black.")
    orp_heavy_mv: float = Field(-200.0, description="Redox potential below this: heavily black.")
    nh3n_light_mgl: float = Field(8.0, description="Ammonia nitrogen at or above this: lightly black.")
    nh3n_heavy_mgl: float = Field(15.0, description="Ammonia nitrogen above this: heavily black.")
    consecutive: int = Field(3, ge=1, description="Black-odorous readings in a row that flag the body.")
    clear_consecutive: int = Field(3, ge=1, description="Clean readings in a row that clear it.")
    max_gap_intervals: float = _max_gap_intervals()
    body_tag: str = Field(
        "water_body", description="Device tag naming the water body; probes without it are judged alone.")
    state_ttl_s: int = Field(30 * 24 * 3600, gt=0, description="Forget a body silent this long.")


class DeviceOfflineSettings(_Section):
    enabled: bool = True
    silence_factor: float = Field(
        3.0, ge=1, description="Offline after this many expected intervals without a message.")
    check_every_s: float = Field(
        5.0, gt=0, description="No longer used (a device goes offline at the exact time its silence reaches "
        "the limit); accepted so that existing configurations still load.")
    max_tick_gap_s: float = Field(
        30.0, gt=0, description="A longer gap between two checks (process stalled or suspended) counts only "
        "this much, so citywatch's own outage never makes devices offline.")


class LowBatterySettings(_Section):
    enabled: bool = True
    open_pct: float = Field(20.0, ge=0, le=100, description="Battery at or below this opens.")
    clear_pct: float = Field(30.0, ge=0, le=100, description="Battery above this clears (replaced).")
    state_ttl_s: int = Field(30 * 24 * 3600, gt=0, description="Forget a device silent this long.")


def _default_stuck_attributes() -> dict[str, list[str]]:
    # Values that jitter on a working sensor. Fill levels and odour readings may legitimately repeat.
    return {"bin": ["distance_mm"], "air": ["pm25_ugm3", "pm10_ugm3"], "water": ["do_mgl", "orp_mv"]}


def _default_stuck_kinds() -> dict[str, dict[str, float]]:
    # Why these numbers: docs/rules-sanitation.md#stuck-sensor. Air and water sensors report every few
    # minutes and their values may rest on one number for hours in calm, clean conditions.
    return {"air": {"readings": 36, "min_duration_s": 3 * 3600},
            "water": {"readings": 24, "min_duration_s": 6 * 3600}}


# Rules that judge the attributes the fault inspectors watch (fill comes from distance_mm).
_JUDGE_WATCHED = ["bin_overflow", "bin_near_full", "air_quality_exceedance", "construction_dust",
                  "water_black_odour"]


class StuckSensorSettings(_Section):
    enabled: bool = True
    readings: int = Field(12, ge=2, description="The same value this many readings in a row is stuck.")
    min_duration_s: float = Field(
        0, ge=0, description="... and the identical readings must span at least this long (event time).")
    kind_defaults: dict[str, dict[str, float]] = Field(
        default_factory=_default_stuck_kinds,
        description="Defaults of `readings` and `min_duration_s` per event kind, for kinds whose values "
        "rest legitimately (rules.kind_thresholds and device or zone overrides win over them).")
    max_gap_intervals: float = _max_gap_intervals()
    attributes: dict[str, list[str]] = Field(
        default_factory=_default_stuck_attributes,
        description="Per event kind, the attributes watched; a reading is stuck when all present ones are.")
    hide_suspect_from: list[str] = Field(
        default_factory=lambda: list(_JUDGE_WATCHED),
        description="Rules that do not see a stuck reading (those that judge the watched attributes); "
        "every other rule still judges it. ['*']: hidden from every rule.")
    state_ttl_s: int = Field(_WEEK_S, gt=0, description="Forget a sensor silent this long.")

    @field_validator("kind_defaults")
    @classmethod
    def _known_settings(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for kind, settings in value.items():
            unknown = set(settings) - {"readings", "min_duration_s"}
            if unknown:
                raise ValueError(f"{kind}: only readings and min_duration_s have per-kind defaults, "
                                 f"not {', '.join(sorted(unknown))}")
            if settings.get("readings", 2) < 2 or settings.get("min_duration_s", 0) < 0:
                raise ValueError(f"{kind}: readings must be at least 2 and min_duration_s at least 0")
        return value


def _default_plausible_ranges() -> dict[str, tuple[float, float]]:
    return {
        "transparency_cm": (0, 500), "do_mgl": (0, 25), "orp_mv": (-1000, 1000), "nh3n_mgl": (0, 500),
        "depth_cm": (0, 5000), "nh3_ppm": (0, 500), "h2s_ppm": (0, 500),
    }


class ImplausibleReadingSettings(_Section):
    enabled: bool = True
    ranges: dict[str, tuple[float, float]] = Field(
        default_factory=_default_plausible_ranges,
        description="Inclusive range a working sensor can report, per attribute (beyond ingest's checks).")
    distance_tolerance_mm: float = Field(
        100.0, ge=0, description="An ultrasonic distance this much beyond the bin's depth is a fault.")
    pm_tolerance_ugm3: float = Field(
        10.0, ge=0, description="PM2.5 above PM10 by more than this is a fault (PM10 includes PM2.5).")
    hide_suspect_from: list[str] = Field(
        default_factory=lambda: [*_JUDGE_WATCHED, "toilet_odour"],
        description="Rules that do not see an implausible reading (those that judge the attributes "
        "checked); every other rule still judges it. ['*']: hidden from every rule.")
    state_ttl_s: int = Field(_WEEK_S, gt=0, description="Forget a sensor silent this long.")
