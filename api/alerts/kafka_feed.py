"""Violation changes for the api role of the Kafka set-up, read from the violations topic.

In `citywatch up` the processor publishes each change to the feed in-process. Over Kafka the processors
write every change to the violations topic once the store has it (keyed by violation id, so all states of
one violation are in one partition, in order), and each api replica reads that topic twice:

- **Streams**: every replica needs every change for its own SSE and WebSocket clients, so it reads all
  partitions without a consumer group, from the end at start, into its stream feed. A stream id is the
  replica's own (its feed epoch): a client that reconnects to another replica, or after a restart, gets
  `cursor_expired` and catches up from `/v1/violations` (the store).
- **Deliveries** (webhooks and the MQTT and Kafka outputs): they must go out once per change, not once per
  replica, so the replicas read as one consumer group (`alerts_group_id`): each partition, with every
  state of its violations, is dispatched by one replica. The replicas share the webhook store (one data
  directory), so a subscription made through any replica is seen by all, and a replica delivers the
  pending rows of the partitions it owns (they move with the partitions). The group's offset moves only
  after the dispatcher stored the deliveries of the batch: a restart neither skips nor repeats a change.

Duplicates (a processor replaying a batch after a crash, a commit that failed during a rebalance) are
dropped twice over: the feed drops a (violation id, status, updated time) it has seen, and the webhook
store keeps one delivery per (subscription, idempotency key).

A change's `published_time_ms` is the time the processor wrote it to the topic (its record timestamp),
and a subscription is sent only the changes published after it was created, as in `citywatch up`: a
group reading the topic from its beginning (its first start) does not send old changes to it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec

from api.alerts.case_event_relay import CaseEventRelay
from api.alerts.components import AlertComponents
from api.services import ComponentStatus
from core.models import Violation
from core.settings import ConfigError, KafkaSettings, Settings
from processors.kafka_bus import RecordCodec, partition_for
from processors.kafka_reader import Records, TopicReader
from processors.outputs.feed import ViolationFeed

log = logging.getLogger(__name__)

# The dispatch feed only needs to remember recent changes to drop replays of them; older replays are
# caught by the webhook store's unique idempotency key.
DISPATCH_FEED_RETENTION = 10_000


def violation_id_of(idempotency_key: str) -> str:
    """The violation id in a change's idempotency key (`<violation id>:<status>:<updated ms>`)."""
    return idempotency_key.rsplit(":", 2)[0]


class _Decoder:
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.codec = RecordCodec()
        self.undecodable = 0

    def publish(self, feed: ViolationFeed, records: Records) -> None:
        """Publish the records' violations in order, each with the time the processor wrote it (runs of
        records with one timestamp in one call)."""
        run: list[Violation] = []
        run_time_ms = 0
        for record in records:
            try:
                violation = self.codec.decode_violation(record.value)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                # Written by something else than a processor: skip it, it can never be delivered.
                self.undecodable += 1
                log.warning("skipped an undecodable record at %s[%d]@%d: %s", self.topic, record.partition,
                            record.offset, exc)
                continue
            if run and record.timestamp != run_time_ms:
                feed.publish(run, published_time_ms=run_time_ms)
                run = []
            run.append(violation)
            run_time_ms = record.timestamp
        if run:
            feed.publish(run, published_time_ms=run_time_ms)


class KafkaAlerts:
    """The api role's stream feed and its share of the deliveries, both fed from the violations topic."""

    def __init__(self, settings: Settings, kafka: KafkaSettings, data_dir: Path, client_id: str) -> None:
        self.kafka = kafka
        topic = kafka.topics.violations
        if settings.alerts.kafka.enabled and settings.alerts.kafka.topic == topic:
            # The output's messages would land in the topic this reads, as undecodable violations.
            raise ConfigError(f"alerts.kafka.topic is {topic}, the bus's violations topic: give the alert "
                              "output a topic of its own (downstream systems can read the bus topic as is)")
        self.stream_feed = ViolationFeed(settings.alerts.feed_retention, hot=settings.alerts.stream_max_lag)
        dispatch_feed = ViolationFeed(min(settings.alerts.feed_retention, DISPATCH_FEED_RETENTION))
        # Webhooks and the outputs hang off the dispatch feed: once per change across the replicas.
        self.components = AlertComponents(settings, data_dir, feed=dispatch_feed, owns=self.owns,
                                          shared_store=True)
        # SLA events reach this replica's streams from the shared case store, whichever replica claimed
        # and published them (api/alerts/case_event_relay.py).
        self.case_events = CaseEventRelay(self.components.case_store, self.stream_feed,
                                          settings.cases.sla_check_interval_s)
        self._stream_decoder = _Decoder(topic)
        self._dispatch_decoder = _Decoder(topic)
        self.streams = TopicReader(kafka, topic, self._stream, client_id=f"{client_id}-streams", start="end")
        self.dispatch = TopicReader(kafka, topic, self._dispatch, client_id=f"{client_id}-dispatch",
                                    group_id=kafka.alerts_group_id, on_assignment=self._assigned)

    @property
    def webhooks(self) -> Any:
        return self.components.webhooks

    def owns(self, idempotency_key: str) -> bool:
        """Whether this replica dispatches the change: its violation's partition is assigned here."""
        partitions = self.dispatch.partitions
        return partitions > 0 and partition_for(violation_id_of(idempotency_key),
                                                partitions) in self.dispatch.assigned

    def _stream(self, records: Records) -> None:
        self._stream_decoder.publish(self.stream_feed, records)

    def _dispatch(self, records: Records) -> None:
        self._dispatch_decoder.publish(self.components.feed, records)
        # The commit that follows must cover only deliveries already in the webhook store, and only
        # changes the cases have taken.
        self.components.webhooks.barrier()
        if self.components.case_intake is not None:
            self.components.case_intake.barrier()

    def _assigned(self, partitions: frozenset[int]) -> None:
        log.info("api dispatches the violation changes of partitions %s", sorted(partitions))
        self.components.webhooks.claim_pending()

    def start(self, mqtt_url: str | None) -> None:
        """`mqtt_url`: the ingest broker, where the MQTT alert output publishes unless it has its own."""
        self.components.start(mqtt_url)
        self.case_events.poll()  # from here on
        self.case_events.start()
        self.streams.start()
        self.dispatch.start()

    def stop(self) -> None:
        self.dispatch.stop()
        self.streams.stop()
        self.case_events.stop()
        self.components.stop()

    def readiness(self) -> list[ComponentStatus]:
        statuses = []
        for name, reader, waiting in (("violation streams", self.streams, "positioning"),
                                      ("violation dispatch", self.dispatch, "joining the group")):
            if reader.healthy:
                statuses.append(ComponentStatus(name, True))
            elif reader.error is not None:
                statuses.append(ComponentStatus(name, False, f"starting over after {reader.error!r}"))
            else:
                statuses.append(ComponentStatus(name, False, waiting if reader.running else "stopped"))
        return statuses

    def status(self) -> dict[str, Any]:
        return {"streams_changes": self.streams.records, "dispatch_changes": self.dispatch.records,
                "dispatch_partitions": sorted(self.dispatch.assigned),
                "undecodable": self._stream_decoder.undecodable + self._dispatch_decoder.undecodable}
