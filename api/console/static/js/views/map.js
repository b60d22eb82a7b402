// Live map: grids, districts and roads from the configuration; devices as canvas circle markers (bins by
// fill and predicted time to full, sensors by their current category); open violations on top, arriving
// from the live stream and fading out when they clear. Click a marker for its latest reading, its open
// violations and a sparkline of the last hours.

import { get } from "../api.js";
import { esc, fmtDateTime, fmtTime, duration, rfc3339 } from "../format.js";
import { loadDevices, loadReadings, mainAttribute, SENSOR_KINDS, SENSOR_VIOLATIONS } from "../devices.js";
import { sparkline } from "../charts.js";

const L = window.L;
const SEVERITY_COLOUR = { high: "#c62828", medium: "#ef6c00", low: "#f9a825" };
const KIND_COLOUR = { signal: "#4b3f8f", detector: "#1f6fb2", track: "#37474f", camera_violation: "#37474f",
  camera: "#37474f" };
const REFRESH_MS = 30000;
const FADE_MS = 1500;
const HOUR = 3600000;

export function binColour(fill) {
  if (fill == null) return "#98a2b3";
  if (fill >= 90) return "#c62828";
  if (fill >= 75) return "#ef6c00";
  if (fill >= 50) return "#f9c825";
  return "#2e7d32";
}

// Ring around a bin: red when predicted full within an hour, orange within four.
function fullSoonColour(prediction, now) {
  const full = prediction?.predicted_full_time_ms;
  if (full == null) return "#ffffff";
  if (full - now < HOUR) return "#7a0019";
  if (full - now < 4 * HOUR) return "#ef6c00";
  return "#ffffff";
}

