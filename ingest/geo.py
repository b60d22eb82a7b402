"""Grids, districts and departments: which polygon a point is in, and who owns what happens there.

Point-in-polygon over thousands of polygons on the ingest hot path needs an index. The index here is a
uniform grid of cells over the polygons' extent, each cell listing the polygons whose bounding box
touches it: a lookup is one cell, a few bounding-box checks and an even-odd ray cast on the candidates
(usually one or two). Bounding boxes are computed with numpy at build time; a query is plain Python,
because for polygons of a few dozen vertices the call overhead of numpy costs more than the loop.
Devices do not move, so the answers for recent positions are cached (bounded).

Grids do not overlap in a sane configuration; when they do, the smallest polygon wins, so a detailed
sub-grid drawn over a coarse one takes precedence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from core.ingest_config import DepartmentRoute, GeoSettings
from core.models import Event, Violation

CACHE_ENTRIES = 65_536
# Average number of cells per polygon when the cell size is chosen automatically.
CELLS_PER_POLYGON = 2.0


class GeoError(ValueError):
    """A GeoJSON file that cannot be used; the message names the file, the feature and the problem."""


Ring = tuple[tuple[float, ...], tuple[float, ...]]  # (xs, ys), closed or not


@dataclass(frozen=True, slots=True)
class Area:
    """One polygon (or multipolygon) and its properties."""

    properties: dict[str, str]
    # Every ring of every part: the even-odd rule over all rings handles holes and multipolygons.
    rings: tuple[Ring, ...]
    bbox: tuple[float, float, float, float]  # min lon, min lat, max lon, max lat
    area: float

    def contains(self, lon: float, lat: float) -> bool:
        min_x, min_y, max_x, max_y = self.bbox
        if not (min_x <= lon <= max_x and min_y <= lat <= max_y):
            return False
        inside = False
        for xs, ys in self.rings:
            count = len(xs)
            j = count - 1
            for i in range(count):
                yi, yj = ys[i], ys[j]
                if (yi > lat) != (yj > lat):
                    xi, xj = xs[i], xs[j]
                    if lon < (xj - xi) * (lat - yi) / (yj - yi) + xi:
                        inside = not inside
                j = i
        return inside


class PolygonIndex:
    """Finds the area containing a point among many, through a uniform grid of bounding-box cells."""

    def __init__(self, areas: Sequence[Area], cell_deg: float | None = None) -> None:
        # Smallest first, so the first hit is the most specific area.
        self.areas = sorted(areas, key=lambda area: area.area)
        self._cache: dict[tuple[float, float], Area | None] = {}
        if not self.areas:
            self._cells: list[tuple[int, ...]] = []
            self._origin = (0.0, 0.0)
            self._size = 1.0
            self._shape = (0, 0)
            return
        boxes = np.array([area.bbox for area in self.areas], dtype=np.float64)
        min_x, min_y = float(boxes[:, 0].min()), float(boxes[:, 1].min())
        max_x, max_y = float(boxes[:, 2].max()), float(boxes[:, 3].max())
        if cell_deg is None:
            extent = max((max_x - min_x) * (max_y - min_y), 1e-12)
            cell_deg = math.sqrt(extent / (len(self.areas) * CELLS_PER_POLYGON))
            # Never smaller than a typical polygon's side, or big polygons fill many cells each.
            cell_deg = max(cell_deg, float(np.median(boxes[:, 2] - boxes[:, 0])) / 2, 1e-6)
        nx = max(1, math.ceil((max_x - min_x) / cell_deg) + 1)
        ny = max(1, math.ceil((max_y - min_y) / cell_deg) + 1)
        first_x = np.floor((boxes[:, 0] - min_x) / cell_deg).astype(np.int64)
        last_x = np.floor((boxes[:, 2] - min_x) / cell_deg).astype(np.int64)
        first_y = np.floor((boxes[:, 1] - min_y) / cell_deg).astype(np.int64)
        last_y = np.floor((boxes[:, 3] - min_y) / cell_deg).astype(np.int64)
        cells: list[list[int]] = [[] for _ in range(nx * ny)]
        for index in range(len(self.areas)):
            for cx in range(int(first_x[index]), int(last_x[index]) + 1):
                for cy in range(int(first_y[index]), int(last_y[index]) + 1):
                    cells[cx * ny + cy].append(index)
        self._cells = [tuple(cell) for cell in cells]
        self._origin = (min_x, min_y)
        self._size = cell_deg
        self._shape = (nx, ny)

    def __len__(self) -> int:
        return len(self.areas)

    def find(self, lon: float, lat: float) -> Area | None:
        key = (lon, lat)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = self._find(lon, lat)
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.clear()  # simplest bound; devices re-fill it within one report interval
        self._cache[key] = found
        return found

    def find_uncached(self, lon: float, lat: float) -> Area | None:
        """The lookup without the position cache (what the benchmark measures)."""
        return self._find(lon, lat)

    def _find(self, lon: float, lat: float) -> Area | None:
        nx, ny = self._shape
        cx = math.floor((lon - self._origin[0]) / self._size)
        cy = math.floor((lat - self._origin[1]) / self._size)
        if not (0 <= cx < nx and 0 <= cy < ny):
            return None
        areas = self.areas
        for index in self._cells[cx * ny + cy]:
            if areas[index].contains(lon, lat):
                return areas[index]
        return None


def load_areas(path: Path, required: Iterable[str]) -> list[Area]:
    """The polygons of a GeoJSON FeatureCollection; each feature needs the `required` string properties."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GeoError(f"{path}: cannot read GeoJSON: {exc}") from exc
    return areas_from_geojson(data, required, str(path))


