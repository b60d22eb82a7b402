"""The denominators: what each rule counts besides its violations, so that a rate can be published.

A count of violations is not an index: ten red-light runners among 40,000 vehicles is civil, among 400 it is
not. Each rule that judges a population counts the population it saw (`observed`) and the part of it that
broke the rule (`breaking`), per device and local day (`core.models.ExposureTotal`); indices are built from
those rates (docs/indices.md). The names are part of the stored data and the API: never rename one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExposurePair:
    """One rate: `breaking` / `observed`, both counted by `rule`, in `unit`."""

    rule: str
    observed: str
    breaking: str
    unit: str
    meaning: str


EXPOSURE_PAIRS: tuple[ExposurePair, ...] = (
    ExposurePair("yield_crosswalk", "crosswalk_encounters", "crosswalk_not_yielded", "vehicles",
                 "vehicles that met a pedestrian on a crosswalk, and those that did not yield"),
    ExposurePair("red_light", "stop_line_crossings", "red_light_crossings", "vehicles",
                 "vehicles crossing a stop line, and those crossing on red"),
    ExposurePair("no_helmet", "riders_observed", "riders_without_helmet", "riders",
                 "riders of two-wheelers observed, and those without a helmet"),
    ExposurePair("speeding", "vehicles_measured", "vehicles_speeding", "vehicles",
                 "vehicles whose speed was measured, and those over the limit"),
    ExposurePair("illegal_parking", "parking_occupied_minutes", "parking_illegal_minutes", "minutes",
                 "minutes a watched parking zone was occupied, and minutes occupied illegally"),
    ExposurePair("bin_overflow", "bin_minutes", "bin_overflow_minutes", "minutes",
                 "minutes a bin was reporting, and minutes it was overflowing (a bin-day is 1,440)"),
    ExposurePair("air_quality", "air_sensor_minutes", "air_out_of_standard_minutes", "minutes",
                 "minutes an air sensor was reporting, and minutes out of standard"),
    ExposurePair("water_black_odour", "water_sensor_minutes", "water_out_of_standard_minutes", "minutes",
                 "minutes a water sensor was reporting, and minutes black-odorous"),
    ExposurePair("toilet_odour", "odour_sensor_minutes", "odour_out_of_standard_minutes", "minutes",
                 "minutes an odour sensor was reporting, and minutes over the odour limit"),
)

COUNTERS: frozenset[str] = frozenset(
    name for pair in EXPOSURE_PAIRS for name in (pair.observed, pair.breaking))

# The places exposures are summed over: a device's tags name its intersection, grid and district.
PLACE_KINDS: tuple[str, ...] = ("device", "intersection", "grid", "district", "city")
