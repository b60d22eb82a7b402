"""What the console's map is drawn from, read once when the API starts: layers, tiles, intersections."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.settings import Settings


@dataclass(frozen=True)
class ConsoleApproach:
    name: str
    phase: str


@dataclass(frozen=True)
class ConsoleMap:
    """The configuration a console page needs besides the data: nothing in it is personal."""

    enabled: bool = True
    time_zone: str = "Asia/Shanghai"
    tile_url: str | None = None
    tile_attribution: str = ""
    tile_max_zoom: int = 19
    # GeoJSON FeatureCollections, as configured (grids with `grid` and `district`, districts, roads).
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Configured intersections: id -> approaches (name and the signal phase governing it).
    intersections: dict[str, list[ConsoleApproach]] = field(default_factory=dict)
    # Camera device id -> the intersection it watches (traffic.cameras).
    camera_intersections: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsoleMap:
        console = settings.console
        files: dict[str, Path | None] = {
            "grids": settings.geo.grids_file,
            "districts": settings.geo.districts_file,
            "roads": console.roads_file or settings.dispatch.road_graph_file,
        }
        layers = {name: _feature_collection(path) for name, path in files.items() if path is not None}
        return cls(
            enabled=console.enabled,
            time_zone=settings.traffic.time_zone,
            tile_url=console.tile_url,
            tile_attribution=console.tile_attribution,
            tile_max_zoom=console.tile_max_zoom,
            layers=layers,
            intersections={i.id: [ConsoleApproach(a.name, a.phase) for a in i.approaches]
                           for i in settings.traffic.intersections},
            camera_intersections={c.device_id: c.intersection for c in settings.traffic.cameras
                                  if c.intersection is not None},
        )


def _feature_collection(path: Path) -> dict[str, Any]:
    """The file's features as a FeatureCollection (a single Feature or bare geometry list is wrapped).
    The files were checked when the configuration loaded; the geo tagger refuses broken polygons."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        return {"type": "FeatureCollection", "features": data.get("features", [])}
    if isinstance(data, dict) and data.get("type") == "Feature":
        return {"type": "FeatureCollection", "features": [data]}
    return {"type": "FeatureCollection", "features": []}