def areas_from_geojson(data: Any, required: Iterable[str], source: str = "GeoJSON") -> list[Area]:
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise GeoError(f"{source}: expected a FeatureCollection")
    features = data.get("features")
    if not isinstance(features, list):
        raise GeoError(f"{source}: features must be an array")
    required = tuple(required)
    areas = []
    for index, feature in enumerate(features):
        where = f"{source}: features[{index}]"
        if not isinstance(feature, dict):
            raise GeoError(f"{where}: expected a Feature object")
        properties = feature.get("properties") or {}
        for name in required:
            if not isinstance(properties.get(name), str) or not properties[name]:
                raise GeoError(f"{where}.properties.{name}: required string is missing")
        geometry = feature.get("geometry")
        if not isinstance(geometry, dict):
            raise GeoError(f"{where}.geometry: expected a Polygon or MultiPolygon")
        kind, coordinates = geometry.get("type"), geometry.get("coordinates")
        if kind == "Polygon":
            polygons = [coordinates]
        elif kind == "MultiPolygon" and isinstance(coordinates, list):
            polygons = coordinates
        else:
            raise GeoError(f"{where}.geometry.type: expected Polygon or MultiPolygon, got {kind!r}")
        rings = [
            _ring(ring, f"{where}.geometry.coordinates")
            for polygon in polygons
            for ring in _list(polygon, f"{where}.geometry.coordinates")
        ]
        if not rings:
            raise GeoError(f"{where}.geometry.coordinates: no rings")
        xs = [x for ring in rings for x in ring[0]]
        ys = [y for ring in rings for y in ring[1]]
        area = sum(_signed_area(ring) * (1 if i == 0 else -1) for i, ring in enumerate(rings))
        areas.append(
            Area(
                properties={k: str(v) for k, v in properties.items() if isinstance(v, str | int)},
                rings=tuple(rings),
                bbox=(min(xs), min(ys), max(xs), max(ys)),
                area=abs(area),
            )
        )
    return areas


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise GeoError(f"{where}: expected an array")
    return value


