"""A realistic mixed feed over MQTT, for demos and benchmarks.

It simulates every registered device of a kind it knows: bins fill up at their own pace and are emptied
by a truck some readings after they pass 90%, air sensors drift around a district's PM2.5/PM10 level,
traffic detectors follow a peak. Now and then a bin smoulders (temperature above 60 C for a while) or
its lid is left open; water probes drift around their body's condition (every other probe is in a
black-odorous body); toilet odour sensors peak with use; a construction-site sensor raises dust. Bins
with a registered `install.bin_depth_mm` report an ultrasonic distance instead of a fill level. A small
share of messages is malformed on purpose, so the dead-letter list shows what bad input looks like.
Publishes the native format on citywatch/events/{device_id}.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.settings import DeviceSettings, SimulatorSettings

log = logging.getLogger(__name__)

TOPIC_PREFIX = "citywatch/events/"


# Per bin reading: chance that a fire starts or a lid is left open (a few a day at 1 s per round).
FIRE_CHANCE = 1 / 20_000
LID_CHANCE = 1 / 5_000


@dataclass
class _Bin:
    device_id: str
    fill_pct: float
    rate_pct: float
    readings_over_90: int = 0
    empty_after: int = 3
    depth_mm: float | None = None
    # Readings left of a fire / of a lid left open.
    burning: int = 0
    lid_open: int = 0


@dataclass
class _Probe:
    """A water-body probe; `polluted` probes sit in a black-odorous body."""

    device_id: str
    polluted: bool
    do_mgl: float
    orp_mv: float


class FeedGenerator:
    """Produces one round of readings (one per simulated device) per call; deterministic for a seed."""

    def __init__(self, devices: Sequence[DeviceSettings], settings: SimulatorSettings) -> None:
        self.rng = random.Random(settings.seed)
        self.bad_ratio = settings.bad_message_ratio
        self.bins = [
            _Bin(d.device_id, self.rng.uniform(55, 88), self.rng.uniform(1.0, 4.0),
                 empty_after=self.rng.randint(2, 6), depth_mm=d.install.get("bin_depth_mm"))
            for d in devices if d.kind == "bin"
        ]
        self.air = [d.device_id for d in devices if d.kind == "air"]
        self.construction = {d.device_id for d in devices
                             if d.kind == "air" and d.tags.get("site") == "construction"}
        self.detectors = [d.device_id for d in devices if d.kind == "detector"]
        # Every other probe (the first included) sits in a black-odorous body, so the demo shows one.
        water = [d for d in devices if d.kind == "water"]
        self.probes = [_Probe(d.device_id, i % 2 == 0, 5.0, 150.0) for i, d in enumerate(water)]
        self.toilets = [d.device_id for d in devices if d.kind == "odour"]
        self._pm25 = {device_id: self.rng.uniform(20, 70) for device_id in self.air}

    def round(self, now_ms: int) -> list[tuple[str, bytes]]:
        messages = [self._bin(b, now_ms) for b in self.bins]
        messages += [self._air(device_id, now_ms) for device_id in self.air]
        messages += [self._detector(device_id, now_ms) for device_id in self.detectors]
        messages += [self._water(probe, now_ms) for probe in self.probes]
        messages += [self._odour(device_id, now_ms) for device_id in self.toilets]
        return [self._maybe_corrupt(topic, payload) for topic, payload in messages]

    def _bin(self, b: _Bin, now_ms: int) -> tuple[str, bytes]:
        if b.fill_pct >= 90:
            b.readings_over_90 += 1
        if b.readings_over_90 > b.empty_after:  # the truck came
            b.fill_pct, b.readings_over_90 = self.rng.uniform(0, 8), 0
            b.empty_after = self.rng.randint(2, 6)
        else:
            b.fill_pct = min(100.0, b.fill_pct + b.rate_pct * self.rng.uniform(0.5, 1.5))
        if b.burning == 0 and self.rng.random() < FIRE_CHANCE:
            b.burning = self.rng.randint(10, 60)
        if b.lid_open == 0 and self.rng.random() < LID_CHANCE:
            b.lid_open = self.rng.randint(60, 1800)
        temperature = self.rng.uniform(62, 85) if b.burning else self.rng.gauss(22, 3)
        b.burning, b.lid_open = max(0, b.burning - 1), max(0, b.lid_open - 1)
        attributes: dict[str, Any] = {
            "temperature_c": round(temperature, 1),
            "tilt_deg": round(abs(self.rng.gauss(0, 2)), 1),
            "battery_pct": 87,
            "lid_open": b.lid_open > 0,
        }
        if b.depth_mm is None:
            attributes["fill_pct"] = round(b.fill_pct, 1)
        else:  # an ultrasonic sensor in the lid: distance down to the rubbish, with a little noise
            distance = b.depth_mm * (1 - b.fill_pct / 100) + self.rng.gauss(0, 3)
            attributes["distance_mm"] = round(min(b.depth_mm, max(0.0, distance)))
        return self._message(b.device_id, "bin", now_ms, attributes)

    def _air(self, device_id: str, now_ms: int) -> tuple[str, bytes]:
        level = self._pm25[device_id] = max(3.0, self._pm25[device_id] + self.rng.gauss(0, 2))
        pm10 = level * self.rng.uniform(1.5, 2.0)
        if device_id in self.construction:  # earthworks: coarse dust on top of the city's level
            pm10 += self.rng.uniform(80, 160)
        attributes = {"pm25_ugm3": round(level, 1), "pm10_ugm3": round(pm10, 1)}
        return self._message(device_id, "air", now_ms, attributes)

    def _water(self, probe: _Probe, now_ms: int) -> tuple[str, bytes]:
        # Polluted water hovers around the lightly black-odorous band, clean water well above it.
        target_do, target_orp = (1.2, -80.0) if probe.polluted else (6.0, 180.0)
        probe.do_mgl = max(0.0, probe.do_mgl + 0.05 * (target_do - probe.do_mgl) + self.rng.gauss(0, 0.05))
        probe.orp_mv += 0.05 * (target_orp - probe.orp_mv) + self.rng.gauss(0, 3)
        transparency = self.rng.uniform(12, 22) if probe.polluted else self.rng.uniform(40, 60)
        attributes = {
            "transparency_cm": round(transparency, 1),
            "do_mgl": round(probe.do_mgl, 2),
            "orp_mv": round(probe.orp_mv, 1),
            "nh3n_mgl": round(self.rng.uniform(8.5, 12) if probe.polluted else self.rng.uniform(0.3, 1.5), 2),
            "depth_cm": 80,
        }
        return self._message(probe.device_id, "water", now_ms, attributes)

    def _odour(self, device_id: str, now_ms: int) -> tuple[str, bytes]:
        # Ammonia peaks with use: now and then a few minutes above the class II limit (about 1.4 ppm).
        busy = (now_ms // 60_000) % 30 < 3
        nh3 = self.rng.uniform(1.6, 3.0) if busy else self.rng.uniform(0.1, 0.8)
        attributes = {"nh3_ppm": round(nh3, 2), "h2s_ppm": round(self.rng.uniform(0.0, 0.004), 4)}
        return self._message(device_id, "odour", now_ms, attributes)

    def _detector(self, device_id: str, now_ms: int) -> tuple[str, bytes]:
        hour = time.gmtime(now_ms / 1000).tm_hour
        peak = 1.0 if hour in (0, 1, 9, 10) else 0.4  # 08-09 and 17-18 in UTC+8
        occupancy = min(100.0, max(0.0, self.rng.gauss(35 * peak, 8)))
        attributes = {
            "occupancy_pct": round(occupancy, 1),
            "speed_kmh": round(max(2.0, 55 - occupancy * 0.8 + self.rng.gauss(0, 4)), 1),
            "flow_veh_h": int(max(0, self.rng.gauss(900 * peak, 120))),
        }
        return self._message(device_id, "detector", now_ms, attributes)

    @staticmethod
    def _message(device_id: str, kind: str, now_ms: int, attributes: dict[str, Any]) -> tuple[str, bytes]:
        body = {"device_id": device_id, "kind": kind, "time": now_ms, "attributes": attributes}
        return TOPIC_PREFIX + device_id, json.dumps(body).encode()

    def _maybe_corrupt(self, topic: str, payload: bytes) -> tuple[str, bytes]:
        if self.rng.random() >= self.bad_ratio:
            return topic, payload
        return topic, self.rng.choice([
            payload[: len(payload) // 2],  # truncated in transit
            payload.replace(b'"fill_pct"', b'"fill_pct":"full","x"', 1).replace(b'"pm25', b'"pm25x', 1),
            b'{"device_id": "' + topic.rsplit("/", 1)[-1].encode() + b'", "kind": "bin"}',  # no time
        ])


class Simulator:
    """Publishes a FeedGenerator round every interval through `publish(topic, payload)` on a thread."""

    def __init__(self, generator: FeedGenerator, publish: Callable[[str, bytes], object], interval_s: float,
                 now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.generator = generator
        self.publish = publish
        self.interval_s = interval_s
        self.now_ms = now_ms
        self.published = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="citywatch-simulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            for topic, payload in self.generator.round(self.now_ms()):
                self.publish(topic, payload)
                self.published += 1
            self._stop.wait(self.interval_s)
