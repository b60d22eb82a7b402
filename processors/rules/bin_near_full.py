"""Bin will overflow soon: forecast when a bin reaches 100% and alert while that is within a horizon.

Per bin, the readings since the last emptying and within the last `fit_window_s` (at most
`max_points`, newest kept) are fitted with a straight line fill = a + b * t by least squares, from
running sums kept with the readings.
The window matters: bins fill faster by day than by night, and a line through a whole night and a
morning overstates the current level. One bad reading (a bird on the sensor, a bag held in the
opening) would tilt the line, so the fit is robust to a single outlier: the reading whose removal
improves the fit most is dropped and the line refitted when it is off the line through the *other*
readings (its leave-one-out residual) by more than `outlier_pct` fill points and by more than three
times the median residual of the others. The predicted full time is where the line crosses 100%.

Each reading publishes the bin's newest forecast as a Prediction (type `bin_full`, served by
GET /v1/bins/predictions); when the forecast falls within `horizon_s` of the newest reading a
`bin_near_full` violation opens, and emptying the bin (a drop of `emptied_drop_pct` points) clears it
and starts a new fit.
"""

from __future__ import annotations

import statistics
from typing import Any, ClassVar

import msgspec

from core.models import Event, Prediction, Severity, Violation
from core.sanitation_settings import BinNearFullSettings
from processors.devices import DeviceLookup, Thresholds
from processors.rule import Emitter, Rule
from processors.rules._common import Reading, ZoneThresholds, clear_violation, open_violation
from processors.rules.bin_fill import fill_pct_of

TYPE = "bin_near_full"
PREDICTION_TYPE = "bin_full"
_HOUR_MS = 3_600_000


# Running sums are rebuilt from the readings after this many updates, so that rounding from adding and
# removing readings cannot accumulate, and hours are counted from a recent origin again.
REBUILD_SUMS_EVERY = 1000


class FillSums(msgspec.Struct):
    """Sums over the kept readings of x (hours since `origin_ms`), y (fill), x*x, x*y and y*y.

    Kept with the readings and updated as readings come and go, they give the line and a bound on its
    residuals in a few operations per reading instead of a pass over up to `max_points` readings.
    """

    origin_ms: int
    count: int = 0
    x: float = 0.0
    y: float = 0.0
    xx: float = 0.0
    xy: float = 0.0
    yy: float = 0.0
    updates: int = 0

    @classmethod
    def of(cls, points: list[Reading]) -> FillSums:
        origin_ms = points[0][1]
        return cls.of_columns(origin_ms, [(time_ms - origin_ms) / _HOUR_MS for _, time_ms, _ in points],
                              [fill for _, _, fill in points])

    @classmethod
    def of_columns(cls, origin_ms: int, hours: list[float], fills: list[float]) -> FillSums:
        """The sums of readings given as their hours since `origin_ms` and their fills. One pass with
        local variables: the same additions in the same order as `add` makes, so the same floats, at a
        third of the cost of a call per reading (this runs on every reading that needs the outlier
        search)."""
        sum_x = sum_y = sum_xx = sum_xy = sum_yy = 0.0
        for x, y in zip(hours, fills, strict=True):
            sum_x += x
            sum_y += y
            sum_xx += x * x
            sum_xy += x * y
            sum_yy += y * y
        return cls(origin_ms=origin_ms, count=len(hours), x=sum_x, y=sum_y, xx=sum_xx, xy=sum_xy, yy=sum_yy)

    def hours(self, time_ms: int) -> float:
        return (time_ms - self.origin_ms) / _HOUR_MS

    def add(self, reading: Reading, sign: float = 1.0) -> None:
        x, y = self.hours(reading[1]), reading[2]
        self.count += 1 if sign > 0 else -1
        self.x += sign * x
        self.y += sign * y
        self.xx += sign * x * x
        self.xy += sign * x * y
        self.yy += sign * y * y
        self.updates += 1

    def remove(self, reading: Reading) -> None:
        self.add(reading, -1.0)

    def line(self) -> tuple[float, float]:
        """(slope, intercept) of the least-squares line through the readings."""
        return _line_from_sums(self.count, self.x, self.y, self.xx, self.xy)


class NearFullState(msgspec.Struct):
    points: list[Reading] = []
    open_violation: Violation | None = None
    # Sums over `points` (None: rebuild from them; also how a snapshot from before the sums reads).
    sums: FillSums | None = None


class Fit(msgspec.Struct, frozen=True):
    slope_pct_per_h: float
    predicted_full_ms: int | None
    used: list[Reading]
    dropped: Reading | None


