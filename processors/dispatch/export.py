"""A plan as CSV (one row per stop, for a spreadsheet or a driver's list) and as GeoJSON (the console's
map: one line per truck, one point per stop, the depot, the transfer station and the flagged bins)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any
from zoneinfo import ZoneInfo

from core.local_time import iso_local
from processors.dispatch.model import Place, Plan, Route

CSV_COLUMNS = ("plan_id", "revision", "shift_id", "truck_id", "sequence", "device_id", "lat", "lon",
               "eta_utc", "eta_ms", "eta_local", "expected_fill_pct", "load_after", "capacity_unit",
               "mandatory", "status", "case_id")


def iso_utc(time_ms: int) -> str:
    return dt.datetime.fromtimestamp(time_ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")


def plan_csv(plan: Plan, zone: ZoneInfo) -> str:
    """One row per stop; `eta_local`: the arrival in `zone` (the city's time zone), with its offset."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for route in plan.routes:
        for sequence, stop in enumerate(route.stops, start=1):
            writer.writerow((plan.plan_id, plan.revision, plan.shift.shift_id, route.truck_id, sequence,
                             stop.device_id, stop.lat, stop.lon, iso_utc(stop.eta_ms), stop.eta_ms,
                             iso_local(stop.eta_ms, zone),
                             stop.expected_fill_pct, stop.load_after, plan.capacity_unit.value,
                             str(stop.mandatory).lower(), stop.status.value, stop.case_id or ""))
    return out.getvalue()


def _point(place: Place, kind: str, **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [place.lon, place.lat]},
            "properties": {"kind": kind, "id": place.place_id, **properties}}


def _line(plan: Plan, route: Route) -> dict[str, Any]:
    path = [plan.depot, *(Place(stop.device_id, stop.lat, stop.lon) for stop in route.stops),
            plan.transfer_station, plan.depot]
    return {"type": "Feature",
            "geometry": {"type": "LineString", "coordinates": [[place.lon, place.lat] for place in path]},
            "properties": {"kind": "route", "truck_id": route.truck_id, "distance_m": route.distance_m,
                           "bins": len(route.stops), "load": route.load, "capacity": route.capacity,
                           "depart_utc": iso_utc(route.depart_ms), "return_utc": iso_utc(route.return_ms)}}


def plan_geojson(plan: Plan) -> dict[str, Any]:
    """Lines only for trucks with stops; coordinates [lon, lat] as GeoJSON (RFC 7946) has them."""
    features = [_point(plan.depot, "depot"), _point(plan.transfer_station, "transfer_station")]
    for route in plan.routes:
        if not route.stops:
            continue
        features.append(_line(plan, route))
        for sequence, stop in enumerate(route.stops, start=1):
            features.append(_point(
                Place(stop.device_id, stop.lat, stop.lon), "stop", truck_id=route.truck_id, sequence=sequence,
                eta_utc=iso_utc(stop.eta_ms), expected_fill_pct=stop.expected_fill_pct,
                load_after=stop.load_after, mandatory=stop.mandatory, status=stop.status.value,
                case_id=stop.case_id))
    for flagged in plan.flagged:
        if flagged.lat is not None and flagged.lon is not None:
            features.append(_point(Place(flagged.device_id, flagged.lat, flagged.lon), "flagged",
                                   flags=list(flagged.flags)))
    return {"type": "FeatureCollection", "features": features}
