"""Signal controllers and traffic detectors of the configured intersections.

Each intersection of `traffic.intersections` whose controller is registered (a device of kind `signal`
tagged with the intersection) runs a fixed-time plan: every approach in turn gets 25 s of green, 3 s of
amber and 2 s of all-red, so a two-approach intersection has a 60 s cycle. A pedestrian phase (the
`pedestrian_phase` of a crosswalk that a camera watches there) walks in the first 20 s of every stage but
the one of the approach whose road it crosses (the camera's stop-line approach), and is red otherwise.
The controller reports every phase at start-up (the rules judge a phase only once it was reported) and
then each change as it happens, as controllers publishing phase changes do.

Detectors (kind `detector`, tagged with `intersection` and `approach`) report every 20 s: a loop's
occupancy and mean speed over the interval. In the city's peak hours (07:00-09:00 and 17:00-19:00 local
time, `traffic.time_zone`) every approach is jammed; outside them the first detector's approach is, as
if a lane were closed for roadworks, so congestion (3 congested intervals in a row) shows within a minute
of start at any hour. Detectors without an intersection tag report in the native format as before.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from citywatch.simulation import wire
from citywatch.simulation.schedule import Cycles, Timeline
from core.settings import DeviceSettings
from core.traffic_settings import IntersectionSettings, TrafficSettings, ZoneType

GREEN_MS, AMBER_MS, ALL_RED_MS = 25_000, 3_000, 2_000
STAGE_MS = GREEN_MS + AMBER_MS + ALL_RED_MS
WALK_MS = 20_000
DETECTOR_INTERVAL_S = 20
PEAK_HOURS = (7, 8, 17, 18)


@dataclass(frozen=True)
class PhaseTimes:
    """A phase's state changes within one cycle: (offset ms from the cycle start, state)."""

    phase: str
    changes: tuple[tuple[int, str], ...]

    def state_at_start(self) -> str:
        # The state at offset 0 is the last change of the previous cycle when none happens at 0.
        first = [state for offset, state in self.changes if offset == 0]
        return first[0] if first else self.changes[-1][1]


def plan_phases(intersection: IntersectionSettings, crossings: dict[str, str]) -> list[PhaseTimes]:
    """The fixed-time plan: vehicle phases by approach order, pedestrian phases (`crossings`: phase ->
    the approach whose road it crosses) walking while that approach is stopped."""
    approaches = [approach.name for approach in intersection.approaches]
    phases = []
    for stage, approach in enumerate(intersection.approaches):
        begin = stage * STAGE_MS
        changes = [(begin, "green"), (begin + GREEN_MS, "amber"), (begin + GREEN_MS + AMBER_MS, "red")]
        if begin > 0:
            changes.insert(0, (0, "red"))
        phases.append(PhaseTimes(approach.phase, tuple(changes)))
    for phase, crossed in sorted(crossings.items()):
        conflicting = approaches.index(crossed) if crossed in approaches else 0
        changes = []
        for stage in range(len(approaches)):
            if stage != conflicting:
                changes += [(stage * STAGE_MS, "green"), (stage * STAGE_MS + WALK_MS, "red")]
        if not changes or changes[0][0] > 0:
            changes.insert(0, (0, "red"))
        phases.append(PhaseTimes(phase, tuple(changes)))
    return phases


def pedestrian_crossings(traffic: TrafficSettings, intersection_id: str) -> dict[str, str]:
    """Pedestrian phase -> the approach whose road the crosswalk crosses (the camera's stop-line
    approach), for the crosswalks of the cameras watching this intersection."""
    crossings: dict[str, str] = {}
    for camera in traffic.cameras:
        if camera.intersection != intersection_id:
            continue
        stop_lines = [zone.approach for zone in camera.zones
                      if zone.type is ZoneType.STOP_LINE and zone.approach]
        for zone in camera.zones:
            if zone.type is ZoneType.CROSSWALK and zone.pedestrian_phase:
                crossings.setdefault(zone.pedestrian_phase, stop_lines[0] if stop_lines else "")
    return crossings


