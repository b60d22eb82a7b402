"""The console's map with a city's worth of devices, measured in headless Chromium.

Starts `citywatch up` (embedded stack, auth disabled on 127.0.0.1) with `--devices` registered devices
spread over the demo grids (bins, air, water and odour sensors, detectors, cameras), gives every
reading device one reading and makes `--open` bins overflow, so that many violations are open. Then,
in the system's Chromium (Playwright):

- first render: navigation start to every device marker drawn (from the registry), coloured (from the
  latest readings and forecasts), and to every open violation drawn;
- what the page load transferred (compressed bodies and headers, the live stream left out), the
  console's own files apart from the data;
- responsiveness: frames while the map is zoomed and panned with 10,000 markers (longest frame, long
  tasks over 50 ms);
- updates: `--updates` more bins overflow while the page is open; the time from the last MQTT publish
  until every new marker is on the map, and the browser's own time to draw one change.

    python -m bench.console                       # 10,000 devices, 1,000 open violations
    python -m bench.console --devices 2000 --open 200
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import Page, sync_playwright

from citywatch.mqtt_publisher import MqttPublisher
from tests.support.browser import launch
from tests.support.process import REPO, CitywatchProcess, free_port
from tests.support.wait import wait_for

GEO = REPO / "configs" / "geo"
# Share of each kind among the devices (the rest are bins).
KINDS = [("air", 0.08), ("water", 0.04), ("odour", 0.04), ("detector", 0.06), ("track", 0.03)]
BBOX = (114.040, 22.530, 114.080, 22.570)


def devices(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for n in range(count):
        draw, kind = rng.random(), "bin"
        for candidate, share in KINDS:
            if draw < share:
                kind = candidate
                break
            draw -= share
        lat, lon = round(rng.uniform(BBOX[1], BBOX[3]), 6), round(rng.uniform(BBOX[0], BBOX[2]), 6)
        out.append({"device_id": f"{kind}-{n:05d}", "kind": kind, "lat": lat, "lon": lon,
                    "tags": {"department": "sanitation"}})
    return out


def reading(device: dict[str, Any], at_ms: int, rng: random.Random) -> dict[str, Any]:
    kind = device["kind"]
    attributes: dict[str, Any] = {
        "bin": {"fill_pct": round(rng.uniform(5, 80), 1), "battery_pct": 80},
        "air": {"pm25_ugm3": round(rng.uniform(10, 60), 1), "pm10_ugm3": 40.0},
        "water": {"dissolved_oxygen_mg_l": 6.5, "ammonia_n_mg_l": 0.4},
        "odour": {"nh3_ppm": 0.2, "h2s_ppm": 0.001},
        "detector": {"occupancy_pct": 20.0, "speed_kmh": 35.0, "flow_veh_h": 600},
    }.get(kind, {})
    return {"device_id": device["device_id"], "kind": kind, "time": at_ms, "attributes": attributes}


def publish(publisher: MqttPublisher, messages: list[dict[str, Any]]) -> None:
    for index, message in enumerate(messages):
        publisher.publish(f"citywatch/events/{message['device_id']}", json.dumps(message).encode(),
                          wait=index == len(messages) - 1)


def overflow(bins: list[dict[str, Any]], at_ms: int) -> list[dict[str, Any]]:
    return [{"device_id": b["device_id"], "kind": "bin", "time": at_ms + step * 100,
             "attributes": {"fill_pct": fill, "battery_pct": 80}}
            for step, fill in enumerate((94.0, 96.0)) for b in bins]


def open_count(base_url: str) -> int:
    total, cursor = 0, None
    while True:
        params: dict[str, Any] = {"status": "open", "limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(base_url + "/v1/violations", params=params, timeout=30).json()
        total += len(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return total


FRAME_PROBE = """() => { window.__frames = []; let last = performance.now();
  const tick = (now) => { window.__frames.push(now - last); last = now;
    if (window.__frames.length < 100000) requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  window.__long = []; new PerformanceObserver((list) => { for (const e of list.getEntries())
    window.__long.push(e.duration); }).observe({ type: "longtask", buffered: false }); }"""


def interact(page: Page) -> dict[str, float]:
    """Zoom in and out and pan with the mouse, as a person would; the frames the browser managed."""
    page.evaluate(FRAME_PROBE)
    box = page.locator("#map").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    for delta in (-300, -300, 300, 300):
        page.mouse.wheel(0, delta)
        page.wait_for_timeout(400)
    page.mouse.down()
    for step in range(20):
        page.mouse.move(x + step * 15, y + step * 8)
        page.wait_for_timeout(16)
    page.mouse.up()
    page.wait_for_timeout(500)
    frames = page.evaluate("window.__frames.slice(1)")
    longs = page.evaluate("window.__long")
    return {"frames": len(frames), "frame_p50_ms": statistics.median(frames), "frame_max_ms": max(frames),
            "long_tasks": len(longs), "long_task_max_ms": max(longs, default=0.0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--open", type=int, default=1_000, help="bins made to overflow before the page opens")
    parser.add_argument("--updates", type=int, default=100, help="bins made to overflow while it is open")
    args = parser.parse_args()
    rng = random.Random(11)
    registry = devices(args.devices)
    bins = [d for d in registry if d["kind"] == "bin"]
    assert len(bins) >= args.open + args.updates, "not enough bins for --open and --updates"
    workdir = Path(tempfile.mkdtemp(prefix="citywatch-bench-console-"))
    (workdir / "devices.yaml").write_text(json.dumps(registry))
    broker_port = free_port()
    config = {"devices_file": str(workdir / "devices.yaml"),
              "geo": {"grids_file": str(GEO / "grids.geojson"),
                      "districts_file": str(GEO / "districts.geojson")},
              "mqtt": {"embedded_port": broker_port}, "pipeline": {"allowed_lateness_ms": 300}}
    app = CitywatchProcess(workdir, config).start(timeout_s=120)
    publisher = MqttPublisher(f"mqtt://127.0.0.1:{broker_port}", "bench-console").connect()
    result: dict[str, Any] = {"devices": args.devices}
    try:
        now_ms = int(time.time() * 1000)
        publish(publisher, [reading(d, now_ms, rng) for d in registry if d["kind"] != "track"])
        publish(publisher, overflow(bins[:args.open], now_ms + 1000))
        opened = wait_for(lambda: (n := open_count(app.base_url)) >= args.open and n, 300, 1.0,
                          f"{args.open} open violations")
        result["open_violations"] = opened
        with sync_playwright() as playwright:
            browser = launch(playwright)
            # The page forbids eval (its CSP); the measuring snippets below are evaluated as strings.
            context = browser.new_context(viewport={"width": 1400, "height": 860}, bypass_csp=True)
            page = context.new_page()
            started = time.monotonic()
            page.goto(app.base_url + "/#/map")
            page.wait_for_function("performance.getEntriesByName('citywatch:map-devices-drawn').length > 0",
                                   timeout=120_000)
            all_drawn = f"Number(document.querySelector('#map').dataset.violationMarkers) >= {opened}"
            page.wait_for_function(all_drawn, timeout=120_000)
            result["all_open_violations_drawn_s"] = round(time.monotonic() - started, 2)
            coloured = "performance.getEntriesByName('citywatch:map-devices-coloured').length > 0"
            page.wait_for_function(coloured, timeout=120_000)
            marks = page.evaluate("""Object.fromEntries(['drawn', 'coloured'].map((name) => {
                const mark = performance.getEntriesByName(`citywatch:map-devices-${name}`)[0];
                return [name, { startTime: mark.startTime, ms: mark.detail.ms }]; }))""")
            result["devices_drawn_after_navigation_ms"] = round(marks["drawn"]["startTime"])
            result["devices_coloured_after_navigation_ms"] = round(marks["coloured"]["startTime"])
            result["registry_read_and_drawn_ms"] = round(marks["drawn"]["ms"])
            result["readings_read_and_coloured_ms"] = round(marks["coloured"]["ms"])
            result["markers"] = int(page.locator("#map").get_attribute("data-devices") or 0)
            result.update(transfer(page))
            result.update(interact(page))
            before = int(page.locator("#map").get_attribute("data-violation-markers") or 0)
            page.evaluate("performance.clearMeasures('citywatch:map-violation-drawn')")
            fresh = bins[args.open:args.open + args.updates]
            publish(publisher, overflow(fresh, int(time.time() * 1000)))
            published = time.monotonic()
            page.wait_for_function(
                f"Number(document.querySelector('#map').dataset.violationMarkers) >= {before + len(fresh)}",
                timeout=60_000)
            result["updates"] = len(fresh)
            result["last_publish_to_all_drawn_ms"] = round((time.monotonic() - published) * 1000)
            draws = page.evaluate("performance.getEntriesByName('citywatch:map-violation-drawn')"
                                  ".map((e) => e.duration)")
            result["draw_one_change_p50_ms"] = round(statistics.median(draws), 2)
            result["draw_one_change_max_ms"] = round(max(draws), 2)
            browser.close()
    finally:
        publisher.close()
        app.stop(timeout_s=120)
    for name, value in result.items():
        print(f"{name:36} {value}")
    return 0


def transfer(page: Page) -> dict[str, int]:
    """Bytes the page load moved (compressed bodies with headers): the page and the console's files, and
    the data it read (the live stream, which never ends, left out)."""
    entries: list[list[Any]] = page.evaluate("""[
        ...performance.getEntriesByType('navigation').map((e) => ['page', e.name, e.transferSize]),
        ...performance.getEntriesByType('resource').map((e) => ['resource', e.name, e.transferSize])]""")
    paths = [(kind, urlsplit(url).path, size) for kind, url, size in entries]
    files = sum(size for kind, path, size in paths if kind == "page" or path.startswith("/console/"))
    data = sum(size for _, path, size in paths
               if path.startswith("/v1/") and not path.startswith("/v1/stream/"))
    return {"transferred_console_files_bytes": files, "transferred_data_bytes": data,
            "transferred_total_bytes": files + data}


if __name__ == "__main__":
    raise SystemExit(main())
