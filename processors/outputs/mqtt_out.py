"""Violation changes to MQTT, on `{topic_prefix}/{type}/{grid}` (QoS 1 by default), as JSON.

Subscribers pick what they need with topic filters: `citywatch/violations/bin_overflow/#`,
`citywatch/violations/+/FT-11`. A violation without a grid tag goes to `.../{type}/_`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from core.masking import present_violation
from core.settings import MqttOutputSettings, MqttSettings
from ingest.mqtt_source import close_client, configure_tls
from processors.outputs.feed import FeedEntry, ViolationFeed
from processors.outputs.queued import QueuedOutput

log = logging.getLogger(__name__)

# Paho holds at most this many unsent messages while the broker is away; beyond, publish fails and
# the change is counted as failed rather than growing memory without limit.
MAX_QUEUED_MESSAGES = 100_000
NO_GRID = "_"


def topic_segment(value: str) -> str:
    """A tag value as one topic level: MQTT wildcards and separators would change the topic's meaning."""
    cleaned = "".join("_" if ch in "/+#" else ch for ch in value).strip()
    return cleaned or NO_GRID


def violation_topic(prefix: str, entry: FeedEntry) -> str:
    """`{prefix}/{type}/{grid}`; a case event goes to `{prefix}/cases/{event}/{case type}/{grid}`."""
    if entry.case_event is not None:
        case = entry.case_event.case
        return (f"{prefix.rstrip('/')}/cases/{entry.case_event.kind.value}/{topic_segment(case.type)}/"
                f"{topic_segment(case.grid or NO_GRID)}")
    violation = entry.violation
    assert violation is not None
    grid = violation.tags.get("grid", NO_GRID)
    return f"{prefix.rstrip('/')}/{topic_segment(violation.type)}/{topic_segment(grid)}"


class MqttViolationOutput(QueuedOutput):
    name = "mqtt"

    def __init__(self, settings: MqttOutputSettings, url: str, feed: ViolationFeed,
                 connection: MqttSettings | None = None) -> None:
        super().__init__(events=settings.events)
        self.settings = settings
        self.feed = feed
        parsed = urlparse(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 1883
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=settings.client_id)
        self._client.max_queued_messages_set(MAX_QUEUED_MESSAGES)
        if connection is not None:
            # Same credentials and TLS as ingest when publishing to the same broker.
            if connection.username is not None:
                password = None if connection.password is None else connection.password.get_secret_value()
                self._client.username_pw_set(connection.username, password)
            if connection.tls.enabled:
                configure_tls(self._client, connection.tls)

    def connect(self) -> None:
        self._client.connect_async(self.host, self.port)
        self._client.loop_start()

    def send(self, entries: Sequence[FeedEntry]) -> None:
        for entry in entries:
            change_id = self.feed.cursor(entry.seq)
            shown = None if entry.violation is None else present_violation(entry.violation,
                                                                           plates=self.settings.plates)
            payload = json.dumps(entry.message(change_id, shown), ensure_ascii=False).encode()
            info = self._client.publish(violation_topic(self.settings.topic_prefix, entry), payload,
                                        qos=self.settings.qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
                # NO_CONN: paho keeps the message and sends it after the reconnect.
                raise RuntimeError(f"MQTT publish failed: {mqtt.error_string(info.rc)}")

    def close(self) -> None:
        close_client(self._client)
