"""The city set-up: `citywatch ingest`, `citywatch process` and `citywatch api`, one role per process,
joined by Kafka so each scales on its own (more ingest for more MQTT traffic, as many processors as the
events topic has partitions, more api replicas for more readers).

Each role builds its parts from the settings without touching the network, and connects in `start`
(run by the HTTP app's lifespan, so a SIGTERM stops it cleanly through uvicorn).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from api.alerts.kafka_feed import KafkaAlerts
from api.console.config import ConsoleMap
from api.services import ApiServices, ComponentStatus
from api.status_app import RoleServices
from citywatch.config_findings import log_findings
from citywatch.indices import IndexComponents
from core.metrics import Metrics
from core.models import DeadLetter, Event
from core.rate import RateMeter
from core.settings import BusKind, ConfigError, DeviceSettings, KafkaSettings, Settings
from ingest.device_admin import DeviceManager
from ingest.device_sync import DeviceChangePublisher, DeviceChangeReader
from ingest.embedded_broker import EmbeddedBroker
from ingest.geo import GeoError, GeoTagger
from ingest.registry import DeviceRegistry
from ingest.service import IngestService, build_normalizer
from processors.bus import BusProducer, OnDurable
from processors.catalogue import build_rules, device_partition_key
from processors.dispatch.board import PlanBoard
from processors.engine import Engine
from processors.kafka_bus import KafkaBusError, KafkaBusProducer, ensure_topics, partition_for
from processors.kafka_lag import GroupMonitor
from processors.kafka_processor import KafkaProcessor
from store.base import Store
from store.factory import RetentionSweeper, build_store

log = logging.getLogger(__name__)


def kafka_settings_of(settings: Settings, role: str) -> KafkaSettings:
    if settings.bus.kind != BusKind.KAFKA:
        raise ConfigError(f"citywatch {role} runs against Kafka: set bus.kind: kafka and bus.kafka "
                          "(citywatch up runs every role in one process on the in-process bus)")
    return settings.bus.kafka


def geo_tagger(settings: Settings) -> GeoTagger:
    try:
        return GeoTagger.from_settings(settings.geo)
    except GeoError as exc:
        raise ConfigError(str(exc)) from exc


def device_changes_status(reader: DeviceChangeReader) -> ComponentStatus:
    ready = reader.reader.healthy and reader.reader.caught_up.is_set()
    detail = "" if ready else f"not following {reader.topic} (last error: {reader.reader.error!r})"
    return ComponentStatus("device changes", ready, detail)


def open_store(settings: Settings, metrics: Metrics) -> Store:
    """The store the settings name (embedded SQLite or InfluxDB), started."""
    store = build_store(settings.store, metrics)
    store.start()
    return store


class _CountingProducer(BusProducer):
    """Counts what ingest hands to the bus, for its events/s."""

    def __init__(self, inner: KafkaBusProducer, rate: RateMeter) -> None:
        self.inner = inner
        self.rate = rate

    def send(self, events: Sequence[Event], dead_letters: Sequence[DeadLetter] = (), *,
             timeout_s: float | None = None, on_durable: OnDurable | None = None) -> None:
        self.inner.send(events, dead_letters, timeout_s=timeout_s, on_durable=on_durable)
        self.rate.add(len(events))

    def flush(self, timeout_s: float | None = None) -> None:
        self.inner.flush(timeout_s)

    def close(self) -> None:
        self.inner.close()


class IngestRole:
    """MQTT -> normalise -> Kafka events topic (keyed by partition key) and dead-letter topic."""

    def __init__(self, settings: Settings, *, report_config: bool = True) -> None:
        """`report_config`: log what in the configuration drops or hides data (false when another part
        of the same process has logged it)."""
        self.settings = settings
        self.kafka = kafka_settings_of(settings, "ingest")
        if settings.mqtt.url is None:
            raise ConfigError("citywatch ingest subscribes to a broker: set mqtt.url (or --mqtt-url)")
        if report_config:
            log_findings(settings, "ingest")
        self.metrics = Metrics()
        self.rate = RateMeter()
        self.metrics.events_per_second.labels("ingest").set_function(self.rate.rate)
        self.registry = DeviceRegistry(settings.devices)
        # Changes made through the api role's /v1/devices (ingest/device_sync.py).
        self.device_changes = DeviceChangeReader(self.kafka, self.registry.upsert,
                                                 client_id=settings.mqtt.client_id)
        self.geo = geo_tagger(settings)
        self.producer: _CountingProducer | None = None
        self.ingest: IngestService | None = None

    def start(self) -> None:
        ensure_topics(self.kafka)
        self.device_changes.start()
        kafka_producer = KafkaBusProducer(self.kafka, client_id=self.settings.mqtt.client_id,
                                          on_error=self._send_failed)
        self.producer = _CountingProducer(kafka_producer, self.rate)
        normalizer = build_normalizer(self.settings, self.registry, self.geo.tag_event, self.metrics)
        assert self.settings.mqtt.url is not None  # checked in __init__
        parsed = urlparse(self.settings.mqtt.url)
        self.ingest = IngestService(
            host=parsed.hostname or "127.0.0.1", port=parsed.port or 1883, settings=self.settings.mqtt,
            topics=[route.pattern for route in self.settings.ingest.routes],
            normalizer=normalizer, producer=self.producer, metrics=self.metrics,
        )
        self.ingest.start()

    def _send_failed(self, topic: str, exc: BaseException) -> None:
        log.error("Kafka refused a record for %s: %s", topic, exc)
        self.metrics.bus_send_errors.labels(topic).inc()

    def stop(self) -> None:
        if self.ingest is not None:
            self.ingest.stop()
        if self.producer is not None:
            self.producer.close()  # flushes: everything received is on Kafka before exit
        self.device_changes.stop()

    def readiness(self) -> list[ComponentStatus]:
        ingest = self.ingest
        ready = ingest is not None and ingest.subscribed
        detail = "" if ready else (ingest.error if ingest and ingest.error else "not connected")
        return [ComponentStatus("mqtt", ready, detail or ""),
                ComponentStatus("kafka", self.producer is not None),
                device_changes_status(self.device_changes)]

    def status(self) -> dict[str, Any]:
        return {"role": "ingest", "bus": "kafka", "events_per_s": round(self.rate.rate(), 1),
                "events_total": self.rate.total,
                "mqtt_connected": bool(self.ingest is not None and self.ingest.connected),
                "mqtt_unacked": 0 if self.ingest is None else self.ingest.unacked,
                "device_changes_applied": self.device_changes.applied}

    def services(self) -> RoleServices:
        return RoleServices(metrics=self.metrics, readiness=self.readiness, status=self.status,
                            on_startup=[self.start], on_shutdown=[self.stop])


class ProcessRole:
    """One member of the processor group: judges its partitions, writes the store, checkpoints state."""

    def __init__(self, settings: Settings, client_id: str = "citywatch-process", *,
                 report_config: bool = True) -> None:
        self.settings = settings
        self.kafka = kafka_settings_of(settings, "process")
        if report_config:
            log_findings(settings, "process")
        self.client_id = client_id
        self.metrics = Metrics()
        self.registry = DeviceRegistry(settings.devices)
        # Changes made through the api role's /v1/devices: thresholds the rules read per device.
        self.device_changes = DeviceChangeReader(self.kafka, self.registry.upsert, client_id=client_id)
        self.geo = geo_tagger(settings)
        self.store: Store | None = None
        self.processor: KafkaProcessor | None = None
        self.retention_sweeper: RetentionSweeper | None = None
        self.failed: BaseException | None = None

    def new_engine(self, partition: int, partitions: int) -> Engine:
        """One partition's engine, with its own rule instances (a rule such as device_offline keeps a
        clock of its own) and, for rules that judge registered devices that send nothing, only the
        devices whose events this partition receives: the others are judged where their events go."""
        pipeline = self.settings.pipeline
        registered = [device for device in self.registry.devices()
                      if partition_for(device_partition_key(device), partitions) == partition]
        # The dedup window is shared out over the partitions one instance may own.
        capacity = max(10_000, pipeline.dedup_window_events // partitions)
        return Engine(build_rules(self.settings.rules, self.registry, registered,
                                  traffic=self.settings.traffic),
                      allowed_lateness_ms=pipeline.allowed_lateness_ms, dedup_capacity=capacity,
                      time_zone=self.settings.traffic.time_zone)

    def start(self) -> None:
        ensure_topics(self.kafka)
        self.device_changes.start()  # before judging: the registry as the api role left it
        self.store = open_store(self.settings, self.metrics)
        # The writing role applies retention (the api role only reads).
        self.retention_sweeper = RetentionSweeper(self.store, self.settings.store.retention.sweep_interval_s)
        self.retention_sweeper.start()
        self.processor = KafkaProcessor(
            self.kafka, self.new_engine, self.store, self.metrics,
            batch_events=self.settings.pipeline.batch_events,
            dead_letter_payload_bytes=self.settings.ingest.dead_letter_payload_bytes,
            client_id=self.client_id, on_failure=self._failed, tag_violation=self.geo.tag_violation,
        )
        self.processor.start()

    def _failed(self, error: BaseException) -> None:
        """The loop died (its error is logged): end the process so the orchestrator restarts it; its
        partitions move to the other processors, which resume them from their checkpoints."""
        self.failed = error
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's handler: a clean shutdown of the HTTP side

    def stop(self) -> None:
        if self.processor is not None:
            self.processor.stop()
        if self.retention_sweeper is not None:
            self.retention_sweeper.stop()
        if self.store is not None:
            self.store.close()
        self.device_changes.stop()

    def readiness(self) -> list[ComponentStatus]:
        return [self._processor_readiness(), device_changes_status(self.device_changes)]

    def _processor_readiness(self) -> ComponentStatus:
        processor = self.processor
        if processor is None:
            return ComponentStatus("processor", False, "not started")
        if processor.error is not None or not processor.running:
            return ComponentStatus("processor", False, f"stopped: {processor.error!r}")
        joined = processor.joined.is_set()
        return ComponentStatus("processor", joined, "" if joined else "joining the consumer group")

    def status(self) -> dict[str, Any]:
        if self.processor is None:
            return {"role": "process", "running": False}
        return {**self.processor.status(), "device_changes_applied": self.device_changes.applied}

    def services(self) -> RoleServices:
        return RoleServices(metrics=self.metrics, readiness=self.readiness, status=self.status,
                            on_startup=[self.start], on_shutdown=[self.stop])


class ApiRole:
    """The HTTP API over the store, with the processor group's lag and rates from Kafka in /v1/status."""

    def __init__(self, settings: Settings, *, report_config: bool = True) -> None:
        self.settings = settings
        self.kafka = kafka_settings_of(settings, "api")
        if report_config:
            log_findings(settings, "api")
        # Streams and webhooks fed from the violations topic (api/alerts/kafka_feed.py); first, as it
        # checks the alert settings before anything is opened.
        self.alerts = KafkaAlerts(settings, self.kafka, settings.store.data_dir, client_id="citywatch-api")
        self.metrics = Metrics()
        self.store = open_store(settings, self.metrics)
        self.monitor = GroupMonitor(self.kafka, self.metrics)
        # /v1/devices: each change goes to the devices topic for the other roles, then to the table the
        # replicas share; changes made through other replicas come back from the topic.
        self.device_publisher: DeviceChangePublisher | None = None  # connects in start()
        self.devices = DeviceManager.open(Path(settings.store.data_dir), DeviceRegistry(settings.devices),
                                          settings.devices, publish=self._publish_device,
                                          relational=settings.relational)
        self.device_changes = DeviceChangeReader(self.kafka, self.devices.apply, client_id="citywatch-api")
        # Keys, scopes and the audit log, as in `citywatch up`: an API role must never serve open.
        self.access = self.alerts.components.access
        # Dispatch plans: in the PostgreSQL database every replica shares (`relational.kind`), so any
        # replica serves any plan (docs/dispatch.md).
        self.dispatch = PlanBoard.open(settings.dispatch, settings.relational, Path(settings.store.data_dir))
        # Indices, rankings and reports; every replica may publish a report due, it is stored once.
        self.indices = IndexComponents(settings, self.store, self.alerts.components.cases.store)

    def start(self, mqtt_url: str | None = None) -> None:
        """`mqtt_url`: the ingest broker, for the MQTT alert output (default: mqtt.url)."""
        ensure_topics(self.kafka)
        self.device_publisher = DeviceChangePublisher(self.kafka, client_id="citywatch-api-devices")
        self.device_changes.start()
        self.monitor.start()
        self.alerts.start(mqtt_url or self.settings.mqtt.url)
        self.indices.start()

    def _publish_device(self, device: DeviceSettings) -> None:
        if self.device_publisher is None:
            raise KafkaBusError("the api role is not connected to Kafka yet")
        self.device_publisher.publish(device)

    def readiness(self) -> list[ComponentStatus]:
        try:
            self.monitor.status()
        except Exception as exc:  # readiness reports the failure instead of raising it
            return [ComponentStatus("kafka", False, f"{type(exc).__name__}: {exc}")]
        return [ComponentStatus("kafka", True), *self.alerts.readiness(),
                device_changes_status(self.device_changes)]

    def status(self) -> dict[str, Any]:
        return {**self.monitor.status(), "alerts": self.alerts.status()}

    def stop(self) -> None:
        self.indices.stop()  # first: its publisher reads the stores closed below
        self.alerts.stop()
        self.device_changes.stop()
        if self.device_publisher is not None:
            self.device_publisher.close()
        self.devices.close()
        self.dispatch.close()
        self.monitor.close()
        self.store.close()

    def services(self) -> ApiServices:
        return ApiServices(store=self.store, metrics=self.metrics, settings=self.settings.api,
                           readiness=self.readiness, status=self.status, access=self.access,
                           feed=self.alerts.stream_feed, webhooks=self.alerts.webhooks,
                           alerts=self.settings.alerts, devices=self.devices,
                           violation_actions=self.alerts.components.violation_actions,
                           cases=self.alerts.components.cases, dispatch=self.dispatch,
                           indices=self.indices.service,
                           open311=self.alerts.components.open311, geo=self.alerts.components.geo,
                           time_zone=self.settings.traffic.time_zone,
                           console=ConsoleMap.from_settings(self.settings),
                           on_startup=[self.start], on_shutdown=[self.stop])


