"""Whatever ingest accepts, the bus carries: a message becomes events that encode on the Kafka bus (and in
the store's JSON, the in-process path) and decode to themselves, or dead letters with a reason. There is
no third outcome, such as an accepted event that fails later where no dead letter can be made."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from core.models import DeadLetter, Event
from core.settings import IngestSettings, TopicRoute
from ingest.codecs.native import NativeCodec
from ingest.normalizer import Normalizer
from ingest.registry import DeviceRegistry
from processors.bus import encode_item
from processors.kafka_bus import RecordCodec
from tests.property.test_native_codec_props import PROPS, readings
from tests.property.test_vendor_codec_props import CODECS as VENDOR_CODECS
from tests.property.test_vendor_codec_props import TOPICS, json_values, mutated

BUS = RecordCodec()
STORE_JSON = msgspec.json.Encoder()


def normalizer_for(name: str) -> Normalizer:
    settings = IngestSettings(routes=[TopicRoute(pattern="#", codec=name)],  # type: ignore[arg-type]
                              accept_unknown_devices=True)
    return Normalizer(settings, 1 << 20, DeviceRegistry([]), {name: CODECS[name]})


CODECS = {**VENDOR_CODECS, "native": NativeCodec()}
NORMALIZERS = {name: normalizer_for(name) for name in CODECS}


def carried(name: str, topic: str, payload: bytes) -> None:
    result = NORMALIZERS[name].handle(topic, payload, 1_795_669_205_000)
    for event in result.events:
        encoded = encode_item(event, BUS.encode_event)  # raises BusEncodingError if it cannot
        assert BUS.decode_event(encoded) == event
        assert msgspec.json.decode(STORE_JSON.encode(event), type=Event) == event
    for letter in result.dead_letters:
        assert letter.reason and letter.detail
        assert msgspec.json.decode(BUS.encode_json(letter), type=DeadLetter) == letter


def topic_of(name: str) -> str:
    return TOPICS[name] if "{device}" not in TOPICS[name] else f"test/{name}"


@PROPS
@given(case=mutated())
def test_a_mutated_vendor_message_is_carried_or_dead_lettered(case: tuple[str, bytes]) -> None:
    name, payload = case
    carried(name, topic_of(name), payload)


@PROPS
@given(valid=readings(), extra=st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_a_native_reading_with_any_attributes_is_carried_or_dead_lettered(
        valid: tuple[dict[str, Any], int], extra: dict[str, Any]) -> None:
    reading, _ = valid
    reading["attributes"] = {**reading.get("attributes", {}), **extra}
    carried("native", "citywatch/events", json.dumps(reading).encode())
