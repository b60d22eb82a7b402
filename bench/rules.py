"""Per-rule throughput of the traffic rules, and rule state under millions of tracks.

1. Throughput: a generated busy intersection (bench/intersection_feed.py, 4 hours by default) is decoded
   once through the real normalizer; then, for each rule alone and for all rules together, the events go
   through the engine in batches of 5,000 (as the processor does). Events/s counts every event offered to
   the engine; `judged` counts the events of the kinds the rule reads.
2. State: `--tracks` camera tracks (default 1,000,000) that never send `end`, through all rules; reports
   the peak number of state entries (keys plus tracks remembered inside intersection and camera states),
   pending timers, and the peak resident memory of the process.

    .venv/bin/python -m bench.rules            # prints a Markdown table; results in bench/results/rules.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import time
from pathlib import Path
from typing import Any

from bench.intersection_feed import CAMERA, INTERSECTION, SIGNALS, generate, scenario_config
from citywatch.replay import Replayer
from core.models import Event, stable_id
from core.settings import Settings
from processors.catalogue import build_traffic_rules
from processors.engine import Engine
from processors.rules.red_light import IntersectionState
from processors.rules.yield_crosswalk import CameraState
from processors.traffic import TrafficContext

BATCH = 5000
RESULTS = Path(__file__).resolve().parent / "results" / "rules.json"


def traffic_rules(settings: Settings) -> list[Any]:
    return build_traffic_rules(settings.rules, TrafficContext.build(settings.traffic))


def decoded_events(settings: Settings, hours: int) -> list[Event]:
    feed = generate(duration_s=3600 * hours, seed=1)
    replayer = Replayer(settings)
    events: list[Event] = []
    for record in feed.recording():
        payload = json.dumps(record["payload"], ensure_ascii=False).encode()
        events.extend(replayer.normalizer.handle(record["topic"], payload, record["time"]).events)
    return events


def throughput(settings: Settings, events: list[Event], only: str | None, repeat: int) -> dict[str, Any]:
    best = float("inf")
    judged = violations = 0
    for _ in range(repeat):
        rules = [rule for rule in traffic_rules(settings) if only is None or rule.name == only]
        kinds = set().union(*(rule.kinds for rule in rules))
        judged = sum(1 for event in events if event.kind in kinds)
        engine = Engine(rules, allowed_lateness_ms=settings.pipeline.allowed_lateness_ms)
        started = time.perf_counter()
        count = 0
        for start in range(0, len(events), BATCH):
            batch = events[start:start + BATCH]
            count += len(engine.process(batch, now_wall_ms=batch[-1].ingest_time_ms).violations)
        count += len(engine.drain().violations)
        best = min(best, time.perf_counter() - started)
        violations = count
    return {"rule": only or "all traffic rules", "events": len(events), "judged": judged,
            "violation_changes": violations, "seconds": round(best, 3),
            "events_per_s": round(len(events) / best)}


def state_under_tracks(settings: Settings, tracks: int) -> dict[str, Any]:
    """Tracks at 200/s that never end, each 2 messages, over the scenario's camera and intersection."""
    engine = Engine(traffic_rules(settings), allowed_lateness_ms=2000)
    rng = random.Random(3)
    zones = [["stop_north"], ["crosswalk_north"], ["sidewalk_ne"], ["bike_lane"], ["main_road"], []]
    start_ms = 1_764_133_200_000
    rate_per_s = 200
    peak_entries = peak_timers = 0
    batch: list[Event] = []
    started = time.perf_counter()
    for index in range(tracks):
        at_ms = start_ms + index * 1000 // rate_per_s
        if index % 2000 == 0:
            batch.append(_event(SIGNALS, "signal", at_ms, intersection=INTERSECTION, phase="north_through",
                                state="red" if index % 4000 else "green"))
        label = rng.choice(["car", "person", "e-bike", "motorcycle"])
        where = rng.choice(zones)
        for step in range(2):
            batch.append(_event(CAMERA, "track", at_ms + step * 500, track_id=f"t{index}", label=label,
                                stage="update", zones=where, stationary=True, position=[0, 10 - step * 6],
                                speed_kmh=rng.uniform(30, 90), helmet=rng.random() < 0.8))
        if len(batch) >= BATCH:  # received as they happen: the wall clock follows event time
            engine.process(batch, now_wall_ms=batch[-1].ingest_time_ms)
            batch = []
            peak_entries = max(peak_entries, _entries(engine))
            peak_timers = max(peak_timers, engine.pending_timers)
    engine.drain()
    seconds = time.perf_counter() - started
    snapshot_mb = len(engine.snapshot()) / 1e6
    return {"tracks": tracks, "track_events": tracks * 2, "track_idle_s": settings.traffic.track_idle_s,
            "tracks_per_s": rate_per_s, "peak_state_entries": peak_entries,
            "final_state_entries": _entries(engine), "peak_pending_timers": peak_timers,
            # Peak resident memory of the process (Linux reports KiB); this run goes first, so the peak
            # is the interpreter plus this run's rule state.
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "final_snapshot_mb": round(snapshot_mb, 1),
            "events_per_s": round(tracks * 2 / seconds), "seconds": round(seconds, 1)}


def _event(device: str, kind: str, time_ms: int, **attributes: Any) -> Event:
    return Event(event_id=stable_id(device, kind, time_ms, sorted(attributes.items())), device_id=device,
                 kind=kind, event_time_ms=time_ms, ingest_time_ms=time_ms, attributes=attributes)


def _entries(engine: Engine) -> int:
    total = 0
    for store in engine.states.values():
        total += len(store)
        for key in store:
            state = store.get(key)
            if isinstance(state, IntersectionState | CameraState):
                total += len(state.book.tracks)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description="Per-rule throughput and state bounds of the traffic rules.")
    parser.add_argument("--hours", type=int, default=4, help="Hours of generated intersection feed.")
    parser.add_argument("--repeat", type=int, default=3, help="Runs per rule; the best is reported.")
    parser.add_argument("--tracks", type=int, default=1_000_000, help="Tracks in the state run (0: skip).")
    args = parser.parse_args()
    settings = Settings.model_validate(scenario_config())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    result: dict[str, Any] = {}
    if args.tracks:
        baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        state = state_under_tracks(settings, args.tracks)
        result["state"] = {**state, "baseline_rss_mb": round(baseline_mb, 1)}
        print(f"state: {state['tracks']:,} tracks without end ({state['tracks_per_s']}/s, idle "
              f"{state['track_idle_s']:g} s): peak {state['peak_state_entries']:,} entries, "
              f"{state['peak_pending_timers']:,} pending timers, peak RSS {state['peak_rss_mb']} MB "
              f"(before: {baseline_mb:.1f} MB), final snapshot {state['final_snapshot_mb']} MB, "
              f"{state['events_per_s']:,} events/s, {state['seconds']} s\n")
    events = decoded_events(settings, args.hours)
    names = [rule.name for rule in traffic_rules(settings)]
    rows = [throughput(settings, events, name, args.repeat) for name in [*names, None]]
    print(f"feed: {len(events)} events ({args.hours} h of one busy intersection), batches of {BATCH}\n")
    print("| rule | events offered/s | events judged | violation changes |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['rule']} | {row['events_per_s']:,} | {row['judged']:,} "
              f"| {row['violation_changes']:,} |")
    result["throughput"] = rows
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