class KafkaUpRuntime:
    """`citywatch up` with `bus.kind: kafka`: the three roles in one process, for trying the Kafka
    set-up on one machine (an embedded MQTT broker when `mqtt.url` is unset, as `up` always does)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        kafka_settings_of(settings, "up")
        self.broker: EmbeddedBroker | None = None
        if settings.mqtt.url is None:
            # Its URL is known once it listens: ingest is built then (see start()).
            self.broker = EmbeddedBroker(kind=settings.mqtt.embedded_broker.value,
                                         port=settings.mqtt.embedded_port)
        self.process = ProcessRole(settings, client_id="citywatch-up")  # logs the configuration's findings
        self.api = ApiRole(settings, report_config=False)
        self.ingest: IngestRole | None = None

    def start(self) -> None:
        settings = self.settings
        if self.broker is not None:
            settings = settings.with_overrides(mqtt__url=self.broker.start())
        # The api part first: its stream feed reads the violations topic from the end.
        self.api.start(settings.mqtt.url)
        self.process.start()
        self.ingest = IngestRole(settings, report_config=False)
        self.ingest.metrics = self.process.metrics  # one /metrics for the whole process
        self.ingest.metrics.events_per_second.labels("ingest").set_function(self.ingest.rate.rate)
        self.ingest.start()

    def stop(self) -> None:
        if self.ingest is not None:
            self.ingest.stop()
        self.process.stop()
        self.api.stop()
        if self.broker is not None:
            self.broker.stop()

    def readiness(self) -> list[ComponentStatus]:
        ingest = self.ingest.readiness() if self.ingest is not None else [ComponentStatus("mqtt", False)]
        return [*ingest, *self.process.readiness(), *self.api.alerts.readiness(),
                device_changes_status(self.api.device_changes)]

    def status(self) -> dict[str, Any]:
        return {**self.api.monitor.status(), "role": "up",
                "process": self.process.status(), "alerts": self.api.alerts.status(),
                "ingest": self.ingest.status() if self.ingest is not None else None}

    def api_services(self) -> ApiServices:
        return ApiServices(store=self.api.store, metrics=self.process.metrics, settings=self.settings.api,
                           readiness=self.readiness, status=self.status, access=self.api.access,
                           feed=self.api.alerts.stream_feed, webhooks=self.api.alerts.webhooks,
                           alerts=self.settings.alerts, devices=self.api.devices,
                           violation_actions=self.api.alerts.components.violation_actions,
                           cases=self.api.alerts.components.cases, dispatch=self.api.dispatch,
                           indices=self.api.indices.service,
                           open311=self.api.alerts.components.open311, geo=self.api.alerts.components.geo,
                           time_zone=self.settings.traffic.time_zone,
                           console=ConsoleMap.from_settings(self.settings),
                           on_startup=[self.start], on_shutdown=[self.stop])
