"""Point-in-polygon lookups per second with thousands of grid polygons (ingest/geo.py).

Builds N irregular polygons (default 5,000: a 100 x 50 tiling over Shenzhen with street-like jittered
edges, 16 vertices each), then times lookups of random points through the index, without the position
cache (every point new) and with it (devices report from fixed positions), against a plain scan of
every polygon's bounding box and ring for scale. One thread; figures are per core.

    .venv/bin/python -m bench.geo_lookup [--polygons 5000] [--points 200000]
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import time
from typing import Any

from ingest.geo import PolygonIndex, areas_from_geojson

LON0, LAT0, LON1, LAT1 = 113.75, 22.45, 114.35, 22.75


def tiling(count: int, seed: int = 11) -> dict[str, Any]:
    """`count` polygons tiling the box, edges subdivided and jittered, shared edges identical."""
    cols = max(1, round(math.sqrt(count * 2)))
    rows = max(1, math.ceil(count / cols))
    dx, dy = (LON1 - LON0) / cols, (LAT1 - LAT0) / rows
    sub = 4
    rnd = random.Random(seed)
    lattice = {}
    for i in range(rows * sub + 1):
        for j in range(cols * sub + 1):
            jitter_y = rnd.uniform(-0.15, 0.15) * dy if i % sub == 0 and 0 < i < rows * sub else 0.0
            jitter_x = rnd.uniform(-0.15, 0.15) * dx if j % sub == 0 and 0 < j < cols * sub else 0.0
            lattice[i, j] = [LON0 + j * dx / sub + jitter_x, LAT0 + i * dy / sub + jitter_y]
    features = []
    for r in range(rows):
        for c in range(cols):
            if len(features) == count:
                break
            i0, j0 = r * sub, c * sub
            ring = (
                [lattice[i0, j0 + k] for k in range(sub)]
                + [lattice[i0 + k, j0 + sub] for k in range(sub)]
                + [lattice[i0 + sub, j0 + sub - k] for k in range(sub)]
                + [lattice[i0 + sub - k, j0] for k in range(sub)]
            )
            ring.append(ring[0])
            features.append(
                {
                    "type": "Feature",
                    "properties": {"grid": f"G-{r}-{c}", "district": f"D-{r // 10}"},
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                }
            )
    return {"type": "FeatureCollection", "features": features}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polygons", type=int, default=5000)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=20_000, help="fixed positions for the cached run")
    args = parser.parse_args()

    areas = areas_from_geojson(tiling(args.polygons), ("grid", "district"))
    started = time.perf_counter()
    index = PolygonIndex(areas)
    build_s = time.perf_counter() - started
    rnd = random.Random(5)
    points = [(rnd.uniform(LON0, LON1), rnd.uniform(LAT0, LAT1)) for _ in range(args.points)]

    started = time.perf_counter()
    hits = sum(index.find_uncached(lon, lat) is not None for lon, lat in points)
    uncached_s = time.perf_counter() - started

    devices = points[: args.devices]
    started = time.perf_counter()
    for n in range(args.points):
        index.find(*devices[n % len(devices)])
    cached_s = time.perf_counter() - started

    scan_points = points[:500]
    started = time.perf_counter()
    for lon, lat in scan_points:
        next((area for area in areas if area.contains(lon, lat)), None)
    scan_s = time.perf_counter() - started

    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(
        "| polygons | index build | lookups/s (new points) | lookups/s (cached positions) | scan lookups/s |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {len(areas)} | {build_s * 1000:.0f} ms | {args.points / uncached_s:,.0f} | "
        f"{args.points / cached_s:,.0f} | {len(scan_points) / scan_s:,.0f} |"
    )
    print(f"points inside a polygon: {hits}/{args.points}")


if __name__ == "__main__":
    main()
