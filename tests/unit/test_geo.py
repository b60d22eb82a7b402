"""Grids, districts and departments: point in polygon, the spatial index, tagging of events and violations."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.ingest_config import DepartmentRoute, GeoSettings
from core.models import Event, Evidence, Location, Severity, Violation
from core.settings import ConfigError, load_settings
from ingest.geo import (
    Area,
    DepartmentRouter,
    GeoError,
    GeoTagger,
    PolygonIndex,
    areas_from_geojson,
    load_areas,
)

REPO = Path(__file__).resolve().parents[2]


def feature(coordinates: Any, kind: str = "Polygon", **properties: str) -> dict[str, Any]:
    return {
        "type": "Feature",
        "properties": properties,
        "geometry": {"type": kind, "coordinates": coordinates},
    }


def square(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def collection(*features: dict[str, Any]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


def test_holes_and_multipolygons_follow_the_even_odd_rule() -> None:
    [donut, islands] = areas_from_geojson(
        collection(
            feature([square(0, 0, 10, 10), square(4, 4, 6, 6)], grid="donut"),
            feature([[square(20, 0, 21, 1)], [square(30, 0, 31, 1)]], "MultiPolygon", grid="islands"),
        ),
        ("grid",),
    )
    assert donut.contains(1, 1) and not donut.contains(5, 5) and not donut.contains(11, 5)
    assert islands.contains(20.5, 0.5) and islands.contains(30.5, 0.5) and not islands.contains(25, 0.5)
    assert donut.area == pytest.approx(96)


def test_the_index_answers_like_a_scan_of_every_polygon() -> None:
    rnd = random.Random(3)
    areas = []
    for i in range(30):
        for j in range(20):
            # Irregular quadrilaterals that tile the plane with jittered shared corners.
            areas.append(
                feature(
                    [
                        [
                            [i + _j(i, j), j + _j(j, i)],
                            [i + 1 + _j(i + 1, j), j + _j(j, i + 1)],
                            [i + 1 + _j(i + 1, j + 1), j + 1 + _j(j + 1, i + 1)],
                            [i + _j(i, j + 1), j + 1 + _j(j + 1, i)],
                            [i + _j(i, j), j + _j(j, i)],
                        ]
                    ],
                    grid=f"{i}-{j}",
                )
            )
    polygons = areas_from_geojson(collection(*areas), ("grid",))
    index = PolygonIndex(polygons)
    for _ in range(3000):
        x, y = rnd.uniform(-1, 31), rnd.uniform(-1, 21)
        expected = [a for a in polygons if a.contains(x, y)]
        found = index.find(x, y)
        assert (found is None and not expected) or (found is not None and found in expected), (x, y)
    assert PolygonIndex([]).find(1, 1) is None


def _j(a: int, b: int) -> float:
    return random.Random(a * 1000 + b).uniform(-0.3, 0.3)


def test_overlapping_polygons_give_the_smallest() -> None:
    index = PolygonIndex(
        areas_from_geojson(
            collection(
                feature([square(0, 0, 10, 10)], grid="coarse"), feature([square(2, 2, 3, 3)], grid="detail")
            ),
            ("grid",),
        )
    )
    found = index.find(2.5, 2.5)
    assert found is not None and found.properties["grid"] == "detail"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "Feature"}, "expected a FeatureCollection"),
        (collection(feature([square(0, 0, 1, 1)])), r"features\[0\].properties.grid: required"),
        (collection(feature([[0, 0], [1, 1]], grid="g")), r"features\[0\].geometry.coordinates"),
        (collection(feature([[[0, 0], [1, 0], [1, 1], [0, 0]]], "Point", grid="g")), "expected Polygon"),
        (collection(feature([square(0, 0, 200, 1)], grid="g")), "not \\[lon, lat\\]"),
    ],
)
def test_bad_geojson_is_refused_naming_the_feature(data: Any, message: str) -> None:
    with pytest.raises(GeoError, match=message):
        areas_from_geojson(data, ("grid",))


def test_the_shipped_grids_agree_with_the_registered_devices() -> None:
    settings = load_settings(REPO / "configs" / "citywatch.yaml")
    assert settings.geo.grids_file is not None
    grids = PolygonIndex(load_areas(settings.geo.grids_file, ("grid", "district")))
    assert len(grids) == 12
    tagged = [d for d in settings.devices if "grid" in d.tags]
    assert tagged
    for device in tagged:
        assert device.lat is not None and device.lon is not None
        found = grids.find(device.lon, device.lat)
        assert found is not None and found.properties["grid"] == device.tags["grid"], device.device_id


def tagger() -> GeoTagger:
    settings = load_settings(REPO / "configs" / "citywatch.yaml")
    return GeoTagger.from_settings(settings.geo)


def event(kind: str, lat: float | None, lon: float | None, tags: dict[str, str] | None = None) -> Event:
    return Event(
        event_id="e1",
        device_id="d1",
        kind=kind,
        event_time_ms=1,
        ingest_time_ms=1,
        location=None if lat is None or lon is None else Location(lat=lat, lon=lon),
        tags=tags or {},
    )


def test_events_get_grid_district_and_department_from_their_position() -> None:
    tagged = tagger().tag_event(event("track", 22.535, 114.055))
    assert tagged.tags == {"grid": "FT-12", "district": "futian", "department": "traffic_police"}
    bin_event = tagger().tag_event(event("bin", 22.5511, 114.0755))
    assert bin_event.tags == {"grid": "FT-34", "district": "futian", "department": "sanitation"}


def test_outside_the_grids_the_district_still_tags_and_the_default_department_applies() -> None:
    luohu = tagger().tag_event(event("streetlight", 22.55, 114.12))
    assert luohu.tags == {"district": "luohu", "department": "urban_management"}
    nowhere = tagger().tag_event(event("bin", 10.0, 10.0))
    assert nowhere.tags == {"department": "sanitation"}
    no_position = event("air", None, None)
    assert tagger().tag_event(no_position).tags == {"department": "environment"}


def test_tags_already_on_the_event_win() -> None:
    tagged = tagger().tag_event(event("bin", 22.5511, 114.0755, {"grid": "FT-99", "department": "parks"}))
    assert tagged.tags == {"grid": "FT-99", "district": "futian", "department": "parks"}
    same = event(
        "bin", 22.5511, 114.0755, {"grid": "FT-34", "district": "futian", "department": "sanitation"}
    )
    assert tagger().tag_event(same) is same


def violation(type_: str, tags: dict[str, str], location: Location | None) -> Violation:
    return Violation(
        violation_id="v1",
        type=type_,
        severity=Severity.HIGH,
        device_id="d1",
        start_time_ms=1,
        evidence=Evidence(event_ids=["e1"]),
        tags=tags,
        location=location,
        updated_time_ms=1,
    )


def test_violations_are_routed_by_type_then_keep_their_events_department() -> None:
    geo = tagger()
    routed = geo.tag_violation(
        violation("bin_overflow", {"department": "parks"}, Location(lat=22.5511, lon=114.0755))
    )
    assert routed.tags == {"grid": "FT-34", "district": "futian", "department": "sanitation"}
    kept = geo.tag_violation(violation("red_light", {"department": "traffic_police"}, None))
    assert kept.tags == {"department": "traffic_police"}
    fallback = geo.tag_violation(violation("graffiti", {}, None))
    assert fallback.tags == {"department": "urban_management"}


def test_routing_rows_per_district() -> None:
    router = DepartmentRouter(
        [
            DepartmentRoute(kind="bin", district="luohu", department="luohu_sanitation"),
            DepartmentRoute(kind="bin", department="sanitation"),
            DepartmentRoute(violation_type="illegal_parking", district="futian", department="futian_urban"),
        ],
        default=None,
    )
    assert router.for_event("bin", "luohu") == "luohu_sanitation"
    assert router.for_event("bin", "futian") == "sanitation"
    assert router.for_event("air", "futian") is None
    assert router.for_violation("illegal_parking", "futian") == "futian_urban"
    assert router.for_violation("illegal_parking", "luohu") is None
    with pytest.raises(ValueError, match="not both"):
        GeoSettings(departments=[DepartmentRoute(kind="bin", violation_type="x", department="d")])


def test_missing_geo_files_stop_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"geo": {"grids_file": "nope.geojson"}}))
    with pytest.raises(ConfigError, match=r"geo.grids_file: .*nope.geojson does not exist"):
        load_settings(tmp_path / "c.yaml")


def test_area_is_a_plain_value() -> None:
    area = Area(
        properties={"grid": "g"},
        rings=(((0.0, 1.0, 1.0, 0.0), (0.0, 0.0, 1.0, 1.0)),),
        bbox=(0, 0, 1, 1),
        area=1,
    )
    assert area.contains(0.5, 0.5) and not area.contains(1.5, 0.5)
