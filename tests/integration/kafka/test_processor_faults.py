"""Processors crash or leave mid-stream while others run: the survivors carry on, the stopped ones come
back, and what is stored equals an uncrashed run.

Real `citywatch process` processes, each in its own working directory with its own store (no file is
shared between them), on a real Kafka-protocol broker, with a feed that keeps arriving throughout.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from core.settings import KafkaSettings
from processors.kafka_bus import ensure_topics
from tests.support.kafka_feed import (
    LATENESS_MS,
    POISON_EVERY,
    StoreContents,
    expected_rows,
    feed,
    produce_steadily,
    reference_violations,
)
from tests.support.roles import RoleProcess
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

# Slow enough that the feed is still arriving when the processors are stopped, and after the survivors
# took their partitions over.
FEED_PER_SECOND = 800


def processor_config(settings: KafkaSettings, data_dir: Path) -> dict[str, Any]:
    return {
        "bus": {"kind": "kafka", "kafka": settings.model_dump(mode="json")},
        "store": {"data_dir": str(data_dir),
                  "retention": {"raw_readings_days": 36500, "violations_days": 36500}},
        "pipeline": {"allowed_lateness_ms": LATENESS_MS, "batch_events": 100},
        "devices_file": None,
    }


def assigned_events_partitions(process: RoleProcess, events_topic: str) -> set[int]:
    status = process.get("/v1/status")
    return {row["partition"] for row in status["partitions"] if row["topic"] == events_topic}


@pytest.mark.parametrize(
    ("processors", "stopped", "how"),
    [(2, 1, "kill -9"), (2, 1, "SIGTERM"), (3, 2, "kill -9")],
    ids=["kill-1-of-2", "sigterm-1-of-2", "kill-2-of-3"],
)
def test_survivors_take_over_and_the_stopped_come_back_with_the_uncrashed_result(
        kafka_settings: KafkaSettings, tmp_path: Path, processors: int, stopped: int, how: str) -> None:
    settings = kafka_settings.model_copy(update={"partitions": processors})
    ensure_topics(settings)
    events = feed()
    poisoned = len(range(0, len(events), POISON_EVERY))
    data_dirs = [tmp_path / f"p{index}" / "data" for index in range(processors)]
    configs = [processor_config(settings, data_dir) for data_dir in data_dirs]

    def start(indexes: range) -> list[RoleProcess]:
        """Start processors together (they join the group in one rebalance) and wait until each owns a
        partition."""
        started = [RoleProcess(tmp_path / f"p{index}", "process", configs[index], name=f"p{index}")
                   .start(wait_ready=False) for index in indexes]
        running.extend(started)
        for process in started:
            wait_for(process.ready, 60, 0.1, f"{process.name} to be ready (log: {process.log_path})")
        wait_for(lambda: all(assigned_events_partitions(p, settings.topics.events) for p in running), 60, 0.2,
                 "every processor to be assigned a partition")
        return started

    def contents() -> StoreContents:
        return StoreContents(data_dirs)

    everyone = set(range(processors))
    running: list[RoleProcess] = []
    feeding = threading.Thread(target=produce_steadily, args=(settings, events, FEED_PER_SECOND), daemon=True)
    try:
        start(range(processors))
        # The feed starts once the group has formed, so the processors are stopped while it still flows.
        feeding.start()
        wait_for(lambda: len(contents().event_ids) >= 4 * POISON_EVERY, 30, 0.05,
                 "events stored by the group")

        leaving, survivors = running[:stopped], running[stopped:]
        for process in leaving:
            if how == "kill -9":
                process.kill()
            else:
                assert process.stop() == 0
        assert len(contents().event_ids) < len(events), "the feed ended before the processors were stopped"

        # The survivors rejoin and take every partition over; none of them stops.
        wait_for(lambda: set().union(*(assigned_events_partitions(p, settings.topics.events)
                                       for p in survivors)) == everyone, 60, 0.2,
                 "the survivors to own every partition")
        for process in survivors:
            assert process.process is not None and process.process.poll() is None, process.log()[-3000:]

        running[:] = survivors
        start(range(stopped))

        feeding.join(60)
        expected = expected_rows(reference_violations(events, configs[0]))
        wait_for(lambda: len(contents().event_ids) == len(events), 90, 0.2, "every event stored")
        wait_for(lambda: contents().violations == expected, 60, 0.2,
                 "the violations to equal the uncrashed run")
        wait_for(lambda: len(contents().dead_letter_ids) == poisoned, 30, 0.2,
                 "every poison record dead-lettered")
        final = contents()
        assert (len(final.event_ids), final.violations, len(final.dead_letter_ids)) == \
            (len(events), expected, poisoned)
        for process in survivors:
            log = process.log()
            assert "Kafka processor stopped" not in log, log[-3000:]
    finally:
        codes = [process.stop() for process in running if process.process is not None]
    assert codes == [0] * len(codes)
