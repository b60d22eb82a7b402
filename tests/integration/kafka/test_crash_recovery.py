"""kill -9 a processor mid-stream, start another: the store ends exactly as if nothing had crashed, its
violations and its exposure totals (the denominators of the indices, docs/denominators.md) alike.

The reference is the same events judged by one engine that never stopped. Real processes (`citywatch
process`), a real Kafka-protocol broker, a real SQLite file.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from core.settings import KafkaSettings
from processors.kafka_bus import ensure_topics
from processors.kafka_checkpoints import Checkpoint, CheckpointStore
from tests.support.kafka_feed import (
    LATENESS_MS,
    POISON_EVERY,
    dead_letters_stored,
    events_stored,
    expected_rows,
    exposures_stored,
    feed,
    produce_steadily,
    reference_exposures,
    reference_violations,
    stored,
)
from tests.support.roles import RoleProcess
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

def test_kill_9_mid_stream_then_another_processor_ends_with_the_uncrashed_result(
        kafka_settings: KafkaSettings, tmp_path: Path):
    settings = kafka_settings.model_copy(update={"checkpoint_interval_s": 0.5})
    config = {
        "bus": {"kind": "kafka", "kafka": settings.model_dump(mode="json")},
        # The feed's fixed dates lie further back than the default retention: keep everything.
        "store": {"data_dir": str(tmp_path / "data"),
                  "retention": {"raw_readings_days": 36500, "violations_days": 36500}},
        # Small batches: many commits and checkpoints while the stream is still flowing.
        "pipeline": {"allowed_lateness_ms": LATENESS_MS, "batch_events": 100},
        "devices_file": None,
    }
    events = feed()
    ensure_topics(settings)
    # The feed arrives at a steady rate while the processors run, so the first one is always killed
    # mid-stream (a feed loaded in advance could be judged to the end before the kill), with poison records
    # along it: each is dead-lettered once, also when the replay after the crash reads it again.
    poisoned = len(range(0, len(events), POISON_EVERY))
    feeding = threading.Thread(target=produce_steadily, args=(settings, events), daemon=True)
    feeding.start()

    first = RoleProcess(tmp_path, "process", config, name="first").start()
    data_dir = tmp_path / "data"

    def checkpointed() -> bool:
        for line in first.get_text("/metrics").splitlines():
            if line.startswith("citywatch_kafka_checkpoints_total "):
                return float(line.split()[1]) >= 2
        return False

    # Killed once it has checkpointed (both partitions, or one twice), while the stream still flows and
    # after it stored more since: the second processor replays what the first judged after its checkpoint.
    wait_for(checkpointed, 60, 0.01, "the first processor's checkpoints")
    since = events_stored(data_dir)
    wait_for(lambda: events_stored(data_dir) >= since + 2 * POISON_EVERY, 30, 0.01, "more events stored")
    first.kill()
    assert events_stored(data_dir) < len(events), "the processor finished before it could be killed"

    second = RoleProcess(tmp_path, "process", config, name="second").start()
    try:
        expected = reference_violations(events, config)
        feeding.join(60)
        wait_for(lambda: events_stored(data_dir) == len(events), 60, 0.1, "every event stored")

        def converged() -> bool:
            return {vid: v["status"] for vid, v in stored(data_dir)[1].items()} == \
                {vid: v["status"] for vid, v in expected.items()}

        wait_for(converged, 30, 0.1, "the violations to match the uncrashed run")
        count, violations = stored(data_dir)
        assert count == len(events)
        assert violations == expected_rows(expected)
        wait_for(lambda: dead_letters_stored(data_dir) >= poisoned, 30, 0.1,
                 "every poison record dead-lettered")
        assert dead_letters_stored(data_dir) == poisoned
        # The replay after the crash rewrote the totals the first processor had already stored after its
        # checkpoint: the same running totals again, never added to them.
        exposures = reference_exposures(events, config)
        assert {counter for _, _, counter in exposures} == {"bin_minutes", "bin_overflow_minutes"}
        wait_for(lambda: exposures_stored(data_dir) == exposures, 30, 0.1,
                 "the exposure totals to match the uncrashed run")
        # The second processor resumed from the first one's checkpoints rather than from the start.
        assert "restored from its checkpoint" in second.log()
        status = second.get("/v1/status")
        assert status["events_total"] < len(events)
    finally:
        assert second.stop() == 0


def test_a_processor_that_cannot_resume_its_state_exits_with_an_error(kafka_settings: KafkaSettings,
                                                                      tmp_path: Path):
    """Another group's checkpoints in our checkpoints topic: refuse them loudly, and exit so that an
    orchestrator restarts the process, rather than judge from an empty or foreign state."""
    ensure_topics(kafka_settings)
    other_group = kafka_settings.model_copy(update={"group_id": "someone-else"})
    checkpoints = CheckpointStore(other_group, "test-other-group")
    try:
        checkpoints.write([Checkpoint(group_id="someone-else", topic=kafka_settings.topics.events,
                                      partition=p, offset=0, snapshot=b"", written_wall_ms=0)
                           for p in range(kafka_settings.partitions)])
    finally:
        checkpoints.close()
    config = {"bus": {"kind": "kafka", "kafka": kafka_settings.model_dump(mode="json")},
              "store": {"data_dir": str(tmp_path / "data")}, "devices_file": None}
    process = RoleProcess(tmp_path, "process", config).start(wait_ready=False)
    assert process.process is not None
    assert process.process.wait(60) == 1
    process.process = None
    assert "give each processor group its own checkpoints topic" in process.log()
