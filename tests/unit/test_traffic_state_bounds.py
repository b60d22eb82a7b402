"""Rule state stays bounded when track end messages never arrive (the usual case for a lost track)."""

from __future__ import annotations

import random

from core.models import Event
from processors.engine import Engine
from processors.rules.red_light import IntersectionState
from processors.rules.yield_crosswalk import CameraState
from tests.support.traffic import rules, signal, track, traffic_settings

IDLE_S = 60
TRACKS_PER_S = 4


def tracked_entries(engine: Engine) -> int:
    """Keys of every rule plus the tracks remembered inside intersection and camera states."""
    total = 0
    for store in engine.states.values():
        total += len(store)
        for key in store:
            state = store.get(key)
            if isinstance(state, IntersectionState | CameraState):
                total += len(state.book.tracks)
    return total


def lost_tracks(count: int, seed: int = 5):
    """`count` tracks of 1-3 messages each that never send `end`; some stand on the sidewalk for good."""
    rng = random.Random(seed)
    zones = [["stop_north"], ["crosswalk_north"], ["sidewalk_west"], ["one_way_north"], ["main_road"], []]
    for index in range(count):
        at_s = index / TRACKS_PER_S
        if index % 200 == 0:
            yield signal(at_s, "north_through", "red" if index % 400 else "green")
        label = rng.choice(["car", "person", "e-bike", "motorcycle"])
        where = rng.choice(zones)
        for step in range(rng.randint(1, 3)):
            yield track(at_s + step * 0.5, f"t{index}", label=label, zones=where, stationary=True,
                        position=[0, 10 - step * 3], speed_kmh=rng.uniform(30, 90), helmet=rng.random() < 0.7)


def test_state_stays_bounded_over_a_long_run_of_tracks_without_end_messages():
    engine = Engine(rules(traffic=traffic_settings(track_idle_s=IDLE_S)), allowed_lateness_ms=2000)
    # 8,000 tracks over 2,000 s; alive at once: those of the last idle time plus up to half an idle time
    # not yet swept from the shared books, in each of the 7 places a track can be kept (two intersection
    # books, one camera book, four per-track rules).
    bound = 7 * int(TRACKS_PER_S * IDLE_S * 1.5) + 50
    peak_entries = peak_timers = 0
    batch: list[Event] = []
    for event in lost_tracks(8_000):
        batch.append(event)
        if len(batch) == 1000:  # received as they happen: the wall clock follows event time
            engine.process(batch, now_wall_ms=batch[-1].ingest_time_ms)
            batch = []
            peak_entries = max(peak_entries, tracked_entries(engine))
            peak_timers = max(peak_timers, engine.pending_timers)
    engine.drain()
    assert 0 < peak_entries <= bound, peak_entries
    assert peak_timers <= TRACKS_PER_S * IDLE_S * 2, peak_timers
