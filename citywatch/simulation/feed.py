"""The demo city's feed: every simulated device together, and the thread that publishes it.

One module per kind of device, each with one job (bins, environment, signals, cameras); this one puts
their messages together round by round, adds the deliberately broken messages, and publishes. Each part
draws from its own random stream derived from the seed, so the feed is deterministic for a seed and a
change to one kind of device does not change what the others send.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from citywatch.simulation import wire
from citywatch.simulation.bins import Bins
from citywatch.simulation.cameras import Cameras
from citywatch.simulation.environment import Environment
from citywatch.simulation.schedule import Timeline
from citywatch.simulation.signals import PEAK_HOURS, Intersections
from core.settings import DeviceSettings, SimulatorSettings
from core.traffic_settings import TrafficSettings

log = logging.getLogger(__name__)


class FeedGenerator:
    """`history(now_ms)` once, then `round(now_ms)` per step of the simulated clock (any step: scripted
    devices report at their own times, citywatch/simulation/schedule.py). Deterministic for a seed."""

    def __init__(self, devices: Sequence[DeviceSettings], settings: SimulatorSettings,
                 traffic: TrafficSettings | None = None) -> None:
        devices = list(devices)
        traffic = traffic or TrafficSettings()
        self.rng = random.Random(f"{settings.seed}:corrupt")
        self.bad_ratio = settings.bad_message_ratio
        self.bins = Bins(devices, random.Random(f"{settings.seed}:bins"))
        self.environment = Environment(devices, random.Random(f"{settings.seed}:environment"))
        # Signals and cameras share one timeline, so their messages come out in event-time order: a camera
        # message is judged against the phase its intersection's controller reported before it.
        self.timeline = Timeline()
        self.intersections = Intersections(devices, traffic, random.Random(f"{settings.seed}:signals"),
                                           self.timeline)
        self.cameras = Cameras(devices, traffic, random.Random(f"{settings.seed}:cameras"), self.timeline)
        # Detectors not placed at an intersection report in the native format, following the day's peaks.
        self.loose_detectors = [d.device_id for d in devices
                                if d.kind == "detector" and not d.tags.get("intersection")]
        self._detector_rng = random.Random(f"{settings.seed}:loose-detectors")

    def history(self, now_ms: int) -> list[wire.Message]:
        """Readings from before `now_ms` that incidents in progress at start need (each part's `history`
        says which); publish them before the first round."""
        return self.bins.history(now_ms) + self.environment.history(now_ms)

    def round(self, now_ms: int) -> list[wire.Message]:
        # Sensors read once a round; their readings may be corrupted in transit (the dead-letter list
        # shows what bad input looks like). Scripted traffic is kept whole: a lost signal change would
        # hide the scenes timed against it.
        readings = self.bins.round(now_ms) + self.environment.round(now_ms)
        readings += [self._detector(device_id, now_ms) for device_id in self.loose_detectors]
        messages = [self._maybe_corrupt(topic, payload) for topic, payload in readings]
        self.intersections.schedule(now_ms)
        self.cameras.schedule(now_ms)
        return messages + self.timeline.due(now_ms)

    def _detector(self, device_id: str, now_ms: int) -> wire.Message:
        hour = datetime.fromtimestamp(now_ms / 1000, UTC).hour
        peak = 1.0 if (hour + 8) % 24 in PEAK_HOURS else 0.4  # UTC+8 local time
        occupancy = min(100.0, max(0.0, self._detector_rng.gauss(35 * peak, 8)))
        return wire.native(device_id, "detector", now_ms, {
            "occupancy_pct": round(occupancy, 1),
            "speed_kmh": round(max(2.0, 55 - occupancy * 0.8 + self._detector_rng.gauss(0, 4)), 1),
            "flow_veh_h": int(max(0, self._detector_rng.gauss(900 * peak, 120))),
        })

    def _maybe_corrupt(self, topic: str, payload: bytes) -> wire.Message:
        if self.rng.random() >= self.bad_ratio:
            return topic, payload
        return topic, self.rng.choice([
            payload[: len(payload) // 2],  # truncated in transit
            payload.replace(b'"fill_pct"', b'"fill_pct":"full","x"', 1).replace(b'"pm25', b'"pm25x', 1),
            b'{"device_id": "' + topic.rsplit("/", 1)[-1].encode() + b'", "kind": "bin"}',  # no time
        ])


class Simulator:
    """Publishes the generator's history, then a round every interval, through `publish(topic, payload)`
    on a thread."""

    def __init__(self, generator: FeedGenerator, publish: Callable[[str, bytes], object], interval_s: float,
                 now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
                 ready: Callable[[], bool] = lambda: True) -> None:
        """`ready`: whether the receiving side listens; nothing is published before (the history would be
        lost on a broker that keeps nothing for a subscriber that has not subscribed yet)."""
        self.generator = generator
        self.ready = ready
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
        while not self.ready():
            if self._stop.wait(0.05):
                return
        history = self.generator.history(self.now_ms())
        for topic, payload in history:
            self.publish(topic, payload)
        self.published += len(history)
        log.info("simulator: published %d readings of the hours before start", len(history))
        while not self._stop.is_set():
            for topic, payload in self.generator.round(self.now_ms()):
                self.publish(topic, payload)
                self.published += 1
            self._stop.wait(self.interval_s)
