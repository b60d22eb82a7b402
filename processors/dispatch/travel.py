"""Travel distance (metres) and time (seconds) between places: along a road graph, or as the crow flies
times a detour factor.

Both give integer matrices over a list of (lat, lon) points, row = from, column = to, as the solver needs.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_M = 6_371_008.8

Matrix = npt.NDArray[np.int64]


class TravelModel(Protocol):
    def matrices(self, points: list[tuple[float, float]]) -> tuple[Matrix, Matrix]:
        """(distance_m, duration_s) between every pair of points."""
        ...


Floats = npt.NDArray[np.float64]


def great_circle_m(lats: Floats, lons: Floats, to_lats: Floats, to_lons: Floats) -> Floats:
    """Haversine distance from each point (rows) to each other point (columns)."""
    lat1, lon1 = np.radians(lats)[:, None], np.radians(lons)[:, None]
    lat2, lon2 = np.radians(to_lats)[None, :], np.radians(to_lons)[None, :]
    half = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    result: Floats = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(half, 1.0)))
    return result


def plane_m(points: list[tuple[float, float]]) -> Floats:
    """(x, y) metres of (lat, lon) points on a plane tangent at their mean latitude (equirectangular): within
    a city (tens of km) it is off from the great circle by well under 0.1%, and fast on millions of pairs."""
    coords = np.radians(np.asarray(points, dtype=np.float64).reshape(-1, 2))
    squeeze = math.cos(float(coords[:, 0].mean())) if len(coords) else 1.0
    result: Floats = np.column_stack((coords[:, 1] * squeeze, coords[:, 0])) * EARTH_RADIUS_M
    return result


@dataclass(frozen=True)
class GreatCircleTravel:
    speed_kmh: float
    detour_factor: float

    def matrices(self, points: list[tuple[float, float]]) -> tuple[Matrix, Matrix]:
        xy = plane_m(points).astype(np.float32)
        metres = np.hypot(xy[:, None, 0] - xy[None, :, 0], xy[:, None, 1] - xy[None, :, 1])
        metres *= np.float32(self.detour_factor)
        seconds = metres / np.float32(self.speed_kmh / 3.6)
        return np.rint(metres).astype(np.int64), np.rint(seconds).astype(np.int64)


class RoadGraphError(ValueError):
    """The road graph file is not a GeoJSON FeatureCollection of LineStrings."""


class RoadGraphTravel:
    """Fastest paths over roads given as GeoJSON LineStrings; shared coordinates join roads.

    A place reaches the road network at its nearest road vertex (that last stretch at `speed_kmh` times
    the detour factor). Places whose vertices are not connected fall back to the great-circle estimate,
    so a gap in the map never makes a bin unreachable.
    """

    def __init__(self, features: list[dict[str, Any]], *, speed_kmh: float, detour_factor: float) -> None:
        self._speed_ms = speed_kmh / 3.6
        self._fallback = GreatCircleTravel(speed_kmh, detour_factor)
        self._detour = detour_factor
        index: dict[tuple[float, float], int] = {}
        edges: list[list[tuple[int, float, float]]] = []

        def node(lon: float, lat: float) -> int:
            key = (round(lat, 7), round(lon, 7))
            if key not in index:
                index[key] = len(index)
                edges.append([])
            return index[key]

        for number, feature in enumerate(features):
            geometry = feature.get("geometry") or {}
            properties = feature.get("properties") or {}
            if geometry.get("type") != "LineString":
                raise RoadGraphError(f"feature {number} is not a LineString")
            speed = float(properties.get("speed_kmh", speed_kmh)) / 3.6
            if speed <= 0:
                raise RoadGraphError(f"feature {number} has a speed_kmh of 0 or less")
            oneway = properties.get("oneway") is True
            coordinates = geometry.get("coordinates") or []
            for (lon1, lat1, *_), (lon2, lat2, *_) in itertools.pairwise(coordinates):
                a, b = node(lon1, lat1), node(lon2, lat2)
                metres = float(great_circle_m(np.array([lat1]), np.array([lon1]),
                                              np.array([lat2]), np.array([lon2]))[0, 0])
                edges[a].append((b, metres / speed, metres))
                if not oneway:
                    edges[b].append((a, metres / speed, metres))
        if not index:
            raise RoadGraphError("the road graph has no roads")
        self._edges = edges
        self._nodes = np.array(list(index), dtype=np.float64)

    @classmethod
    def from_file(cls, path: Path, *, speed_kmh: float, detour_factor: float) -> RoadGraphTravel:
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RoadGraphError(f"cannot read road graph {path}: {exc}") from None
        if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
            raise RoadGraphError(f"{path} is not a GeoJSON FeatureCollection")
        return cls(document.get("features") or [], speed_kmh=speed_kmh, detour_factor=detour_factor)

    def _shortest(self, source: int) -> tuple[dict[int, float], dict[int, float]]:
        """Fastest time (s) from `source` to every reachable node, and the length (m) of that path."""
        times: dict[int, float] = {source: 0.0}
        lengths: dict[int, float] = {source: 0.0}
        queue = [(0.0, source)]
        while queue:
            time, at = heapq.heappop(queue)
            if time > times[at]:
                continue
            for to, seconds, metres in self._edges[at]:
                arrive = time + seconds
                if arrive < times.get(to, math.inf):
                    times[to] = arrive
                    lengths[to] = lengths[at] + metres
                    heapq.heappush(queue, (arrive, to))
        return times, lengths

    def matrices(self, points: list[tuple[float, float]]) -> tuple[Matrix, Matrix]:
        coords = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        to_node = great_circle_m(coords[:, 0], coords[:, 1], self._nodes[:, 0], self._nodes[:, 1])
        nearest = to_node.argmin(axis=1)
        access_m = to_node[np.arange(len(coords)), nearest] * self._detour
        distance, duration = (matrix.astype(np.float64) for matrix in self._fallback.matrices(points))
        access_s = access_m / self._speed_ms
        for source in sorted(set(nearest.tolist())):
            times, lengths = self._shortest(source)
            node_s = np.full(len(self._nodes), np.inf)
            node_m = np.full(len(self._nodes), np.inf)
            node_s[list(times)] = list(times.values())
            node_m[list(lengths)] = list(lengths.values())
            rows = np.flatnonzero(nearest == source)
            reached = np.isfinite(node_s[nearest])
            columns = np.flatnonzero(reached)
            block = np.ix_(rows, columns)
            distance[block] = access_m[rows, None] + (node_m[nearest[columns]] + access_m[columns])[None, :]
            duration[block] = access_s[rows, None] + (node_s[nearest[columns]] + access_s[columns])[None, :]
        np.fill_diagonal(distance, 0)
        np.fill_diagonal(duration, 0)
        return np.rint(distance).astype(np.int64), np.rint(duration).astype(np.int64)
