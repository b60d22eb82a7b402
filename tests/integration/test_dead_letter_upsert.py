"""Dead letters are upserted by their deterministic id: a Kafka replay (a processor re-reading the
dead-letter topic after a crash) stores each one once, on SQLite and on a real InfluxDB, and the API
lists each once."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from api.app import create_app
from api.services import ApiServices
from core.metrics import Metrics
from core.models import DeadLetter
from processors.kafka_bus import RecordCodec
from store.base import DeadLetterQuery
from tests.support.api_server import serve
from tests.support.influxdb import InfluxServer
from tests.support.stores import open_store, settle

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def letters() -> list[DeadLetter]:
    return [
        DeadLetter(reason="malformed_json", detail="payload is not JSON", topic="citywatch/events/bin-1",
                   payload=b'{"device_id": ', received_time_ms=T0),
        # Same message, same time and reason, another item of a batch: a different dead letter.
        DeadLetter(reason="invalid_field", detail="item 0: field fill_pct must be a number",
                   topic="citywatch/events/batch", payload=b"[1, 2]", received_time_ms=T0 + 5),
        DeadLetter(reason="invalid_field", detail="item 1: field fill_pct must be a number",
                   topic="citywatch/events/batch", payload=b"[1, 2]", received_time_ms=T0 + 5),
        DeadLetter(reason="rule_error", detail="rule bin_overflow failed: ValueError: x", topic="",
                   payload=b'{"event_id": "e1"}', received_time_ms=T0 + 9, source="rule:bin_overflow"),
    ]


def replayed(letter: DeadLetter) -> DeadLetter:
    """The copy a processor decodes when it re-reads the dead-letter topic."""
    codec = RecordCodec()
    return codec.decode_dead_letter(codec.encode_json(letter))


@pytest.mark.parametrize("kind", ["embedded", "influxdb"])
def test_the_same_dead_letters_written_twice_are_stored_once(kind: str, tmp_path: Path,
                                                             influx_server: InfluxServer) -> None:
    store = open_store(kind, tmp_path, influx_server)
    try:
        first = letters()
        assert len({letter.dead_letter_id for letter in first}) == len(first)
        store.write_dead_letters(first)
        settle(store)
        # The replay arrives in a later batch, decoded from Kafka again, in another order.
        store.write_dead_letters([replayed(letter) for letter in reversed(first)])
        settle(store)

        stored = store.query_dead_letters(DeadLetterQuery(limit=100)).items
        assert sorted(stored, key=lambda d: d.dead_letter_id) == sorted(first, key=lambda d: d.dead_letter_id)
        assert store.count_dead_letters_by_reason() == {"malformed_json": 1, "invalid_field": 2,
                                                        "rule_error": 1}

        with serve(create_app(ApiServices(store=store, metrics=Metrics()))) as client:
            items = client.get("/v1/dead-letters").json()["items"]
        assert sorted(item["dead_letter_id"] for item in items) == sorted(d.dead_letter_id for d in first)
        assert [item["received_time_ms"] for item in items] == [T0 + 9, T0 + 5, T0 + 5, T0]
    finally:
        store.close()


def test_the_id_follows_the_content() -> None:
    letter = letters()[0]
    assert replayed(letter) == letter
    assert DeadLetter(**{**msgspec.structs.asdict(letter), "dead_letter_id": ""}) == letter
    # A record from an older ingest without the id: derived on decode, the same.
    legacy = msgspec.json.encode({key: value for key, value in msgspec.to_builtins(letter).items()
                                  if key != "dead_letter_id"})
    assert RecordCodec().decode_dead_letter(legacy).dead_letter_id == letter.dead_letter_id
    for change in ({"received_time_ms": T0 + 1}, {"source": "kafka"}, {"payload": b'{"device_id": 1'},
                   {"topic": "citywatch/events/bin-2"}, {"detail": "other"}, {"reason": "oversized"}):
        other = DeadLetter(**{**msgspec.structs.asdict(letter), "dead_letter_id": "", **change})
        assert other.dead_letter_id != letter.dead_letter_id, change
