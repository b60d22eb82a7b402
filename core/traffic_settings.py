"""Traffic configuration: intersections, camera zones, schedules and the violation-code table.

Validated once at load like every other section: unknown keys are errors, every zone names a type and the
fields its type needs, every reference (approach, schedule, intersection) must exist, and the city's time
zone must be a real IANA zone. `processors/zones.py` turns this into the lookups rules use at run time.
The rules' own thresholds are in `TrafficRuleSettings` sections under `rules:` (see core/settings.py).
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.local_time import WEEKDAYS, Weekday, check_time_zone, check_windows
from core.models import Severity

if TYPE_CHECKING:
    from core.settings import Settings

ParkingZoneType = Literal["no_parking", "sidewalk", "bike_bay"]
VEHICLE_LABELS = ["car", "truck", "bus", "motorcycle", "e-bike"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleSettings(_Section):
    """When a zone or a limit is in force, in the city's local time (`traffic.time_zone`)."""

    days: list[Weekday] = Field(
        default_factory=lambda: list(WEEKDAYS), description="Weekdays it applies on (mon..sun)."
    )
    windows: list[str] = Field(
        default_factory=list,
        description="Local time windows 'HH:MM-HH:MM' on those days; empty: the whole day.",
    )
    skip_dates: list[date] = Field(
        default_factory=list, description="Dates it does not apply although their weekday is listed "
        "(public holidays).",
    )
    extra_dates: list[date] = Field(
        default_factory=list, description="Dates it applies although their weekday is not listed "
        "(weekend days made working days).",
    )

    @field_validator("windows")
    @classmethod
    def _windows_parse(cls, windows: list[str]) -> list[str]:
        check_windows(windows)
        return windows


class ZoneType(StrEnum):
    CROSSWALK = "crosswalk"
    STOP_LINE = "stop_line"
    NO_PARKING = "no_parking"
    SIDEWALK = "sidewalk"
    BIKE_BAY = "bike_bay"
    ONE_WAY = "one_way"
    SPEED_LIMIT = "speed_limit"


class ScheduledLimit(_Section):
    schedule: str = Field(description="Name of a schedule in traffic.schedules.")
    speed_limit_kmh: float = Field(gt=0, description="Limit while the schedule is in force (e.g. school "
                                   "hours); the lowest limit in force wins.")


