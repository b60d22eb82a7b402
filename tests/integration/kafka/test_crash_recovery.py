"""kill -9 a processor mid-stream, start another: the store ends exactly as if nothing had crashed.

The reference is the same events judged by one engine that never stopped. Real processes (`citywatch
process`), a real Kafka-protocol broker, a real SQLite file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from kafka import KafkaProducer

from citywatch.models import Event
from citywatch.settings import KafkaSettings, Settings
from processors.catalogue import build_rules, partition_key
from processors.devices import NoDevices
from processors.engine import Engine
from processors.kafka_bus import KafkaBusProducer, ensure_topics
from processors.kafka_checkpoints import Checkpoint, CheckpointStore
from tests.support.events import reading
from tests.support.roles import RoleProcess
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

DEVICES = 40
READINGS_PER_DEVICE = 300
LATENESS_MS = 200
POISON_EVERY = 50


def feed() -> list[Event]:
    """Each bin fills, overflows for a while, is emptied, fills again: many opens and clears."""
    events = []
    for step in range(READINGS_PER_DEVICE):
        for device in range(DEVICES):
            fill = (step * 7 + device * 13) % 100
            events.append(reading(f"bin-{device:03d}", step, fill_pct=fill))
    return events


def reference_violations(events: list[Event], config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The same events through one engine with the same rules (the whole catalogue), never stopped."""
    settings = Settings.model_validate(config)
    engine = Engine(build_rules(settings.rules, NoDevices(), settings.devices),
                    allowed_lateness_ms=LATENESS_MS)
    out = engine.process(events, now_wall_ms=0)
    out.extend(engine.drain())
    final: dict[str, dict[str, Any]] = {}
    for violation in out.violations:  # later states replace earlier ones, as the store's upsert does
        final[violation.violation_id] = msgspec.to_builtins(violation)
    return final


def stored(data_dir: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    with sqlite3.connect(data_dir / "citywatch.sqlite3") as db:
        events = db.execute("SELECT count(*) FROM events").fetchone()[0]
        rows = db.execute("SELECT violation_id, status, start_time_ms, end_time_ms, updated_time_ms, "
                          "evidence FROM violations").fetchall()
    violations = {row[0]: {"status": row[1], "start_time_ms": row[2], "end_time_ms": row[3],
                           "updated_time_ms": row[4], "event_ids": msgspec.json.decode(row[5])["event_ids"]}
                  for row in rows}
    return events, violations


def produce_steadily(settings: KafkaSettings, events: list[Event], per_second: float = 3000) -> None:
    """The events at about `per_second`, with a poison record before every POISON_EVERY of them."""
    producer = KafkaBusProducer(settings, client_id="test-ingest")
    poison = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    started = time.monotonic()
    try:
        for start in range(0, len(events), POISON_EVERY):
            poison.send(settings.topics.events, key=partition_key(events[start]).encode(),
                        value=f"poison {start}".encode())
            producer.send(events[start:start + POISON_EVERY])
            # Paces the feed (the processors read it as it comes): not a wait for a condition.
            time.sleep(max(0.0, started + (start + POISON_EVERY) / per_second - time.monotonic()))
        producer.flush()
        poison.flush()
    finally:
        producer.close()
        poison.close()


def dead_letters_stored(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "citywatch.sqlite3") as db:
        return int(db.execute("SELECT count(*) FROM dead_letters").fetchone()[0])


def events_stored(data_dir: Path) -> int:
    if not (data_dir / "citywatch.sqlite3").exists():
        return 0
    try:
        return stored(data_dir)[0]
    except sqlite3.OperationalError:  # the schema is being created
        return 0


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
        assert violations == {vid: {"status": v["status"], "start_time_ms": v["start_time_ms"],
                                    "end_time_ms": v["end_time_ms"], "updated_time_ms": v["updated_time_ms"],
                                    "event_ids": v["evidence"]["event_ids"]} for vid, v in expected.items()}
        wait_for(lambda: dead_letters_stored(data_dir) >= poisoned, 30, 0.1,
                 "every poison record dead-lettered")
        assert dead_letters_stored(data_dir) == poisoned
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
