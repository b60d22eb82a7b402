"""A time in the wrong unit is dead-lettered as implausible with the unit it looks like and the time it
would be, so one dead letter tells the sender what to change."""

from __future__ import annotations

import json

import pytest

from core.models import DeadLetter
from core.settings import DeviceSettings, IngestSettings, TopicRoute
from ingest.codecs.base import CodecError
from ingest.codecs.catalogue import build_codec
from ingest.codecs.common import IMPLAUSIBLE_TIME, plausible, seconds_ms
from ingest.normalizer import Normalizer
from ingest.registry import DeviceRegistry

RECEIVED_MS = 1_795_669_200_123  # 2026-11-26T05:00:00.123Z
SENT_MS = 1_795_669_140_000  # a minute earlier: 2026-11-26T04:59:00.000Z


@pytest.mark.parametrize(
    ("time_number", "hint"),
    [
        (SENT_MS // 1000, "(this looks like seconds: 2026-11-26T04:59:00.000Z; send milliseconds)"),
        (SENT_MS * 1000, "(this looks like microseconds: 2026-11-26T04:59:00.000Z; send milliseconds)"),
        (SENT_MS * 1_000_000, "(this looks like nanoseconds: 2026-11-26T04:59:00.000Z; send milliseconds)"),
    ],
)
def test_an_implausible_time_names_the_unit_it_looks_like(time_number: int, hint: str) -> None:
    with pytest.raises(CodecError) as caught:
        plausible(time_number, "time", RECEIVED_MS)
    assert caught.value.reason == IMPLAUSIBLE_TIME
    assert caught.value.detail.startswith(f"time: {time_number} ms is "), caught.value.detail
    assert caught.value.detail.endswith(hint), caught.value.detail


@pytest.mark.parametrize("time_number", [0, 12_345, 10**30, RECEIVED_MS + 2 * 24 * 3600 * 1000])
def test_a_number_that_is_no_time_in_any_unit_gets_no_hint(time_number: int) -> None:
    with pytest.raises(CodecError) as caught:
        plausible(time_number, "time", RECEIVED_MS)
    assert "looks like" not in caught.value.detail


def test_milliseconds_where_seconds_are_expected_are_named() -> None:
    # Frigate's frame_time is epoch seconds; a bridge that rewrites it in milliseconds is told so.
    with pytest.raises(CodecError) as caught:
        seconds_ms(SENT_MS, "after.frame_time")
    assert caught.value.detail.endswith(
        "(this looks like milliseconds: 2026-11-26T04:59:00.000Z; send seconds)"), caught.value.detail


def test_epoch_seconds_in_a_signal_message_are_dead_lettered_with_the_hint() -> None:
    route = TopicRoute(pattern="citywatch/signal/#", codec="signal")
    registry = DeviceRegistry([DeviceSettings(device_id="sig-0001", kind="signal")])
    normalizer = Normalizer(IngestSettings(routes=[route]), 64 * 1024, registry,
                            lambda route: build_codec(route, registry, {}))
    message = {"device_id": "sig-0001", "intersection": "shennan-fuhua", "time": SENT_MS // 1000,
               "changes": [{"phase": "north_through", "state": "red"}]}
    result = normalizer.handle("citywatch/signal/sig-0001", json.dumps(message).encode(), RECEIVED_MS)
    assert not result.events
    [dead] = result.dead_letters
    assert isinstance(dead, DeadLetter)
    assert dead.reason == IMPLAUSIBLE_TIME
    assert dead.detail == (f"time: {SENT_MS // 1000} ms is before 2000-01-01 (this looks like seconds: "
                           "2026-11-26T04:59:00.000Z; send milliseconds)")
