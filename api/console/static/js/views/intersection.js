// Intersection view: per approach the detector's numbers and congestion state, the signal phase timeline
// of the last minutes, violations per hour by type (and per approach), camera and detector health.

import { get, getAll } from "../api.js";
import { timeChart } from "../charts.js";
import { duration, esc, fmtDateTime, fmtTime, rfc3339 } from "../format.js";

const TIMELINE_MINUTES = 10;
const HOURS = 24;
const REFRESH_MS = 10000;
// A device silent for this many of its reporting intervals (or 5 minutes, without one) is shown as silent.
const SILENT_INTERVALS = 3;
const DEFAULT_SILENT_MS = 300000;

export function mount(element, context) {
  const { live, can } = context;
  element.innerHTML = `<div class="pane">
    <div class="toolbar"><h2 style="margin:0">Intersection</h2>
      <select id="intersection"></select><span class="muted" id="as-of"></span></div>
    <div id="body"></div></div>`;
  const select = element.querySelector("#intersection");
  const body = element.querySelector("#body");
  let timer = null;
  let chart = null;

  async function start() {
    if (!can("readings:read")) {
      body.innerHTML = `<p class="empty">The intersection view needs a key with readings:read.</p>`;
      return;
    }
    const { items } = await get("/v1/console/intersections");
    const wanted = new URLSearchParams(location.hash.split("?")[1] || "").get("id");
    select.innerHTML = items.map((id) => `<option ${id === wanted ? "selected" : ""}>${esc(id)}</option>`).join("");
    if (!items.length) {
      select.hidden = true;
      body.innerHTML = `<p class="empty">No intersection is configured (traffic.intersections) or reporting.</p>`;
      return;
    }
    await show();
    timer = setInterval(() => show().catch(() => {}), REFRESH_MS);
  }

  async function show() {
    const id = select.value;
    const now = Date.now();
    const [view, counts, recent] = await Promise.all([
      get(`/v1/console/intersections/${encodeURIComponent(id)}`, { minutes: TIMELINE_MINUTES }),
      can("violations:read") ? get("/v1/aggregates/violations", { intersection: id, bucket: "hour", group_by: "type",
        from: rfc3339(now - HOURS * 3600000), to: rfc3339(now + 60000) }) : null,
      can("violations:read") ? getAll("/v1/violations", { intersection: id, from: rfc3339(now - HOURS * 3600000) }, 2000)
        : [],
    ]);
    if (id !== select.value) return;
    element.querySelector("#as-of").textContent = `as of ${fmtDateTime(now)}`;
    const congested = new Set([...live.open.values()].filter((v) => v.type === "congestion").map((v) => v.device_id));
    body.innerHTML = `
      <h3>Approaches</h3>
      <table class="list" id="approaches"><thead><tr><th>approach</th><th>signal phase</th><th>detector</th>
        <th>occupancy</th><th>speed</th><th>flow</th><th>congestion</th><th>reading</th></tr></thead><tbody>
        ${view.approaches.map((a) => `<tr data-approach="${esc(a.name)}"><td>${esc(a.name)}</td><td>${esc(a.phase ?? "—")}</td>
          <td>${esc(a.detector_id ?? "—")}</td><td>${num(a.occupancy_pct, "%")}</td><td>${num(a.speed_kmh, " km/h")}</td>
          <td>${num(a.flow_veh_h, " veh/h")}</td>${congestionCell(a, congested)}
          <td>${fmtTime(a.reading_time_ms)}</td></tr>`).join("")
          || `<tr><td colspan="8" class="empty">No approaches configured or reported.</td></tr>`}</tbody></table>
      <h3>Signal phases, last ${TIMELINE_MINUTES} minutes</h3>
      ${timeline(view)}
      <h3>Violations per hour by type, last ${HOURS} h</h3>
      <div class="chart" id="per-hour"></div>
      <h3>Violations by approach and type, last ${HOURS} h</h3>
      ${approachTable(recent, view.approaches)}
      <h3>Camera and detector health</h3>
      <table class="list" id="health"><thead><tr><th>device</th><th>kind</th><th>last seen</th><th>state</th></tr></thead>
      <tbody>${view.devices.map((d) => healthRow(d, now)).join("")
        || `<tr><td colspan="4" class="empty">No devices at this intersection.</td></tr>`}</tbody></table>`;
    chart?.destroy();
    chart = counts ? perHourChart(body.querySelector("#per-hour"), counts) : null;
  }

  select.addEventListener("change", () => {
    history.replaceState(null, "", `#/intersections?id=${encodeURIComponent(select.value)}`);
    show().catch(showError);
  });
  start().catch(showError).finally(() => { element.dataset.ready = "true"; });
  function showError(error) { body.innerHTML = `<p class="error">${esc(error.message)}</p>`; }
  return () => { clearInterval(timer); chart?.destroy(); };
}

