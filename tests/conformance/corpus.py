"""Loads the conformance corpus (tests/conformance/<format>/*.yaml) and runs a case through ingest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from core.models import Event
from core.settings import DeviceSettings, IngestSettings, TopicRoute
from ingest.codecs.catalogue import build_codec
from ingest.normalizer import IngestResult, Normalizer
from ingest.registry import DeviceRegistry
from tests.support.formats import shipped_vendor_maps

CORPUS = Path(__file__).resolve().parent
# 2026-11-26T05:00:05Z, as tests/data: a case whose payload is older says when it was received.
DEFAULT_RECEIVED = "2026-11-26T05:00:05Z"
_CASE_KEYS = {"source", "url", "route", "topic", "received_at", "devices", "payload", "payload_json",
              "expect", "note"}


@dataclass(frozen=True)
class Case:
    path: Path
    source: str
    url: str
    route: TopicRoute
    topic: str
    received_ms: int
    devices: list[DeviceSettings]
    payload: bytes
    expect: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.path.relative_to(CORPUS))


def epoch_ms(value: str | int | datetime) -> int:
    """A time as a case writes it: ISO 8601 text (YAML may already have parsed it) or epoch ms."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"time {value} has no offset: write it in UTC with a Z")
    return round(value.timestamp() * 1000)


def load_case(path: Path) -> Case:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    unknown = set(raw) - _CASE_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    if not raw.get("source") or not raw.get("url"):
        raise ValueError(f"{path}: every case cites its upstream source and url")
    if "payload_json" in raw:
        payload = json.dumps(raw["payload_json"], ensure_ascii=False).encode()
    else:
        payload = str(raw["payload"]).encode()
    return Case(
        path=path,
        source=raw["source"],
        url=raw["url"],
        route=TopicRoute(**raw["route"]),
        topic=raw["topic"],
        received_ms=epoch_ms(raw.get("received_at", DEFAULT_RECEIVED)),
        devices=[DeviceSettings(**device) for device in raw.get("devices", [])],
        payload=payload,
        expect=raw.get("expect") or {},
    )


def all_cases() -> list[Case]:
    return [load_case(path) for path in sorted(CORPUS.glob("*/*.yaml"))]


def ingest(case: Case) -> IngestResult:
    """The case's message through the same route, codec, vendor maps and registry check as ingest."""
    registry = DeviceRegistry(case.devices)
    vendor_maps = shipped_vendor_maps()
    normalizer = Normalizer(
        IngestSettings(routes=[case.route]),
        max_payload_bytes=256 * 1024,
        registry=registry,
        codecs=lambda route: build_codec(route, registry, vendor_maps),
    )
    return normalizer.handle(case.topic, case.payload, case.received_ms)


def event_view(event: Event, expected: dict[str, Any]) -> dict[str, Any]:
    """The parts of an event a case states: always device, kind, time and attributes."""
    view: dict[str, Any] = {
        "device_id": event.device_id,
        "kind": event.kind,
        "time": event.event_time_ms,
        "attributes": dict(event.attributes),
    }
    if "location" in expected:
        view["location"] = (
            None if event.location is None else {"lat": event.location.lat, "lon": event.location.lon}
        )
    if "tags" in expected:
        view["tags"] = dict(event.tags)
    return view


def expected_view(expected: dict[str, Any]) -> dict[str, Any]:
    view = dict(expected)
    view["time"] = epoch_ms(expected["time"])
    view.setdefault("attributes", {})
    return view
