"""A bin feed with many violation opens and clears, produced to Kafka at a steady rate with poison
records along it, the uncrashed reference judgement of it, and what a processor's SQLite store holds."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec
from kafka import KafkaProducer

from core.models import Event
from core.settings import KafkaSettings, Settings
from processors.catalogue import build_rules, partition_key
from processors.devices import NoDevices
from processors.engine import Engine
from processors.kafka_bus import KafkaBusProducer
from tests.support.events import reading

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


def reference_exposures(events: list[Event], config: dict[str, Any]) -> dict[tuple[str, str, str], float]:
    """The exposure totals (local day, device, counter) -> value of one engine that never stopped."""
    settings = Settings.model_validate(config)
    engine = Engine(build_rules(settings.rules, NoDevices(), settings.devices),
                    allowed_lateness_ms=LATENESS_MS, time_zone=settings.traffic.time_zone)
    engine.process(events, now_wall_ms=0)
    engine.drain()
    return {(t.day, t.device_id, t.counter): t.value for t in engine.exposures.totals()}


def exposures_stored(data_dir: Path) -> dict[tuple[str, str, str], float]:
    with sqlite3.connect(data_dir / "citywatch.sqlite3") as db:
        return {(day, device, counter): value for day, device, counter, value in
                db.execute("SELECT day, device_id, counter, value FROM exposure_totals")}


def stored(data_dir: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    with sqlite3.connect(data_dir / "citywatch.sqlite3") as db:
        events = db.execute("SELECT count(*) FROM events").fetchone()[0]
        violations = stored_violations(db)
    return events, violations


def stored_violations(db: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Each stored violation's state, in the shape `expected_rows` gives the reference."""
    rows = db.execute("SELECT violation_id, status, start_time_ms, end_time_ms, updated_time_ms, "
                      "evidence FROM violations").fetchall()
    return {row[0]: {"status": row[1], "start_time_ms": row[2], "end_time_ms": row[3],
                     "updated_time_ms": row[4], "event_ids": msgspec.json.decode(row[5])["event_ids"]}
            for row in rows}


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


class StoreContents:
    """What several processors' own stores hold together, as one shared store would hold it.

    Each processor keeps its own SQLite file, so a partition judged by one processor and then (after a
    crash or a rebalance) by another leaves rows in both: events and dead letters are the union of their
    ids, and a violation's state is the one most recently updated in any of them.
    """

    def __init__(self, data_dirs: list[Path]) -> None:
        self.event_ids: set[str] = set()
        self.dead_letter_ids: set[str] = set()
        self.violations: dict[str, dict[str, Any]] = {}
        for data_dir in data_dirs:
            path = data_dir / "citywatch.sqlite3"
            if not path.exists():
                continue
            try:
                self._read(path)
            except sqlite3.OperationalError:  # the schema is being created
                continue

    def _read(self, path: Path) -> None:
        with sqlite3.connect(path) as db:
            self.event_ids.update(row[0] for row in db.execute("SELECT event_id FROM events"))
            self.dead_letter_ids.update(
                row[0] for row in db.execute("SELECT dead_letter_id FROM dead_letters"))
            violations = stored_violations(db)
        for violation_id, state in violations.items():
            known = self.violations.get(violation_id)
            if known is None or state["updated_time_ms"] >= known["updated_time_ms"]:
                self.violations[violation_id] = state


def expected_rows(reference: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The reference violations in the shape StoreContents and `stored` read them."""
    return {vid: {"status": v["status"], "start_time_ms": v["start_time_ms"], "end_time_ms": v["end_time_ms"],
                  "updated_time_ms": v["updated_time_ms"], "event_ids": v["evidence"]["event_ids"]}
            for vid, v in reference.items()}
