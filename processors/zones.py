"""Camera zones and schedules at run time: which zone a track is in, whether it is in force, its limits.

Built once from the validated `traffic` settings. Schedules are local times in the city's time zone
(zoneinfo), so "07:00-09:00 on workdays" means Beijing time for a Chinese city whatever the server's zone,
and the arithmetic is wall-clock arithmetic across daylight-saving changes where a zone has them.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date

from core.local_time import WEEKDAYS, parse_window
from core.traffic_settings import (
    CameraZonesSettings,
    ScheduleSettings,
    TrafficSettings,
    ZoneSettings,
    ZoneType,
)
from processors.devices import DeviceLookup, Thresholds
from processors.local_hours import FOREVER_MS, LocalHours

__all__ = ["FOREVER_MS", "Schedule", "Zone", "ZoneMap", "dwell_due", "in_force_until"]
# How far ahead a schedule is searched for its next window: two weeks cover any weekly pattern plus
# a run of public holidays.
SEARCH_DAYS = 15
_WHOLE_DAY = [(0, 24 * 60)]


class Schedule:
    """When something is in force, as half-open intervals [start_ms, end_ms) of event time."""

    def __init__(self, name: str, settings: ScheduleSettings, time_zone: zoneinfo.ZoneInfo) -> None:
        self.name = name
        self.time_zone = time_zone
        self._days = {WEEKDAYS.index(day) for day in settings.days}
        self._windows = sorted(parse_window(window) for window in settings.windows) or _WHOLE_DAY
        self._skip = set(settings.skip_dates)
        self._extra = set(settings.extra_dates)
        self._hours = LocalHours(time_zone, self._windows_on)

    def _applies_on(self, day: date) -> bool:
        if day in self._extra:
            return True
        return day.weekday() in self._days and day not in self._skip

    def _windows_on(self, day: date) -> list[tuple[int, int]]:
        return self._windows if self._applies_on(day) else []

    def active_at(self, time_ms: int) -> bool:
        return self._hours.active_at(time_ms)

    def intervals(self, from_ms: int) -> Iterator[tuple[int, int]]:
        """Intervals in force that end after `from_ms`, in order; touching windows are merged."""
        return self._hours.intervals(from_ms, days=SEARCH_DAYS)


def dwell_due(schedule: Schedule | None, since_ms: int, dwell_ms: int) -> tuple[int, int] | None:
    """When something present since `since_ms` has been there `dwell_ms` while the schedule was in force,
    continuously: (when the in-force stay began, when it reaches the dwell). None: not within the search."""
    if schedule is None:
        return since_ms, since_ms + dwell_ms
    for start, end in schedule.intervals(since_ms):
        begun = max(start, since_ms)
        if end - begun >= dwell_ms:
            return begun, begun + dwell_ms
    return None


def in_force_until(schedule: Schedule | None, time_ms: int) -> int:
    """End of the schedule's interval in force at `time_ms` (FOREVER_MS for no schedule)."""
    if schedule is None:
        return FOREVER_MS
    for start, end in schedule.intervals(time_ms):
        return end if start <= time_ms else time_ms
    return time_ms


@dataclass(frozen=True, slots=True)
class Zone:
    camera: str
    name: str
    type: ZoneType
    settings: ZoneSettings
    schedule: Schedule | None
    intersection: str | None
    # stop_line: the vehicle phase of its approach; crosswalk: its pedestrian phase.
    phase: str | None
    scheduled_limits: tuple[tuple[Schedule, float], ...] = field(default=())

    def in_force(self, time_ms: int) -> bool:
        return self.schedule is None or self.schedule.active_at(time_ms)

    def speed_limit_kmh(self, time_ms: int) -> float | None:
        """The lowest limit in force at `time_ms` (a school-hours limit below the posted one wins)."""
        limits = [limit for schedule, limit in self.scheduled_limits if schedule.active_at(time_ms)]
        if self.settings.speed_limit_kmh is not None:
            limits.append(self.settings.speed_limit_kmh)
        return min(limits) if limits else None


class ZoneMap:
    """Zones by camera and name, the camera's intersection, and per-zone / per-device thresholds."""

    def __init__(self, traffic: TrafficSettings, devices: DeviceLookup | None = None,
                 thresholds: Thresholds | None = None) -> None:
        self.time_zone = zoneinfo.ZoneInfo(traffic.time_zone)
        self.thresholds = thresholds or Thresholds(devices)
        self.devices = self.thresholds.devices
        self.schedules = {name: Schedule(name, settings, self.time_zone)
                          for name, settings in traffic.schedules.items()}
        phases = {(ix.id, approach.name): approach.phase
                  for ix in traffic.intersections for approach in ix.approaches}
        self._intersections = {camera.device_id: camera.intersection for camera in traffic.cameras}
        self._zones: dict[str, dict[str, Zone]] = {
            camera.device_id: {zone.name: self._zone(camera, zone, phases) for zone in camera.zones}
            for camera in traffic.cameras
        }
        self._types = {camera: frozenset(zone.type for zone in zones.values())
                       for camera, zones in self._zones.items()}
        self._names = {(camera, zone_type): frozenset(name for name, zone in zones.items()
                                                      if zone.type is zone_type)
                       for camera, zones in self._zones.items() for zone_type in ZoneType}

    def _zone(self, camera: CameraZonesSettings, zone: ZoneSettings,
              phases: dict[tuple[str, str], str]) -> Zone:
        phase = zone.pedestrian_phase
        if zone.type is ZoneType.STOP_LINE and zone.approach is not None and camera.intersection:
            phase = phases[(camera.intersection, zone.approach)]
        return Zone(
            camera=camera.device_id, name=zone.name, type=zone.type, settings=zone,
            schedule=self.schedules[zone.schedule] if zone.schedule else None,
            intersection=camera.intersection, phase=phase,
            scheduled_limits=tuple((self.schedules[limit.schedule], limit.speed_limit_kmh)
                                   for limit in zone.scheduled_limits),
        )

    def intersection_of(self, camera: str) -> str | None:
        return self._intersections.get(camera)

    def zone_names(self, camera: str, zone_type: ZoneType) -> frozenset[str]:
        """Names of the camera's zones of one type (what a rule watches)."""
        return self._names.get((camera, zone_type), frozenset())

    def has_zone_type(self, camera: str, zone_type: ZoneType) -> bool:
        return zone_type in self._types.get(camera, ())

    def zone(self, camera: str, name: str) -> Zone | None:
        return self._zones.get(camera, {}).get(name)

    def zones_of(self, camera: str, names: Iterable[str], *types: ZoneType) -> list[Zone]:
        """The configured zones among `names` (what the camera reports) of the given types, in name order."""
        known = self._zones.get(camera)
        if not known:
            return []
        found = [known[name] for name in names if name in known]
        return sorted((zone for zone in found if not types or zone.type in types), key=lambda z: z.name)

    def threshold(self, rule: str, name: str, default: float, *, device_id: str, kind: str,
                  zone: Zone | None = None) -> float:
        """The camera zone's override, else the device's (registry), else its zone tag's, else its kind's,
        else the rule's configured default (processors.devices.Thresholds)."""
        return self.thresholds.value(rule, name, default, device_id=device_id, kind=kind,
                                     camera_zone=None if zone is None else zone.settings.thresholds)