function num(value, unit) {
  return value == null ? "—" : `${Math.round(value * 10) / 10}${unit}`;
}

function congestionCell(approach, congested) {
  if (approach.detector_id && congested.has(approach.detector_id)) return `<td class="state-bad">congested</td>`;
  if (approach.occupancy_pct == null) return `<td class="muted">unknown</td>`;
  return approach.occupancy_pct >= 30 ? `<td class="state-warn">busy</td>` : `<td class="state-ok">free</td>`;
}

// One row per phase: segments from each change to the next change of that phase (or now).
function timeline(view) {
  const span = view.to_ms - view.from_ms;
  const phases = [...new Set(view.signal_changes.map((c) => c.phase))].sort();
  if (!phases.length) return `<p class="empty">No signal changes in the last ${TIMELINE_MINUTES} minutes.</p>`;
  const rows = phases.map((phase) => {
    const changes = view.signal_changes.filter((c) => c.phase === phase);
    const segments = changes.map((change, i) => {
      const end = i + 1 < changes.length ? changes[i + 1].time_ms : view.to_ms;
      const left = ((change.time_ms - view.from_ms) / span) * 100;
      const width = Math.max(((end - change.time_ms) / span) * 100, 0.2);
      return `<div class="seg ${esc(change.state)}" style="left:${left}%;width:${width}%"
        title="${esc(change.state)} from ${fmtTime(change.time_ms)}"></div>`;
    }).join("");
    return `<div class="row" data-phase="${esc(phase)}"><span>${esc(phase)}</span><div class="bar">${segments}</div></div>`;
  }).join("");
  return `<div class="timeline" id="signal-timeline">${rows}
    <div class="row muted"><span></span><div style="flex:1;display:flex;justify-content:space-between">
    <span>${fmtTime(view.from_ms)}</span><span>${fmtTime(view.to_ms)}</span></div></div></div>`;
}

function perHourChart(holder, counts) {
  const types = [...new Set(counts.rows.map((r) => r.group.type))].sort();
  if (!types.length) { holder.innerHTML = `<p class="empty">No violations in this period.</p>`; return null; }
  const times = [];
  for (let t = counts.from_ms; t < counts.to_ms; t += 3600000) times.push(t);
  const series = Object.fromEntries(types.map((type) => [type, times.map(() => 0)]));
  for (const row of counts.rows) series[row.group.type][times.indexOf(row.bucket_start_ms)] += row.count;
  return timeChart(holder, "", times, series, { width: Math.min(holder.clientWidth - 20, 900), height: 200, bars: true });
}

function approachOf(violation, approaches) {
  const details = violation.evidence?.details || {};
  if (details.approach) return details.approach;
  const byPhase = approaches.find((a) => a.phase && details.signal?.phase === a.phase);
  return byPhase ? byPhase.name : "—";
}

function approachTable(violations, approaches) {
  if (!violations.length) return `<p class="empty">No violations in this period.</p>`;
  const counts = new Map();
  for (const v of violations) {
    const key = `${approachOf(v, approaches)}\u0000${v.type}`;
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  return `<table class="list" id="per-approach"><thead><tr><th>approach</th><th>type</th><th>violations</th>
    <th>per hour</th></tr></thead><tbody>${[...counts].sort().map(([key, n]) => {
      const [approach, type] = key.split("\u0000");
      return `<tr><td>${esc(approach)}</td><td>${esc(type)}</td><td>${n}</td><td>${(n / HOURS).toFixed(2)}</td></tr>`;
    }).join("")}</tbody></table>`;
}

function healthRow(device, now) {
  const limit = device.expected_interval_s ? device.expected_interval_s * 1000 * SILENT_INTERVALS : DEFAULT_SILENT_MS;
  const silent = device.last_seen_ms == null ? "never seen" : now - device.last_seen_ms > limit
    ? `silent for ${duration(now - device.last_seen_ms)}` : null;
  return `<tr data-device="${esc(device.device_id)}"><td>${esc(device.device_id)}</td><td>${esc(device.kind)}</td>
    <td>${fmtDateTime(device.last_seen_ms)}</td>
    <td class="${silent ? "state-bad" : "state-ok"}">${esc(silent || "reporting")}</td></tr>`;
}
