"""A generated hour of a busy intersection, with the violations it contains (ground truth).

One signalised intersection (`ix-demo`): a signal controller cycling two approaches and two pedestrian
phases, a camera with stop lines, crosswalks, a sidewalk, a one-way bike lane and a 60 km/h road, a
detector on the north approach and a smart camera. Cars cross on green (some run the red, some slip
through on amber or within the 0.3 s grace), pedestrians cross on green (some against red), right-turners
cross the crosswalk (some while a person is on it), cars stop on the sidewalk (some past the dwell limit),
riders ride the bike lane (some the wrong way, some without a helmet), cars drive the road (some too fast),
the approach jams a few times, and the smart camera re-sends its reports.

Every actor is placed so that its outcome is unambiguous (at least a second away from every threshold), so
a correct rule set finds exactly the ground truth: precision and recall 1.0 on clean input.

    python -m bench.intersection_feed --out feed.jsonl --config-out city.yaml
    citywatch replay feed.jsonl --config city.yaml
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from core.models import Violation

INTERSECTION = "ix-demo"
CAMERA, SIGNALS, DETECTOR, SMART_CAMERA = "cam-ix-demo", "sig-ix-demo", "det-ix-demo-n", "scam-ix-demo"
TAGS = {"grid": "FT-24", "district": "futian", "department": "traffic_police"}
CYCLE_S = 90
# Phase plan of one cycle: (phase, state, start second within the cycle), in order.
PLAN = [
    ("north_through", "green", 0), ("ped_east", "green", 2), ("ped_east", "red", 35),
    ("north_through", "amber", 40), ("north_through", "red", 43), ("east_through", "green", 45),
    ("ped_north", "green", 47), ("ped_north", "red", 80), ("east_through", "amber", 85),
    ("east_through", "red", 88),
]
# Local 10:00 on a Wednesday: outside the peaks and school hours of the example schedules.
START = datetime(2025, 11, 26, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def scenario_config() -> dict[str, Any]:
    """Devices and the traffic section the feed is judged with (a valid citywatch configuration)."""
    devices = [
        {"device_id": CAMERA, "kind": "track", "model": "Frigate", "lat": 22.5475, "lon": 114.0762,
         "tags": TAGS},
        {"device_id": SIGNALS, "kind": "signal", "lat": 22.5475, "lon": 114.0762, "tags": TAGS},
        {"device_id": DETECTOR, "kind": "detector", "lat": 22.5477, "lon": 114.0762, "tags": TAGS},
        {"device_id": SMART_CAMERA, "kind": "camera_violation", "lat": 22.5474, "lon": 114.0761,
         "tags": TAGS},
    ]
    traffic = {
        "time_zone": "Asia/Shanghai",
        "schedules": {"workday_peaks": {"days": ["mon", "tue", "wed", "thu", "fri"],
                                        "windows": ["07:00-09:00", "17:00-19:00"]}},
        "intersections": [{"id": INTERSECTION, "approaches": [
            {"name": "north", "phase": "north_through"}, {"name": "east", "phase": "east_through"}]}],
        "cameras": [{"device_id": CAMERA, "intersection": INTERSECTION, "zones": [
            {"name": "stop_north", "type": "stop_line", "approach": "north"},
            {"name": "stop_east", "type": "stop_line", "approach": "east"},
            {"name": "crosswalk_north", "type": "crosswalk", "pedestrian_phase": "ped_north"},
            {"name": "crosswalk_east", "type": "crosswalk", "pedestrian_phase": "ped_east"},
            {"name": "sidewalk_ne", "type": "sidewalk"},
            {"name": "no_parking_w", "type": "no_parking", "schedule": "workday_peaks"},
            {"name": "bike_lane", "type": "one_way", "allowed_heading_deg": 0},
            {"name": "main_road", "type": "speed_limit", "speed_limit_kmh": 60},
        ]}],
    }
    return {"devices": devices, "traffic": traffic}


@dataclass(frozen=True, order=True)
class Expected:
    """One violation the feed contains: the rule and what identifies the incident."""

    type: str
    subject: str


@dataclass
class Feed:
    messages: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)  # (event ms, topic, body)
    # A multiset: an incident expected twice must be found twice.
    truth: Counter[Expected] = field(default_factory=Counter)

    def recording(self, receive_delay_ms: int = 120) -> list[dict[str, Any]]:
        """JSON-lines records {topic, payload, time} in receive order."""
        ordered = sorted(self.messages, key=lambda message: message[0])
        return [{"topic": topic, "payload": body, "time": time_ms + receive_delay_ms}
                for time_ms, topic, body in ordered]


def found(violations: Iterable[Violation]) -> Counter[Expected]:
    """What a replay found, in the terms of the ground truth: one entry per violation id (its changes
    are one violation), counted, so an incident raised under two ids counts twice."""
    newest: dict[str, Violation] = {}
    for violation in violations:
        newest[violation.violation_id] = violation
    result: Counter[Expected] = Counter()
    for violation in newest.values():
        details = violation.evidence.details
        if violation.type == "congestion":
            subject = str(violation.start_time_ms)
        elif details.get("source") == "smart_camera":
            subject = f"{violation.evidence.plate}@{violation.start_time_ms}"
        else:
            subject = str(details["track_id"])
        result[Expected(violation.type, subject)] += 1
    return result


class _Builder:
    def __init__(self, seed: int, duration_s: int) -> None:
        self.rng = random.Random(seed)
        self.duration_s = duration_s
        self.start_ms = int(START.timestamp() * 1000)
        self.feed = Feed()
        self.sequence = 0
        self.pedestrians: dict[str, list[tuple[float, float]]] = {"crosswalk_north": [], "crosswalk_east": []}

    def publish(self, at_s: float, device: str, kind: str, attributes: dict[str, Any],
                event_id: str | None = None) -> None:
        time_ms = self.start_ms + round(at_s * 1000)
        body: dict[str, Any] = {"device_id": device, "kind": kind, "time": time_ms, "attributes": attributes}
        if event_id is not None:
            body["event_id"] = event_id
        self.feed.messages.append((time_ms, f"citywatch/events/{device}", body))

    def track(self, track_id: str, label: str, steps: list[tuple[float, dict[str, Any]]]) -> None:
        """A track's messages: new, updates, end; each step is (time, attributes beyond the defaults)."""
        for index, (at_s, attributes) in enumerate(steps):
            stage = "new" if index == 0 else "end" if index == len(steps) - 1 else "update"
            self.publish(at_s, CAMERA, "track", {
                "track_id": track_id, "stage": stage, "label": label, "score": 0.9, "zones": [],
                "stationary": False, **attributes}, event_id=f"{track_id}-{index}")

    def expect(self, violation_type: str, subject: str) -> None:
        self.feed.truth[Expected(violation_type, subject)] += 1

    def next_id(self, prefix: str) -> str:
        self.sequence += 1
        return f"{prefix}{self.sequence:05d}"

    # The signal plan ------------------------------------------------------------------------------
    def signals(self) -> None:
        for cycle in range(self.duration_s // CYCLE_S + 1):
            for phase, state, offset in PLAN:
                at_s = cycle * CYCLE_S + offset
                if at_s <= self.duration_s:
                    self.publish(at_s, SIGNALS, "signal", {"intersection": INTERSECTION, "phase": phase,
                                                           "state": state})

    @staticmethod
    def phase_window(phase: str, state: str) -> tuple[float, float]:
        """(start, end) within a cycle of the phase's `state`; red may wrap round the cycle end."""
        changes = [(offset, s) for p, s, offset in PLAN if p == phase]
        for index, (offset, s) in enumerate(changes):
            if s == state:
                end = changes[(index + 1) % len(changes)][0]
                return offset, end if end > offset else end + CYCLE_S
        raise ValueError(f"{phase} is never {state}")

    # Actors ---------------------------------------------------------------------------------------
    def through_cars(self) -> None:
        """Cars crossing the stop line of each approach, and on the road after it (speeds)."""
        for approach, phase in (("north", "north_through"), ("east", "east_through")):
            green = self.phase_window(phase, "green")
            amber = self.phase_window(phase, "amber")
            red = self.phase_window(phase, "red")
            for cycle in range(self.duration_s // CYCLE_S - 1):
                base = cycle * CYCLE_S
                entries = [("green", base + self.rng.uniform(green[0] + 1, green[1] - 1)) for _ in range(15)]
                entries.append(("amber", base + self.rng.uniform(amber[0] + 0.5, amber[1] - 0.5)))
                if self.rng.random() < 0.5:  # within the 0.3 s grace after red: not a violation
                    entries.append(("grace", base + red[0] + self.rng.uniform(0.05, 0.25)))
                if self.rng.random() < 0.3:
                    entries.append(("red", base + red[0] + self.rng.uniform(1.0, 20.0)))
                for kind, at_s in entries:
                    track_id = self.next_id("car")
                    speeding = self.rng.random() < 0.08
                    speed = self.rng.uniform(70, 130) if speeding else self.rng.uniform(35, 64)
                    plate = f"粤B{self.rng.randrange(10000, 99999)}"
                    self.track(track_id, self.rng.choice(["car", "car", "car", "truck", "bus"]), [
                        (at_s - 2, {}),
                        (at_s, {"zones": [f"stop_{approach}"], "plate": plate, "plate_score": 0.93,
                                "snapshot_url": f"http://nvr.local/snap/{track_id}.jpg"}),
                        (at_s + 2, {"zones": ["main_road"], "speed_kmh": round(speed, 1)}),
                        (at_s + 4, {}),
                    ])
                    if kind == "red":
                        self.expect("red_light", track_id)
                    if speeding:
                        self.expect("speeding", track_id)

    def pedestrians_crossing(self) -> None:
        for crosswalk, phase in (("crosswalk_north", "ped_north"), ("crosswalk_east", "ped_east")):
            green = self.phase_window(phase, "green")
            red = self.phase_window(phase, "red")
            for cycle in range(self.duration_s // CYCLE_S - 1):
                base = cycle * CYCLE_S
                starts = [("green", base + self.rng.uniform(green[0] + 0.5, green[1] - 12)) for _ in range(5)]
                if self.rng.random() < 0.25:
                    starts.append(("red", base + red[0] + self.rng.uniform(2.0, 8.0)))
                for kind, at_s in starts:
                    track_id = self.next_id("ped")
                    crossing_s = self.rng.uniform(8, 11)
                    self.pedestrians[crosswalk].append((at_s, at_s + crossing_s))
                    self.track(track_id, "person", [
                        (at_s - 1, {}), (at_s, {"zones": [crosswalk]}),
                        (at_s + crossing_s / 2, {"zones": [crosswalk]}), (at_s + crossing_s, {}),
                        (at_s + crossing_s + 1, {}),
                    ])
                    if kind == "red":
                        self.expect("pedestrian_red", track_id)

    def right_turners(self) -> None:
        """Vehicles crossing a crosswalk: on a person (violation) or at a moment it is empty."""
        for crosswalk, crossings in self.pedestrians.items():
            for start, end in crossings[::4]:
                self.turner(crosswalk, self.rng.uniform(start + 1, end - 1), expected=True)
            for cycle in range(self.duration_s // CYCLE_S - 1):
                at_s = cycle * CYCLE_S + self.rng.uniform(0, CYCLE_S)
                if all(at_s < start - 1 or at_s > end + 1 for start, end in crossings):
                    self.turner(crosswalk, at_s, expected=False)

    def turner(self, crosswalk: str, at_s: float, *, expected: bool) -> None:
        track_id = self.next_id("turn")
        self.track(track_id, "car", [(at_s - 1.5, {}), (at_s, {"zones": [crosswalk]}), (at_s + 2.5, {}),
                                     (at_s + 3, {})])
        if expected:
            self.expect("yield_crosswalk", track_id)

    def parkers(self) -> None:
        for index in range(20):
            at_s = 60 + index * (self.duration_s - 900) / 20
            stay_s = self.rng.uniform(360, 600) if index % 3 == 0 else self.rng.uniform(30, 240)
            track_id = self.next_id("park")
            steps: list[tuple[float, dict[str, Any]]] = [(at_s, {"zones": ["sidewalk_ne"]})]
            stopped = at_s + 5
            steps += [(stopped + t, {"zones": ["sidewalk_ne"], "stationary": True})
                      for t in range(0, int(stay_s), 60)]
            steps += [(stopped + stay_s, {"zones": ["sidewalk_ne"]}), (stopped + stay_s + 5, {})]
            self.track(track_id, "car", steps)
            if stay_s >= 300:
                self.expect("illegal_parking", track_id)

    def riders(self) -> None:
        for index in range(120):
            at_s = 30 + index * (self.duration_s - 90) / 120
            wrong = self.rng.random() < 0.15
            helmet = self.rng.random() >= 0.15
            label = "e-bike" if index % 4 else "motorcycle"
            track_id = self.next_id("ride")
            direction = -1 if wrong else 1
            y0 = 40.0 if wrong else 0.0
            steps = [(at_s + t, {"zones": ["bike_lane"], "position": [1.0, y0 + direction * 4.0 * t],
                                 "helmet": helmet}) for t in range(0, 10)]
            self.track(track_id, label, [*steps, (at_s + 10, {})])
            if wrong:
                self.expect("wrong_way", track_id)
            if not helmet:
                self.expect("no_helmet", track_id)

    def detector(self) -> None:
        # Minutes jammed; (45, 47) is only 2 intervals: no incident.
        jams = [(10, 18), (30, 34), (45, 47), (52, 57)]
        for minute in range(self.duration_s // 60):
            jammed = any(start <= minute < end for start, end in jams)
            occupancy = self.rng.uniform(35, 80) if jammed else self.rng.uniform(5, 25)
            speed = self.rng.uniform(3, 12) if jammed else self.rng.uniform(25, 50)
            # A detector reports at the end of its interval (docs/formats.md): this minute's reading.
            self.publish((minute + 1) * 60, DETECTOR, "detector", {
                "intersection": INTERSECTION, "approach": "north", "occupancy_pct": round(occupancy, 1),
                "speed_kmh": round(speed, 1), "flow_veh_h": int(self.rng.uniform(300, 1200)),
                "interval_s": 60})
        for start, end in jams:
            if end - start >= 3:
                self.expect("congestion", str(self.start_ms + start * 60_000))

    def smart_camera(self) -> None:
        for index in range(15):
            at_s = 100 + index * 220
            plate = f"粤B{70000 + index}"
            for repeat in range(self.rng.randint(1, 3)):  # re-sent while the car is in view
                self.publish(at_s + repeat * 20, SMART_CAMERA, "camera_violation", {
                    "violation_code": "1039", "violation_type": "illegal_parking", "plate": plate,
                    "lane": 1, "evidence_url": f"http://scam.local/{index}-{repeat}.jpg"},
                    event_id=f"scam-{index}-{repeat}")
            self.expect("illegal_parking", f"{plate}@{self.start_ms + at_s * 1000}")


def generate(duration_s: int = 3600, seed: int = 1) -> Feed:
    builder = _Builder(seed, duration_s)
    builder.signals()
    builder.through_cars()
    builder.pedestrians_crossing()
    builder.right_turners()
    builder.parkers()
    builder.riders()
    builder.detector()
    builder.smart_camera()
    return builder.feed


def write_recording(feed: Feed, path: Path) -> int:
    records = feed.recording()
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Recording to write (JSON lines).")
    parser.add_argument("--config-out", type=Path, help="Also write a configuration that judges it.")
    parser.add_argument("--duration-s", type=int, default=3600)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    feed = generate(args.duration_s, args.seed)
    count = write_recording(feed, args.out)
    if args.config_out:
        config = {**scenario_config(), "pipeline": {"allowed_lateness_ms": 2000}}
        args.config_out.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    print(f"{count} messages, {feed.truth.total()} expected violations -> {args.out}")


if __name__ == "__main__":
    main()
