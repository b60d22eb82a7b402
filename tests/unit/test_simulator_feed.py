"""The demo feed exercises the sanitation rules: fires, distance bins, water, odour, site dust."""

from __future__ import annotations

import json

from citywatch.simulator import FeedGenerator
from core.models import Event, stable_id
from core.settings import load_settings
from ingest.registry import DeviceRegistry
from processors.catalogue import build_rules
from processors.engine import Engine
from tests.support.events import T0_MS


def test_an_hour_of_the_demo_feed_raises_the_sanitation_violations():
    settings = load_settings()
    feed_settings = settings.simulator.model_copy(update={"bad_message_ratio": 0})
    generator = FeedGenerator(settings.devices, feed_settings)
    tags = {d.device_id: d.tags for d in settings.devices}
    events = []
    kinds = set()
    for second in range(0, 3600, 10):  # a round every 10 s of event time
        for _, payload in generator.round(T0_MS + second * 1000):
            body = json.loads(payload)
            kinds.add(body["kind"])
            events.append(Event(event_id=stable_id(body["device_id"], body["time"]),
                                device_id=body["device_id"], kind=body["kind"], event_time_ms=body["time"],
                                ingest_time_ms=body["time"], attributes=body["attributes"],
                                tags=tags[body["device_id"]]))
    assert {"bin", "air", "water", "odour", "detector"} <= kinds
    assert any("distance_mm" in e.attributes for e in events)
    engine = Engine(build_rules(settings.rules, DeviceRegistry(settings.devices), settings.devices),
                    allowed_lateness_ms=0)
    out = engine.process(events, now_wall_ms=0)
    types = {v.type for v in out.violations}
    expected = {"bin_overflow", "bin_near_full", "water_black_odour", "toilet_odour", "construction_dust"}
    assert expected <= types
    assert any(v.type == "bin_overflow" and v.device_id == "bin-0201" for v in out.violations)
