"""Frigate cameras and smart cameras: road users doing the right thing and the wrong one.

Every registered camera (kind `track`) that has zones under `traffic.cameras` plays, once per signal cycle
of its intersection (60 s at a two-approach intersection; 60 s for a camera without one), the scenes
its zones allow, timed against the controller's fixed-time plan (citywatch/simulation/signals.py):

- stop_line: a car crosses on green; a car enters 5 s after its approach turned red (red_light);
- crosswalk: a pedestrian steps out on red (pedestrian_red); a pedestrian crosses on the walk signal, a
  turning car drives into the crosswalk while they are in it (yield_crosswalk) and the next one waits;
- no_parking or sidewalk: a car stops there and stands for 48 s before driving off (illegal_parking
  where the zone's dwell limit is shorter, as at the demo's bus stop);
- speed_limit: a car at 85% of the zone's lowest limit; a car at 140% of its posted limit (speeding);
- one_way: an e-bike rider with a helmet rides the allowed way; one without a helmet (no_helmet); one
  rides against it (wrong_way).

Messages are what Frigate publishes (citywatch/simulation/wire.py): `new`, `update` on a zone change,
`end`; the helmet comes from an attribute-type classification model (`helmet_detector`, classes yes/no:
the map citywatch reads by default) as a `frigate/tracked_object_update`. `e-bike` is the label of a
custom detection model (Frigate passes a model's own labels through). Positions are the boxes' centres
in image pixels: y grows down the image, so "+y" (heading 0) is towards the camera.

Smart cameras (kind `camera_violation`) judge on board and report a red-light violation 15 s after
start and every 45 s after that (plates vary, so each report is an incident of its own).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from typing import Any

from citywatch.simulation import wire
from citywatch.simulation.schedule import Cycles, Timeline
from citywatch.simulation.signals import STAGE_MS, cycle_ms
from citywatch.simulation.wire import TrackedObject
from core.settings import DeviceSettings
from core.traffic_settings import CameraZonesSettings, TrafficSettings, ZoneSettings, ZoneType

Box = tuple[float, float, float, float]
# (seconds after the scene's start, box, zones now, changes to the tracked object)
Step = tuple[float, Box, tuple[str, ...], dict[str, Any]]
SMART_CAMERA_FIRST_MS, SMART_CAMERA_EVERY_MS = 15_000, 45_000
PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # Chinese plates use no I or O


class Camera:
    def __init__(self, zones: CameraZonesSettings, traffic: TrafficSettings, rng: random.Random) -> None:
        self.device_id = zones.device_id
        self.rng = rng
        self._last_track: TrackedObject | None = None  # the state of the track `_track` made last
        intersection = next((ix for ix in traffic.intersections if ix.id == zones.intersection), None)
        self.cycles = Cycles(cycle_ms(intersection) if intersection else 60_000)
        approaches = [a.name for a in intersection.approaches] if intersection else []

        def first(zone_type: ZoneType) -> ZoneSettings | None:
            return next((zone for zone in zones.zones if zone.type is zone_type), None)

        self.stop_line = first(ZoneType.STOP_LINE)
        self.crosswalk = first(ZoneType.CROSSWALK)
        self.parking = first(ZoneType.NO_PARKING) or first(ZoneType.SIDEWALK)
        self.speed_zone = first(ZoneType.SPEED_LIMIT)
        self.one_way = first(ZoneType.ONE_WAY)
        # Scenes are timed from the start of the stage of the approach the camera's stop line belongs to.
        approach = self.stop_line.approach if self.stop_line else None
        self.stage_offset_ms = approaches.index(approach) * STAGE_MS if approach in approaches else 0

    def schedule(self, now_ms: int, timeline: Timeline) -> None:
        for _, start_ms in self.cycles.begun(now_ms):
            stage_s = (start_ms + self.stage_offset_ms) / 1000
            scenes: list[Callable[[float], list[tuple[float, wire.Message]]]] = []
            if self.stop_line is not None:
                scenes += [self._green_car, self._red_light_runner]
            if self.crosswalk is not None:
                scenes += [self._pedestrian_on_red, self._crossing_and_cars]
            if self.parking is not None:
                scenes.append(self._parked_car)
            if self.speed_zone is not None:
                scenes += [self._speed_keeper, self._speeder]
            if self.one_way is not None:
                scenes += [self._helmeted_rider, self._rider_without_helmet, self._wrong_way_rider]
            for scene in scenes:
                for at_s, message in scene(stage_s):
                    timeline.at(round(at_s * 1000), message)

    # --- scenes ---------------------------------------------------------------------------------------
    # `stage_s`: when the camera's approach turned green (epoch seconds). Its amber starts at +25 s and
    # red at +28 s; the crosswalk's walk signal runs from +30 to +50 s (citywatch/simulation/signals.py).

    def _green_car(self, stage_s: float) -> list[tuple[float, wire.Message]]:
        assert self.stop_line is not None
        return self._track("car", stage_s + 6, [
            (0, (900, 300, 1100, 420), (), {"speed_kmh": 38.0}),
            (2, (880, 520, 1120, 680), (self.stop_line.name,), {"speed_kmh": 40.0}),
            (4, (860, 760, 1140, 960), (), {"speed_kmh": 41.0}),
        ], plate=True)

    def _red_light_runner(self, stage_s: float) -> list[tuple[float, wire.Message]]:
        assert self.stop_line is not None
        return self._track("car", stage_s + 31, [
            (0, (700, 300, 900, 420), (), {"speed_kmh": 46.0}),
            (2, (690, 520, 930, 680), (self.stop_line.name,), {"speed_kmh": 49.0}),
            (4, (680, 760, 960, 960), (), {"speed_kmh": 50.0}),
        ], plate=True)

    def _pedestrian_on_red(self, stage_s: float) -> list[tuple[float, wire.Message]]:
        assert self.crosswalk is not None
        return self._track("person", stage_s + 3, [
            (0, (300, 600, 360, 760), (), {}),
            (1, (380, 600, 440, 760), (self.crosswalk.name,), {}),
            (9, (1500, 600, 1560, 760), (), {}),
        ])

    def _crossing_and_cars(self, stage_s: float) -> list[tuple[float, wire.Message]]:
        """A pedestrian crosses on the walk signal (+30 s): a turning car drives into the crosswalk while
        they are in it (+35 s); the next one waits until they have left (+44 s)."""
        assert self.crosswalk is not None
        crosswalk = self.crosswalk.name
        walker = self._track("person", stage_s + 30, [
            (0, (300, 620, 360, 780), (), {}),
            (1, (400, 620, 460, 780), (crosswalk,), {}),
            (6, (1000, 620, 1060, 780), (crosswalk,), {}),
            (11, (1560, 620, 1620, 780), (), {}),
        ])
        pushing = self._track("car", stage_s + 34, [
            (0, (1300, 400, 1500, 540), (), {"speed_kmh": 18.0}),
            (1, (1150, 560, 1390, 740), (crosswalk,), {"speed_kmh": 16.0}),
            (4, (1000, 800, 1280, 1000), (), {"speed_kmh": 22.0}),
        ], plate=True)
        waiting = self._track("car", stage_s + 40, [
            (0, (1300, 400, 1500, 540), (), {"speed_kmh": 12.0}),
            (2, (1300, 420, 1500, 560), (), {"speed_kmh": 0.0}),
            (4, (1150, 560, 1390, 740), (crosswalk,), {"speed_kmh": 14.0}),
            (7, (1000, 800, 1280, 1000), (), {"speed_kmh": 20.0}),
        ], plate=True)
        return walker + pushing + waiting

    def _parked_car(self, stage_s: float) -> list[tuple[float, wire.Message]]:
        assert self.parking is not None
        zone = self.parking.name
        standing = {"stationary": True, "speed_kmh": 0.0}
        return self._track("car", stage_s + 2, [
            (0, (100, 500, 330, 650), (), {"speed_kmh": 12.0}),
            (2, (60, 520, 300, 680), (zone,), standing),
            (20, (60, 520, 300, 680), (zone,), {**standing, "score": 0.86}),  # a better snapshot
            (40, (60, 520, 300, 680), (zone,), {**standing, "score": 0.88}),
            (50, (120, 480, 350, 630), (), {"stationary": False, "speed_kmh": 9.0}),
        ], plate=True)

    def _speed_keeper(self, stage_s: float) -> list[tuple[float, wire.Message]]:
        # Within the lowest limit the zone ever has (a school-hours limit, say), so never judged.
        assert self.speed_zone is not None and self.speed_zone.speed_limit_kmh is not None
        lowest = min([self.speed_zone.speed_limit_kmh,
                      *(limit.speed_limit_kmh for limit in self.speed_zone.scheduled_limits)])
        return self._speed_track(stage_s + 12, lowest * 0.85)

    def _speeder(self, stage_s: float) -> list[tuple[float, wire.Message]]:
        # Over the posted limit, so judged whatever lower limit is in force.
        assert self.speed_zone is not None and self.speed_zone.speed_limit_kmh is not None
        return self._speed_track(stage_s + 18, self.speed_zone.speed_limit_kmh * 1.4)

    def _speed_track(self, start_s: float, speed_kmh: float) -> list[tuple[float, wire.Message]]:
        assert self.speed_zone is not None
        speed = round(speed_kmh * self.rng.uniform(0.98, 1.02), 1)
        zone = (self.speed_zone.name,)
        return self._track("car", start_s, [
            (0, (1400, 200, 1560, 300), zone, {"speed_kmh": speed}),
            (1, (1300, 420, 1520, 560), zone, {"speed_kmh": speed}),
            (2, (1200, 700, 1480, 900), (), {"speed_kmh": speed}),
        ], plate=True)

    def _helmeted_rider(self, stage_s: float) -> list[tuple[float, wire.Message]]:
        return self._rider(stage_s + 8, helmet=True, against=False)

    def _rider_without_helmet(self, stage_s: float) -> list[tuple[float, wire.Message]]:
        return self._rider(stage_s + 20, helmet=False, against=False)

    def _wrong_way_rider(self, stage_s: float) -> list[tuple[float, wire.Message]]:
        return self._rider(stage_s + 40, helmet=True, against=True)

    def _rider(self, start_s: float, *, helmet: bool, against: bool) -> list[tuple[float, wire.Message]]:
        """An e-bike in the one-way lane, moving with its allowed heading or against it."""
        assert self.one_way is not None
        lane = (self.one_way.name,)
        ys = [200.0, 320.0, 440.0, 560.0]
        if against:
            ys.reverse()
        heading = (self.one_way.allowed_heading_deg or 0) + (180 if against else 0)
        # The classifier decides 2 s into the track (Frigate publishes its result as an update); from
        # then on the tracked object carries the model's [class, score] under the model's name.
        decided = "yes" if helmet else "no"
        steps: list[Step] = [
            (i * 1.5, (1700, y, 1780, y + 150), lane,
             {"speed_kmh": 18.0, "velocity_angle": heading % 360,
              "extra": {"helmet_detector": [decided, 0.9]} if i * 1.5 > 2 else {}})
            for i, y in enumerate(ys)]
        messages = self._track("e-bike", start_s, steps)
        assert self._last_track is not None
        messages.append((start_s + 2, wire.frigate_classification(
            self._last_track, round(start_s + 2, 6), "helmet_detector", decided, 0.9)))
        return sorted(messages, key=lambda item: item[0])

    # --- Frigate messages of one track ----------------------------------------------------------------

    def _track(self, label: str, start_s: float, steps: list[Step], plate: bool = False) -> list[
            tuple[float, wire.Message]]:
        """`new` at the first step, `update` at each later one, `end` one second after the last."""
        suffix = "".join(self.rng.choice(string.ascii_lowercase + string.digits) for _ in range(6))
        start_s = round(start_s, 6)
        offset, box, zones, changes = steps[0]
        state = TrackedObject(track_id=f"{start_s:.6f}-{suffix}", camera=self.device_id, label=label,
                              start_time=start_s, frame_time=start_s + offset, box=box,
                              current_zones=zones, entered_zones=zones,
                              plate=self._plate() if plate else None).moved(start_s + offset, box, zones,
                                                                             **changes)
        messages = [(start_s + offset, wire.frigate_event("new", state, state))]
        for offset, box, zones, changes in steps[1:]:
            after = state.moved(round(start_s + offset, 6), box, zones, **changes)
            messages.append((start_s + offset, wire.frigate_event("update", state, after)))
            state = after
        end = state.moved(round(state.frame_time + 1, 6), state.box, (), stationary=False)
        messages.append((end.frame_time, wire.frigate_event("end", state, end)))
        self._last_track = state
        return messages

    def _plate(self) -> str:
        letters = "".join(self.rng.choice(PLATE_LETTERS) for _ in range(2))
        return f"粤B{letters[0]}{self.rng.randint(1000, 9999)}{letters[1]}"


class SmartCamera:
    def __init__(self, device_id: str, rng: random.Random) -> None:
        self.device_id = device_id
        self.rng = rng
        self.start_ms: int | None = None
        self.reports = 0

    def schedule(self, now_ms: int, timeline: Timeline) -> None:
        if self.start_ms is None:
            self.start_ms = now_ms
        first_ms = self.start_ms + SMART_CAMERA_FIRST_MS
        while (at_ms := first_ms + self.reports * SMART_CAMERA_EVERY_MS) <= now_ms:
            self.reports += 1
            number = f"{self.reports:06d}"
            letters = "".join(self.rng.choice(PLATE_LETTERS) for _ in range(2))
            plate = f"粤B{letters}{self.rng.randint(100, 999)}"
            timeline.at(at_ms, wire.camera_violation(
                self.device_id, f"{self.device_id}-{number}", at_ms, "1625", "red_light", plate,
                self.rng.randint(1, 3), f"https://evidence.futian.example/{self.device_id}/{number}/1.jpg"))


class Cameras:
    """The Frigate cameras with configured zones and the smart cameras of the registry."""

    def __init__(self, devices: list[DeviceSettings], traffic: TrafficSettings, rng: random.Random,
                 timeline: Timeline) -> None:
        registered = {d.device_id for d in devices if d.kind == "track"}
        self.cameras = [Camera(zones, traffic, rng) for zones in traffic.cameras
                        if zones.device_id in registered]
        self.smart = [SmartCamera(d.device_id, rng) for d in devices if d.kind == "camera_violation"]
        self.timeline = timeline

    def schedule(self, now_ms: int) -> None:
        """Put what the cameras send up to `now_ms` on the timeline."""
        for camera in self.cameras:
            camera.schedule(now_ms, self.timeline)
        for smart in self.smart:
            smart.schedule(now_ms, self.timeline)
