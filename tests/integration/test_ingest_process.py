"""`citywatch up`'s ingest in a process of its own, against a real Mosquitto: what it receives reaches the
bus in order and counted, acknowledged once; devices changed in the parent are the child's too; a full
bus holds the broker back without losing anything; a killed child is started again and what it had not
acknowledged arrives; and, with `citywatch up` as a real process, readiness shows the child's death and a
service manager's SIGTERM to the whole group stops it in order."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from citywatch.ingest_process import IngestProcess
from core.metrics import Metrics
from core.models import Event
from core.settings import DeviceSettings, Settings
from ingest.registry import DeviceRegistry
from processors.bus import Batch
from processors.inprocess_bus import InProcessBus
from tests.conftest import PublisherFactory
from tests.support.process import CitywatchProcess, bins
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


class Ingest:
    """An IngestProcess onto an in-process bus, and what the test has taken off the bus."""

    def __init__(self, url: str, prefix: str, client_id: str, capacity: int = 100_000,
                 devices: tuple[str, ...] = ("bin-1",)) -> None:
        parsed = urlparse(url)
        self.settings = Settings().with_overrides(
            mqtt__client_id=client_id, ingest__routes=[{"pattern": f"{prefix}/#", "codec": "native"}])
        self.metrics = Metrics()
        self.registry = DeviceRegistry(DeviceSettings(device_id=d, kind="bin") for d in devices)
        self.bus = InProcessBus(capacity)
        self.consumer = self.bus.consumer()
        self.process = IngestProcess(self.settings, host=parsed.hostname or "127.0.0.1",
                                     port=parsed.port or 1883, registry=self.registry,
                                     producer=self.bus.producer(), metrics=self.metrics)
        self.taken = Batch()

    def start(self) -> Ingest:
        self.process.start()
        wait_for(lambda: self.process.subscribed, 15, message="the ingest process subscribed")
        return self

    def take(self, events: int, dead_letters: int = 0, timeout_s: float = 15) -> Batch:
        def enough() -> bool:
            batch = self.consumer.poll(100_000, 0.05)
            self.taken.events += batch.events
            self.taken.dead_letters += batch.dead_letters
            return len(self.taken.events) >= events and len(self.taken.dead_letters) >= dead_letters
        wait_for(enough, timeout_s, message=f"{events} events and {dead_letters} dead letters on the bus")
        return self.taken

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


NOW_MS = int(time.time() * 1000)


def reading(device_id: str, offset_ms: int, fill_pct: float = 50.0) -> bytes:
    return json.dumps({"device_id": device_id, "kind": "bin", "time": NOW_MS + offset_ms,
                       "attributes": {"fill_pct": fill_pct}}).encode()


@pytest.fixture
def prefix() -> str:
    return f"ingest-process-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def ingests() -> Iterator[list[Ingest]]:
    started: list[Ingest] = []
    yield started
    for ingest in started:
        ingest.process.stop()
        ingest.bus.close()


def fill_levels(events: list[Event]) -> list[float]:
    return [event.attributes["fill_pct"] for event in events]


def test_messages_reach_the_bus_in_order_counted_and_acknowledged_once(
        mosquitto_url: str, mqtt_publisher: PublisherFactory, prefix: str, ingests: list[Ingest]) -> None:
    client_id = f"cw-{prefix}"
    first = Ingest(mosquitto_url, prefix, client_id)
    ingests.append(first.start())
    publisher = mqtt_publisher(mosquitto_url)
    for n in range(300):
        publisher.publish(f"{prefix}/bin-1", reading("bin-1", 1_000 + n, float(n % 100)), qos=1)
    publisher.publish(f"{prefix}/bin-1", b"{not json", qos=1).wait_for_publish(5)
    taken = first.take(300, 1)
    assert fill_levels(taken.events) == [float(n % 100) for n in range(300)]
    assert taken.dead_letters[0].reason == "malformed_json"
    wait_for(lambda: first.metric("citywatch_mqtt_messages_received_total") == 301, 5,
             message="301 messages counted")
    assert first.metric("citywatch_events_accepted_total", kind="bin") == 300
    assert first.metric("citywatch_dead_letters_total", reason="malformed_json") == 1
    wait_for(lambda: first.process.unacked == 0, 5, message="everything acknowledged")
    first.process.stop()
    ingests.remove(first)

    # Same client id, same (persistent) session: a message acknowledged before the stop is not sent again.
    second = Ingest(mosquitto_url, prefix, client_id)
    ingests.append(second.start())
    publisher.publish(f"{prefix}/bin-1", reading("bin-1", 5_000, 77.0), qos=1).wait_for_publish(5)
    assert fill_levels(second.take(1).events) == [77.0]
    assert second.consumer.poll(100, 0.5).events == []


def test_a_device_changed_in_the_parent_is_judged_by_the_child_as_changed(
        mosquitto_url: str, mqtt_publisher: PublisherFactory, prefix: str, ingests: list[Ingest]) -> None:
    ingest = Ingest(mosquitto_url, prefix, f"cw-{prefix}")
    ingests.append(ingest.start())
    publisher = mqtt_publisher(mosquitto_url)
    publisher.publish(f"{prefix}/bin-new", reading("bin-new", 1_000), qos=1).wait_for_publish(5)
    assert ingest.take(0, 1).dead_letters[0].reason == "unknown_device"

    ingest.registry.upsert(DeviceSettings(device_id="bin-new", kind="bin", lat=22.5, lon=114.0,
                                          tags={"district": "north"}))
    publisher.publish(f"{prefix}/bin-new", reading("bin-new", 2_000), qos=1).wait_for_publish(5)
    [event] = ingest.take(1).events
    assert event.tags["district"] == "north" and event.location is not None

    ingest.registry.deactivate("bin-new")
    publisher.publish(f"{prefix}/bin-new", reading("bin-new", 3_000), qos=1).wait_for_publish(5)
    assert [letter.reason for letter in ingest.take(1, 2).dead_letters] == ["unknown_device"] * 2


def test_a_device_change_is_in_effect_in_the_child_when_the_call_returns(
        mosquitto_url: str, mqtt_publisher: PublisherFactory, prefix: str, ingests: list[Ingest]) -> None:
    """The registry's call returns once the child applied the change, so a message published right after
    it is judged by it (it raced the change before)."""
    ingest = Ingest(mosquitto_url, prefix, f"cw-{prefix}")
    ingests.append(ingest.start())
    publisher = mqtt_publisher(mosquitto_url)
    for round_ in range(10):
        ingest.registry.upsert(DeviceSettings(device_id="bin-r", kind="bin", lat=22.5, lon=114.0))
        publisher.publish(f"{prefix}/bin-r", reading("bin-r", 10 * round_), qos=1)
        assert len(ingest.take(round_ + 1, round_).events) == round_ + 1
        ingest.registry.deactivate("bin-r")
        publisher.publish(f"{prefix}/bin-r", reading("bin-r", 10 * round_ + 5), qos=1)
        letters = ingest.take(round_ + 1, round_ + 1).dead_letters
        assert [letter.reason for letter in letters] == ["unknown_device"] * (round_ + 1)
    assert len(ingest.take(10, 10).events) == 10


def test_a_device_change_does_not_wait_for_an_ingest_process_that_is_gone(
        mosquitto_url: str, prefix: str, ingests: list[Ingest]) -> None:
    ingest = Ingest(mosquitto_url, prefix, f"cw-{prefix}")
    ingests.append(ingest.start())
    pid = ingest.process.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: ingest.process.error is not None, 10, message="the death noticed")
    started = time.monotonic()
    ingest.registry.upsert(DeviceSettings(device_id="bin-late", kind="bin"))
    assert time.monotonic() - started < 1.0  # not the confirmation's 5 s: the next child reads the registry


def test_device_changes_made_while_the_ingest_process_restarts_reach_the_new_one(
        mosquitto_url: str, mqtt_publisher: PublisherFactory, prefix: str, ingests: list[Ingest]) -> None:
    """A device's tag is changed every few milliseconds while a killed child is replaced, until the new one
    is in place: the new child ends with the parent's last change (one made while it started went to the
    dead child's pipe before, and the new child kept the value it started with)."""
    ingest = Ingest(mosquitto_url, prefix, f"cw-{prefix}")
    ingests.append(ingest.start())
    first = ingest.process.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    changes = 0
    deadline = time.monotonic() + 20
    while ingest.process.pid in (None, first) and time.monotonic() < deadline:
        changes += 1
        ingest.registry.upsert(DeviceSettings(device_id="bin-t", kind="bin", tags={"change": str(changes)}))
        time.sleep(0.003)
    wait_for(lambda: ingest.process.subscribed, 10, message="the new ingest process subscribed")
    mqtt_publisher(mosquitto_url).publish(f"{prefix}/bin-t", reading("bin-t", 1_000), qos=1)
    [event] = ingest.take(1).events
    assert event.tags["change"] == str(changes)


