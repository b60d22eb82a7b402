"""Configuration of the browser console (api/console/, docs/console.md): its base map and layers.

Kept apart from core/settings.py so that the shared settings module only gains a few lines. The
console shows times in the city's time zone, `traffic.time_zone`; grids and districts come from
`geo.grids_file` and `geo.districts_file`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConsoleSettings(_Section):
    enabled: bool = Field(True, description="Serve the browser console at / (docs/console.md).")
    tile_url: str | None = Field(
        None, description="XYZ tile URL template of a base map, e.g. https://tile.example/{z}/{x}/{y}.png; "
        "unset: no base map, only the configured grids, districts and roads (works without internet).")
    tile_attribution: str = Field("", description="Credit the tile provider asks for (shown on the map).")
    tile_max_zoom: int = Field(19, ge=1, le=24, description="Deepest zoom level the tile server has.")
    roads_file: Path | None = Field(
        None, description="GeoJSON of roads of interest (LineStrings) drawn on the map; unset: "
        "`dispatch.road_graph_file` when that is set (relative to the config file).")

    @field_validator("tile_url")
    @classmethod
    def _tile_template(cls, value: str | None) -> str | None:
        if value is not None:
            if not value.startswith(("https://", "http://", "/")):
                raise ValueError("must be an http(s) URL or a path on this server")
            missing = [part for part in ("{z}", "{x}", "{y}") if part not in value]
            if missing:
                raise ValueError(f"must contain {', '.join(missing)}")
        return value
