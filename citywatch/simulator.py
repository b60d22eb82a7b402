"""A realistic mixed feed over MQTT, for demos and benchmarks.

It simulates every registered device of a kind it knows: bins fill up at their own pace and are emptied
by a truck some readings after they pass 90%, air sensors drift around a district's PM2.5/PM10 level,
traffic detectors follow a peak. A small share of messages is malformed on purpose, so the dead-letter
list shows what bad input looks like. Publishes the native format on citywatch/events/{device_id}.
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

from citywatch.settings import DeviceSettings, SimulatorSettings

log = logging.getLogger(__name__)

TOPIC_PREFIX = "citywatch/events/"


@dataclass
class _Bin:
    device_id: str
    fill_pct: float
    rate_pct: float
    readings_over_90: int = 0
    empty_after: int = 3


class FeedGenerator:
    """Produces one round of readings (one per simulated device) per call; deterministic for a seed."""

    def __init__(self, devices: Sequence[DeviceSettings], settings: SimulatorSettings) -> None:
        self.rng = random.Random(settings.seed)
        self.bad_ratio = settings.bad_message_ratio
        self.bins = [
            _Bin(d.device_id, self.rng.uniform(55, 88), self.rng.uniform(1.0, 4.0),
                 empty_after=self.rng.randint(2, 6))
            for d in devices if d.kind == "bin"
        ]
        self.air = [d.device_id for d in devices if d.kind == "air"]
        self.detectors = [d.device_id for d in devices if d.kind == "detector"]
        self._pm25 = {device_id: self.rng.uniform(20, 70) for device_id in self.air}

    def round(self, now_ms: int) -> list[tuple[str, bytes]]:
        messages = [self._bin(b, now_ms) for b in self.bins]
        messages += [self._air(device_id, now_ms) for device_id in self.air]
        messages += [self._detector(device_id, now_ms) for device_id in self.detectors]
        return [self._maybe_corrupt(topic, payload) for topic, payload in messages]

    def _bin(self, b: _Bin, now_ms: int) -> tuple[str, bytes]:
        if b.fill_pct >= 90:
            b.readings_over_90 += 1
        if b.readings_over_90 > b.empty_after:  # the truck came
            b.fill_pct, b.readings_over_90 = self.rng.uniform(0, 8), 0
            b.empty_after = self.rng.randint(2, 6)
        else:
            b.fill_pct = min(100.0, b.fill_pct + b.rate_pct * self.rng.uniform(0.5, 1.5))
        attributes = {
            "fill_pct": round(b.fill_pct, 1),
            "temperature_c": round(self.rng.gauss(22, 3), 1),
            "tilt_deg": round(abs(self.rng.gauss(0, 2)), 1),
            "battery_pct": 87,
        }
        return self._message(b.device_id, "bin", now_ms, attributes)

    def _air(self, device_id: str, now_ms: int) -> tuple[str, bytes]:
        level = self._pm25[device_id] = max(3.0, self._pm25[device_id] + self.rng.gauss(0, 2))
        attributes = {"pm25_ugm3": round(level, 1), "pm10_ugm3": round(level * self.rng.uniform(1.5, 2.0), 1)}
        return self._message(device_id, "air", now_ms, attributes)

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
