"""Versioned individual air quality index (IAQI) breakpoints for PM2.5 and PM10 (24-hour means).

HJ 633 defines the IAQI of a pollutant by linear interpolation between breakpoints, rounded up to an
integer, and the AQI as the largest IAQI. The 2026 revision lowered the breakpoints at IAQI 100
(PM2.5 75 -> 60, PM10 150 -> 120) to match GB 3095-2026; see docs/rules-sanitation.md for the sources
and for which entries were carried over unchanged from 2012.
"""

from __future__ import annotations

import math

IAQI_LEVELS = (0, 50, 100, 150, 200, 300, 400, 500)

# table name -> pollutant -> concentration breakpoints (ug/m3, 24-hour mean) at IAQI_LEVELS.
BREAKPOINTS: dict[str, dict[str, tuple[float, ...]]] = {
    "HJ633-2012": {
        "pm25_ugm3": (0, 35, 75, 115, 150, 250, 350, 500),
        "pm10_ugm3": (0, 50, 150, 250, 350, 420, 500, 600),
    },
    "HJ633-2026": {
        # Entries at IAQI 400 and 500 are the 2012 values (not changed by the revision as we know it).
        "pm25_ugm3": (0, 35, 60, 115, 150, 250, 350, 500),
        "pm10_ugm3": (0, 50, 120, 250, 350, 420, 500, 600),
    },
}

# Upper IAQI bound of each category (HJ 633 Table 2), with the Chinese name used in bulletins.
CATEGORIES: tuple[tuple[int, str, str], ...] = (
    (50, "excellent", "优"),
    (100, "good", "良"),
    (150, "lightly_polluted", "轻度污染"),
    (200, "moderately_polluted", "中度污染"),
    (300, "heavily_polluted", "重度污染"),
)
SEVERE = ("severely_polluted", "严重污染")


def iaqi(table: str, pollutant: str, concentration: float) -> int:
    """IAQI of one pollutant's 24-hour mean; above the last breakpoint the index is capped at 500."""
    points = BREAKPOINTS[table][pollutant]
    if concentration >= points[-1]:
        return IAQI_LEVELS[-1]
    for i in range(1, len(points)):
        if concentration <= points[i]:
            low_c, high_c = points[i - 1], points[i]
            low_i, high_i = IAQI_LEVELS[i - 1], IAQI_LEVELS[i]
            return math.ceil((high_i - low_i) / (high_c - low_c) * (concentration - low_c) + low_i)
    return IAQI_LEVELS[-1]


def category(aqi: int) -> tuple[str, str]:
    """(category, Chinese name) of an AQI value."""
    for upper, name, chinese in CATEGORIES:
        if aqi <= upper:
            return name, chinese
    return SEVERE
