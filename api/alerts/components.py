"""The alert components of one running citywatch, built from settings: the feed, access control,
webhook dispatch, output topics, people's actions on violations and the cases the violation changes open
and close (docs/cases.md), with their start and stop order."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from api.access.control import AccessControl
from api.alerts.webhooks.dispatcher import WebhookDispatcher
from api.alerts.webhooks.dispatcher_process import WebhookDispatcherProcess
from api.alerts.webhooks.store import WebhookStore
from api.violation_actions import ViolationActions
from api.violation_types import known_violation_types
from core.models import Violation, ViolationStatus
from core.settings import Settings
from ingest.geo import GeoTagger
from processors.cases.intake import CaseIntake
from processors.cases.intake_process import CaseIntakeProcess
from processors.cases.routing import CaseRouter
from processors.cases.service import CaseService
from processors.cases.sla import CaseSlaEvent, SlaSignals
from processors.outputs.feed import ViolationFeed
from processors.outputs.kafka_out import KafkaViolationOutput
from processors.outputs.mqtt_out import MqttViolationOutput
from processors.outputs.queued import QueuedOutput
from store.base import Store, ViolationQuery
from store.cases import CaseStore
from store.factory import RetentionSweeper
from store.open311 import Open311Store

log = logging.getLogger(__name__)

# A new snapshot of the evaluation's columns (store/case_columns.py) is stored when this many cases were
# written since the last one, looked at this often: the first read of a process then reads at most about
# this many rows beyond the snapshot.
EVALUATION_SNAPSHOT_CHANGES = 50_000
EVALUATION_SNAPSHOT_INTERVAL_S = 60.0


class AlertComponents:
    def __init__(self, settings: Settings, data_dir: Path, *, feed: ViolationFeed | None = None,
                 owns: Callable[[str], bool] | None = None, shared_store: bool = False,
                 case_intake_process: bool = False, webhook_process: bool = False) -> None:
        """`owns`, `shared_store`: for api replicas that split the deliveries (api/alerts/kafka_feed.py).
        `case_intake_process`: the case intake applies violation changes in a child process, off the
        interpreter that runs the pipeline (`citywatch up`: processors/cases/intake_process.py).
        `webhook_process`: likewise the webhook dispatcher (`citywatch up`:
        api/alerts/webhooks/dispatcher_process.py); not with `owns` or `shared_store`."""
        self.settings = settings
        alerts = settings.alerts
        self.feed = feed if feed is not None else ViolationFeed(alerts.feed_retention,
                                                                hot=alerts.stream_max_lag)
        self.access = AccessControl.in_directory(data_dir, settings.api, settings.relational)
        self.webhook_store = WebhookStore.open(settings.relational, data_dir)
        # What people did about violations: in the relational database, like the keys, so that every api
        # replica sees every action.
        self.violation_actions = ViolationActions.open(settings.relational, data_dir)
        violation_types = known_violation_types(settings.traffic.codes)
        self.webhooks: WebhookDispatcher
        if webhook_process:
            if owns is not None or shared_store:
                raise ValueError("the webhook dispatcher process is for one process's feed, not for replicas")
            self.webhooks = WebhookDispatcherProcess(self.webhook_store, settings, self.feed, self.access,
                                                     data_dir, violation_types=violation_types)
        else:
            # The HTTP requests of the deliveries are made by a process of their own, off the interpreter
            # that serves the API (api/alerts/webhooks/sender.py).
            self.webhooks = WebhookDispatcher(self.webhook_store, alerts.webhooks, self.feed, self.access,
                                              owns=owns, shared_store=shared_store,
                                              violation_types=violation_types, sender_process=True)
        self.kafka: KafkaViolationOutput | None = None
        self.mqtt: MqttViolationOutput | None = None
        if alerts.kafka.enabled:
            self.kafka = KafkaViolationOutput(alerts.kafka, self.feed)
            self.feed.add_listener(self.kafka)
        self._mqtt_queued: QueuedOutput | None = None
        self.case_store = CaseStore.open(settings.relational, data_dir)
        self.cases = CaseService(self.case_store, CaseRouter(settings.cases, settings.traffic.time_zone))
        # Requests filed through Open311, in the cases' database; their points are tagged as violations
        # are (geo), so that they are routed to the department of their grid.
        self.open311 = Open311Store.beside(self.case_store, settings.cases.open311.reporter_retention_days)
        # Reporters' contact details are erased once their case has been closed long enough.
        self.open311_retention = RetentionSweeper(self.open311, settings.store.retention.sweep_interval_s,
                                                  name="open311-retention")
        self.geo = GeoTagger.from_settings(settings.geo)
        # Without routes no violation opens a case: cases are then only made through the API.
        # Shared (the api replicas of the Kafka set-up): the violations topic holds what waits, so the
        # topic's reader waits for the cases rather than dropping a change.
        self.case_intake: CaseIntake | None = None
        if self.cases.router.enabled:
            self.case_intake = (CaseIntakeProcess(self.cases, settings, data_dir) if case_intake_process
                                else CaseIntake(self.cases, wait_when_full=shared_store))
        if self.case_intake is not None:
            self.feed.add_listener(self.case_intake)
        # Warning times and deadlines reached go out on the feed as case events. (The Kafka set-up's api
        # replicas stream them from the case store instead: api/alerts/case_event_relay.py.)
        self.case_event_feeds = [self.feed]
        # Claimed events wait in the cases' outbox until handed to the feeds (docs/cases.md, "Delivery of
        # SLA events"): one claimed just before a crash goes out after the restart, or from another replica.
        self._stopping = threading.Event()
        self._evaluation_keeper: threading.Thread | None = None
        self.sla_signals = SlaSignals(self.cases.claim_sla_signals,
                                      lambda: self.cases.publish_case_events(self._publish_case_events),
                                      interval_s=settings.cases.sla_check_interval_s)

    def _publish_case_events(self, events: list[CaseSlaEvent]) -> None:
        for feed in self.case_event_feeds:
            feed.publish_case_events(events)

    def start(self, ingest_mqtt_url: str | None) -> None:
        """Before the processor starts, so that no change is published before its consumers listen."""
        self.webhooks.start()
        if self.case_intake is not None:
            self.case_intake.start()
        started = self.cases.start_clocks()
        if started:
            log.info("cases: %d open cases from before the SLA clock were given a deadline", started)
        if self.kafka is not None:
            self.kafka.start()
        out = self.settings.alerts.mqtt
        if out.enabled:
            url = out.url or ingest_mqtt_url
            if url is None:
                raise ValueError("alerts.mqtt.enabled needs alerts.mqtt.url or an ingest broker")
            # The ingest broker's credentials and TLS apply when publishing to that same broker.
            connection = self.settings.mqtt if out.url is None else None
            self.mqtt = MqttViolationOutput(out, url, self.feed, connection)
            self.feed.add_listener(self.mqtt)
            self.mqtt.start()
            log.info("violation changes published to MQTT %s under %s/", url, out.topic_prefix)
        # Last: the outputs listen before the first case event goes out.
        self.sla_signals.start()
        self.open311_retention.start()
        # The evaluation's columns: read now, off the startup path (from the stored snapshot and what
        # changed since), and a new snapshot stored now and then, so that the first evaluation of this
        # process, or of the next one, answers as fast as the later ones.
        self._evaluation_keeper = threading.Thread(target=self._keep_evaluation, name="case-evaluation",
                                                   daemon=True)
        self._evaluation_keeper.start()

    def reconcile_cases(self, violations: Store) -> None:
        """`citywatch up`, at start, before the processor publishes: the violation changes the cases may
        have missed (queued when the process was killed, dropped by a full queue) re-derived from the
        violation store (CaseService.reconcile). A failure is logged: the cases then miss them."""
        if self.case_intake is None:
            return
        started = time.monotonic()
        try:
            linked, cleared = self.cases.reconcile(_open_violations(violations), violations.get_violation)
        except Exception as exc:
            log.warning("cases: the open violations could not be checked against the cases: %s", exc)
            return
        if linked or cleared:
            log.warning("cases: %d violations missing from cases and %d missed clearings applied from the "
                        "violation store (in %.1f s)", linked, cleared, time.monotonic() - started)

    def _keep_evaluation(self) -> None:
        started = time.monotonic()
        try:
            self.case_store.warm_evaluation()
        except Exception as exc:  # a store down or closed at a stop: the first evaluation reads them instead
            log.warning("cases: the evaluation could not read the cases ahead: %s", exc)
        else:
            log.info("cases: evaluation columns read in %.1f s", time.monotonic() - started)
        while True:
            try:
                if self.case_store.checkpoint_evaluation(EVALUATION_SNAPSHOT_CHANGES):
                    log.info("cases: evaluation snapshot stored")
            except Exception as exc:  # the next pass tries again; the snapshot is only a cache
                log.warning("cases: the evaluation snapshot could not be stored: %s", exc)
            if self._stopping.wait(EVALUATION_SNAPSHOT_INTERVAL_S):
                return

    def stop(self) -> None:
        """After the processor stopped: what it published last is still sent."""
        self._stopping.set()
        if self._evaluation_keeper is not None:
            self._evaluation_keeper.join(timeout=30)  # a snapshot being written finishes first
        self.sla_signals.stop()
        for output in (self.mqtt, self.kafka):
            if output is not None:
                output.stop()
        self.webhooks.stop()
        self.webhook_store.close()
        self.violation_actions.close()
        if self.case_intake is not None:
            self.case_intake.stop()
        self.open311_retention.stop()
        self.case_store.close()
        self.access.close()


def _open_violations(violations: Store) -> Iterator[Violation]:
    cursor: str | None = None
    while True:
        page = violations.query_violations(ViolationQuery(status=ViolationStatus.OPEN, limit=1000,
                                                          cursor=cursor))
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
