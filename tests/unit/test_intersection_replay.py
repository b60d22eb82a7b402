"""An hour of a busy intersection replayed through ingest and rules, checked against ground truth."""

from __future__ import annotations

import json
import random
from collections import Counter

import msgspec
import pytest
import yaml

from bench.intersection_feed import Feed, found, generate, scenario_config, write_recording
from citywatch.cli import main
from citywatch.replay import Message, Replayer, read_recording
from core.models import Violation
from core.settings import Settings, load_settings
from store.base import ViolationQuery
from store.sqlite_store import SqliteStore


@pytest.fixture(scope="module")
def feed() -> Feed:
    return generate(duration_s=3600, seed=1)


@pytest.fixture(scope="module")
def city(tmp_path_factory, feed):
    folder = tmp_path_factory.mktemp("city")
    config = folder / "city.yaml"
    config.write_text(yaml.safe_dump(scenario_config(), allow_unicode=True))
    recording = folder / "feed.jsonl"
    write_recording(feed, recording)
    return config, recording


def replay(settings: Settings, messages) -> list[Violation]:
    return Replayer(settings).run(messages).violations


def changes(violations: list[Violation]) -> list[tuple[str, int, str]]:
    return sorted((v.violation_id, v.updated_time_ms, v.status.value) for v in violations)


def test_clean_hour_gives_precision_and_recall_of_one(city, feed):
    config, recording = city
    violations = replay(load_settings(config), read_recording(recording))
    # Multisets: a violation found twice (two ids for one incident) is a false positive, not a match.
    got = found(violations)
    true_positives = got & feed.truth
    precision = true_positives.total() / got.total()
    recall = true_positives.total() / feed.truth.total()
    assert (precision, recall) == (1.0, 1.0), (sorted((got - feed.truth).elements())[:5],
                                               sorted((feed.truth - got).elements())[:5])
    assert {expected.type for expected in feed.truth} == {
        "red_light", "pedestrian_red", "yield_crosswalk", "illegal_parking", "wrong_way", "speeding",
        "no_helmet", "congestion"}
    assert len(feed.messages) > 9000


def test_an_incident_raised_under_two_ids_counts_twice(city):
    config, recording = city
    violations = replay(load_settings(config), read_recording(recording))
    congestion = [v for v in violations if v.type == "congestion"]
    opened, cleared = congestion[:2]  # one jam: its open and cleared changes are one violation
    assert opened.violation_id == cleared.violation_id
    again = msgspec.structs.replace(opened, violation_id="a-second-id")
    [(jam, count)] = found([opened, cleared]).items()
    assert count == 1
    assert found([opened, cleared, again]) == Counter({jam: 2})  # the duplicate is not hidden


def test_evidence_carries_the_registry_tags_and_position(city):
    config, recording = city
    violations = replay(load_settings(config), read_recording(recording))
    red = next(v for v in violations if v.type == "red_light")
    assert red.tags["department"] == "traffic_police" and red.location is not None
    assert red.evidence.plate and red.evidence.snapshot_url
    assert red.evidence.details["signal"]["state"] == "red"


def test_late_and_duplicated_delivery_of_the_hour_gives_the_same_violations(city):
    config, recording = city
    settings = load_settings(config)
    clean = list(read_recording(recording))
    rng = random.Random(3)
    messy = clean + rng.sample(clean, len(clean) // 10)
    # Each message up to 1.5 s later than recorded: out of order, but within the 2 s allowed lateness.
    arrivals = sorted(((m.received_ms + rng.randint(0, 1500), m) for m in messy), key=lambda pair: pair[0])
    delivered = [Message(m.topic, m.payload, arrival) for arrival, m in arrivals]
    expected = Replayer(settings).run(clean)
    got = Replayer(settings).run(delivered)
    assert Counter(changes(got.violations)) == Counter(changes(expected.violations))
    assert (got.late_events, got.duplicates) == (0, len(clean) // 10)
    # The reorder buffer is what makes it so: without it the same delivery is judged differently.
    unbuffered = Replayer(settings.with_overrides(pipeline__allowed_lateness_ms=0)).run(delivered)
    assert unbuffered.late_events > 0
    assert Counter(changes(unbuffered.violations)) != Counter(changes(expected.violations))


def test_a_threshold_change_shows_in_the_replay(city, feed):
    config, recording = city
    settings = load_settings(config).with_overrides(rules__red_light__grace_s=0.0)
    red = {v.violation_id for v in replay(settings, read_recording(recording)) if v.type == "red_light"}
    expected = sum(count for e, count in feed.truth.items() if e.type == "red_light")
    assert len(red) > expected  # cars that slipped in within 0.3 s of red now count


def test_replay_command_prints_violations_and_stores_them(city, tmp_path, capsysbinary):
    config, recording = city
    assert main(["replay", str(recording), "--config", str(config), "--store", str(tmp_path / "data")]) == 0
    captured = capsysbinary.readouterr()
    printed = [msgspec.json.decode(line, type=Violation) for line in captured.out.splitlines()]
    assert found(printed) == found(replay(load_settings(config), read_recording(recording)))
    assert b"red_light/open" in captured.err
    store = SqliteStore.in_directory(tmp_path / "data")
    try:
        stored = store.query_violations(ViolationQuery(types=("congestion",), limit=100)).items
        assert len(stored) == 3 and all(v.status.value == "cleared" for v in stored)
    finally:
        store.close()


def test_replay_paces_at_a_multiple_of_real_time(city, tmp_path):
    config, _ = city
    start_ms = 1_764_133_200_000
    lines = [{"topic": "citywatch/events/det-ix-demo-n", "time": start_ms + i * 10_000,
              "payload": {"device_id": "det-ix-demo-n", "kind": "detector", "time": start_ms + i * 10_000,
                          "attributes": {"approach": "north", "occupancy_pct": 50, "speed_kmh": 5,
                                         "interval_s": 10}}} for i in range(4)]
    recording = tmp_path / "paced.jsonl"
    recording.write_text("\n".join(json.dumps(line) for line in lines))
    slept: list[float] = []

    def clock() -> float:  # the replay's own clock: moves only when it sleeps
        return sum(slept)

    result = Replayer(load_settings(config)).run(read_recording(recording), speed=100.0,
                                                 sleep=slept.append, clock=clock)
    # 30 recorded seconds at 100x: 0.3 s, slept until each message (and each release of a held reading,
    # 2 s after it arrived) is due.
    assert sum(slept) == pytest.approx(0.3) and slept == pytest.approx([0.02, 0.08] * 3)
    assert [v.type for v in result.violations] == ["congestion"]


def test_a_broken_recording_line_is_reported_with_its_number(city, tmp_path, capsys):
    config, _ = city
    recording = tmp_path / "broken.jsonl"
    recording.write_text('{"topic": "a", "payload": {}}\n{"topic": 5}\n')
    assert main(["replay", str(recording), "--config", str(config)]) == 2
    assert "broken.jsonl:2" in capsys.readouterr().err
