"""Short timelines per sanitation rule that raise and clear something, for properties over all rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core import sanitation_settings as san
from core.models import Event
from core.settings import DeviceSettings
from processors.rule import Rule
from processors.rules.air_quality import AirQualityRule
from processors.rules.bin_fire import BinFireRule
from processors.rules.bin_lid_open import BinLidOpenRule
from processors.rules.bin_near_full import BinNearFullRule
from processors.rules.bin_tilt import BinTiltRule
from processors.rules.construction_dust import ConstructionDustRule
from processors.rules.implausible_reading import ImplausibleReadingRule
from processors.rules.low_battery import LowBatteryRule
from processors.rules.stuck_sensor import StuckSensorRule
from processors.rules.toilet_odour import ToiletOdourRule
from processors.rules.water_black_odour import WaterBlackOdourRule
from tests.support.events import reading
from tests.support.rules import Registry, tagged

STEP_S = 0.05  # readings 50 ms apart, shuffled within a 2 s allowed lateness
DEPTH = Registry(DeviceSettings(device_id="bin-1", kind="bin", install={"bin_depth_mm": 1000}))


def series(kind: str, values: list[dict[str, Any]], device: str = "dev-1", **tags: str) -> list[Event]:
    return [tagged(reading(device, i * STEP_S, kind=kind, **v), **tags) for i, v in enumerate(values)]


def air(pm25: float, pm10: float) -> dict[str, Any]:
    return {"pm25_ugm3": pm25, "pm10_ugm3": pm10}


SCENARIOS: dict[str, tuple[Callable[[], Rule[Any]], list[Event]]] = {
    "bin_fire": (lambda: BinFireRule(san.BinFireSettings()),
                 series("bin", [{"temperature_c": t} for t in (20, 61, 70, 40, 62, 30, 64)])),
    "bin_tilt": (lambda: BinTiltRule(san.BinTiltSettings()),
                 series("bin", [{"tilt_deg": t} for t in (2, 50, 80, 5, 46, 44, 3)])),
    "low_battery": (lambda: LowBatteryRule(san.LowBatterySettings()),
                    series("odour", [{"battery_pct": b} for b in (50, 20, 15, 35, 19, 90)])),
    "bin_lid_open": (lambda: BinLidOpenRule(san.BinLidOpenSettings(open_after_s=0.2)),
                     series("bin", [{"lid_open": o} for o in (True, True, True, True, True, False, True)])),
    "bin_near_full": (lambda: BinNearFullRule(san.BinNearFullSettings(horizon_s=0.2)),
                      series("bin", [{"fill_pct": f} for f in (10, 20, 30, 40, 50, 60, 70, 5, 10)])),
    "toilet_odour": (lambda: ToiletOdourRule(san.ToiletOdourSettings()),
                     series("odour", [{"nh3_ppm": p, "h2s_ppm": p / 100}
                                      for p in (0.5, 3, 3, 0.2, 4, 4, 4)])),
    "water_black_odour": (lambda: WaterBlackOdourRule(san.WaterBlackOdourSettings()),
                          series("water", [{"do_mgl": d} for d in (5, 1, 0.1, 1.5, 6, 6, 6, 1)],
                                 water_body="river")),
    "sensor_stuck": (lambda: StuckSensorRule(san.StuckSensorSettings(readings=3)),
                     series("bin", [{"distance_mm": d} for d in (300, 300, 300, 300, 301, 301, 301)])),
    "sensor_implausible": (lambda: ImplausibleReadingRule(san.ImplausibleReadingSettings(), DEPTH),
                           series("bin", [{"distance_mm": d} for d in (300, 1500, 1600, 300, 1200)],
                                  device="bin-1")),
    # Event time is compressed: one reading per 50 ms, windows scaled through bucket coverage instead.
    "air_quality_exceedance": (lambda: AirQualityRule(san.AirQualitySettings(min_hours_24h=1)),
                               series("air", [air(90, 100)] * 5 + [air(10, 20)] * 5)),
    "construction_dust": (lambda: ConstructionDustRule(san.ConstructionDustSettings(min_minutes_1h=1)),
                          series("air", [air(30, 300)] * 5 + [air(10, 20)] * 40, site="construction")),
}
