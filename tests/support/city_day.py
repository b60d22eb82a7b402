"""A generated day of a city, as a recording, and the live pipeline run over it (for replay tests).

The day (2025-11-26, a Wednesday, Asia/Shanghai) mixes:
- sanitation and environment: the demo simulator's bins, air, water and toilet sensors of the default
  registry, a round every `ROUND_S` with each device at its own offset in the round, every device
  expected every `ROUND_S` (offline after 3 rounds of silence), two bins with their lid left open;
- devices going silent: a few sanitation devices drop out for a while (one until the end of the day), and
  a beacon reporting every second is on only in short windows, so it goes offline between them;
- traffic: an hour (10:00-11:00) of the busy intersection of bench/intersection_feed.py (signals, a
  camera's tracks, a detector, a smart camera);
- delivery as over a real network: each message received 50 ms to 2.6 s after its event time (so some
  arrive out of order beyond the 2 s allowed lateness and are late), the recording in receive order.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

from bench.intersection_feed import generate, scenario_config
from citywatch.replay import Message
from citywatch.simulation import FeedGenerator
from core.metrics import Metrics
from core.models import Violation
from core.settings import Settings, load_settings
from ingest.codecs.catalogue import build_codec
from ingest.geo import GeoTagger
from ingest.normalizer import Normalizer
from ingest.registry import DeviceRegistry
from processors.catalogue import build_rules
from processors.engine import Engine
from processors.inprocess_bus import InProcessBus
from processors.worker import ProcessorWorker
from store.sqlite_store import SqliteStore

CITY = ZoneInfo("Asia/Shanghai")
DAY_START_MS = int(datetime(2025, 11, 26, tzinfo=CITY).timestamp() * 1000)
DAY_MS = 24 * 3_600_000
ROUND_S = 300
SANITATION_KINDS = {"bin", "air", "water", "odour", "detector"}
BEACON = "beacon-1"
# (device, from, to) in local "HH:MM:SS": the device sends nothing then.
SILENCES = [("bin-0201", "03:00:00", "04:30:00"), ("wc-0001", "12:00:00", "12:20:00"),
            ("site-0001", "06:00:00", "06:40:00"), ("water-0001", "20:00:00", "24:00:00")]
# (bin, from, to): its lid is reported open then (more than the 15 min limit, and less).
LIDS_OPEN = [("bin-0003", "14:00:00", "14:40:00"), ("bin-0004", "15:00:00", "15:10:00")]
# The beacon (every second, offline after 3 s) reports only in these windows.
BEACON_ON = [("02:00:00", "02:01:00"), ("10:30:00", "10:30:20"), ("10:30:40", "10:31:00"),
             ("18:00:00", "18:00:30")]


def local_ms(text: str) -> int:
    hours, minutes, seconds = (int(part) for part in text.split(":"))
    return DAY_START_MS + ((hours * 60 + minutes) * 60 + seconds) * 1000


@dataclass
class CityDay:
    settings: Settings
    messages: list[Message]  # in receive order

    def between(self, start: str, end: str) -> list[Message]:
        """The messages received in [start, end) local time: a recording of that window."""
        return [m for m in self.messages if local_ms(start) <= m.received_ms < local_ms(end)]

    def write(self, path: Path) -> None:
        with path.open("w", encoding="utf-8") as out:
            for message in self.messages:
                out.write(json.dumps({"topic": message.topic, "payload": message.payload.decode(),
                                      "time": message.received_ms}) + "\n")


def city_day(seed: int = 11) -> CityDay:
    base = load_settings()
    devices = [device.model_dump(mode="json") for device in base.devices]
    for device in devices:
        if device["kind"] in SANITATION_KINDS:
            device["expected_interval_s"] = ROUND_S
    scenario = scenario_config()
    devices += scenario["devices"]
    devices.append({"device_id": BEACON, "kind": "bin", "expected_interval_s": 1, "lat": 22.54, "lon": 114.05,
                    "tags": {"district": "futian"}})
    settings = base.with_overrides(devices=devices, traffic=scenario["traffic"], source="the city day")
    rng = random.Random(seed)
    sent: list[tuple[int, str, bytes]] = []  # (event ms, topic, payload)
    sent += _sanitation(settings, rng)
    sent += _beacon()
    sent += [(time_ms, topic, json.dumps(body).encode())
             for time_ms, topic, body in generate(duration_s=3600, seed=seed).messages]
    silent = [(device, local_ms(start), local_ms(end)) for device, start, end in SILENCES]
    kept = [(time_ms, topic, payload) for time_ms, topic, payload in sent
            if not any(topic.endswith("/" + device) and start <= time_ms < end
                       for device, start, end in silent)]
    received = sorted(((time_ms + rng.randint(50, 2600), topic, payload)
                       for time_ms, topic, payload in kept), key=lambda message: message[0])
    return CityDay(settings, [Message(topic, payload, received_ms)
                              for received_ms, topic, payload in received])


def _sanitation(settings: Settings, rng: random.Random) -> list[tuple[int, str, bytes]]:
    simulated = [d for d in settings.devices if d.kind in SANITATION_KINDS and d.device_id != BEACON]
    generator = FeedGenerator(simulated, settings.simulator.model_copy(update={"seed": rng.randint(0, 999)}))
    offsets = {d.device_id: rng.randint(0, ROUND_S * 1000 - 1) for d in simulated}
    messages = []
    for round_ms in range(DAY_START_MS, DAY_START_MS + DAY_MS, ROUND_S * 1000):
        for topic, payload in generator.round(round_ms):
            offset = offsets[topic.rsplit("/", 1)[-1]]
            try:
                body = json.loads(payload)
            except ValueError:  # the simulator's deliberately broken messages stay as they are
                messages.append((round_ms + offset, topic, payload))
                continue
            if isinstance(body.get("time"), int):
                body["time"] += offset
                if any(body["device_id"] == device and local_ms(start) <= body["time"] < local_ms(end)
                       for device, start, end in LIDS_OPEN):
                    body["attributes"]["lid_open"] = True
            messages.append((round_ms + offset, topic, json.dumps(body).encode()))
    return messages


def _beacon() -> list[tuple[int, str, bytes]]:
    messages = []
    for start, end in BEACON_ON:
        for time_ms in range(local_ms(start), local_ms(end), 1000):
            body = {"device_id": BEACON, "kind": "bin", "time": time_ms, "attributes": {"battery_pct": 90}}
            messages.append((time_ms, f"citywatch/events/{BEACON}", json.dumps(body).encode()))
    return messages


def live_run(settings: Settings, messages: Iterable[Message], data_dir: Path,
             next_poll_ms: Callable[[int], int]) -> tuple[list[Violation], Metrics]:
    """The live pipeline of `citywatch up` (normalizer, in-process bus, processor worker, SQLite store)
    over the messages, each received at its recorded time: the processor's clock follows the receive
    times, steps as each message arrives and polls idle at `next_poll_ms(now)` in between; a clean stop
    at the end. Returns the violation changes the worker published, and its metrics."""
    registry = DeviceRegistry(settings.devices)
    geo = GeoTagger.from_settings(settings.geo)
    normalizer = Normalizer(settings.ingest, settings.mqtt.max_payload_bytes, registry,
                            partial(build_codec, devices=registry, vendor_maps=settings.vendor_maps),
                            tagger=geo.tag_event)
    bus = InProcessBus(settings.bus.queue_events)
    engine = Engine(build_rules(settings.rules, registry, settings.devices, traffic=settings.traffic),
                    allowed_lateness_ms=settings.pipeline.allowed_lateness_ms,
                    dedup_capacity=settings.pipeline.dedup_window_events,
                    time_zone=settings.traffic.time_zone)
    store = SqliteStore.in_directory(data_dir)
    metrics = Metrics()
    published: list[Violation] = []
    clock = {"now_ms": 0}
    consumer = bus.consumer()
    worker = ProcessorWorker(consumer, engine, store, metrics, batch_events=settings.pipeline.batch_events,
                             now_ms=lambda: clock["now_ms"], tag_violation=geo.tag_violation,
                             on_violations=[published.extend])
    producer = bus.producer()

    def poll() -> None:
        worker.step(consumer.poll(settings.pipeline.batch_events, 0))

    try:
        for message in messages:
            if clock["now_ms"]:
                while (poll_ms := next_poll_ms(clock["now_ms"])) < message.received_ms:
                    clock["now_ms"] = poll_ms
                    poll()
            clock["now_ms"] = max(clock["now_ms"], message.received_ms)
            handled = normalizer.handle(message.topic, message.payload, message.received_ms)
            producer.send(handled.events, handled.dead_letters)
            poll()
        bus.close()
        worker.start()  # the clean stop: drains the closed bus and judges what is still held
        worker.stop()
        assert worker.error is None, worker.error
    finally:
        store.close()
    return published, metrics
