"""Which bins a shift must visit, may visit (and how much each is worth), or leaves to a person.

- Mandatory: predicted full before the next service window starts, already at `mandatory_fill_pct`, or
  with an open overflow violation: waiting for the next shift means an overflowing bin.
- Optional: any other bin, worth a detour that grows with its urgency (how soon after the next window it
  will be full, how full it is, how many overflow or near-full violations are open).
- Flagged: an open fire, tilt or offline violation. A truck is not sent there blindly; a person decides.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from core.dispatch_settings import DepotSettings, DispatchSettings
from core.models import Prediction, Violation
from processors.dispatch.model import BinCandidate, ShiftWindow
from processors.dispatch.travel import great_circle_m

_OVERFLOW_TYPE = "bin_overflow"


def candidates_from(predictions: Iterable[Prediction], open_violations: Iterable[Violation],
                    settings: DispatchSettings, volumes_l: Mapping[str, float] | None = None,
                    ) -> list[BinCandidate]:
    """One candidate per forecast bin (sorted by device id), with its open violations counted."""
    flag_types, urgency_types = set(settings.flag_types), set(settings.urgency_types)
    flags: dict[str, set[str]] = {}
    urgent: dict[str, int] = {}
    overflowing: set[str] = set()
    for violation in open_violations:
        if violation.type in flag_types:
            flags.setdefault(violation.device_id, set()).add(violation.type)
        if violation.type in urgency_types:
            urgent[violation.device_id] = urgent.get(violation.device_id, 0) + 1
        if violation.type == _OVERFLOW_TYPE:
            overflowing.add(violation.device_id)
    found = []
    for prediction in predictions:
        location = prediction.location
        slope = prediction.details.get("slope_pct_per_h")
        found.append(BinCandidate(
            device_id=prediction.device_id,
            lat=location.lat if location else None, lon=location.lon if location else None,
            fill_pct=prediction.value, computed_time_ms=prediction.computed_time_ms,
            predicted_full_ms=prediction.predicted_time_ms,
            slope_pct_per_h=float(slope) if isinstance(slope, int | float) else None,
            volume_l=(volumes_l or {}).get(prediction.device_id, settings.bin_volume_l),
            district=prediction.tags.get("district"),
            urgency_count=urgent.get(prediction.device_id, 0),
            overflowing=prediction.device_id in overflowing,
            flags=tuple(sorted(flags.get(prediction.device_id, ())))))
    return sorted(found, key=lambda candidate: candidate.device_id)


def is_mandatory(candidate: BinCandidate, shift: ShiftWindow, mandatory_fill_pct: float) -> bool:
    if candidate.overflowing or candidate.fill_pct >= mandatory_fill_pct:
        return True
    return candidate.predicted_full_ms is not None and candidate.predicted_full_ms < shift.next_start_ms


def urgency(candidate: BinCandidate, shift: ShiftWindow, horizon_h: float) -> float:
    """0..1: how much an optional bin is worth emptying now (1: as urgent as an optional bin gets).

    Half from how soon after the next window it will be full (halving every `horizon_h` hours later; no
    forecast: nothing), half from its fill now, raised by a quarter of the rest per open overflow or
    near-full violation.
    """
    soon = 0.0
    if candidate.predicted_full_ms is not None:
        hours_after = max(0.0, (candidate.predicted_full_ms - shift.next_start_ms) / 3.6e6)
        soon = math.pow(0.5, hours_after / horizon_h)
    value = 0.5 * soon + 0.5 * min(max(candidate.fill_pct, 0.0), 100.0) / 100.0
    for _ in range(candidate.urgency_count):
        value += 0.25 * (1.0 - value)
    return min(value, 1.0)


def depot_for(district: str | None, lat: float | None, lon: float | None,
              depots: Sequence[DepotSettings]) -> str | None:
    """The depot whose districts list the bin's district, else the nearest depot (None: no location and
    no district match, or no depots)."""
    for depot in depots:
        if district is not None and district in depot.districts:
            return depot.depot_id
    if lat is None or lon is None or not depots:
        return None
    metres = great_circle_m(np.array([lat]), np.array([lon]),
                            np.array([d.lat for d in depots]), np.array([d.lon for d in depots]))[0]
    return depots[int(metres.argmin())].depot_id
