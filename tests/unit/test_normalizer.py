"""The normalizer (size, routing, decoding, registry) and the ingest service putting its output on the bus."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from core.metrics import Metrics
from core.models import DeadLetter, Event, Location
from core.settings import DeviceSettings, IngestSettings, MqttSettings, TopicRoute
from ingest import normalizer as normalizer_module
from ingest.codecs.base import Codec
from ingest.codecs.native import NativeCodec
from ingest.normalizer import IngestResult, Normalizer, TopicFilter
from ingest.registry import DeviceRegistry
from ingest.service import MAX_KIND_LABELS, IngestService
from processors.bus import BusClosed, BusProducer, OnDurable, encode_item
from processors.kafka_bus import RecordCodec

RECEIVED_MS = 1_795_669_200_000
EVENT_MS = RECEIVED_MS - 1_000
MAX_PAYLOAD = 4096


def payload(*readings: dict[str, Any]) -> bytes:
    return msgspec.json.encode(readings[0] if len(readings) == 1 else list(readings))


def reading(device_id: str = "bin-0001", **fields: Any) -> dict[str, Any]:
    return {"device_id": device_id, "kind": "bin", "time": EVENT_MS, "attributes": {"fill_pct": 50}, **fields}


def devices() -> list[DeviceSettings]:
    return [
        DeviceSettings(device_id="bin-0001", kind="bin", lat=52.1, lon=4.9,
                       tags={"district": "centre", "zone": "A"}),
        DeviceSettings(device_id="bin-0002", kind="bin"),
    ]


def normalizer(
    *,
    routes: Sequence[TopicRoute] = (TopicRoute(pattern="citywatch/events/#", codec="native"),),
    codecs: dict[str, Codec] | None = None,
    accept_unknown: bool = False,
    dead_letter_bytes: int = 1024,
    registry: DeviceRegistry | None = None,
) -> Normalizer:
    settings = IngestSettings(routes=list(routes), accept_unknown_devices=accept_unknown,
                              dead_letter_payload_bytes=dead_letter_bytes)
    return Normalizer(settings, MAX_PAYLOAD, registry or DeviceRegistry(devices()),
                      codecs if codecs is not None else {"native": NativeCodec()})


class StaticCodec:
    """A codec that returns or raises what it is given, and records the topics it saw."""

    def __init__(self, name: str, result: list[Event] | BaseException) -> None:
        self.name = name
        self.result = result
        self.topics: list[str] = []

    def decode(self, topic: str, payload: bytes, received_time_ms: int) -> list[Event]:
        self.topics.append(topic)
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


# --- topic filters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "topic", "matches"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/b/c", False),
        ("a/b", "a/B", False),
        ("a/+", "a/b", True),
        ("a/+", "a/", True),  # `+` matches an empty level
        ("a/+", "a/b/c", False),
        ("a/+/c", "a/x/c", True),
        ("a/+/c", "a/x/y/c", False),
        ("a/#", "a", True),  # `#` also matches the parent level
        ("a/#", "a/b/c", True),
        ("a/#", "ab", False),
        ("+/+", "/x", True),
        ("#", "anything/at/all", True),
        ("#", "$SYS/broker/load", False),  # wildcards at the start never match `$` topics
        ("+/broker/load", "$SYS/broker/load", False),
        ("$SYS/#", "$SYS/broker/load", True),
        ("a.b", "axb", False),  # `.` is literal
        ("a/b", "a/b\n", False),  # no trailing-newline loophole
        ("citywatch/events/#", "citywatch/events/bin-0001", True),
    ],
)
def test_topic_filter_matching(pattern: str, topic: str, matches: bool) -> None:
    assert TopicFilter(pattern).matches(topic) is matches


@pytest.mark.parametrize("pattern", ["", "a/#/b", "a/b#", "a+/b", "#/a"])
def test_invalid_topic_filters_are_refused_at_construction(pattern: str) -> None:
    with pytest.raises(ValueError):
        TopicFilter(pattern)


# --- routing ------------------------------------------------------------------------------------


def test_first_matching_route_decodes() -> None:
    first = StaticCodec("first", [])
    second = StaticCodec("second", [])
    routes = [TopicRoute.model_construct(pattern="vendor/x/#", codec="first"),
              TopicRoute.model_construct(pattern="vendor/#", codec="second")]
    norm = normalizer(routes=routes, codecs={"first": first, "second": second})
    norm.handle("vendor/x/1", b"{}", RECEIVED_MS)
    norm.handle("vendor/y/1", b"{}", RECEIVED_MS)
    assert (first.topics, second.topics) == (["vendor/x/1"], ["vendor/y/1"])


def test_routes_stay_right_for_topics_seen_again_and_after_the_remembered_ones_are_forgotten(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(normalizer_module, "ROUTE_CACHE_TOPICS", 2)
    first = StaticCodec("first", [])
    second = StaticCodec("second", [])
    routes = [TopicRoute.model_construct(pattern="vendor/x/#", codec="first"),
              TopicRoute.model_construct(pattern="vendor/#", codec="second")]
    norm = normalizer(routes=routes, codecs={"first": first, "second": second})
    topics = ["vendor/x/1", "vendor/y/1", "other/1", "vendor/x/2", "vendor/x/1", "other/1", "vendor/y/1"]
    reasons = [[letter.reason for letter in norm.handle(topic, b"{}", RECEIVED_MS).dead_letters]
               for topic in topics]
    assert first.topics == ["vendor/x/1", "vendor/x/2", "vendor/x/1"]
    assert second.topics == ["vendor/y/1", "vendor/y/1"]
    assert reasons == [[], [], ["unknown_topic"], [], [], ["unknown_topic"], []]
    assert len(norm._routed) <= 2  # the memory of routed topics stays bounded


def test_route_naming_a_missing_codec_is_a_construction_error() -> None:
    with pytest.raises(ValueError, match="'missing'"):
        normalizer(routes=[TopicRoute.model_construct(pattern="a/#", codec="missing")])


def test_unknown_topic_is_dead_lettered() -> None:
    result = normalizer().handle("other/topic", payload(reading()), RECEIVED_MS)
    [letter] = result.dead_letters
    assert result.events == []
    assert (letter.reason, letter.topic, letter.source) == ("unknown_topic", "other/topic", "")
    assert "'other/topic'" in letter.detail


# --- accepted and enriched ----------------------------------------------------------------------


def test_registered_device_event_is_enriched_with_position_and_tags() -> None:
    result = normalizer().handle("citywatch/events/bin-0001", payload(reading()), RECEIVED_MS)
    [event] = result.events
    assert result.dead_letters == []
    assert event.location == Location(lat=52.1, lon=4.9)
    assert event.tags == {"district": "centre", "zone": "A"}
    assert (event.ingest_time_ms, event.source) == (RECEIVED_MS, "native")


def test_event_position_wins_over_the_registry_and_event_tags_win_over_device_tags() -> None:
    registry = DeviceRegistry(devices())
    event = Event(event_id="e", device_id="bin-0001", kind="bin", event_time_ms=EVENT_MS,
                  ingest_time_ms=RECEIVED_MS, location=Location(lat=1.0, lon=2.0), tags={"zone": "B"})
    enriched = registry.enrich(event)
    assert enriched.location == Location(lat=1.0, lon=2.0)
    assert enriched.tags == {"district": "centre", "zone": "B"}


def test_device_without_position_or_tags_leaves_the_event_untouched() -> None:
    registry = DeviceRegistry(devices())
    event = Event(event_id="e", device_id="bin-0002", kind="bin", event_time_ms=EVENT_MS,
                  ingest_time_ms=RECEIVED_MS)
    assert registry.enrich(event) is event


# --- dead letters -------------------------------------------------------------------------------


def test_oversized_payload_is_dead_lettered_without_decoding() -> None:
    codec = StaticCodec("native", [])
    norm = normalizer(codecs={"native": codec}, dead_letter_bytes=100)
    result = norm.handle("citywatch/events/x", b"x" * (MAX_PAYLOAD + 1), RECEIVED_MS)
    [letter] = result.dead_letters
    assert codec.topics == []
    assert letter.reason == "oversized"
    assert letter.detail == f"payload of {MAX_PAYLOAD + 1} bytes exceeds the limit of {MAX_PAYLOAD} bytes"
    assert letter.payload == b"x" * 100


def test_payload_at_the_limit_is_decoded() -> None:
    codec = StaticCodec("native", [])
    normalizer(codecs={"native": codec}).handle("citywatch/events/x", b"x" * MAX_PAYLOAD, RECEIVED_MS)
    assert codec.topics == ["citywatch/events/x"]


def test_codec_error_becomes_a_dead_letter_with_its_reason_and_truncated_payload() -> None:
    raw = payload(reading(kind="BAD", attributes={"note": "x" * 500}))
    result = normalizer(dead_letter_bytes=64).handle("citywatch/events/bin-0001", raw, RECEIVED_MS)
    [letter] = result.dead_letters
    assert letter == DeadLetter(
        reason="invalid_field", detail="kind: expected 1..64 characters of a-z 0-9 _ ., got 'BAD'",
        topic="citywatch/events/bin-0001", payload=raw[:64], received_time_ms=RECEIVED_MS, source="native",
    )


def test_unknown_device_is_dead_lettered_naming_the_device_and_the_event() -> None:
    result = normalizer().handle("citywatch/events/bin-9999", payload(reading("bin-9999")), RECEIVED_MS)
    [letter] = result.dead_letters
    assert result.events == []
    assert letter.reason == "unknown_device"
    assert letter.detail.startswith("device 'bin-9999' is not registered (event ")
    assert f"time {EVENT_MS} ms" in letter.detail


def test_batch_with_an_unknown_device_keeps_the_others() -> None:
    raw = payload(reading("bin-0001"), reading("ghost"), reading("bin-0002"))
    result = normalizer().handle("citywatch/events", raw, RECEIVED_MS)
    assert [event.device_id for event in result.events] == ["bin-0001", "bin-0002"]
    assert [(letter.reason, letter.payload) for letter in result.dead_letters] == [("unknown_device", raw)]


def test_unknown_devices_are_accepted_when_configured() -> None:
    norm = normalizer(accept_unknown=True)
    result = norm.handle("citywatch/events", payload(reading("ghost")), RECEIVED_MS)
    [event] = result.events
    assert (event.device_id, event.location, event.tags, result.dead_letters) == ("ghost", None, {}, [])


def test_codec_crash_is_caught_logged_and_dead_lettered(caplog: pytest.LogCaptureFixture) -> None:
    norm = normalizer(codecs={"native": StaticCodec("native", KeyError("boom"))})
    result = norm.handle("citywatch/events/bin-0001", b'{"secret-ish": 1}', RECEIVED_MS)
    [letter] = result.dead_letters
    assert (letter.reason, letter.source) == ("codec_crash", "native")
    assert letter.detail == "codec 'native' raised KeyError: 'boom'"
    [record] = [r for r in caplog.records if r.name == "ingest.normalizer"]
    assert record.exc_info is not None
    assert "b'{\"secret-ish\": 1}'" in record.getMessage()


def test_handle_never_raises_on_arbitrary_input() -> None:
    norm = normalizer()
    for raw in (b"", b"\x00" * 10, b"[" * 3000, b"{}", b"null", "é".encode()):
        assert isinstance(norm.handle("citywatch/events/x", raw, RECEIVED_MS), IngestResult)


# --- registry -----------------------------------------------------------------------------------


def test_registry_lookup_upsert_and_deactivate() -> None:
    registry = DeviceRegistry(devices())
    assert len(registry) == 2 and "bin-0001" in registry and "nope" not in registry
    registry.upsert(DeviceSettings(device_id="air-1", kind="air"))
    assert registry.get("air-1") == DeviceSettings(device_id="air-1", kind="air")
    assert registry.deactivate("air-1") is True
    assert registry.deactivate("air-1") is False
    assert registry.get("air-1") is None


def test_registry_refuses_a_device_registered_twice() -> None:
    with pytest.raises(ValueError, match="bin-0001"):
        DeviceRegistry([*devices(), DeviceSettings(device_id="bin-0001", kind="bin")])


# --- the service: normaliser output onto the bus, counted ---------------------------------------


class RecordingProducer(BusProducer):
    def __init__(self, closed: bool = False) -> None:
        self.events: list[Event] = []
        self.dead_letters: list[DeadLetter] = []
        self.closed = closed

    def send(self, events: Sequence[Event], dead_letters: Sequence[DeadLetter] = (), *,
             timeout_s: float | None = None, on_durable: OnDurable | None = None) -> None:
        if self.closed:
            raise BusClosed("closed")
        self.events.extend(events)
        self.dead_letters.extend(dead_letters)
        if on_durable is not None:
            on_durable(None)

    def flush(self, timeout_s: float | None = None) -> None:
        pass


def service(producer: BusProducer, metrics: Metrics, norm: Normalizer | None = None) -> IngestService:
    # No broker: the MQTT client is only created, never started; messages go in at the boundary.
    return IngestService(host="127.0.0.1", port=1, settings=MqttSettings(), topics=["citywatch/events/#"],
                         normalizer=norm or normalizer(), producer=producer, metrics=metrics)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_service_sends_events_and_dead_letters_and_counts_them() -> None:
    producer, metrics = RecordingProducer(), Metrics()
    ingest = service(producer, metrics)
    raw = payload(reading("bin-0001"), reading("ghost"), reading("bin-0002", kind="air"))
    ingest.handle_message("citywatch/events", raw, RECEIVED_MS)
    ingest.handle_message("citywatch/events", b"nope", RECEIVED_MS)
    assert [event.device_id for event in producer.events] == ["bin-0001", "bin-0002"]
    assert [letter.reason for letter in producer.dead_letters] == ["unknown_device", "malformed_json"]
    assert sample(metrics, "citywatch_mqtt_messages_received_total") == 2
    assert sample(metrics, "citywatch_events_accepted_total", kind="bin") == 1
    assert sample(metrics, "citywatch_events_accepted_total", kind="air") == 1
    assert sample(metrics, "citywatch_dead_letters_total", reason="unknown_device") == 1
    assert sample(metrics, "citywatch_dead_letters_total", reason="malformed_json") == 1


def test_service_bounds_the_kind_label() -> None:
    producer, metrics = RecordingProducer(), Metrics()
    ingest = service(producer, metrics, normalizer(accept_unknown=True))
    for index in range(MAX_KIND_LABELS + 5):
        ingest.handle_message("citywatch/events", payload(reading(kind=f"k{index}")), RECEIVED_MS)
    assert sample(metrics, "citywatch_events_accepted_total", kind="other") == 5
    assert sample(metrics, "citywatch_events_accepted_total", kind="k0") == 1


def test_service_leaves_a_message_unacknowledged_when_the_bus_is_closed(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    ingest = service(RecordingProducer(closed=True), metrics)
    verdicts: list[bool] = []
    ingest.handle_message("citywatch/events", payload(reading()), RECEIVED_MS, verdicts.append)
    assert verdicts == [False]  # the broker redelivers it
    assert "it is not acknowledged" in caplog.text
    assert sample(metrics, "citywatch_events_accepted_total", kind="bin") == 0
    assert sample(metrics, "citywatch_mqtt_messages_not_acked_total") == 1


def test_service_acknowledges_once_the_bus_confirms() -> None:
    metrics = Metrics()
    ingest = service(RecordingProducer(), metrics)
    verdicts: list[bool] = []
    ingest.handle_message("citywatch/events", payload(reading()), RECEIVED_MS, verdicts.append)
    ingest.handle_message("citywatch/events", b"nope", RECEIVED_MS, verdicts.append)  # a dead letter
    assert verdicts == [True, True]
    assert sample(metrics, "citywatch_mqtt_messages_not_acked_total") == 0


def test_service_is_not_connected_before_start() -> None:
    ingest = service(RecordingProducer(), Metrics())
    assert (ingest.connected, ingest.subscribed, ingest.error) == (False, False, None)


def test_measurements_of_the_wrong_type_or_impossible_value_are_rejected_per_event() -> None:
    registry = DeviceRegistry([DeviceSettings(device_id="bin-0001", kind="bin")])
    normalizer = Normalizer(IngestSettings(), 1 << 20, registry, {"native": NativeCodec()})
    batch = [
        {"device_id": "bin-0001", "kind": "bin", "time": RECEIVED_MS, "attributes": {"fill_pct": "full"}},
        {"device_id": "bin-0001", "kind": "bin", "time": RECEIVED_MS + 1, "attributes": {"fill_pct": 250}},
        {"device_id": "bin-0001", "kind": "bin", "time": RECEIVED_MS + 2, "attributes": {"speed_kmh": True}},
        {"device_id": "bin-0001", "kind": "bin", "time": RECEIVED_MS + 3,
         "attributes": {"fill_pct": 100, "firmware": "v1", "note_s": None}},
    ]
    result = normalizer.handle("citywatch/events/bin-0001", json.dumps(batch).encode(), RECEIVED_MS)
    assert [event.event_time_ms for event in result.events] == [RECEIVED_MS + 3]
    details = [letter.detail for letter in result.dead_letters]
    assert {letter.reason for letter in result.dead_letters} == {"invalid_field"}
    assert details[0].startswith("attributes.fill_pct: expected a number, got 'full'")
    assert details[1].startswith("attributes.fill_pct: 250 is outside the physical range 0..100")
    assert details[2].startswith("attributes.speed_kmh: expected a number, got True")


def test_a_deactivated_device_is_dead_lettered() -> None:
    registry = DeviceRegistry([DeviceSettings(device_id="bin-0001", kind="bin", active=False)])
    normalizer = Normalizer(IngestSettings(), 1 << 20, registry, {"native": NativeCodec()})
    body = {"device_id": "bin-0001", "kind": "bin", "time": RECEIVED_MS, "attributes": {"fill_pct": 5}}
    result = normalizer.handle("citywatch/events/bin-0001", json.dumps(body).encode(), RECEIVED_MS)
    assert result.events == [] and [d.reason for d in result.dead_letters] == ["inactive_device"]


# --- values the bus and the stores cannot carry ----------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "detail"),
    [
        ({"fill_pct": 50, "count": 2**63},
         "attributes.count: integer 9223372036854775808 is beyond the 64-bit"),
        ({"fill_pct": 50, "raw": {"frames": [1, -(2**63) - 1]}},
         "attributes.raw.frames[1]: integer -9223372036854775809 is beyond the 64-bit"),
        ({"fill_pct": 50, "huge": 10**200}, "attributes.huge: integer of 665 bits is beyond the 64-bit"),
    ],
)
def test_integers_beyond_64_bits_are_dead_lettered_on_both_buses(attributes: dict[str, Any],
                                                                 detail: str) -> None:
    result = normalizer().handle("citywatch/events", payload(reading(attributes=attributes)), RECEIVED_MS)
    assert result.events == []
    [letter] = result.dead_letters
    assert (letter.reason, letter.detail.startswith(detail)) == ("invalid_field", True), letter.detail


def test_integers_at_the_64_bit_limits_are_accepted() -> None:
    attributes = {"fill_pct": 50, "low": -(2**63), "high": 2**63 - 1}
    [event] = normalizer().handle("citywatch/events", payload(reading(attributes=attributes)),
                                  RECEIVED_MS).events
    assert RecordCodec().decode_event(RecordCodec().encode_event(event)) == event


class EncodingProducer(RecordingProducer):
    """Encodes every event as the Kafka bus does before taking it."""

    def send(self, events: Sequence[Event], dead_letters: Sequence[DeadLetter] = (), *,
             timeout_s: float | None = None, on_durable: OnDurable | None = None) -> None:
        codec = RecordCodec()
        for event in events:
            encode_item(event, codec.encode_event)
        super().send(events, dead_letters, timeout_s=timeout_s, on_durable=on_durable)


def test_an_accepted_message_the_bus_cannot_encode_is_dead_lettered_and_acknowledged(
        caplog: pytest.LogCaptureFixture) -> None:
    # A codec that lets through a value no check knows about (here a complex number): the net below the
    # normalizer's checks turns the message into a dead letter with a reason instead of losing it.
    event = Event(event_id="e-1", device_id="bin-0001", kind="bin", event_time_ms=EVENT_MS,
                  ingest_time_ms=RECEIVED_MS, attributes={"z": complex(1, 2)}, source="odd")
    producer, metrics = EncodingProducer(), Metrics()
    odd = normalizer(routes=[TopicRoute(pattern="odd/#", codec="native")],
                     codecs={"native": StaticCodec("odd", [event])})
    verdicts: list[bool] = []
    service(producer, metrics, odd).handle_message("odd/1", b"{}", RECEIVED_MS, verdicts.append)
    assert verdicts == [True]
    assert producer.events == []
    [letter] = producer.dead_letters
    assert (letter.reason, letter.topic, letter.source) == ("unencodable_event", "odd/1", "odd")
    assert letter.detail.startswith("accepted as 1 event(s), but the bus cannot carry event e-1: TypeError")
    assert sample(metrics, "citywatch_dead_letters_total", reason="unencodable_event") == 1
    assert "the bus cannot carry a message from topic 'odd/1'" in caplog.text
