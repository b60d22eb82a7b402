"""Air, water and public-toilet sensors.

- Air sensors drift around a PM2.5 level of their own (PM10 about 1.5-2x it). The first one sits by a
  busy road in a pollution episode (PM2.5 around 90 ug/m3), above the 24-hour limit of the standard in
  force (60). A 24-hour mean counts only with readings in at least 20 hours, so the air sensors' last
  24 hours come as history (`history`: a reading every 30 minutes, every minute in the last hour), as a
  gateway flushing its buffer would send them; air_quality_exceedance then judges a real 24-hour mean.
- A construction-site sensor (tagged `site: construction`) adds coarse dust from earthworks on top of
  the city's level; its last hour of history gives construction_dust a valid 1-hour mean at once.
- Water probes drift around their body's condition; every other probe (the first included) is in a
  black-odorous body (water_black_odour after 3 readings).
- Toilet odour sensors peak with use: ammonia above the class II limit for 3 minutes of every 30, the
  first sensor from start (toilet_odour after 2 readings).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from citywatch.simulation import wire
from core.settings import DeviceSettings

AIR_HISTORY_S = 24 * 3600
AIR_HISTORY_EVERY_S = 1800
AIR_LAST_HOUR_EVERY_S = 60
BUSY_MINUTES, BUSY_EVERY_MINUTES = 3, 30


@dataclass
class _Probe:
    """A water-body probe; `polluted` probes sit in a black-odorous body."""

    device_id: str
    polluted: bool
    do_mgl: float
    orp_mv: float


class Environment:
    def __init__(self, devices: list[DeviceSettings], rng: random.Random) -> None:
        self.rng = rng
        self.air = [d.device_id for d in devices if d.kind == "air"]
        self.construction = {d.device_id for d in devices
                             if d.kind == "air" and d.tags.get("site") == "construction"}
        city_air = [device_id for device_id in self.air if device_id not in self.construction]
        self._pm25 = {device_id: rng.uniform(20, 45) for device_id in self.air}
        # The roadside sensor in a pollution episode: its level is pulled towards this.
        self._episode = {city_air[0]: 90.0} if city_air else {}
        for device_id, level in self._episode.items():
            self._pm25[device_id] = level
        water = [d for d in devices if d.kind == "water"]
        self.probes = [_Probe(d.device_id, i % 2 == 0, 5.0, 150.0) for i, d in enumerate(water)]
        self.toilets = [d.device_id for d in devices if d.kind == "odour"]
        self.start_ms: int | None = None

    def history(self, now_ms: int) -> list[wire.Message]:
        """The air sensors' readings of the last 24 hours, oldest first per sensor."""
        times_s = list(range(AIR_HISTORY_S, 3600, -AIR_HISTORY_EVERY_S))
        times_s += list(range(3600, 0, -AIR_LAST_HOUR_EVERY_S))
        return [self._air(device_id, now_ms - ago_s * 1000) for device_id in self.air for ago_s in times_s]

    def round(self, now_ms: int) -> list[wire.Message]:
        if self.start_ms is None:
            self.start_ms = now_ms
        messages = [self._air(device_id, now_ms) for device_id in self.air]
        messages += [self._water(probe, now_ms) for probe in self.probes]
        messages += [self._odour(i, device_id, now_ms) for i, device_id in enumerate(self.toilets)]
        return messages

    def _air(self, device_id: str, time_ms: int) -> wire.Message:
        level = self._pm25[device_id] + self.rng.gauss(0, 2)
        target = self._episode.get(device_id)
        if target is not None:
            level += 0.1 * (target - level)
        level = self._pm25[device_id] = max(3.0, level)
        pm10 = level * self.rng.uniform(1.5, 2.0)
        if device_id in self.construction:  # earthworks: coarse dust on top of the city's level
            pm10 += self.rng.uniform(80, 160)
        attributes = {"pm25_ugm3": round(level, 1), "pm10_ugm3": round(pm10, 1)}
        return wire.native(device_id, "air", time_ms, attributes)

    def _water(self, probe: _Probe, now_ms: int) -> wire.Message:
        # Polluted water hovers around the lightly black-odorous band, clean water well above it.
        target_do, target_orp = (1.2, -80.0) if probe.polluted else (6.0, 180.0)
        probe.do_mgl = max(0.0, probe.do_mgl + 0.05 * (target_do - probe.do_mgl) + self.rng.gauss(0, 0.05))
        probe.orp_mv += 0.05 * (target_orp - probe.orp_mv) + self.rng.gauss(0, 3)
        transparency = self.rng.uniform(12, 22) if probe.polluted else self.rng.uniform(40, 60)
        attributes = {
            "transparency_cm": round(transparency, 1),
            "do_mgl": round(probe.do_mgl, 2),
            "orp_mv": round(probe.orp_mv, 1),
            "nh3n_mgl": round(self.rng.uniform(8.5, 12) if probe.polluted else self.rng.uniform(0.3, 1.5), 2),
            "depth_cm": 80,
        }
        return wire.native(probe.device_id, "water", now_ms, attributes)

    def _odour(self, index: int, device_id: str, now_ms: int) -> wire.Message:
        # Ammonia peaks with use: a few minutes above the class II limit (about 1.4 ppm) in every half
        # hour, each toilet at its own minutes, the first one from start.
        assert self.start_ms is not None
        minute = (now_ms - self.start_ms) // 60_000 + 7 * index
        busy = minute % BUSY_EVERY_MINUTES < BUSY_MINUTES
        nh3 = self.rng.uniform(1.6, 3.0) if busy else self.rng.uniform(0.1, 0.8)
        attributes = {"nh3_ppm": round(nh3, 2), "h2s_ppm": round(self.rng.uniform(0.0, 0.004), 4)}
        return wire.native(device_id, "odour", now_ms, attributes)
