"""The running exposure totals of one engine: per (local day, device, counter), in event time.

Rules count what they judged (`Emitter.count`, `Emitter.count_time`); the engine adds it here and hands
the totals that changed to the store as `core.models.ExposureTotal`s. The totals are engine state, in its
snapshot, so an engine restored from a checkpoint and fed the same events again arrives at the same totals
and writes them again: the store keeps the latest per key and nothing is counted twice. What each rule
counts is in docs/denominators.md.

Days are calendar days in the city's time zone (`traffic.time_zone`); time spans are split at local
midnight. Time is kept in milliseconds (integers, so that totals never depend on the order of additions)
and reported in minutes. A day stops changing once the watermark is more than the allowed lateness and a
day past it: its totals are forgotten and anything still counted for it is dropped, so the state holds a
few days per device.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from core.exposures import COUNTERS, EXPOSURE_PAIRS
from core.models import ExposureTotal
from processors.local_hours import local_instant_ms

# The tags of a device that place its counts (core.exposures.PLACE_KINDS besides device and city).
PLACE_TAGS: Final = ("intersection", "grid", "district")
MINUTE_MS: Final = 60_000
DAY_MS: Final = 86_400_000
# Counters of time: counted in ms, reported in minutes.
TIME_COUNTERS: Final = frozenset(name for pair in EXPOSURE_PAIRS if pair.unit == "minutes"
                                 for name in (pair.observed, pair.breaking))

Key = tuple[str, str, str]  # (day, device, counter)


def place_tags(tags: dict[str, str]) -> dict[str, str]:
    return {name: tags[name] for name in PLACE_TAGS if tags.get(name)}


class ExposureCounts:
    def __init__(self, time_zone: str, allowed_lateness_ms: int) -> None:
        self.time_zone = zoneinfo.ZoneInfo(time_zone)
        self.keep_ms = allowed_lateness_ms + DAY_MS
        # key -> [total (count, or ms for time counters), the device's tags as counted (the place tags
        # are picked from them on output: most counts are never output, a newer one replaces them)]
        self._totals: dict[Key, list[Any]] = {}
        self._changed: dict[Key, None] = {}
        # Days before this one are closed: forgotten, and nothing more is counted for them.
        self.oldest_day = ""
        # The local day last looked up: [start_ms, end_ms) and its name (most counts fall on one day).
        self._day: tuple[int, int, str] = (0, 0, "")
        # The same for close_days, which looks a day and more back at every step: sharing one slot with
        # the counts made both look their day up afresh (a time zone conversion) each time.
        self._closing_day: tuple[int, int, str] = (0, 0, "")

    def __len__(self) -> int:
        return len(self._totals)

    def day_of(self, time_ms: int) -> tuple[int, int, str]:
        """The local day holding `time_ms`: its start and end (epoch ms) and its name "YYYY-MM-DD"."""
        self._day = self._day_from(self._day, time_ms)
        return self._day

    def _day_from(self, known: tuple[int, int, str], time_ms: int) -> tuple[int, int, str]:
        """`known` when it holds `time_ms`, else the local day that does."""
        if known[0] <= time_ms < known[1]:
            return known
        date = datetime.fromtimestamp(time_ms / 1000, tz=UTC).astimezone(self.time_zone).date()
        return (local_instant_ms(date, 0, self.time_zone),
                local_instant_ms(date + timedelta(days=1), 0, self.time_zone), date.isoformat())

    def add(self, device_id: str, counter: str, time_ms: int, amount: int,
            tags: dict[str, str] | None) -> None:
        """Count `amount` at `time_ms`, on that local day."""
        self._add(self.day_of(time_ms)[2], device_id, counter, amount, tags)

    def add_time(self, device_id: str, counter: str, start_ms: int, end_ms: int,
                 tags: dict[str, str] | None) -> None:
        """Count the time [start_ms, end_ms), split at local midnight."""
        day_start_ms, day_end_ms, day = self._day
        if day_start_ms <= start_ms and end_ms <= day_end_ms:  # most spans: within the day last looked up
            self._add(day, device_id, counter, end_ms - start_ms, tags)
            return
        while start_ms < end_ms:
            _, day_end_ms, day = self.day_of(start_ms)
            piece_end_ms = min(end_ms, day_end_ms)
            self._add(day, device_id, counter, piece_end_ms - start_ms, tags)
            start_ms = piece_end_ms

    def _add(self, day: str, device_id: str, counter: str, amount: int, tags: dict[str, str] | None) -> None:
        if day < self.oldest_day or amount == 0:
            return  # a closed day: its total was final (docs/denominators.md)
        key = (day, device_id, counter)
        entry = self._totals.get(key)
        if entry is None:
            self._totals[key] = [amount, tags or {}]
        else:
            entry[0] += amount
            if tags is not None:
                entry[1] = tags
        self._changed[key] = None

    def close_days(self, watermark_ms: int) -> None:
        """Forget the days no event can reach any more (watermark - allowed lateness - a day)."""
        horizon_ms = watermark_ms - self.keep_ms
        if horizon_ms < 0:
            return  # no event time yet (the watermark starts far in the past)
        self._closing_day = self._day_from(self._closing_day, horizon_ms)
        oldest = self._closing_day[2]
        if oldest <= self.oldest_day:
            return
        self.oldest_day = oldest
        for key in [key for key in self._totals if key[0] < oldest]:
            del self._totals[key]
            self._changed.pop(key, None)

    def take_changed(self) -> list[ExposureTotal]:
        """The current totals of the keys counted since the last call."""
        if not self._changed:
            return []
        changed = [self._total(key) for key in self._changed]
        self._changed = {}
        return changed

    def _total(self, key: Key) -> ExposureTotal:
        day, device_id, counter = key
        total, tags = self._totals[key]
        value = total / MINUTE_MS if counter in TIME_COUNTERS else float(total)
        return ExposureTotal(day=day, device_id=device_id, counter=counter, value=value,
                             tags=place_tags(tags))

    def totals(self) -> list[ExposureTotal]:
        """Every total held (tests, and what a snapshot restores)."""
        return [self._total(key) for key in sorted(self._totals)]

    def open_days(self, now_ms: int) -> list[str]:
        """The local days that may still change at `now_ms` (event time): those not closed by then."""
        days: list[str] = []
        time_ms = now_ms - self.keep_ms
        while time_ms < now_ms + DAY_MS:
            _, end_ms, day = self.day_of(time_ms)
            if day >= self.oldest_day:
                days.append(day)
            time_ms = end_ms
        return days

    def resume(self, stored: Iterable[ExposureTotal]) -> int:
        """Take over the stored totals that are ahead of this state's; returns how many.

        After an unclean stop the state is older than what was written (the last clean stop's snapshot, or
        none): counting on from the stored totals keeps the day's counts so far, where counting from the
        older state would replace them with smaller totals. Totals only grow, so the larger one is the
        later. Closed days are left alone."""
        taken = 0
        for total in stored:
            if total.day < self.oldest_day or total.counter not in COUNTERS:
                continue
            amount = round(total.value * MINUTE_MS) if total.counter in TIME_COUNTERS else round(total.value)
            key = (total.day, total.device_id, total.counter)
            entry = self._totals.get(key)
            if entry is None:
                self._totals[key] = [amount, dict(total.tags)]
                taken += 1
            elif entry[0] < amount:
                entry[0] = amount
                taken += 1
        return taken

    def snapshot(self) -> dict[str, Any]:
        return {"oldest_day": self.oldest_day,
                "totals": [(day, device, counter, total, place_tags(tags))
                           for (day, device, counter), (total, tags) in self._totals.items()]}

    def restore(self, data: dict[str, Any] | None) -> None:
        """Restore a snapshot's totals; pending changes are dropped (the store has what was written)."""
        self._totals, self._changed = {}, {}
        self.oldest_day = "" if data is None else data["oldest_day"]
        for day, device, counter, total, tags in [] if data is None else data["totals"]:
            self._totals[(day, device, counter)] = [int(total), dict(tags)]
