"""A generated city for the index tests and the benchmark: districts of grids of intersections, each with one
camera counting the traffic exposures every local day, a bin per grid, an odour sensor per district, and
cases of the case loop per grid. The raw totals are kept so a test can compute what to expect itself."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from core.case_settings import CasePriority, Verification
from core.models import ExposureTotal
from processors.cases.model import Case, CaseOrigin, CaseState

TIME_ZONE = "Asia/Shanghai"
HOUR_MS = 3_600_000
TRAFFIC_PAIRS = (("stop_line_crossings", "red_light_crossings", 0.03),
                 ("crosswalk_encounters", "crosswalk_not_yielded", 0.25),
                 ("riders_observed", "riders_without_helmet", 0.35),
                 ("vehicles_measured", "vehicles_speeding", 0.12),
                 ("parking_occupied_minutes", "parking_illegal_minutes", 0.35))


def local_ms(day: date, hour: int = 0) -> int:
    return int(datetime.combine(day, time(hour), ZoneInfo(TIME_ZONE)).timestamp() * 1000)


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


@dataclass
class City:
    # device -> its tags; (day "YYYY-MM-DD", device, counter) -> the day's total
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    totals: dict[tuple[str, str, str], float] = field(default_factory=dict)
    cases: list[Case] = field(default_factory=list)

    def exposure_totals(self) -> list[ExposureTotal]:
        return [ExposureTotal(day=day, device_id=device, counter=counter, value=value, tags=self.tags[device])
                for (day, device, counter), value in self.totals.items()]


def generate(first: date, last: date, *, districts: int = 4, grids: int = 3, intersections: int = 3,
             seed: int = 17, quiet: tuple[str, ...] = ("x-d1-g1-2",), with_cases: bool = True) -> City:
    """Whole-number totals (sums are exact in any order). Each place has its own civility so ranks differ;
    `quiet` intersections see about twelve vehicles a day."""
    rng = random.Random(seed)
    city = City()
    for d in range(districts):
        district = f"d{d}"
        odour = f"odour-{district}"
        city.tags[odour] = {"district": district}
        for g in range(grids):
            grid = f"{district}-g{g}"
            bin_id = f"bin-{grid}"
            city.tags[bin_id] = {"grid": grid, "district": district}
            for x in range(intersections):
                camera = f"cam-{grid}-{x}"
                city.tags[camera] = {"intersection": f"x-{grid}-{x}", "grid": grid, "district": district}
    civility = {device: rng.uniform(0.05, 1.0) for device in city.tags}
    for day in days_between(first, last):
        stamp = day.isoformat()
        for device, tags in city.tags.items():
            badness = civility[device] * rng.uniform(0.7, 1.3)
            if device.startswith("cam-"):
                volume = 12 if tags["intersection"] in quiet else rng.randint(600, 3000)
                for observed, breaking, worst in TRAFFIC_PAIRS:
                    seen = max(1, int(volume * rng.uniform(0.2, 1.2)))
                    city.totals[(stamp, device, observed)] = float(seen)
                    city.totals[(stamp, device, breaking)] = float(int(seen * worst * badness * 0.8))
            elif device.startswith("bin-"):
                city.totals[(stamp, device, "bin_minutes")] = 1440.0
                city.totals[(stamp, device, "bin_overflow_minutes")] = float(int(1440 * 0.12 * badness))
            else:
                city.totals[(stamp, device, "odour_sensor_minutes")] = 1440.0
                city.totals[(stamp, device, "odour_out_of_standard_minutes")] = float(int(144 * badness))
    if with_cases:
        city.cases = _cases(rng, city, first, last)
    return city


def _cases(rng: random.Random, city: City, first: date, last: date) -> list[Case]:
    grids = sorted({(tags["grid"], tags["district"]) for tags in city.tags.values() if "grid" in tags})
    span_ms = local_ms(last + timedelta(days=1)) - local_ms(first)
    cases = []
    for grid, district in grids:
        for n in range(rng.randint(5, 25)):
            created = local_ms(first) + rng.randrange(span_ms)
            deadline = created + rng.choice((24, 48, 72)) * HOUR_MS
            closed = created + rng.randint(1, 120) * HOUR_MS if rng.random() < 0.8 else None
            cases.append(Case(
                case_id=f"c-{grid}-{n}", type="bin_overflow",
                state=CaseState.CLOSED if closed is not None else CaseState.DISPATCHED,
                priority=CasePriority.NORMAL, verify=Verification.PERSON, origin=CaseOrigin.MANUAL,
                created_by="test", created_time_ms=created, updated_time_ms=closed or created,
                grid=grid, district=district, deadline_ms=deadline, closed_time_ms=closed,
                reworked=1 if rng.random() < 0.15 else 0))
    return cases
