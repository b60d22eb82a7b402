// Dispatch view for sanitation: per district, the bins to empty first (in the order of
// /v1/bins/predictions: overflowing, then soonest full), fire and tilt alerts, silent and low-battery
// devices. Printable (print styles) and exported as CSV.

import { get, getAll } from "../api.js";
import { downloadCsv, duration, esc, fmtDateTime } from "../format.js";

const BIN_ALERTS = ["bin_fire", "bin_tilt", "bin_lid_open"];
const DEVICE_ALERTS = ["device_offline", "low_battery"];
const REFRESH_MS = 30000;

export function mount(element, context) {
  const { live, can } = context;
  element.innerHTML = `<div class="pane">
    <div class="toolbar"><h2 style="margin:0">Sanitation dispatch</h2>
      <label>district <select id="district"><option value="">all</option></select></label>
      <button type="button" id="print">Print</button><button type="button" id="csv">Export CSV</button>
      <span class="muted" id="as-of"></span></div>
    <h3>Bins to empty first</h3>
    <table class="list" id="bins-to-empty"><thead><tr><th>#</th><th>bin</th><th>fill</th><th>predicted full</th>
      <th>state</th><th>grid</th><th>district</th></tr></thead><tbody></tbody></table>
    <h3>Fire, tilt and open-lid alerts</h3>
    <table class="list" id="bin-alerts"><thead><tr><th>since</th><th>alert</th><th>bin</th><th>severity</th>
      <th>grid</th><th>district</th></tr></thead><tbody></tbody></table>
    <h3>Silent and low-battery devices</h3>
    <table class="list" id="device-alerts"><thead><tr><th>since</th><th>problem</th><th>device</th><th>grid</th>
      <th>district</th></tr></thead><tbody></tbody></table>
  </div>`;
  const districtSelect = element.querySelector("#district");
  let predictions = [];
  let alerts = [];

  async function load() {
    const [answer, open] = await Promise.all([
      can("readings:read") ? get("/v1/bins/predictions", { limit: 10000 }) : { items: [] },
      can("violations:read")
        ? getAll("/v1/violations", { status: "open", type: [...BIN_ALERTS, ...DEVICE_ALERTS, "bin_overflow"] }, 5000)
        : [],
    ]);
    predictions = answer.items;
    alerts = open;
    const districts = [...new Set(predictions.map((p) => p.tags.district).filter(Boolean))].sort();
    const chosen = districtSelect.value;
    districtSelect.innerHTML = `<option value="">all</option>${districts.map((d) =>
      `<option ${d === chosen ? "selected" : ""}>${esc(d)}</option>`).join("")}`;
    element.querySelector("#as-of").textContent = `as of ${fmtDateTime(Date.now())}`;
    render();
  }

  function inDistrict(tags) {
    return !districtSelect.value || (tags || {}).district === districtSelect.value;
  }

  function binRows() {
    const overflowing = new Set([...alerts, ...live.open.values()]
      .filter((v) => v.type === "bin_overflow" && v.status === "open").map((v) => v.device_id));
    const now = Date.now();
    return predictions.filter((p) => inDistrict(p.tags)).map((p, index) => {
      const full = p.predicted_full_time_ms;
      const state = overflowing.has(p.device_id) || p.fill_pct >= 100 ? "overflowing"
        : full == null ? "no rising trend" : full <= now ? "full now" : `full in ${duration(full - now)}`;
      return { rank: index + 1, prediction: p, state };
    });
  }

  function render() {
    const rows = binRows();
    element.querySelector("#bins-to-empty tbody").innerHTML = rows.map(({ rank, prediction: p, state }) =>
      `<tr data-device="${esc(p.device_id)}"><td>${rank}</td><td>${esc(p.device_id)}</td>
      <td>${p.fill_pct.toFixed(0)}%</td><td>${fmtDateTime(p.predicted_full_time_ms)}</td>
      <td class="${state === "overflowing" || state === "full now" ? "state-bad" : ""}">${esc(state)}</td>
      <td>${esc(p.tags.grid)}</td><td>${esc(p.tags.district)}</td></tr>`).join("")
      || `<tr><td colspan="7" class="empty">No bin forecasts${can("readings:read") ? "" : " (needs readings:read)"}.</td></tr>`;
    const alertRows = (types, id, cells) => {
      const chosen = alerts.filter((v) => types.includes(v.type) && inDistrict(v.tags))
        .sort((a, b) => b.start_time_ms - a.start_time_ms);
      element.querySelector(`#${id} tbody`).innerHTML = chosen.map(cells).join("")
        || `<tr><td colspan="6" class="empty">None open.</td></tr>`;
    };
    alertRows(BIN_ALERTS, "bin-alerts", (v) => `<tr data-id="${esc(v.violation_id)}"><td>${fmtDateTime(v.start_time_ms)}</td>
      <td>${esc(v.type)}</td><td>${esc(v.device_id)}</td><td><span class="sev ${esc(v.severity)}">${esc(v.severity)}</span></td>
      <td>${esc(v.tags?.grid)}</td><td>${esc(v.tags?.district)}</td></tr>`);
    alertRows(DEVICE_ALERTS, "device-alerts", (v) => `<tr data-id="${esc(v.violation_id)}"><td>${fmtDateTime(v.start_time_ms)}</td>
      <td>${esc(v.type === "device_offline" ? "silent (offline)" : "low battery")}</td><td>${esc(v.device_id)}</td>
      <td>${esc(v.tags?.grid)}</td><td>${esc(v.tags?.district)}</td></tr>`);
  }

  function exportCsv() {
    const header = ["rank", "device_id", "fill_pct", "predicted_full_local", "predicted_full_time_ms", "state", "grid",
      "district"];
    const rows = binRows().map(({ rank, prediction: p, state }) => [rank, p.device_id, p.fill_pct,
      p.predicted_full_time_ms == null ? "" : fmtDateTime(p.predicted_full_time_ms), p.predicted_full_time_ms ?? "",
      state, p.tags.grid, p.tags.district]);
    const district = districtSelect.value || "all";
    downloadCsv(`bins-to-empty-${district}.csv`, [header, ...rows]);
  }

  districtSelect.addEventListener("change", render);
  element.querySelector("#print").addEventListener("click", () => window.print());
  element.querySelector("#csv").addEventListener("click", exportCsv);
  const onChange = ({ detail }) => {
    const v = detail.violation;
    if (![...BIN_ALERTS, ...DEVICE_ALERTS, "bin_overflow"].includes(v.type)) return;
    alerts = alerts.filter((a) => a.violation_id !== v.violation_id);
    if (v.status === "open") alerts.push(v);
    render();
  };
  live.addEventListener("change", onChange);
  load().catch((error) => console.warn("citywatch: dispatch data not read:", error.message))
    .finally(() => { element.dataset.ready = "true"; });
  const timer = setInterval(() => load().catch(() => {}), REFRESH_MS);
  return () => { clearInterval(timer); live.removeEventListener("change", onChange); };
}
