"""`citywatch up`: the whole pipeline in one process, with embedded defaults.

Start order follows the data backwards (store, processor, ingest, then the simulator) so that nothing
arrives before its consumer is ready; stop order follows it forwards so that everything accepted is
judged and stored before the store closes. Rule state is snapshotted into the data directory on a clean
stop and restored at start, so an open violation can still be cleared after a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from api.alerts.components import AlertComponents
from api.console.config import ConsoleMap
from api.services import ApiServices, ComponentStatus
from citywatch.config_findings import log_findings
from citywatch.indices import IndexComponents
from citywatch.ingest_process import IngestProcess
from citywatch.mqtt_publisher import MqttPublisher
from citywatch.simulation import FeedGenerator, Simulator
from core.metrics import Metrics
from core.models import Event, ExposureTotal
from core.rate import RateMeter
from core.settings import ConfigError, Settings
from ingest.device_admin import DeviceManager
from ingest.embedded_broker import EmbeddedBroker, PortInUse
from ingest.geo import GeoError, GeoTagger
from ingest.registry import DeviceRegistry
from ingest.service import IngestService, build_normalizer
from processors.catalogue import build_rules
from processors.dispatch.board import PlanBoard
from processors.engine import Engine
from processors.inprocess_bus import InProcessBus
from processors.worker import ProcessorWorker
from store.base import ExposureQuery, Store, StoreUnavailable
from store.factory import RetentionSweeper, build_store

log = logging.getLogger(__name__)

SNAPSHOT_FILE = "rules.snapshot"


class EmbeddedRuntime:
    def __init__(self, settings: Settings, *, simulate: bool = False,
                 on_stored: Callable[[Sequence[Event]], None] | None = None) -> None:
        self.settings = settings
        log_findings(settings, "up")
        self.simulate = simulate
        self.on_stored = on_stored
        self.metrics = Metrics()
        self.data_dir = Path(settings.store.data_dir)
        self.store: Store = build_store(settings.store, self.metrics)
        self.retention_sweeper = RetentionSweeper(self.store, settings.store.retention.sweep_interval_s)
        self.registry = DeviceRegistry(settings.devices)
        # Persisted registry (API changes survive restarts); seeds the live registry above.
        self.devices = DeviceManager.open(self.data_dir, self.registry, settings.devices,
                                          relational=settings.relational)
        try:
            self.geo = GeoTagger.from_settings(settings.geo)
        except GeoError as exc:
            raise ConfigError(str(exc)) from exc
        self.broker: EmbeddedBroker | None = None
        self.mqtt_url: str | None = settings.mqtt.url
        self.bus = InProcessBus(settings.bus.queue_events)
        self.engine = Engine(build_rules(settings.rules, self.registry, settings.devices,
                                         traffic=settings.traffic),
                             allowed_lateness_ms=settings.pipeline.allowed_lateness_ms,
                             dedup_capacity=settings.pipeline.dedup_window_events,
                             time_zone=settings.traffic.time_zone)
        self.rate = RateMeter()
        self.metrics.events_per_second.labels("up").set_function(self.rate.rate)
        self.alerts = AlertComponents(settings, self.data_dir, case_intake_process=True,
                                      webhook_process=True)
        # Dispatch plans, in the relational database with the cases (docs/dispatch.md).
        self.dispatch = PlanBoard.open(settings.dispatch, settings.relational, self.data_dir)
        # Indices, rankings and reports published on schedule (docs/indices.md).
        self.indices = IndexComponents(settings, self.store, self.alerts.cases.store)
        self.worker = ProcessorWorker(self.bus.consumer(), self.engine, self.store, self.metrics,
                                      batch_events=settings.pipeline.batch_events, on_stored=self._stored,
                                      tag_violation=self.geo.tag_violation,
                                      input_live=self._input_live,
                                      on_violations=[self.alerts.feed.publish])
        self.ingest: IngestService | IngestProcess | None = None
        self.simulator: Simulator | None = None
        self._simulator_client: MqttPublisher | None = None

    def _input_live(self) -> bool:
        """Silence means something only while ingest is subscribed (device-offline rule)."""
        return self.ingest is not None and self.ingest.subscribed

    def start(self) -> None:
        self._restore_rule_state()
        self.store.start()
        self._resume_exposure_totals()
        self.retention_sweeper.start()
        if self.mqtt_url is None:
            self.mqtt_url = self._start_embedded_broker()
        self.alerts.start(self.mqtt_url)
        self.alerts.reconcile_cases(self.store)
        self.indices.start()
        self.worker.start()
        parsed = urlparse(self.mqtt_url)
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 1883
        if self.settings.bus.ingest_process:
            self.ingest = IngestProcess(self.settings, host=host, port=port, registry=self.registry,
                                        producer=self.bus.producer(), metrics=self.metrics)
        else:
            normalizer = build_normalizer(self.settings, self.registry, self.geo.tag_event, self.metrics)
            self.ingest = IngestService(
                host=host, port=port, settings=self.settings.mqtt,
                topics=[route.pattern for route in self.settings.ingest.routes],
                normalizer=normalizer, producer=self.bus.producer(), metrics=self.metrics,
            )
        self.ingest.start()
        if self.simulate:
            self._start_simulator()

    def stop(self) -> None:
        self.indices.stop()  # first: its publisher reads the stores closed below
        if self.simulator is not None:
            self.simulator.stop()
        if self._simulator_client is not None:
            self._simulator_client.close()
        if self.ingest is not None:
            self.ingest.stop()
        self.bus.close()
        self.worker.stop()
        self.alerts.stop()
        if self.worker.error is None:
            (self.data_dir / SNAPSHOT_FILE).write_bytes(self.engine.snapshot())
        self.retention_sweeper.stop()
        self.store.close()
        self.devices.close()
        self.dispatch.close()
        if self.broker is not None:
            self.broker.stop()

    def _stored(self, events: Sequence[Event]) -> None:
        self.rate.add(len(events))
        if self.on_stored is not None:
            self.on_stored(events)

    def status(self) -> dict[str, Any]:
        status = {"role": "up", "bus": "inprocess", "events_per_s": round(self.rate.rate(), 1),
                  "events_total": self.rate.total, "bus_queue_events": len(self.bus),
                  "held_events": self.engine.held}
        if isinstance(self.ingest, IngestProcess):  # which process MQTT ingest is (bus.ingest_process)
            status["ingest_process_pid"] = self.ingest.pid
        return status

    def _start_embedded_broker(self) -> str:
        mqtt = self.settings.mqtt
        self.broker = EmbeddedBroker(kind=mqtt.embedded_broker.value, port=mqtt.embedded_port,
                                     state_dir=self.data_dir)
        try:
            return self.broker.start()
        except PortInUse as exc:
            # Typically a system Mosquitto installed as a service already holds 1883. The demo still
            # runs on another port; devices must then be pointed at the URL logged here.
            log.warning("%s; starting the embedded broker on a free port instead", exc)
            self.broker = EmbeddedBroker(kind=mqtt.embedded_broker.value, port=0, state_dir=self.data_dir)
            url = self.broker.start()
            log.warning("embedded MQTT broker is on %s (not port %d)", url, mqtt.embedded_port)
            return url

    def _restore_rule_state(self) -> None:
        snapshot = self.data_dir / SNAPSHOT_FILE
        if snapshot.exists():
            self.engine.restore(snapshot.read_bytes())
            log.info("restored rule state from %s", snapshot)

    def _resume_exposure_totals(self) -> None:
        """After a crash the rule state is the last clean stop's (or none) while the store holds the totals
        written since: the engine counts on from those instead of replacing them with smaller ones."""
        counts = self.engine.exposures
        try:
            stored = [ExposureTotal(day=day, device_id=row.place, counter=row.counter, value=row.value)
                      for day in counts.open_days(int(time.time() * 1000))
                      for row in self.store.exposure_sums(ExposureQuery(first_day=day, last_day=day,
                                                                        group_by="device"))]
        except StoreUnavailable as exc:
            # Starting matters more: the store may come back before anything is counted.
            log.warning("could not read the stored exposure totals (%s): counting from the rule state", exc)
            return
        taken = counts.resume(stored)
        if taken:
            log.warning("the rule state was older than the stored exposure totals (an unclean stop?): "
                        "counting on from %d stored totals", taken)

    def _start_simulator(self) -> None:
        assert self.mqtt_url is not None
        self._simulator_client = MqttPublisher(self.mqtt_url, "citywatch-simulator").connect()
        generator = FeedGenerator(self.settings.devices, self.settings.simulator,
                                  self.settings.traffic)
        # Ingest subscribes in the background: the simulator waits for it, so that the history it sends
        # first (the readings the 24-hour air means need) reaches the rules.
        self.simulator = Simulator(generator, self._simulator_client.publish,
                                   self.settings.simulator.interval_s,
                                   ready=lambda: self.ingest is not None and self.ingest.subscribed)
        self.simulator.start()

    def readiness(self) -> list[ComponentStatus]:
        ingest = self.ingest
        mqtt_ready = ingest is not None and ingest.subscribed
        mqtt_detail = "" if mqtt_ready else (ingest.error if ingest and ingest.error else "not connected")
        worker_detail = "" if self.worker.running else f"stopped: {self.worker.error!r}"
        return [
            ComponentStatus("mqtt", mqtt_ready, mqtt_detail or ""),
            ComponentStatus("processor", self.worker.running, worker_detail),
        ]

    def api_services(self) -> ApiServices:
        return ApiServices(
            store=self.store, metrics=self.metrics, settings=self.settings.api,
            readiness=self.readiness,
            on_startup=[self.start], on_shutdown=[self.stop], devices=self.devices,
            status=self.status,
            access=self.alerts.access, feed=self.alerts.feed, webhooks=self.alerts.webhooks,
            alerts=self.settings.alerts, violation_actions=self.alerts.violation_actions,
            cases=self.alerts.cases, dispatch=self.dispatch, indices=self.indices.service,
            open311=self.alerts.open311, geo=self.alerts.geo, time_zone=self.settings.traffic.time_zone,
            console=ConsoleMap.from_settings(self.settings),
        )
