"""A small deterministic city: violations and readings the query tests (store and API) share."""

from __future__ import annotations

import random
from typing import Any

import msgspec

from core.models import Event, Evidence, Location, Severity, Violation, ViolationStatus
from store import buckets
from store.base import Bucket, Store
from tests.support.stores import settle

# Data starts on a Monday 00:00 UTC some weeks before now, so weeks and months hold several buckets and the
# data stays inside any retention window.
_NOW_MS = 1_795_600_000_000  # fixed: 2026-11-26, answers do not depend on the wall clock
T0 = buckets.floor_ms(_NOW_MS - 40 * buckets.DAY_MS, Bucket.WEEK)
SPAN_MS = 35 * buckets.DAY_MS

DEVICES = {
    "bin-1": {"grid": "FT-11", "district": "futian", "department": "sanitation"},
    "bin-2": {"grid": "FT-11", "district": "futian", "department": "sanitation"},
    "bin-3": {"grid": "FT-12", "district": "futian", "department": "sanitation"},
    "cam-1": {"grid": "NS-01", "district": "nanshan", "department": "traffic", "intersection": "X-1"},
    "cam-2": {"grid": "NS-02", "district": "nanshan", "department": "traffic", "intersection": "X-2"},
    "cam-3": {"grid": "NS-02", "district": "nanshan", "department": "traffic", "intersection": "X-2"},
}
POSITIONS = {
    "bin-1": (22.50, 114.00),
    "bin-2": (22.52, 114.02),
    "bin-3": (22.60, 114.10),
    "cam-1": (22.40, 113.90),
    "cam-2": (22.45, 113.95),
    "cam-3": (22.46, 113.96),
}
TYPES = {"bin": ["bin_overflow"], "cam": ["illegal_parking", "red_light", "wrong_way"]}


def make_violations(count: int = 400, seed: int = 3) -> list[Violation]:
    rng = random.Random(seed)
    out: list[Violation] = []
    for n in range(count):
        device = rng.choice(sorted(DEVICES))
        start = T0 + rng.randrange(SPAN_MS // 1000) * 1000
        if n % 50 == 0 and out:
            start = out[-1].start_time_ms  # several violations in one millisecond
        lat, lon = POSITIONS[device]
        cleared = rng.random() < 0.6
        end = start + rng.randrange(60_000, 6 * buckets.HOUR_MS) if cleared else None
        out.append(
            Violation(
                violation_id=f"v{n:04d}-{rng.randrange(1 << 30):08x}",
                type=rng.choice(TYPES[device[:3]]),
                severity=rng.choice(list(Severity)),
                device_id=device,
                start_time_ms=start,
                status=ViolationStatus.CLEARED if cleared else ViolationStatus.OPEN,
                end_time_ms=end,
                location=None if n % 17 == 0 else Location(lat=lat, lon=lon),
                evidence=Evidence(
                    event_ids=[f"e{n}"], details={"n": n}, plate="ABC123" if n % 3 == 0 else None
                ),
                tags=dict(DEVICES[device]),
                updated_time_ms=end if end is not None else start,
            )
        )
    return out


def opened(violation: Violation) -> Violation:
    """The open state that preceded a cleared violation (an open one is its own open state)."""
    if violation.status is ViolationStatus.OPEN:
        return violation
    return msgspec.structs.replace(
        violation,
        status=ViolationStatus.OPEN,
        end_time_ms=None,
        updated_time_ms=violation.start_time_ms,
        evidence=Evidence(event_ids=violation.evidence.event_ids[:1]),
    )


def make_readings(seed: int = 5) -> list[Event]:
    rng = random.Random(seed)
    out = []
    for device in ("bin-1", "bin-2", "bin-3"):
        t = T0
        while t < T0 + 3 * buckets.DAY_MS:
            t += rng.randrange(5, 40) * 60_000
            attributes: dict[str, Any] = {
                "fill_pct": rng.randrange(0, 1000) / 10,
                "lid_open": rng.random() < 0.1,
            }
            if rng.random() < 0.8:
                attributes["temperature_c"] = rng.randrange(-50, 350) / 10
            out.append(
                Event(
                    event_id=f"{device}-{t}",
                    device_id=device,
                    kind="bin",
                    event_time_ms=t,
                    ingest_time_ms=t + 300,
                    attributes=attributes,
                    location=Location(lat=POSITIONS[device][0], lon=POSITIONS[device][1]),
                    tags=dict(DEVICES[device]),
                )
            )
    out.append(
        Event(
            event_id="air-1-x",
            device_id="air-1",
            kind="air",
            event_time_ms=T0 + 5000,
            ingest_time_ms=T0 + 5000,
            attributes={"pm25_ugm3": 12},
        )
    )
    return out


VIOLATIONS = make_violations()
READINGS = make_readings()




def load(store: Store) -> Store:
    """Write the data set the way the processor writes: opens, then clears, the whole input twice (a
    replay must change nothing), then a late replay of some open states (which must not reopen them)."""
    for _ in range(2):
        store.write_violations([opened(v) for v in VIOLATIONS])
        store.write_violations([v for v in VIOLATIONS if v.status is ViolationStatus.CLEARED])
        store.write_events(READINGS)
        store.flush()
    store.write_violations([opened(v) for v in VIOLATIONS[::7]])
    settle(store)
    return store
