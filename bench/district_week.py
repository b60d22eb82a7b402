"""A generated week of a district's smart bins, with the ground truth the rules are checked against.

Each bin fills at its own rate, faster by day than by night (UTC+8), and is emptied by the collection
rounds at 07:00 and 19:00 local time; busy bins overflow between rounds. A reading every
`interval_s` carries the true fill plus sensor noise (Gaussian, `noise_pct`), capped to 0..100, and
now and then an upward outlier (something in the opening reads as rubbish; never two in a row).
Ground truth: the noise-free fill at every reading and the moment it would reach 100%.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from core.models import Event, stable_id

WEEK_START_MS = 1_795_996_800_000  # 2026-11-30T00:00:00Z, a Monday
HOUR_MS = 3_600_000
LOCAL_OFFSET_H = 8
COLLECTION_HOURS_LOCAL = (7, 19)


@dataclass
class TrueReading:
    event: Event
    true_fill: float


@dataclass
class BinTruth:
    device_id: str
    readings: list[TrueReading] = field(default_factory=list)
    # Event time the noise-free fill reached 100% in each fill cycle that got there.
    full_times_ms: list[int] = field(default_factory=list)


def local_hour(time_ms: int) -> float:
    return ((time_ms / HOUR_MS) + LOCAL_OFFSET_H) % 24


def generate_week(bins: int = 50, interval_s: int = 900, days: int = 7, seed: int = 11,
                  noise_pct: float = 1.0, outlier_ratio: float = 0.01,
                  prefix: str = "bin-") -> list[BinTruth]:
    rng = random.Random(seed)
    step_ms = interval_s * 1000
    truths = []
    for number in range(bins):
        truth = BinTruth(f"{prefix}{number:04d}")
        day_rate = rng.uniform(2.0, 12.0)  # percentage points per hour, 07:00-22:00 local
        fill = rng.uniform(0, 20)
        previous_outlier = False
        for step in range(days * 24 * HOUR_MS // step_ms):
            time_ms = WEEK_START_MS + step * step_ms + number * 7_000  # bins are not in lock-step
            hour = local_hour(time_ms)
            if any(hour - step_ms / HOUR_MS < h <= hour for h in COLLECTION_HOURS_LOCAL):
                fill = rng.uniform(0, 4)
            else:
                rate = day_rate if 7 <= hour < 22 else day_rate * 0.15
                before = fill
                fill = min(100.0, fill + rate * step_ms / HOUR_MS)
                if before < 100.0 <= fill:  # crossed 100% since the previous reading, at this rate
                    truth.full_times_ms.append(int(time_ms - step_ms + (100.0 - before) / rate * HOUR_MS))
            measured = fill + rng.gauss(0, noise_pct)
            outlier = not previous_outlier and rng.random() < outlier_ratio
            if outlier:
                measured += rng.uniform(20, 40)
            previous_outlier = outlier
            measured = round(min(100.0, max(0.0, measured)), 1)
            attributes = {"fill_pct": measured, "battery_pct": 80}
            event = Event(event_id=stable_id(truth.device_id, time_ms), device_id=truth.device_id, kind="bin",
                          event_time_ms=time_ms, ingest_time_ms=time_ms, attributes=attributes,
                          tags={"district": "futian", "department": "sanitation"})
            truth.readings.append(TrueReading(event, fill))
        truths.append(truth)
    return truths


def all_events(truths: list[BinTruth]) -> list[Event]:
    return sorted((r.event for t in truths for r in t.readings), key=lambda e: e.event_time_ms)