def test_a_full_bus_holds_the_broker_back_and_loses_nothing(
        mosquitto_url: str, mqtt_publisher: PublisherFactory, prefix: str, ingests: list[Ingest]) -> None:
    ingest = Ingest(mosquitto_url, prefix, f"cw-{prefix}", capacity=20)
    ingests.append(ingest.start())
    publisher = mqtt_publisher(mosquitto_url)
    # More than the pipe and the child's producer hold (PENDING_ITEMS) beside a full bus.
    messages = 12_000
    for n in range(messages):
        publisher.publish(f"{prefix}/bin-1", reading("bin-1", n, float(n % 100)), qos=1)
    # Nobody takes from the bus: it fills, the hand-off waits, the child's pipe and producer fill, paho's
    # thread waits, and the rest stays with the broker, unacknowledged.
    wait_for(lambda: len(ingest.bus) == 20 and ingest.process.unacked > 0, 30,
             message="a full bus and messages left unacknowledged")
    taken = ingest.take(messages, timeout_s=60)
    assert [event.event_time_ms - NOW_MS for event in taken.events] == list(range(messages))


def test_a_killed_ingest_process_is_started_again_and_nothing_is_lost(
        mosquitto_url: str, mqtt_publisher: PublisherFactory, prefix: str, ingests: list[Ingest],
        caplog: pytest.LogCaptureFixture) -> None:
    ingest = Ingest(mosquitto_url, prefix, f"cw-{prefix}")
    ingests.append(ingest.start())
    publisher = mqtt_publisher(mosquitto_url)
    publisher.publish(f"{prefix}/bin-1", reading("bin-1", 1_000, 1.0), qos=1).wait_for_publish(5)
    ingest.take(1)
    first_pid = ingest.process.pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)
    wait_for(lambda: ingest.process.error is not None, 10, message="the exit noticed")
    assert "the ingest process exited (exit code -9)" in (ingest.process.error or "")
    # Published while no ingest runs: the broker keeps it for the session.
    publisher.publish(f"{prefix}/bin-1", reading("bin-1", 2_000, 2.0), qos=1).wait_for_publish(5)
    wait_for(lambda: ingest.process.pid not in (None, first_pid) and ingest.process.subscribed, 20,
             message="a new ingest process subscribed")
    assert ingest.process.error is None
    publisher.publish(f"{prefix}/bin-1", reading("bin-1", 3_000, 3.0), qos=1).wait_for_publish(5)
    # At least once: a message whose acknowledgement the kill cut off comes again (the rules drop the
    # repeat by its event id); none is missing and the order holds.
    wait_for(lambda: len(set(fill_levels(ingest.take(1).events))) == 3, 10, message="all three readings")
    levels = fill_levels(ingest.taken.events)
    assert list(dict.fromkeys(levels)) == [1.0, 2.0, 3.0]
    assert "starting it again" in caplog.text