def cycle_ms(intersection: IntersectionSettings) -> int:
    return STAGE_MS * max(1, len(intersection.approaches))


class SignalController:
    def __init__(self, device_id: str, intersection: IntersectionSettings, traffic: TrafficSettings) -> None:
        self.device_id = device_id
        self.intersection = intersection.id
        self.cycle_ms = cycle_ms(intersection)
        self.phases = plan_phases(intersection, pedestrian_crossings(traffic, intersection.id))
        self.cycles = Cycles(self.cycle_ms)

    def schedule(self, now_ms: int, timeline: Timeline) -> None:
        cycle_s = self.cycle_ms / 1000
        for number, start_ms in self.cycles.begun(now_ms):
            if number == 0:  # start-up: the state of every phase
                changes = [{"phase": p.phase, "state": p.state_at_start()} for p in self.phases]
                timeline.at(start_ms, wire.signal(self.device_id, self.intersection, start_ms, "fixed-time",
                                                  cycle_s, changes))
            for phase in self.phases:
                for offset, state in phase.changes:
                    if number == 0 and offset == 0:
                        continue
                    previous = phase.changes[phase.changes.index((offset, state)) - 1][1]
                    if offset == 0 and previous == state:
                        continue  # no change across the cycle boundary
                    at_ms = start_ms + offset
                    timeline.at(at_ms, wire.signal(self.device_id, self.intersection, at_ms, "fixed-time",
                                                   cycle_s, [{"phase": phase.phase, "state": state}]))


class Detector:
    def __init__(self, device: DeviceSettings, jammed: bool, rng: random.Random, city: ZoneInfo) -> None:
        self.device_id = device.device_id
        self.intersection = device.tags["intersection"]
        self.approach = device.tags.get("approach", "unknown")
        self.jammed = jammed
        self.rng = rng
        self.city = city
        self.cycles = Cycles(DETECTOR_INTERVAL_S * 1000)

    def schedule(self, now_ms: int, timeline: Timeline) -> None:
        for _, end_ms in self.cycles.begun(now_ms):
            local_hour = datetime.fromtimestamp(end_ms / 1000, UTC).astimezone(self.city).hour
            if self.jammed or local_hour in PEAK_HOURS:
                occupancy, speed = self.rng.uniform(45, 75), self.rng.uniform(4, 12)
            else:
                occupancy, speed = self.rng.uniform(6, 22), self.rng.uniform(28, 48)
            volume = int(DETECTOR_INTERVAL_S * (0.1 + occupancy / 400) * self.rng.uniform(0.8, 1.2))
            timeline.at(end_ms, wire.detector(
                self.device_id, self.intersection, self.approach, 1, end_ms, DETECTOR_INTERVAL_S, volume,
                round(occupancy, 1), round(speed, 1)))


class Intersections:
    """Every registered signal controller and intersection detector of the configured intersections."""

    def __init__(self, devices: list[DeviceSettings], traffic: TrafficSettings, rng: random.Random,
                 timeline: Timeline) -> None:
        by_id = {ix.id: ix for ix in traffic.intersections}
        self.controllers = [SignalController(d.device_id, by_id[d.tags["intersection"]], traffic)
                            for d in devices if d.kind == "signal" and d.tags.get("intersection") in by_id]
        city = ZoneInfo(traffic.time_zone)
        tagged = [d for d in devices if d.kind == "detector" and d.tags.get("intersection")]
        self.detectors = [Detector(d, i == 0, rng, city) for i, d in enumerate(tagged)]
        self.timeline = timeline

    def schedule(self, now_ms: int) -> None:
        """Put what the controllers and detectors send up to `now_ms` on the timeline."""
        for controller in self.controllers:
            controller.schedule(now_ms, self.timeline)
        for detector in self.detectors:
            detector.schedule(now_ms, self.timeline)
