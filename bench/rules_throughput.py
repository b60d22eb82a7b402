"""Per-rule throughput of the sanitation and environment rules: events/s through the real engine.

Each rule runs alone in an engine (so the figure is the rule's cost plus the engine's fixed cost per
event: dedup, reorder buffer, state lookup) over a feed of the kind it judges, then all rules together
over a mixed feed. The feeds come from the demo simulator (a round every 10 s of event time) plus the
generated district week for bins, so they contain the violations the rules look for. Engine only: no
MQTT, no store (bench/e2e.py measures the whole pipeline).

    .venv/bin/python -m bench.rules_throughput [--events 100000] [--repeat 3]

Prints a Markdown table; results also go to bench/results/rules.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.district_week import all_events, generate_week
from citywatch.simulation import FeedGenerator
from citywatch.simulation.wire import NATIVE_PREFIX
from core.models import Event, stable_id
from core.settings import DeviceSettings, Settings, load_settings
from ingest.registry import DeviceRegistry
from processors.catalogue import build_rules
from processors.engine import Engine
from processors.rule import Rule


def simulated_feed(settings: Settings, events: int) -> list[Event]:
    """Demo-district readings, a round every 10 s of event time, until `events` are made."""
    feed_settings = settings.simulator.model_copy(update={"bad_message_ratio": 0})
    generator = FeedGenerator(settings.devices, feed_settings)
    tags = {d.device_id: d.tags for d in settings.devices}
    feed: list[Event] = []
    now_ms = 1_795_996_800_000
    while len(feed) < events:
        for topic, payload in generator.round(now_ms):
            if not topic.startswith(NATIVE_PREFIX):
                continue  # signal, detector and camera messages need their codecs: the native feed only
            body = json.loads(payload)
            feed.append(Event(event_id=stable_id(body["device_id"], body["time"]),
                              device_id=body["device_id"], kind=body["kind"], event_time_ms=body["time"],
                              ingest_time_ms=body["time"], attributes=body["attributes"],
                              tags=tags[body["device_id"]]))
        now_ms += 10_000
    return feed[:events]


def measure(make_rules: Callable[[], list[Rule[Any]]], feed: list[Event], repeat: int,
            batch: int = 5000) -> tuple[float, int]:
    """Best events/s over `repeat` runs, in batches as the worker hands them; and violations emitted."""
    best = 0.0
    violations = 0
    for _ in range(repeat):
        engine = Engine(make_rules(), allowed_lateness_ms=2000)
        started = time.perf_counter()
        emitted = 0
        for start in range(0, len(feed), batch):
            emitted += len(engine.process(feed[start:start + batch], now_wall_ms=0).violations)
        emitted += len(engine.drain().violations)
        best = max(best, len(feed) / (time.perf_counter() - started))
        violations = emitted
    return best, violations


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per feed")
    parser.add_argument("--repeat", type=int, default=3, help="runs per rule; the best is reported")
    args = parser.parse_args(argv)

    settings = load_settings()
    week = generate_week(bins=max(1, args.events // 672), prefix="week-bin-")
    bins = all_events(week)[: args.events]
    bin_devices = [DeviceSettings(device_id=t.device_id, kind="bin", expected_interval_s=900) for t in week]
    mixed = simulated_feed(settings, args.events)
    by_kind: dict[str, list[Event]] = {}
    for event in mixed:
        by_kind.setdefault(event.kind, []).append(event)
    registry = DeviceRegistry([*settings.devices, *bin_devices])
    registered = [*settings.devices, *bin_devices]

    def rule(name: str) -> Callable[[], list[Rule[Any]]]:
        return lambda: [r for r in build_rules(settings.rules, registry, registered) if r.name == name]

    def repeat_to(events: list[Event], count: int) -> list[Event]:
        """Enough events of one kind: the simulated feed again, each copy right after the previous one
        in event time (so rolling windows keep filling: the 24-hour air means become valid)."""
        out: list[Event] = []
        span_ms = events[-1].event_time_ms - events[0].event_time_ms + 10_000
        copy = 0
        while len(out) < count:
            out += [Event(event_id=f"{e.event_id}-{copy}", device_id=e.device_id, kind=e.kind,
                          event_time_ms=e.event_time_ms + copy * span_ms, ingest_time_ms=e.ingest_time_ms,
                          attributes=e.attributes, tags=e.tags) for e in events]
            copy += 1
        return out[:count]

    feeds = {
        "bin_overflow": bins, "bin_near_full": bins, "bin_fire": by_kind["bin"], "bin_tilt": by_kind["bin"],
        "bin_lid_open": by_kind["bin"], "low_battery": bins,
        "toilet_odour": repeat_to(by_kind["odour"], args.events),
        "air_quality_exceedance": repeat_to(by_kind["air"], args.events),
        "construction_dust": repeat_to(by_kind["air"], args.events),
        "water_black_odour": repeat_to(by_kind["water"], args.events),
        "sensor_stuck": mixed, "sensor_implausible": mixed, "device_offline": mixed,
    }
    rows = []
    for name, feed in feeds.items():
        rate, violations = measure(rule(name), feed, args.repeat)
        rows.append({"rule": name, "events": len(feed), "events_per_s": round(rate),
                     "violations": violations})
    everything = lambda: build_rules(settings.rules, registry, registered)  # noqa: E731
    rate, violations = measure(everything, mixed, args.repeat)
    rows.append({"rule": "all rules, mixed feed", "events": len(mixed), "events_per_s": round(rate),
                 "violations": violations})

    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"Python {platform.python_version()}")
    print(f"Rule throughput through the engine ({machine})\n")
    print("| rule | events | events/s | violation changes |\n|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['rule']} | {row['events']:,} | {row['events_per_s']:,} | {row['violations']:,} |")
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "rules.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