def fit_fill(points: list[Reading], outlier_pct: float, sums: FillSums | None = None) -> Fit:
    """Least-squares line through the points, refitted without the worst point if it is an outlier.

    `sums` are the points' running sums (computed here when not given). Plain Python over at most
    `max_points` readings: on lists this short numpy's per-call set-up cost more than the arithmetic
    (this runs on every bin reading; measured 2x faster than the numpy form).
    """
    if sums is None:
        sums = FillSums.of(points)
    count = sums.count
    slope, intercept = sums.line()
    dropped: Reading | None = None
    used = points
    if count > 3 and _may_have_outlier(sums, slope, intercept, points, outlier_pct):
        # Searched on sums made afresh: running sums differ from them in the last bits, which could tip a
        # tie between two equally bad readings the other way.
        origin_ms = points[0][1]
        hours = [(time_ms - origin_ms) / _HOUR_MS for _, time_ms, _ in points]
        fills = [fill for _, _, fill in points]
        sums = FillSums.of_columns(origin_ms, hours, fills)
        slope, intercept = sums.line()
        sum_x, sum_y, sum_xx, sum_xy = sums.x, sums.y, sums.xx, sums.xy
        # The candidate is the reading whose removal improves the fit most: for least squares the
        # squared error drops by residual^2 / (1 - leverage) (no refit per point needed). It is then
        # judged against the line through the *other* readings (its leave-one-out residual,
        # residual / (1 - leverage)): with few points an outlier pulls the line towards itself and
        # hides part of its own residual.
        mean_x = sum_x / count
        spread = sum_xx - sum_x * sum_x / count
        worst, worst_score, worst_residual, worst_keep = 0, -1.0, 0.0, 1.0
        own_share = 1.0 / count
        for index, (x, y) in enumerate(zip(hours, fills, strict=True)):
            residual = y - (intercept + slope * x)
            leverage = own_share + ((x - mean_x) ** 2 / spread if spread > 0 else 0.0)
            keep_share = 1.0 - leverage
            if keep_share < 1e-9:
                keep_share = 1e-9
            score = residual * residual / keep_share
            if score > worst_score:
                worst, worst_score, worst_residual, worst_keep = index, score, residual, keep_share
        off_by = abs(worst_residual) / worst_keep
        if off_by > outlier_pct:
            x, y = hours[worst], fills[worst]
            rest_slope, rest_intercept = _line_from_sums(count - 1, sum_x - x, sum_y - y, sum_xx - x * x,
                                                         sum_xy - x * y)
            # Only computed for a candidate: the typical residual of the others on their line.
            typical = statistics.median(
                abs(other_y - (rest_intercept + rest_slope * other_x))
                for index, (other_x, other_y) in enumerate(zip(hours, fills, strict=True)) if index != worst
            )
            if off_by > 3 * typical:
                dropped = points[worst]
                used = points[:worst] + points[worst + 1:]
                slope, intercept = rest_slope, rest_intercept
    predicted: int | None = None
    if slope > 1e-9:
        predicted = int(sums.origin_ms + (100.0 - intercept) / slope * _HOUR_MS)
    return Fit(slope_pct_per_h=slope, predicted_full_ms=predicted, used=used, dropped=dropped)


def _may_have_outlier(sums: FillSums, slope: float, intercept: float, points: list[Reading],
                      outlier_pct: float) -> bool:
    """False when no reading can be off the line by more than `outlier_pct`, from the sums alone.

    Every residual is at most the root of the squared error, and every leave-one-out divisor
    (1 - leverage) at least the smallest one, which belongs to the first or the last reading (times are
    in order). Readings that lie close to their line (most of them) then skip the per-reading search.
    """
    count = sums.count
    squared_error = max(0.0, sums.yy - intercept * sums.y - slope * sums.xy)
    spread = sums.xx - sums.x * sums.x / count
    if spread <= 0:
        return True
    mean_x = sums.x / count
    first_x, last_x = sums.hours(points[0][1]), sums.hours(points[-1][1])
    most_leverage = 1.0 / count + max((first_x - mean_x) ** 2, (last_x - mean_x) ** 2) / spread
    least_keep = 1.0 - most_leverage
    return least_keep <= 1e-9 or squared_error ** 0.5 / least_keep > outlier_pct


