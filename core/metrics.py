"""Counters and gauges of one running citywatch, exposed at /metrics.

Each runtime owns its own registry (no process-global state), so tests and several pipelines in one
process never see each other's numbers.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# An API answer is expected within tens of milliseconds; the upper buckets catch exports and slow stores.
HTTP_SECONDS_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Receivers answer in tens to hundreds of milliseconds; the attempt timeout (alerts.webhooks.timeout_s,
# 5 s by default) bounds the rest.
WEBHOOK_SECONDS_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages_received = Counter(
            "citywatch_mqtt_messages_received", "MQTT messages received by ingest", registry=self.registry
        )
        self.events_accepted = Counter(
            "citywatch_events_accepted", "Events decoded, validated and handed to the bus", ["kind"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "citywatch_dead_letters", "Inputs rejected and dead-lettered, by reason", ["reason"],
            registry=self.registry,
        )
        self.unmapped_fields = Counter(
            "citywatch_unmapped_fields",
            "Decoded LoRaWAN fields the device's vendor map does not consume (not stored), by model and "
            "field",
            ["model", "field"], registry=self.registry,
        )
        self.uplinks_without_vendor_map = Counter(
            "citywatch_uplinks_without_vendor_map",
            "LoRaWAN uplinks from devices whose model names no vendor map (stored unconverted), by model",
            ["model"], registry=self.registry,
        )
        self.events_processed = Counter(
            "citywatch_events_processed", "Events the processors consumed", registry=self.registry
        )
        self.duplicate_events = Counter(
            "citywatch_duplicate_events", "Events dropped as already-seen duplicates", registry=self.registry
        )
        self.late_events = Counter(
            "citywatch_late_events",
            "Events that arrived after the allowed lateness: stored, but not judged by rules",
            registry=self.registry,
        )
        self.suspect_events = Counter(
            "citywatch_suspect_events",
            "Readings flagged as sensor faults (stuck, implausible): stored, not judged by other rules",
            registry=self.registry,
        )
        self.violations = Counter(
            "citywatch_violation_changes", "Violation state changes emitted", ["type", "status"],
            registry=self.registry,
        )
        self.rule_errors = Counter(
            "citywatch_rule_errors", "Events a rule failed on (the event is dead-lettered)", ["rule"],
            registry=self.registry,
        )
        self.api_auth_refused = Counter(
            "citywatch_api_auth_refused",
            "API requests refused by authentication, by reason: missing_key, unknown_key, throttled (too "
            "many unknown keys from the address), rate_limited, missing_scope", ["reason"],
            registry=self.registry,
        )
        self.bus_depth = Gauge(
            "citywatch_bus_queue_events", "Events waiting on the in-process bus", registry=self.registry
        )
        self.mqtt_connected = Gauge(
            "citywatch_mqtt_connected", "1 while the ingest MQTT client is connected", registry=self.registry
        )
        self.mqtt_unacked = Gauge(
            "citywatch_mqtt_unacked_messages",
            "MQTT messages ingest received and has not acknowledged yet (the bus has not confirmed them)",
            registry=self.registry,
        )
        self.mqtt_not_acked = Counter(
            "citywatch_mqtt_messages_not_acked",
            "MQTT messages left unacknowledged because the bus refused them; the broker redelivers them",
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "citywatch_process_batch_seconds", "Time to process and store one batch", registry=self.registry
        )

        # The Kafka roles (citywatch ingest / process / api): lag, throughput per role, checkpoints.
        self.consumer_lag = Gauge(
            "citywatch_kafka_consumer_lag", "Records not yet processed, per assigned partition",
            ["topic", "partition"], registry=self.registry,
        )
        self.events_per_second = Gauge(
            "citywatch_events_per_second", "Events per second over the last 10 s, per role", ["role"],
            registry=self.registry,
        )
        self.kafka_commits_skipped = Counter(
            "citywatch_kafka_commits_skipped",
            "Offset commits refused because the consumer group was rebalancing (the processor rejoins; "
            "partitions resume from their checkpoints)",
            registry=self.registry,
        )
        self.checkpoints = Counter(
            "citywatch_kafka_checkpoints", "Rule-state checkpoints written, one per partition",
            registry=self.registry,
        )
        self.bus_send_errors = Counter(
            "citywatch_bus_send_errors", "Records the bus refused or lost after retries, by topic", ["topic"],
            registry=self.registry,
        )
        self.store_buffer_points = Gauge(
            "citywatch_store_buffer_points", "Points waiting in memory for the time-series store",
            registry=self.registry,
        )
        self.store_spool_bytes = Gauge(
            "citywatch_store_spool_bytes", "Line protocol spilled to disk, waiting for the time-series store",
            registry=self.registry,
        )
        self.store_backpressure = Gauge(
            "citywatch_store_backpressure", "1 while a store write waits for buffer room",
            registry=self.registry,
        )
        self.store_points_written = Counter(
            "citywatch_store_points_written", "Points the time-series store acknowledged",
            registry=self.registry,
        )
        self.store_write_retries = Counter(
            "citywatch_store_write_retries", "Failed store write requests that will be retried",
            registry=self.registry,
        )
        self.store_points_rejected = Counter(
            "citywatch_store_points_rejected", "Points in batches the store refused as invalid (not retried)",
            registry=self.registry,
        )

        # The HTTP API and the roles' status endpoints (api/observability.py). `route` is the route's
        # template (/v1/violations/{violation_id}), never the raw path, so the label set stays bounded;
        # a path no route matches is "unmatched".
        self.http_requests = Counter(
            "citywatch_http_requests",
            "HTTP requests answered, by method, route template and status; WebSocket sessions have method "
            "WEBSOCKET and status 101 once accepted (or the status of their refusal)",
            ["method", "route", "status"], registry=self.registry,
        )
        self.http_request_seconds = Histogram(
            "citywatch_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer; live streams (Server-Sent Events, "
            "WebSocket) are left out, as they last as long as the client stays",
            ["method", "route"], buckets=HTTP_SECONDS_BUCKETS, registry=self.registry,
        )
        self.http_in_flight = Gauge(
            "citywatch_http_requests_in_flight",
            "HTTP requests being answered now (open live streams are counted apart)", registry=self.registry,
        )
        self.http_streams_open = Gauge(
            "citywatch_http_streams_open", "Live streams connected now, by kind: sse, websocket", ["kind"],
            registry=self.registry,
        )

        # Webhook deliveries (api/alerts/webhooks/dispatcher.py).
        self.webhook_deliveries = Counter(
            "citywatch_webhook_deliveries",
            "Steps in webhook deliveries, by outcome: delivered (a 2xx answer), failed_attempt (another "
            "answer, a timeout or a connection error), refused_destination (the URL leads to an address "
            "webhooks may not reach: nothing sent), dead_lettered (given up)", ["outcome"],
            registry=self.registry,
        )
        self.webhook_dead_letters = Counter(
            "citywatch_webhook_dead_letters",
            "Webhook deliveries given up, by reason: attempts_exhausted, subscription_disabled, "
            "owner_key (the owner key was revoked or lost its scope), queue_full", ["reason"],
            registry=self.registry,
        )
        self.webhook_pending = Gauge(
            "citywatch_webhook_deliveries_pending",
            "Webhook deliveries queued or being attempted by this process", registry=self.registry,
        )
        self.webhook_attempt_seconds = Histogram(
            "citywatch_webhook_attempt_duration_seconds",
            "Time from sending a webhook POST to its answer (or to the timeout)",
            buckets=WEBHOOK_SECONDS_BUCKETS, registry=self.registry,
        )

        # Cases (processors/cases/intake.py): violation changes taken by the cases.
        self.case_changes = Counter(
            "citywatch_case_changes",
            "Violation changes for the cases, by outcome: applied (opened, joined or cleared a case, or "
            "nothing to do: no route, seen before), dropped (the intake queue was full), failed (the case "
            "store refused it, or it was given up on at a stop)", ["outcome"], registry=self.registry,
        )
        self.case_intake_queue = Gauge(
            "citywatch_case_intake_queue",
            "Violation changes waiting for the cases in this process", registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# (metric attribute of Metrics, labels, value): a counter's total or a gauge's value in a child process.
Sample = tuple[str, dict[str, str], float]


def samples_of(metrics: Metrics, names: tuple[str, ...]) -> list[Sample]:
    """The counters' totals and gauges' values of `names` (attributes of `metrics`), for a child process
    to send to its parent (`ForwardedMetrics`)."""
    return [(name, sample.labels, sample.value)
            for name in names
            for family in getattr(metrics, name).collect()
            for sample in family.samples
            if not sample.name.endswith("_created")]


class ForwardedMetrics:
    """Parent side of a child's `samples_of`: a counter grows by what the child's total grew since its
    last report, a gauge takes the child's value. `restart()` when a new child counts from zero."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def restart(self) -> None:
        self._totals.clear()

    def apply(self, samples: list[Sample]) -> None:
        for name, labels, value in samples:
            metric = getattr(self.metrics, name)
            target = metric.labels(**labels) if labels else metric
            if isinstance(metric, Gauge):
                target.set(value)
                continue
            key = (name, tuple(sorted(labels.items())))
            delta = value - self._totals.get(key, 0.0)
            self._totals[key] = value
            if delta > 0:
                target.inc(delta)
