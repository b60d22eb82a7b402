"""Device registry changes across the roles of the Kafka set-up, through the compacted devices topic.

`/v1/devices` runs in the api role; ingest (which devices may send, their positions, tags and installation
parameters) and the processors (per-device thresholds) run in other processes. The api role sends every
change (create, update, deactivate) to the devices topic, keyed by device id, before it stores it, and
answers once Kafka has acknowledged it. Every role reads the topic from the beginning at start (compaction
keeps the latest settings of each device) and then follows it, applying each change to its own registry:
a bin registered through the API is judged by the running processors with its own thresholds, without a
restart. A role starts ingesting or judging only after it has applied what the topic held when it started.

Devices from the configuration are every role's starting point; a change from the topic replaces a
device's settings whole, so the API's latest word wins, as in `citywatch up` (ingest/device_admin.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kafka import KafkaProducer
from kafka.errors import KafkaError
from pydantic import ValidationError

from core.settings import DeviceSettings, KafkaSettings
from processors.kafka_bus import KafkaBusError, client_config
from processors.kafka_reader import Records, TopicReader

log = logging.getLogger(__name__)


class DeviceChangePublisher:
    def __init__(self, settings: KafkaSettings, client_id: str = "citywatch-devices") -> None:
        self.topic = settings.topics.devices
        self._producer = KafkaProducer(**client_config(settings, client_id), acks="all")

    def publish(self, device: DeviceSettings, timeout_s: float = 10.0) -> None:
        """Send one device's settings and wait for Kafka's acknowledgement (raises KafkaBusError)."""
        future = self._producer.send(self.topic, key=device.device_id.encode(),
                                     value=device.model_dump_json().encode())
        try:
            future.get(timeout=timeout_s)
        except KafkaError as exc:
            raise KafkaBusError(f"device {device.device_id!r} not sent to {self.topic}: {exc}") from exc

    def close(self) -> None:
        self._producer.close()


class DeviceChangeReader:
    """Follows the devices topic from its beginning and applies each device's settings."""

    def __init__(self, settings: KafkaSettings, apply: Callable[[DeviceSettings], None], *,
                 client_id: str) -> None:
        self._apply = apply
        self.topic = settings.topics.devices
        self.applied = 0
        self.rejected = 0
        self.reader = TopicReader(settings, self.topic, self._handle, client_id=f"{client_id}-devices",
                                  start="beginning")

    def _handle(self, records: Records) -> None:
        for record in records:
            if record.value is None:
                continue  # a tombstone: devices are deactivated, never deleted
            try:
                device = DeviceSettings.model_validate_json(record.value)
            except ValidationError as exc:
                self.rejected += 1
                log.warning("skipped device change %s@%d: %s", self.topic, record.offset, exc)
                continue
            self._apply(device)
            self.applied += 1

    def start(self, timeout_s: float = 30.0) -> None:
        """Start following, and return once what the topic held is applied (raises after `timeout_s`)."""
        self.reader.start()
        if not self.reader.caught_up.wait(timeout_s):
            error = self.reader.error
            self.reader.stop()
            raise KafkaBusError(f"could not read the device changes in {self.topic} within {timeout_s:g} s"
                                + (f": {error!r}" if error is not None else ""))
        log.info("applied %d device changes from %s", self.applied, self.topic)

    def stop(self) -> None:
        self.reader.stop()

    @property
    def running(self) -> bool:
        return self.reader.running
