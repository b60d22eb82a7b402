"""Smart bins: filling up, emptied by a truck, and the incidents sanitation acts on.

Every registered bin fills at its own pace and is emptied some readings after it passes 90%; bins with a
registered `install.bin_depth_mm` report an ultrasonic distance instead of a fill level. So that the demo
shows each bin incident within a minute, a few bins play one, chosen by their order in the registry
(deterministic, whatever the registry):

- the first fill-level bin smoulders (70-85 C for 45 readings, then cools: bin_fire opens and clears);
- the second is knocked over (tilted 80-95 degrees for 40 readings, then set upright: bin_tilt);
- the third has had its lid open since 16 minutes before start (its readings of those minutes come as
  history, see `history`), closed after 30 readings: bin_lid_open judges the rule's real 15 minutes;
- the first ultrasonic bin's sensor freezes: the same distance on every reading (sensor_stuck after 12);
- the second ultrasonic bin loses its echo every 15th reading and reads deeper than the bin
  (sensor_implausible);
- bins that report at least once a minute (`expected_interval_s` <= 60: a solar compactor's heartbeat)
  run on a dying battery (14%: low_battery) and fall silent after 6 readings (device_offline, three
  intervals later).

Beyond those, a bin catches fire or has its lid left open now and then (a few a day at 1 s per round).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from citywatch.simulation import wire
from core.settings import DeviceSettings

# Per bin reading: chance that a fire starts or a lid is left open (a few a day at 1 s per round).
FIRE_CHANCE = 1 / 20_000
LID_CHANCE = 1 / 5_000
LID_HISTORY_S, LID_HISTORY_EVERY_S = 16 * 60, 60
DYING_AFTER_READINGS = 6
COMPACTOR_INTERVAL_S = 60


@dataclass
class _Bin:
    device_id: str
    fill_pct: float
    rate_pct: float
    readings_over_90: int = 0
    empty_after: int = 3
    depth_mm: float | None = None
    # Readings left of a fire / of a lid left open / of lying on its side.
    burning: int = 0
    lid_open: int = 0
    knocked_over: int = 0
    battery_pct: float = 87.0
    stuck_distance_mm: float | None = None  # a frozen ultrasonic sensor's distance, once read
    echo_lost_every: int = 0
    silent_after: int | None = None  # readings after which the device sends nothing more
    readings: int = 0


class Bins:
    def __init__(self, devices: list[DeviceSettings], rng: random.Random) -> None:
        self.rng = rng
        self.bins: list[_Bin] = []
        for d in devices:
            if d.kind != "bin":
                continue
            self.bins.append(_Bin(d.device_id, rng.uniform(55, 88), rng.uniform(1.0, 4.0),
                                  empty_after=rng.randint(2, 6), depth_mm=d.install.get("bin_depth_mm")))
            if d.expected_interval_s is not None and d.expected_interval_s <= COMPACTOR_INTERVAL_S:
                self.bins[-1].battery_pct, self.bins[-1].silent_after = 14.0, DYING_AFTER_READINGS
        level_bins = [b for b in self.bins if b.depth_mm is None and b.silent_after is None]
        distance_bins = [b for b in self.bins if b.depth_mm is not None]
        self.lid_history: _Bin | None = None
        if len(level_bins) > 0:
            level_bins[0].burning = 45
        if len(level_bins) > 1:
            level_bins[1].knocked_over = 40
        if len(level_bins) > 2:
            level_bins[2].lid_open = 30
            self.lid_history = level_bins[2]
        if len(distance_bins) > 0:
            distance_bins[0].stuck_distance_mm = -1.0  # frozen at its first reading
        if len(distance_bins) > 1:
            distance_bins[1].echo_lost_every = 15

    def history(self, now_ms: int) -> list[wire.Message]:
        """The readings of the minutes before start that an incident in progress needs: the bin whose
        lid has been open since 16 minutes ago."""
        b = self.lid_history
        if b is None:
            return []
        messages = []
        for ago_s in range(LID_HISTORY_S, 0, -LID_HISTORY_EVERY_S):
            attributes = {"fill_pct": round(max(0.0, b.fill_pct - ago_s / 120), 1), "temperature_c": 21.5,
                          "tilt_deg": 1.0, "battery_pct": b.battery_pct, "lid_open": True}
            messages.append(wire.native(b.device_id, "bin", now_ms - ago_s * 1000, attributes))
        return messages

    def round(self, now_ms: int) -> list[wire.Message]:
        messages = []
        for b in self.bins:
            b.readings += 1
            if b.silent_after is not None and b.readings > b.silent_after:
                continue  # its battery is flat
            messages.append(self._reading(b, now_ms))
        return messages

    def _reading(self, b: _Bin, now_ms: int) -> wire.Message:
        if b.fill_pct >= 90:
            b.readings_over_90 += 1
        if b.readings_over_90 > b.empty_after:  # the truck came
            b.fill_pct, b.readings_over_90 = self.rng.uniform(0, 8), 0
            b.empty_after = self.rng.randint(2, 6)
        else:
            b.fill_pct = min(100.0, b.fill_pct + b.rate_pct * self.rng.uniform(0.5, 1.5))
        if b.burning == 0 and self.rng.random() < FIRE_CHANCE:
            b.burning = self.rng.randint(10, 60)
        if b.lid_open == 0 and self.rng.random() < LID_CHANCE:
            b.lid_open = self.rng.randint(60, 1800)
        temperature = self.rng.uniform(70, 85) if b.burning else self.rng.gauss(22, 3)
        tilt = self.rng.uniform(80, 95) if b.knocked_over else abs(self.rng.gauss(0, 2))
        attributes: dict[str, Any] = {
            "temperature_c": round(temperature, 1),
            "tilt_deg": round(tilt, 1),
            "battery_pct": b.battery_pct,
            "lid_open": b.lid_open > 0,
        }
        b.burning, b.lid_open = max(0, b.burning - 1), max(0, b.lid_open - 1)
        b.knocked_over = max(0, b.knocked_over - 1)
        if b.depth_mm is None:
            attributes["fill_pct"] = round(b.fill_pct, 1)
        else:  # an ultrasonic sensor in the lid: distance down to the rubbish, with a little noise
            distance = round(min(b.depth_mm, max(0.0, b.depth_mm * (1 - b.fill_pct / 100)
                                                 + self.rng.gauss(0, 3))))
            if b.stuck_distance_mm is not None:
                if b.stuck_distance_mm < 0:
                    b.stuck_distance_mm = distance
                distance = round(b.stuck_distance_mm)
            if b.echo_lost_every and b.readings % b.echo_lost_every == 0:
                distance = round(b.depth_mm + 250)  # the echo missed the rubbish: deeper than the bin
            attributes["distance_mm"] = distance
        return wire.native(b.device_id, "bin", now_ms, attributes)
