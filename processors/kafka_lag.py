"""The processor group seen from outside (the api role): lag per partition and rates per role.

Lag is the events topic's end offset minus the group's committed offset, per partition: what standard
Kafka tooling shows. Rates come from offsets over time: the end offsets grow with what ingest produces,
the committed offsets with what the processors made durable, so the api role reports both roles' events/s
without talking to them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from core.metrics import Metrics
from core.settings import KafkaSettings
from processors.kafka_bus import client_config

log = logging.getLogger(__name__)

# Rates are measured over this much history of samples.
RATE_WINDOW_S = 10.0


class GroupMonitor:
    def __init__(self, settings: KafkaSettings, metrics: Metrics, *, client_id: str = "citywatch-api",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._admin: KafkaAdminClient | None = None
        self._consumer: KafkaConsumer | None = None
        self._client_id = client_id
        # (time, sum of end offsets, sum of committed offsets) of the events topic.
        self._samples: deque[tuple[float, int, int]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, interval_s: float = 5.0) -> None:
        """Sample in the background too, so /metrics has fresh lag and rates between status calls."""
        def run() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.status()
                except Exception as exc:  # Kafka unreachable: readiness says so; keep trying
                    log.warning("could not sample the processor group's lag: %s", exc)

        self._thread = threading.Thread(target=run, name="citywatch-lag-monitor", daemon=True)
        self._thread.start()

    def _clients(self) -> tuple[KafkaAdminClient, KafkaConsumer]:
        if self._admin is None or self._consumer is None:
            self._admin = KafkaAdminClient(**client_config(self.settings, f"{self._client_id}-admin"))
            self._consumer = KafkaConsumer(**client_config(self.settings, f"{self._client_id}-lag"),
                                           enable_auto_commit=False)
        return self._admin, self._consumer

    def status(self) -> dict[str, Any]:
        with self._lock:
            return self._sample()

    def _sample(self) -> dict[str, Any]:
        admin, consumer = self._clients()
        topics = self.settings.topics
        tps: list[TopicPartition] = []
        for topic in (topics.events, topics.dead_letters):
            partitions = consumer.partitions_for_topic(topic) or set()
            tps.extend(TopicPartition(topic, p) for p in sorted(partitions))
        end_offsets = consumer.end_offsets(tps) if tps else {}
        group = self.settings.group_id
        committed = admin.list_group_offsets({group: tps}).get(group, {}) if tps else {}
        rows = []
        end_total = committed_total = 0
        for tp in tps:
            end = end_offsets.get(tp, 0)
            offset = committed.get(tp)
            position = offset.offset if offset is not None and offset.offset >= 0 else 0
            # Never report less than what the group has committed, whatever the broker says of its end.
            end = max(end, position)
            lag = end - position
            self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
            rows.append({"topic": tp.topic, "partition": tp.partition, "end_offset": end,
                         "committed_offset": position, "lag": lag})
            if tp.topic == topics.events:
                end_total += end
                committed_total += position
        rates = self._rates(end_total, committed_total)
        self.metrics.events_per_second.labels("ingest").set(rates["ingest"])
        self.metrics.events_per_second.labels("process").set(rates["process"])
        return {"role": "api", "bus": "kafka", "group_id": group, "events_per_s": rates,
                "lag_total": sum(row["lag"] for row in rows if row["topic"] == topics.events),
                "partitions": rows}

    def _rates(self, end_total: int, committed_total: int) -> dict[str, float]:
        now = self._clock()
        self._samples.append((now, end_total, committed_total))
        while len(self._samples) > 2 and self._samples[1][0] <= now - RATE_WINDOW_S:
            self._samples.popleft()
        first_time, first_end, first_committed = self._samples[0]
        elapsed = now - first_time
        if elapsed <= 0:
            return {"ingest": 0.0, "process": 0.0}
        return {"ingest": round((end_total - first_end) / elapsed, 1),
                "process": round((committed_total - first_committed) / elapsed, 1)}

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            if self._admin is not None:
                self._admin.close()
            if self._consumer is not None:
                self._consumer.close()
            self._admin = self._consumer = None