class ZoneSettings(_Section):
    name: str = Field(min_length=1, description="Zone name exactly as the camera reports it in `zones`.")
    type: ZoneType = Field(description="crosswalk, stop_line, no_parking, sidewalk, bike_bay, one_way or "
                           "speed_limit.")
    approach: str | None = Field(None, description="stop_line: the approach of the camera's intersection "
                                 "whose vehicle phase governs this stop line.")
    pedestrian_phase: str | None = Field(None, description="crosswalk: the pedestrian signal phase "
                                         "(e.g. ped_north) that governs it.")
    schedule: str | None = Field(None, description="The zone is in force only while this schedule is; "
                                 "unset: always.")
    allowed_heading_deg: float | None = Field(
        None, ge=0, lt=360, description="one_way: the allowed direction of travel, degrees on the position "
        "plane (0 = +y, 90 = +x).",
    )
    speed_limit_kmh: float | None = Field(None, gt=0, description="speed_limit: the posted limit.")
    scheduled_limits: list[ScheduledLimit] = Field(
        default_factory=list, description="speed_limit: lower limits that apply on a schedule.",
    )
    thresholds: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Per-rule threshold overrides in this zone: {rule name: {setting: value}}; they win "
        "over the camera's own and every other override (docs/rules.md).",
    )

    @field_validator("thresholds")
    @classmethod
    def _known_overrides(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        # Imported here: core.rule_overrides reads the rule sections defined in this module.
        from core.rule_overrides import check_overrides

        return check_overrides(value)

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> ZoneSettings:
        if self.type is ZoneType.STOP_LINE and self.approach is None:
            raise ValueError(f"zone {self.name!r}: a stop_line zone needs `approach`")
        if self.type is ZoneType.ONE_WAY and self.allowed_heading_deg is None:
            raise ValueError(f"zone {self.name!r}: a one_way zone needs `allowed_heading_deg`")
        if self.type is ZoneType.SPEED_LIMIT and self.speed_limit_kmh is None:
            raise ValueError(f"zone {self.name!r}: a speed_limit zone needs `speed_limit_kmh`")
        if self.scheduled_limits and self.type is not ZoneType.SPEED_LIMIT:
            raise ValueError(f"zone {self.name!r}: scheduled_limits only apply to speed_limit zones")
        return self


class ApproachSettings(_Section):
    name: str = Field(min_length=1, description="Approach name, e.g. north.")
    phase: str = Field(min_length=1, description="Signal phase governing its vehicles, e.g. north_through.")


class IntersectionSettings(_Section):
    id: str = Field(min_length=1, description="Intersection id as signal and detector events carry it.")
    approaches: list[ApproachSettings] = Field(default_factory=list, description="Its signal approaches.")

    @model_validator(mode="after")
    def _unique_approaches(self) -> IntersectionSettings:
        names = [approach.name for approach in self.approaches]
        if len(set(names)) != len(names):
            raise ValueError(f"intersection {self.id!r}: approach names repeat: {names}")
        return self


class CameraZonesSettings(_Section):
    device_id: str = Field(min_length=1, description="The camera's device id.")
    intersection: str | None = Field(None, description="Intersection the camera watches (needed by the "
                                     "signal rules: red light, pedestrian against red).")
    zones: list[ZoneSettings] = Field(default_factory=list, description="The camera's zones.")

    @model_validator(mode="after")
    def _unique_zones(self) -> CameraZonesSettings:
        names = [zone.name for zone in self.zones]
        if len(set(names)) != len(names):
            raise ValueError(f"camera {self.device_id!r}: zone names repeat: {names}")
        return self


class CodeEntry(_Section):
    code: str | None = Field(None, description="Violation code of the province's table (4-5 characters); "
                             "null where the table has none.")
    points: int = Field(0, ge=0, le=12, description="Licence points (MPS order 163, 2022).")
    severity: Severity | None = Field(None, description="Severity for smart-camera reports of this code.")
    description: str = Field("", description="What the code means.")


def _default_codes() -> dict[str, CodeEntry]:
    # Codes and points: MPS order 163 (2022) scoring rules for points; codes from the national code list as
    # provinces publish it. Provinces differ: a city replaces this table with its own (and a new version).
    return {
        "red_light": CodeEntry(code="1625", points=6, description="running a red light"),
        "yield_crosswalk": CodeEntry(code="1357", points=3,
                                     description="not yielding to pedestrians at a crosswalk"),
        "illegal_parking": CodeEntry(code="1039", points=0, description="illegal parking"),
        "wrong_way": CodeEntry(code="1301", points=3, description="driving against the direction of traffic"),
        "speeding_10": CodeEntry(points=0, description="10-20% over the limit (ordinary road): fine only"),
        "speeding_20": CodeEntry(points=3, description="20-50% over the limit (ordinary road)"),
        "speeding_50": CodeEntry(points=6, description="50% or more over the limit (ordinary road)"),
        "speeding_100": CodeEntry(points=6, description="100% or more over the limit (ordinary road)"),
        "no_helmet": CodeEntry(points=0, description="rider without a helmet (e-bike: no licence points)"),
        "no_helmet:motorcycle": CodeEntry(points=1, description="motorcyclist without a helmet"),
        "pedestrian_red": CodeEntry(points=0, description="pedestrian crossing against a red signal"),
    }


class CodeTableSettings(_Section):
    version: str = Field("cn-national-2022.1", description="Version of this table; copied into every "
                         "violation so a ticket says which table it was judged with.")
    province: str = Field("national", description="Province (or city) the table belongs to.")
    codes: dict[str, CodeEntry] = Field(
        default_factory=_default_codes,
        description="By violation type (or 'type:label', e.g. no_helmet:motorcycle, which wins); speeding "
        "by band as speeding_<band lower bound in %>.",
    )


class TrafficSettings(_Section):
    time_zone: str = Field("Asia/Shanghai", description="The city's IANA time zone; schedules and case "
                           "route hours are local times in it, and CSV exports add local times in it.")
    track_idle_s: float = Field(
        600, gt=0, description="A camera track with no message for this long (event time) is over: its "
        "state is dropped and an open parking violation is cleared at its last message.",
    )
    schedules: dict[str, ScheduleSettings] = Field(
        default_factory=dict, description="Named schedules that zones and speed limits refer to."
    )
    intersections: list[IntersectionSettings] = Field(default_factory=list, description="Signalised "
                                                      "intersections and their approaches.")
    cameras: list[CameraZonesSettings] = Field(default_factory=list, description="Zones per camera.")
    codes: CodeTableSettings = Field(default_factory=CodeTableSettings, description="The violation code "
                                     "and points table.")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return check_time_zone(value)

    @model_validator(mode="after")
    def _references_exist(self) -> TrafficSettings:
        intersections = {ix.id: ix for ix in self.intersections}
        if len(intersections) != len(self.intersections):
            raise ValueError("traffic.intersections: intersection ids repeat")
        cameras = [camera.device_id for camera in self.cameras]
        if len(set(cameras)) != len(cameras):
            raise ValueError("traffic.cameras: a camera is listed twice")
        for camera in self.cameras:
            where = f"camera {camera.device_id!r}"
            intersection = intersections.get(camera.intersection) if camera.intersection else None
            if camera.intersection is not None and intersection is None:
                raise ValueError(f"{where}: unknown intersection {camera.intersection!r}")
            approaches = {a.name for a in intersection.approaches} if intersection else set()
            for zone in camera.zones:
                if zone.approach is not None and zone.approach not in approaches:
                    raise ValueError(f"{where}, zone {zone.name!r}: approach {zone.approach!r} is not an "
                                     f"approach of intersection {camera.intersection!r}")
                for schedule in [zone.schedule, *(limit.schedule for limit in zone.scheduled_limits)]:
                    if schedule is not None and schedule not in self.schedules:
                        raise ValueError(f"{where}, zone {zone.name!r}: unknown schedule {schedule!r}")
        return self


# The rules' own sections (under `rules:`). Every threshold can be overridden per zone (zone.thresholds)
# and per device (the registry's `thresholds`), by the rule name and the setting name.


class RedLightSettings(_Section):
    enabled: bool = True
    grace_s: float = Field(0.3, ge=0, description="A vehicle entering the stop line this soon after the "
                           "phase turned red is not judged (it could not stop in time).")
    labels: list[str] = Field(default_factory=lambda: list(VEHICLE_LABELS),
                              description="Track labels judged as vehicles.")
    signal_stale_s: float = Field(900, gt=0, description="A phase with no change for this long is "
                                  "treated as unknown (controller silent), so nothing is judged on it.")
    state_ttl_s: int = Field(24 * 3600, gt=0, description="Forget an intersection silent this long.")


class PedestrianRedSettings(_Section):
    enabled: bool = True
    grace_s: float = Field(0.3, ge=0, description="A person stepping on the crosswalk this soon after the "
                           "pedestrian phase turned red is not judged.")
    labels: list[str] = Field(default_factory=lambda: ["person"], description="Track labels of pedestrians.")
    signal_stale_s: float = Field(900, gt=0, description="See red_light.signal_stale_s.")
    state_ttl_s: int = Field(24 * 3600, gt=0, description="Forget an intersection silent this long.")


class YieldCrosswalkSettings(_Section):
    enabled: bool = True
    min_persons: int = Field(1, ge=1, description="Persons inside the crosswalk that oblige a vehicle to "
                             "wait.")
    labels: list[str] = Field(default_factory=lambda: list(VEHICLE_LABELS),
                              description="Track labels judged as vehicles.")
    person_labels: list[str] = Field(default_factory=lambda: ["person"], description="Labels of pedestrians.")
    encounter_s: float = Field(10, ge=0, description="A vehicle entering a crosswalk within this long after "
                               "a person was last in it met that pedestrian: it counts in the yield rate "
                               "(docs/denominators.md), as yielding unless it entered while persons were "
                               "inside.")
    state_ttl_s: int = Field(24 * 3600, gt=0, description="Forget a camera silent this long.")


def _default_parking_zones() -> list[ParkingZoneType]:
    return ["no_parking", "sidewalk"]


class IllegalParkingSettings(_Section):
    enabled: bool = True
    dwell_s: float = Field(300, gt=0, description="Stationary this long, continuously, inside a zone in "
                           "force opens a violation.")
    zone_types: list[ParkingZoneType] = Field(
        default_factory=_default_parking_zones, description="Zone types where vehicles may "
        "not stand.",
    )
    labels: list[str] = Field(default_factory=lambda: ["car", "truck", "bus", "motorcycle"],
                              description="Track labels judged as parked vehicles.")


class WrongWaySettings(_Section):
    enabled: bool = True
    max_angle_deg: float = Field(120, gt=0, le=180, description="Displacement more than this far from the "
                                 "allowed heading is against the traffic.")
    min_distance: float = Field(5.0, gt=0, description="Displacement judged only once it is at least this "
                                "long, in the unit of `position` (ground-plane metres or pixels).")
    labels: list[str] = Field(default_factory=lambda: [*VEHICLE_LABELS, "bicycle"],
                              description="Track labels judged.")


class SpeedingBandSettings(_Section):
    over_pct: float = Field(ge=0, description="Lower bound (inclusive) of the band, % over the limit.")
    severity: Severity


def _default_bands() -> list[SpeedingBandSettings]:
    return [SpeedingBandSettings(over_pct=10, severity=Severity.LOW),
            SpeedingBandSettings(over_pct=20, severity=Severity.MEDIUM),
            SpeedingBandSettings(over_pct=50, severity=Severity.HIGH),
            SpeedingBandSettings(over_pct=100, severity=Severity.CRITICAL)]


class SpeedingSettings(_Section):
    enabled: bool = True
    tolerance_pct: float = Field(10, ge=0, description="Speeds more than this % over the limit are "
                                 "violations (exactly this much is not).")
    bands: list[SpeedingBandSettings] = Field(
        default_factory=_default_bands, description="Severity bands by % over the limit, ascending; the "
        "code table has an entry speeding_<over_pct> per band.",
    )
    labels: list[str] = Field(default_factory=lambda: list(VEHICLE_LABELS),
                              description="Track labels judged.")

    @model_validator(mode="after")
    def _bands_ascend(self) -> SpeedingSettings:
        bounds = [band.over_pct for band in self.bands]
        if not bounds or bounds != sorted(set(bounds)) or bounds[0] > self.tolerance_pct:
            raise ValueError("speeding.bands must be ascending, distinct, and the first must start at or "
                             "below tolerance_pct")
        return self


class NoHelmetSettings(_Section):
    enabled: bool = True
    labels: list[str] = Field(default_factory=lambda: ["motorcycle", "e-bike"], description="Riders judged.")
    consecutive: int = Field(1, ge=1, description="Messages in a row reporting no helmet before it counts "
                             "(raise it for a flickering classifier).")


class CongestionSettings(_Section):
    enabled: bool = True
    occupancy_pct: float = Field(30, gt=0, le=100, description="Occupancy at or above this ...")
    speed_kmh: float = Field(15, gt=0, description="... and mean speed at or below this is a congested "
                             "interval.")
    open_intervals: int = Field(3, ge=1, description="Congested intervals in a row that open an incident.")
    clear_intervals: int = Field(2, ge=1, description="Free intervals in a row that clear it.")
    max_gap_intervals: float = Field(1.5, gt=1, description="Readings further apart than this many intervals "
                                     "break a run: a missing report is not a congested (or free) interval.")
    default_interval_s: float = Field(60, gt=0, description="Interval assumed when a reading has no "
                                      "interval_s.")
    high_occupancy_pct: float = Field(60, gt=0, le=100, description="Incidents opening at or above this "
                                      "occupancy are high severity.")
    state_ttl_s: int = Field(24 * 3600, gt=0, description="Forget an approach silent this long.")


class CameraViolationSettings(_Section):
    enabled: bool = True
    dedup_window_s: float = Field(300, gt=0, description="A report of the same plate and type from the "
                                  "same camera within this long of the previous one is the same incident.")
    state_ttl_s: int = Field(24 * 3600, gt=0, description="Forget a camera silent this long.")


def tag_camera_intersections(settings: Settings) -> Settings:
    """Give each registered camera of `traffic.cameras` the `intersection` tag of its intersection.

    Rules that join signals and cameras keep one state per intersection, and the bus partitions events by
    their `intersection` tag (processors.catalogue.partition_key): a camera's events must carry the tag
    of the intersection it watches, or on Kafka they would reach another partition than the signals.
    Writing the intersection once, in `traffic.cameras`, is enough; a different tag is an error.
    """
    watched = {camera.device_id: camera.intersection for camera in settings.traffic.cameras
               if camera.intersection is not None}
    devices = []
    changed = False
    for device in settings.devices:
        intersection = watched.get(device.device_id)
        tagged = device.tags.get("intersection")
        if intersection is None or tagged == intersection:
            devices.append(device)
            continue
        if tagged is not None:
            raise ValueError(f"device {device.device_id!r} is tagged intersection={tagged!r} but "
                             f"traffic.cameras says it watches {intersection!r}")
        devices.append(device.model_copy(update={"tags": {**device.tags, "intersection": intersection}}))
        changed = True
    return settings.model_copy(update={"devices": devices}) if changed else settings