def _ring(value: Any, where: str) -> Ring:
    points = _list(value, where)
    if len(points) < 4:
        raise GeoError(f"{where}: a linear ring needs at least 4 positions, got {len(points)}")
    xs, ys = [], []
    for point in points:
        if (
            not isinstance(point, list)
            or len(point) < 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in point[:2])
        ):
            raise GeoError(f"{where}: expected [lon, lat] positions, got {str(point)[:40]}")
        lon, lat = float(point[0]), float(point[1])
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise GeoError(f"{where}: position {point[:2]} is not [lon, lat] in WGS84 degrees")
        xs.append(lon)
        ys.append(lat)
    return tuple(xs), tuple(ys)


def _signed_area(ring: Ring) -> float:
    xs, ys = ring
    return 0.5 * sum(xs[i - 1] * ys[i] - xs[i] * ys[i - 1] for i in range(len(xs)))


class DepartmentRouter:
    """The routing table: first matching row wins."""

    def __init__(self, rows: Sequence[DepartmentRoute], default: str | None) -> None:
        self._rows = tuple(rows)
        self._default = default

    def for_event(self, kind: str, district: str | None) -> str | None:
        for row in self._rows:
            if row.violation_type is None and row.kind in (None, kind) and row.district in (None, district):
                return row.department
        return self._default

    def for_violation(self, violation_type: str, district: str | None) -> str | None:
        """Only rows naming this violation type: a violation otherwise keeps its event's department."""
        for row in self._rows:
            if row.violation_type == violation_type and row.district in (None, district):
                return row.department
        return None


class GeoTagger:
    """Adds grid, district and department tags to events (at ingest) and violations (before storing)."""

    def __init__(
        self, grids: PolygonIndex | None, districts: PolygonIndex | None, router: DepartmentRouter
    ) -> None:
        self._grids = grids
        self._districts = districts
        self._router = router

    @classmethod
    def from_settings(cls, settings: GeoSettings) -> GeoTagger:
        grids = districts = None
        if settings.grids_file is not None:
            grids = PolygonIndex(
                load_areas(settings.grids_file, ("grid", "district")), settings.index_cell_deg
            )
        if settings.districts_file is not None:
            districts = PolygonIndex(load_areas(settings.districts_file, ("district",)))
        return cls(grids, districts, DepartmentRouter(settings.departments, settings.default_department))

    def place(self, lon: float, lat: float) -> dict[str, str]:
        """grid and district of a point (empty when it is outside every polygon)."""
        if self._grids is not None:
            grid = self._grids.find(lon, lat)
            if grid is not None:
                return {"grid": grid.properties["grid"], "district": grid.properties["district"]}
        if self._districts is not None:
            district = self._districts.find(lon, lat)
            if district is not None:
                return {"district": district.properties["district"]}
        return {}

    def tags_at(self, violation_type: str, lon: float, lat: float) -> dict[str, str]:
        """The tags a new violation of this type at this point would get (for what people report)."""
        return self._with_department(violation_type, self.place(lon, lat))

    def tag_event(self, event: Event) -> Event:
        """Place tags from the event's position, then its department; tags the event already has win."""
        tags = {} if event.location is None else self.place(event.location.lon, event.location.lat)
        tags.update(event.tags)
        if "department" not in tags:
            department = self._router.for_event(event.kind, tags.get("district"))
            if department is not None:
                tags["department"] = department
        return event if tags == event.tags else msgspec.structs.replace(event, tags=tags)

    def tag_violation(self, violation: Violation) -> Violation:
        """Like events, except that a routing row for the violation type overrides the department."""
        tags = (
            {} if violation.location is None else self.place(violation.location.lon, violation.location.lat)
        )
        tags.update(violation.tags)
        tags = self._with_department(violation.type, tags)
        return violation if tags == violation.tags else msgspec.structs.replace(violation, tags=tags)

    def _with_department(self, violation_type: str, tags: dict[str, str]) -> dict[str, str]:
        """`tags` with the department of a violation of this type: a routing row for the type overrides
        the department, otherwise it is kept or the district's default is added."""
        department = self._router.for_violation(violation_type, tags.get("district"))
        if department is not None:
            tags["department"] = department
        elif "department" not in tags:
            fallback = self._router.for_event("", tags.get("district"))
            if fallback is not None:
                tags["department"] = fallback
        return tags
