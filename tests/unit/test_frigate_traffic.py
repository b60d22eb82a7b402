"""Frigate events through the real Frigate codec into the traffic rules, by `citywatch replay`."""

from __future__ import annotations

import json

import yaml

from citywatch.replay import Replayer, read_recording
from core.settings import load_settings

T0_MS = 1_764_133_200_000
CONFIG = {
    "ingest": {"routes": [
        {"pattern": "frigate/events", "codec": "frigate", "media_base_url": "http://frigate.local:5000"},
        {"pattern": "citywatch/events/#", "codec": "native"}]},
    "devices": [{"device_id": "north-cam", "kind": "track", "tags": {"department": "traffic_police"}},
                {"device_id": "sig-1", "kind": "signal"}],
    "traffic": {"intersections": [{"id": "ix-1",
                                   "approaches": [{"name": "north", "phase": "north_through"}]}],
                "cameras": [{"device_id": "north-cam", "intersection": "ix-1", "zones": [
                    {"name": "stop_north", "type": "stop_line", "approach": "north"}]}]},
}


def frigate(stage: str, at_ms: int, zones: list[str]) -> dict:
    after = {"id": "1764133201.5-abc", "camera": "north-cam", "label": "car", "score": 0.9,
             "frame_time": at_ms / 1000, "current_zones": zones, "entered_zones": zones,
             "stationary": False, "box": [10, 20, 110, 220], "has_snapshot": True, "has_clip": True,
             "recognized_license_plate": ["粤B12345", 0.93]}
    return {"topic": "frigate/events", "time": at_ms + 50,
            "payload": {"type": stage, "before": after, "after": after}}


def test_a_frigate_track_entering_the_stop_line_on_red_is_a_red_light_violation(tmp_path):
    config = tmp_path / "city.yaml"
    config.write_text(yaml.safe_dump(CONFIG, allow_unicode=True))
    signal = {"topic": "citywatch/events/sig-1", "time": T0_MS + 10, "payload": {
        "device_id": "sig-1", "kind": "signal", "time": T0_MS,
        "attributes": {"intersection": "ix-1", "phase": "north_through", "state": "red"}}}
    lines = [signal, frigate("new", T0_MS + 1000, []), frigate("update", T0_MS + 2000, ["stop_north"]),
             frigate("end", T0_MS + 4000, [])]
    recording = tmp_path / "feed.jsonl"
    recording.write_text("\n".join(json.dumps(line, ensure_ascii=False) for line in lines))
    result = Replayer(load_settings(config)).run(read_recording(recording))
    assert sum(result.dead_letters.values()) == 0, result.dead_letters
    [violation] = result.violations
    assert violation.type == "red_light" and violation.device_id == "north-cam"
    assert violation.evidence.plate == "粤B12345"
    assert violation.evidence.snapshot_url == "http://frigate.local:5000/api/events/1764133201.5-abc/snapshot.jpg"
    assert violation.evidence.details["signal"]["for_ms"] == 2000
    assert violation.tags["department"] == "traffic_police"
