"""Public toilet odour: ammonia (NH3) or hydrogen sulphide (H2S) above its limit on `consecutive`
readings opens a violation per gas; a reading at or below the limit clears it.

Limits are configured in mg/m3, the unit of the public-toilet hygiene standard (GB/T 17217); sensors
report ppm (`nh3_ppm`, `h2s_ppm`), converted with mg/m3 = ppm * M / Vm, where M is the molar mass and
Vm the molar volume of an ideal gas at the configured temperature and 101.325 kPa (24.45 L/mol at 25 C).
Readings already in mg/m3 (`nh3_mgm3`, `h2s_mgm3`) are used as they are. See docs/rules-sanitation.md.
"""

from __future__ import annotations

from typing import ClassVar

from core.exposures import EXPOSURE_PAIRS
from core.models import Event, Severity
from core.sanitation_settings import ToiletOdourSettings
from processors.devices import DeviceLookup
from processors.rules._common import Channel, Direction, LevelRule, ZoneThresholds, number

TYPE = "toilet_odour"
EXPOSURE = next(pair for pair in EXPOSURE_PAIRS if pair.rule == TYPE)

# g/mol
MOLAR_MASS = {"nh3": 17.031, "h2s": 34.08}


def molar_volume_l(temperature_c: float) -> float:
    """Ideal-gas molar volume at 101.325 kPa: 22.414 L/mol at 0 C, 24.465 at 25 C."""
    return 22.414 * (273.15 + temperature_c) / 273.15


def mgm3_from_ppm(ppm: float, gas: str, temperature_c: float) -> float:
    return ppm * MOLAR_MASS[gas] / molar_volume_l(temperature_c)


class ToiletOdourRule(LevelRule):
    name: ClassVar[str] = TYPE
    kinds: ClassVar[frozenset[str]] = frozenset({"odour"})
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"nh3_mgm3", "h2s_mgm3", "nh3_ppm", "h2s_ppm"})
    exposure: ClassVar[tuple[str, str] | None] = (EXPOSURE.observed, EXPOSURE.breaking)

    def __init__(self, settings: ToiletOdourSettings, devices: DeviceLookup | None = None,
                 zones: ZoneThresholds | None = None, *, kinds: ZoneThresholds | None = None) -> None:
        super().__init__(devices, zones, settings.state_ttl_s, kinds)
        self.settings = settings
        self.consecutive = settings.consecutive
        self.max_gap_intervals = settings.max_gap_intervals

    def channels(self, event: Event) -> list[Channel]:
        channels = []
        temperature_c = self.setting(event, "temperature_c", self.settings.temperature_c)
        for gas, default in (("nh3", self.settings.nh3_mgm3), ("h2s", self.settings.h2s_mgm3)):
            value = number(event, f"{gas}_mgm3")
            details: dict[str, float | str] = {"unit": "mg/m3"}
            if value is None:
                ppm = number(event, f"{gas}_ppm")
                if ppm is None:
                    continue
                value = mgm3_from_ppm(ppm, gas, temperature_c)
                details = {"unit": "mg/m3", "ppm": ppm, "conversion_temperature_c": temperature_c}
            limit = self.setting(event, f"{gas}_mgm3", default)
            channels.append(Channel(f"{gas}_mgm3", round(value, 6), limit, limit, Direction.ABOVE,
                                    Severity.MEDIUM, details))
        return channels