def stored_fills(app: CitywatchProcess, device_id: str) -> list[float]:
    items = app.get("/v1/events", device=device_id, limit=100)["items"]
    return sorted(item["attributes"]["fill_pct"] for item in items)


def received(app: CitywatchProcess) -> float:
    for line in app.get_text("/metrics").splitlines():
        if line.startswith("citywatch_mqtt_messages_received_total "):
            return float(line.split()[1])
    raise AssertionError("no citywatch_mqtt_messages_received_total in /metrics")


@pytest.fixture
def city_config(mosquitto_url: str, prefix: str) -> dict[str, object]:
    return {"devices": bins("bin-1"), "pipeline": {"allowed_lateness_ms": 300},
            "mqtt": {"url": mosquitto_url, "client_id": f"cw-{prefix}"},
            "ingest": {"routes": [{"pattern": f"{prefix}/#", "codec": "native"}]}}


def test_citywatch_up_reports_a_killed_ingest_process_and_stores_what_was_sent_meanwhile(
        mosquitto_url: str, mqtt_publisher: PublisherFactory, prefix: str, city_config: dict[str, object],
        tmp_path: Path) -> None:
    app = CitywatchProcess(tmp_path, city_config).start()
    try:
        publisher = mqtt_publisher(mosquitto_url)
        publisher.publish(f"{prefix}/bin-1", reading("bin-1", 0, 10.0), qos=1).wait_for_publish(5)
        wait_for(lambda: stored_fills(app, "bin-1") == [10.0], 15, message="the first reading stored")
        ingest_pid = app.get("/v1/status")["ingest_process_pid"]
        os.kill(ingest_pid, signal.SIGKILL)

        def mqtt_component() -> dict[str, object] | None:
            readiness = httpx.get(app.base_url + "/readyz", timeout=5)
            mqtt = next(c for c in readiness.json()["components"] if c["name"] == "mqtt")
            return mqtt if readiness.status_code == 503 and not mqtt["ready"] else None

        down = wait_for(mqtt_component, 10, message="readiness reporting the ingest process down")
        assert down is not None and "the ingest process exited (exit code -9)" in str(down["detail"])
        publisher.publish(f"{prefix}/bin-1", reading("bin-1", 1_000, 20.0), qos=1).wait_for_publish(5)
        wait_for(lambda: app.ready() and app.get("/v1/status")["ingest_process_pid"] != ingest_pid, 20,
                 message="a new ingest process, and citywatch ready again")
        publisher.publish(f"{prefix}/bin-1", reading("bin-1", 2_000, 30.0), qos=1).wait_for_publish(5)
        wait_for(lambda: stored_fills(app, "bin-1") == [10.0, 20.0, 30.0], 15, message="all three stored")
        assert "starting it again" in app.log()
    finally:
        app.kill()


def test_a_sigterm_to_the_whole_group_stops_citywatch_up_in_order(
        mosquitto_url: str, mqtt_publisher: PublisherFactory, prefix: str, city_config: dict[str, object],
        tmp_path: Path) -> None:
    """A service manager signals every process of the service; the ingest process leaves its stop to
    citywatch, which hands over and acknowledges what was received first: the next run gets nothing again."""
    app = CitywatchProcess(tmp_path, city_config).start()
    try:
        publisher = mqtt_publisher(mosquitto_url)
        for n in range(50):
            publisher.publish(f"{prefix}/bin-1", reading("bin-1", n * 10, float(n)), qos=1)
        publisher.publish(f"{prefix}/bin-1", reading("bin-1", 600, 50.0), qos=1).wait_for_publish(5)
        wait_for(lambda: len(stored_fills(app, "bin-1")) == 51, 15, message="51 readings stored")
        assert app.process is not None
        os.killpg(app.process.pid, signal.SIGTERM)
        assert app.process.wait(30) == 0
        app.process = None
        assert "the ingest process exited" not in app.log()

        app.start()
        time.sleep(1.0)  # a redelivery would arrive at once, with the session
        assert received(app) == 0
    finally:
        app.kill()