export function mount(element, context) {
  const { session, live, can } = context;
  element.innerHTML = `<div id="map" data-violation-markers="0" data-devices="0"></div>
    <aside class="side"><h2>Open violations <span id="open-count" class="muted"></span></h2>
    <table class="list" id="open-list"><tbody></tbody></table></aside>`;
  const mapElement = element.querySelector("#map");
  const renderer = L.canvas({ padding: 0.3 });
  const map = L.map(mapElement, { preferCanvas: true, renderer, zoomSnap: 0.25, attributionControl: true });
  map.attributionControl.setPrefix(false);
  if (session.tiles.url) {
    L.tileLayer(session.tiles.url, { maxZoom: session.tiles.max_zoom, attribution: session.tiles.attribution })
      .addTo(map);
  }
  const bounds = L.latLngBounds([]);
  const layers = drawLayers(map, session.layers, bounds);
  const deviceLayer = L.layerGroup().addTo(map);
  const intersectionLayer = L.layerGroup().addTo(map);
  const violationLayer = L.layerGroup().addTo(map);
  const overlays = { ...layers, Intersections: intersectionLayer, Devices: deviceLayer,
    "Open violations": violationLayer };
  L.control.layers(null, overlays, { collapsed: true }).addTo(map);
  legend().addTo(map);
  // Room at the bottom for the legend, so that it covers no marker of the first view.
  const FIT = { paddingTopLeft: [10, 10], paddingBottomRight: [10, 120] };
  if (bounds.isValid()) map.fitBounds(bounds, FIT);
  else map.setView([22.54, 114.06], 13);

  const state = { devices: new Map(), markers: new Map(), latest: new Map(), predictions: new Map() };
  const violationMarkers = new Map();
  const listBody = element.querySelector("#open-list tbody");

  // Devices are drawn as soon as the registry is read (grey), and coloured once their readings and
  // forecasts arrive: with 10,000 devices the readings take the longer part.
  async function refreshDevices(first) {
    const started = performance.now();
    const devices = loadDevices(can);
    const readings = loadReadings(can);
    readings.catch(() => {}); // its failure is reported where it is awaited, below
    for (const device of await devices) {
      if (device.lat == null || device.lon == null) continue;
      state.devices.set(device.device_id, device);
      if (!state.markers.has(device.device_id)) {
        const marker = L.circleMarker([device.lat, device.lon], { renderer, radius: 5, weight: 1.5,
          fillOpacity: 0.9, fillColor: "#98a2b3", color: "#fff" });
        marker.on("click", () => openDevicePopup(marker, device));
        marker.addTo(deviceLayer);
        state.markers.set(device.device_id, marker);
        if (first && !bounds.isValid()) bounds.extend(marker.getLatLng());
      }
    }
    mapElement.dataset.devices = String(state.markers.size);
    if (first) drawIntersections();
    if (first) {
      if (!Object.keys(session.layers).length && bounds.isValid()) map.fitBounds(bounds, FIT);
      performance.mark("citywatch:map-devices-drawn", { detail: { devices: state.markers.size,
        ms: performance.now() - started } });
    }
    const { latest, predictions } = await readings;
    state.latest = latest;
    state.predictions = new Map(predictions.map((p) => [p.device_id, p]));
    for (const device of state.devices.values()) styleDevice(device);
    if (first) {
      performance.mark("citywatch:map-devices-coloured", { detail: { ms: performance.now() - started } });
    }
  }

  // An intersection where its devices are (those tagged with it: cameras, signals, detectors).
  function drawIntersections() {
    const places = new Map();
    for (const device of state.devices.values()) {
      const id = device.tags.intersection;
      if (!id) continue;
      const place = places.get(id) || { lat: 0, lon: 0, n: 0 };
      place.lat += device.lat; place.lon += device.lon; place.n += 1;
      places.set(id, place);
    }
    for (const [id, place] of places) {
      L.circleMarker([place.lat / place.n, place.lon / place.n], { renderer, radius: 14, weight: 2,
        color: "#4b3f8f", dashArray: "4 3", fill: true, fillOpacity: 0 })
        .bindTooltip(esc(id))
        .bindPopup(`<div class="popup"><h4>${esc(id)}</h4>
          <a href="#/intersections?id=${encodeURIComponent(id)}">Open the intersection view</a></div>`)
        .addTo(intersectionLayer);
    }
    mapElement.dataset.intersections = String(places.size);
  }

  function styleDevice(device) {
    const marker = state.markers.get(device.device_id);
    if (!marker) return;
    const reading = state.latest.get(device.device_id);
    const now = Date.now();
    if (device.kind === "bin") {
      const fill = reading?.attributes?.fill_pct;
      marker.setStyle({ fillColor: binColour(fill), color: fullSoonColour(state.predictions.get(device.device_id), now),
        weight: 2, radius: 5 });
    } else if (SENSOR_KINDS.includes(device.kind)) {
      const judged = sensorViolation(device.device_id);
      marker.setStyle({ fillColor: judged ? SEVERITY_COLOUR[judged.severity] : reading ? "#2e7d32" : "#98a2b3",
        color: "#114", weight: 1, radius: 5 });
    } else {
      marker.setStyle({ fillColor: KIND_COLOUR[device.kind] || "#607d8b", color: "#fff", weight: 1, radius: 4 });
    }
  }

  function sensorViolation(deviceId) {
    for (const violation of live.open.values()) {
      if (violation.device_id === deviceId && SENSOR_VIOLATIONS.includes(violation.type)) return violation;
    }
    return null;
  }

  function positionOf(violation) {
    if (violation.location) return [violation.location.lat, violation.location.lon];
    const device = state.devices.get(violation.device_id);
    return device ? [device.lat, device.lon] : null;
  }

  function showViolation(violation) {
    const started = performance.now();
    const id = violation.violation_id;
    const existing = violationMarkers.get(id);
    if (violation.status !== "open") {
      if (existing) fade(id, existing);
      removeRow(id);
    } else {
      const position = positionOf(violation);
      if (position && !existing) {
        // A ring around the device, so that its own colour (a bin's fill) stays visible inside.
        const colour = SEVERITY_COLOUR[violation.severity] || "#c62828";
        const marker = L.circleMarker(position, { renderer, radius: 10, weight: 3, color: colour,
          fillColor: colour, fillOpacity: 0.12, opacity: 0.95 });
        marker.on("click", () => marker.bindPopup(violationPopup(violation)).openPopup());
        marker.addTo(violationLayer);
        violationMarkers.set(id, marker);
      }
      addRow(violation);
    }
    const device = state.devices.get(violation.device_id);
    if (device) styleDevice(device);
    mapElement.dataset.violationMarkers = String(violationMarkers.size);
    element.querySelector("#open-count").textContent = `(${live.open.size})`;
    performance.measure("citywatch:map-violation-drawn", { start: started, end: performance.now() });
  }

  function fade(id, marker) {
    violationMarkers.delete(id);
    const start = performance.now();
    const step = (now) => {
      const left = 1 - (now - start) / FADE_MS;
      if (left <= 0) { violationLayer.removeLayer(marker); return; }
      marker.setStyle({ fillOpacity: 0.12 * left, opacity: 0.95 * left });
      requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  }

  function addRow(violation) {
    const id = violation.violation_id;
    let row = listBody.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
    const fresh = !row;
    if (!row) {
      row = document.createElement("tr");
      row.dataset.id = id;
      row.className = "fresh";
      // The device's popup (its reading, open violations and sparkline), or the violation's own.
      row.addEventListener("click", () => {
        const deviceMarker = state.markers.get(violation.device_id);
        const marker = deviceMarker || violationMarkers.get(id);
        if (!marker) return;
        map.setView(marker.getLatLng(), Math.max(map.getZoom(), 16));
        if (deviceMarker) openDevicePopup(deviceMarker, state.devices.get(violation.device_id));
        else marker.fire("click");
      });
    }
    row.dataset.start = String(violation.start_time_ms);
    row.innerHTML = `<td><span class="sev ${esc(violation.severity)}">${esc(violation.severity)}</span></td>
      <td>${esc(violation.type)}<br><span class="muted">${esc(violation.device_id)}</span></td>
      <td class="muted">${fmtTime(violation.start_time_ms)}</td>`;
    if (fresh) {
      // Newest first: before the first row that started earlier.
      const later = [...listBody.children].find((r) => Number(r.dataset.start) < violation.start_time_ms);
      listBody.insertBefore(row, later || null);
      while (listBody.children.length > 300) listBody.lastElementChild.remove();
    }
  }

  function removeRow(id) {
    listBody.querySelector(`tr[data-id="${CSS.escape(id)}"]`)?.remove();
  }

  function violationPopup(violation) {
    return `<div class="popup"><h4>${esc(violation.type)} <span class="sev ${esc(violation.severity)}">
      ${esc(violation.severity)}</span></h4>
      <table><tr><td>device</td><td>${esc(violation.device_id)}</td></tr>
      <tr><td>since</td><td>${fmtDateTime(violation.start_time_ms)}</td></tr>
      <tr><td>grid</td><td>${esc(violation.tags?.grid)}</td></tr>
      <tr><td>department</td><td>${esc(violation.tags?.department)}</td></tr></table>
      <a href="#/queue?violation=${encodeURIComponent(violation.violation_id)}">Open in the queue</a></div>`;
  }

  async function openDevicePopup(marker, device) {
    const reading = state.latest.get(device.device_id);
    const open = [...live.open.values()].filter((v) => v.device_id === device.device_id);
    const prediction = state.predictions.get(device.device_id);
    const rows = Object.entries(reading?.attributes || {}).filter(([, v]) => typeof v !== "object")
      .map(([name, value]) => `<tr><td>${esc(name)}</td><td>${esc(value)}</td></tr>`).join("");
    const full = prediction?.predicted_full_time_ms;
    const content = document.createElement("div");
    content.className = "popup";
    content.innerHTML = `<h4>${esc(device.device_id)}</h4>
      <div class="muted">${esc(device.kind)} · ${esc(device.tags.grid || "")} ${esc(device.tags.district || "")}</div>
      ${reading ? `<div>latest reading ${fmtDateTime(reading.event_time_ms)}</div><table class="reading">${rows}</table>`
        : `<div class="muted">no reading stored</div>`}
      ${full != null ? `<div>predicted full ${fmtDateTime(full)} (in ${duration(full - Date.now())})</div>` : ""}
      <div class="open"><b>${open.length}</b> open violation${open.length === 1 ? "" : "s"}${open.map((v) =>
        `<br><span class="sev ${esc(v.severity)}">${esc(v.severity)}</span>
        <a href="#/queue?violation=${encodeURIComponent(v.violation_id)}">${esc(v.type)}</a>
        since ${fmtTime(v.start_time_ms)}`).join("")}</div>
      <div class="spark"></div>`;
    marker.bindPopup(content, { maxWidth: 320 }).openPopup();
    const attribute = mainAttribute(device.kind, reading?.attributes);
    if (!attribute || !can("readings:read")) return;
    const to = Date.now();
    const series = await get(`/v1/readings/${encodeURIComponent(device.device_id)}/series`,
      { attribute, from: rfc3339(to - 6 * HOUR), to: rfc3339(to + 60000), bucket: "minute" });
    const buckets = series.buckets || [];
    const holder = content.querySelector(".spark");
    if (buckets.length > 1) {
      holder.append(`${attribute}, mean per minute, last 6 h`);
      sparkline(holder, buckets.map((b) => b.bucket_start_ms), buckets.map((b) => b.mean));
      marker.getPopup()?.update();
    }
  }

  const onChange = ({ detail }) => showViolation(detail.violation);
  live.addEventListener("change", onChange);
  for (const violation of live.open.values()) showViolation(violation);
  refreshDevices(true).then(() => { for (const v of live.open.values()) showViolation(v); })
    .catch((error) => console.warn("citywatch: devices not read:", error.message))
    .finally(() => { element.dataset.ready = "true"; });
  const timer = setInterval(() => refreshDevices(false).catch(() => {}), REFRESH_MS);
  return () => {
    clearInterval(timer);
    live.removeEventListener("change", onChange);
    map.remove();
  };
}

function drawLayers(map, layers, bounds) {
  const styles = {
    districts: { color: "#5a6b8c", weight: 2, fill: false, dashArray: "6 4" },
    grids: { color: "#8ea2c8", weight: 1, fillColor: "#dde6f7", fillOpacity: 0.25 },
    roads: { color: "#b08d57", weight: 3, opacity: 0.8 },
  };
  const names = { districts: "Districts", grids: "Grids", roads: "Roads" };
  const drawn = {};
  for (const name of ["districts", "grids", "roads"]) {
    if (!layers[name]) continue;
    const layer = L.geoJSON(layers[name], {
      style: styles[name], interactive: false,
      onEachFeature: (feature, shape) => {
        if (name === "grids" && feature.properties?.grid) {
          shape.bindTooltip(esc(feature.properties.grid), { permanent: true, direction: "center",
            className: "grid-label" });
        }
      },
    }).addTo(map);
    // The view opens on the grids (the area watched); districts alone when there are no grids.
    if (name !== "roads" && layer.getBounds().isValid() && (name === "grids" || !layers.grids)) {
      bounds.extend(layer.getBounds());
    }
    drawn[names[name]] = layer;
  }
  return drawn;
}

function legend() {
  const control = L.control({ position: "bottomright" });
  control.onAdd = () => {
    const div = L.DomUtil.create("div", "legend");
    div.innerHTML = `<b>Bins</b> (fill)<br><i style="background:#2e7d32"></i>&lt; 50%
      <i style="background:#f9c825"></i>50–75 <i style="background:#ef6c00"></i>75–90
      <i style="background:#c62828"></i>≥ 90<br>dark ring: full within 1 h, orange ring: within 4 h<br>
      <b>Sensors</b> <i style="background:#2e7d32"></i>normal <i style="background:#ef6c00"></i>exceeding<br>
      <b>Violations</b> (ring) <i style="border:2px solid #c62828"></i>high
      <i style="border:2px solid #ef6c00"></i>medium <i style="border:2px solid #f9a825"></i>low`;
    return div;
  };
  return control;
}