def _line_from_sums(count: int, sum_x: float, sum_y: float, sum_xx: float,
                    sum_xy: float) -> tuple[float, float]:
    """Ordinary least squares y = intercept + slope * x from the sums of x, y, x*x and x*y."""
    spread = sum_xx - sum_x * sum_x / count
    slope = (sum_xy - sum_x * sum_y / count) / spread if spread > 1e-12 else 0.0
    return slope, (sum_y - slope * sum_x) / count


class BinNearFullRule(Rule[NearFullState]):
    name: ClassVar[str] = TYPE
    kinds: ClassVar[frozenset[str]] = frozenset({"bin"})
    reads_attributes: ClassVar[frozenset[str]] = frozenset({"fill_pct", "distance_mm"})
    state_type: ClassVar[type[msgspec.Struct]] = NearFullState

    def __init__(self, settings: BinNearFullSettings, devices: DeviceLookup | None = None,
                 zones: ZoneThresholds | None = None, *, kinds: ZoneThresholds | None = None) -> None:
        self.settings = settings
        self.thresholds = Thresholds(devices, zones, kinds)
        self.devices = self.thresholds.devices
        self.state_ttl_ms = settings.state_ttl_s * 1000

    def on_event(self, state: NearFullState | None, event: Event, out: Emitter) -> NearFullState | None:
        fill = fill_pct_of(event, self.devices)
        if fill is None:
            return state
        state = state or NearFullState()
        reading = (event.event_id, event.event_time_ms, fill)
        # Five settings a reading: the device's overrides looked up once (processors.devices.Thresholds).
        own = self.thresholds.overrides(TYPE, event.device_id, event.kind)
        emptied_drop_pct = own.get("emptied_drop_pct", self.settings.emptied_drop_pct)
        if state.points and fill <= state.points[-1][2] - emptied_drop_pct:
            if state.open_violation is not None:
                out.violation(clear_violation(state.open_violation, event, {"emptied_fill_pct": fill}))
                state.open_violation = None
            state.points = []
            state.sums = None
        window_start_ms = event.event_time_ms - int(
            own.get("fit_window_s", self.settings.fit_window_s) * 1000)
        points = state.points
        points.append(reading)
        # Readings arrive in event-time order, so the ones to drop are at the front.
        drop = max(0, len(points) - self.settings.max_points)
        while drop < len(points) and points[drop][1] < window_start_ms:
            drop += 1
        sums = state.sums
        if sums is not None and sums.updates < REBUILD_SUMS_EVERY:
            sums.add(reading)
            for gone in points[:drop]:
                sums.remove(gone)
        if drop:
            del points[:drop]
        if not points:
            state.sums = None
            return state
        if sums is None or sums.updates >= REBUILD_SUMS_EVERY:
            state.sums = sums = FillSums.of(points)
        if len(points) < own.get("min_points", self.settings.min_points):
            out.record(self._prediction(event, fill, None, {"points": len(points)}))
            return state
        fit = fit_fill(points, own.get("outlier_pct", self.settings.outlier_pct), sums)
        predicted = fit.predicted_full_ms
        if fill >= 100.0 and fit.dropped != reading:
            predicted = event.event_time_ms  # already full, whatever the line says
        horizon_s = own.get("horizon_s", self.settings.horizon_s)
        details = {
            "slope_pct_per_h": round(fit.slope_pct_per_h, 3),
            "points": len(fit.used),
            "dropped_outlier_event_id": None if fit.dropped is None else fit.dropped[0],
            "horizon_s": horizon_s,
        }
        out.record(self._prediction(event, fill, predicted, details))
        within = predicted is not None and predicted - event.event_time_ms <= horizon_s * 1000
        if within and state.open_violation is None:
            # The incident began when the forecast first fell within the horizon (this reading), not at
            # the oldest reading of the fit, which the fit window and max_points move.
            state.open_violation = open_violation(
                TYPE, event.device_id, event, fit.used, Severity.MEDIUM,
                {**details, "predicted_full_ms": predicted, "fill_pct": [f for _, _, f in fit.used]},
                begun_by=(event.event_id, event.event_time_ms))
            out.violation(state.open_violation)
        return state

    @staticmethod
    def _prediction(event: Event, fill: float, predicted_ms: int | None,
                    details: dict[str, Any]) -> Prediction:
        """The forecast record; it takes `details` as it is (each caller makes a new dictionary)."""
        return Prediction(type=PREDICTION_TYPE, device_id=event.device_id,
                          computed_time_ms=event.event_time_ms, predicted_time_ms=predicted_ms,
                          value=fill, details=details, location=event.location, tags=event.tags)
