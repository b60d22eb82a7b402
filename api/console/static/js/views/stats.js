// Statistics: violations per hour or day by type and by district (the aggregates API), the top
// intersections and grids, how cases were closed (the cases evaluation API), and the published index
// reports (/v1/reports); local times.

import { ApiError, authHeaders, get } from "../api.js";
import { timeChart } from "../charts.js";
import { duration, esc, fmtDateTime, rfc3339 } from "../format.js";

const RANGES = { "24h": { ms: 86400000, bucket: "hour" }, "7d": { ms: 7 * 86400000, bucket: "day" },
  "30d": { ms: 30 * 86400000, bucket: "day" } };
const BUCKET_MS = { hour: 3600000, day: 86400000 };

export function mount(element, context) {
  const { can } = context;
  element.innerHTML = `<div class="pane">
    <div class="toolbar"><h2 style="margin:0">Statistics</h2>
      <label>period <select id="range"><option value="24h">last 24 hours, per hour</option>
        <option value="7d">last 7 days, per day</option><option value="30d">last 30 days, per day</option></select></label>
      <span class="muted" id="period"></span></div>
    <div class="cards" id="totals"></div>
    <div class="chart" id="by-type"></div>
    <div class="chart" id="by-district"></div>
    <div style="display:flex;gap:16px;flex-wrap:wrap">
      <div style="flex:1;min-width:260px"><h3>Top intersections</h3><table class="list" id="top-intersections"></table></div>
      <div style="flex:1;min-width:260px"><h3>Top grids</h3><table class="list" id="top-grids"></table></div>
    </div>
    <h3>Cases</h3><div id="cases"></div>
    <h3>Published index reports</h3><table class="list" id="reports"></table></div>`;
  const charts = [];

  async function load() {
    if (!can("violations:read")) {
      element.querySelector("#totals").innerHTML = `<p class="empty">Statistics need violations:read.</p>`;
      return;
    }
    const range = RANGES[element.querySelector("#range").value];
    const to = Date.now();
    const from = to - range.ms;
    const period = { from: rfc3339(from), to: rfc3339(to) };
    element.querySelector("#period").textContent = `${fmtDateTime(from)} – ${fmtDateTime(to)}`;
    const [byType, byDistrict, topIntersections, topGrids, evaluation] = await Promise.all([
      get("/v1/aggregates/violations", { ...period, bucket: range.bucket, group_by: "type" }),
      get("/v1/aggregates/violations", { ...period, bucket: range.bucket, group_by: "district" }),
      get("/v1/aggregates/violations/top", { ...period, by: "intersection", limit: 10 }),
      get("/v1/aggregates/violations/top", { ...period, by: "grid", limit: 10 }),
      can("cases:read") ? get("/v1/cases/evaluation", period).catch((error) => {
        if (error instanceof ApiError && error.status === 503) return null;
        throw error;
      }) : null,
    ]);
    for (const chart of charts.splice(0)) chart.destroy();
    const total = byType.rows.reduce((sum, row) => sum + row.count, 0);
    element.querySelector("#totals").innerHTML = [["violations", total],
      ["types", new Set(byType.rows.map((r) => r.group.type)).size],
      ["districts", new Set(byDistrict.rows.map((r) => r.group.district)).size]]
      .map(([label, value]) => `<div class="card"><span class="muted">${label}</span><b>${value}</b></div>`).join("");
    charts.push(chart(element.querySelector("#by-type"), `Violations per ${range.bucket} by type`, byType, "type"));
    charts.push(chart(element.querySelector("#by-district"), `Violations per ${range.bucket} by district`, byDistrict,
      "district"));
    top(element.querySelector("#top-intersections"), topIntersections, "intersection");
    top(element.querySelector("#top-grids"), topGrids, "grid");
    element.querySelector("#cases").innerHTML = evaluation ? cases(evaluation)
      : `<p class="empty">${can("cases:read") ? "No cases in this instance." : "Case figures need cases:read."}</p>`;
  }

  element.querySelector("#reports").addEventListener("click", (event) => {
    const link = event.target.closest("a[data-report]");
    if (!link) return;
    event.preventDefault();
    openReport(link.dataset.report, link.dataset.format).catch(showError);
  });
  loadReports().catch(showError);
  element.querySelector("#range").addEventListener("change", () => load().catch(showError));
  load().catch(showError).finally(() => { element.dataset.ready = "true"; });
  async function loadReports() {
    const table = element.querySelector("#reports");
    if (!can("indices:read")) {
      table.innerHTML = `<tr><td class="empty">Reports need indices:read.</td></tr>`;
      return;
    }
    let answer;
    try {
      answer = await get("/v1/reports", { limit: 24 });
    } catch (error) {
      if (error instanceof ApiError && error.status === 503) { answer = { items: [] }; } else throw error;
    }
    table.innerHTML = answer.items.length === 0
      ? `<tr><td class="empty">No report published yet: one is published when a period has ended.</td></tr>`
      : `<thead><tr><th>period</th><th>published</th><th>method</th><th></th></tr></thead><tbody>${answer.items
        .map((r) => `<tr data-report="${esc(r.report_id)}"><td>${esc(r.period_kind)} ${esc(r.period_key)}</td>
          <td>${fmtDateTime(r.published_ms)}</td><td class="muted">${esc(r.method_version)}</td>
          <td><a href="#" data-report="${esc(r.report_id)}" data-format="html">printable page</a> ·
            <a href="#" data-report="${esc(r.report_id)}" data-format="csv">CSV</a></td></tr>`).join("")}</tbody>`;
  }

  function showError(error) { element.querySelector("#totals").innerHTML = `<p class="error">${esc(error.message)}</p>`; }
  return () => { for (const c of charts) c?.destroy(); };
}

function chart(holder, title, counts, dimension) {
  holder.replaceChildren();
  const step = BUCKET_MS[counts.bucket];
  const times = [];
  for (let t = counts.from_ms; t < counts.to_ms; t += step) times.push(t);
  const names = [...new Set(counts.rows.map((r) => r.group[dimension] ?? "(none)"))].sort();
  if (!names.length) { holder.innerHTML = `<h3>${esc(title)}</h3><p class="empty">No violations in this period.</p>`; return null; }
  const series = Object.fromEntries(names.map((name) => [name, times.map(() => 0)]));
  for (const row of counts.rows) {
    const index = times.indexOf(row.bucket_start_ms);
    if (index >= 0) series[row.group[dimension] ?? "(none)"][index] += row.count;
  }
  return timeChart(holder, title, times, series, { width: Math.max(holder.clientWidth - 20, 400), height: 220,
    bars: true });
}

function top(table, answer, label) {
  table.innerHTML = `<thead><tr><th>${label}</th><th>violations</th></tr></thead><tbody>${answer.rows.map((row) =>
    `<tr><td>${esc(row.key)}</td><td>${row.count}</td></tr>`).join("")
    || `<tr><td colspan="2" class="empty">None.</td></tr>`}</tbody>`;
}

const pct = (rate) => (rate == null ? "—" : `${Math.round(rate * 100)}%`);
const time = (ms) => (ms == null ? "—" : duration(ms));

function cases(evaluation) {
  const city = evaluation.city;
  const departments = Object.entries(evaluation.department);
  return `<div class="cards">${[["registered", city.registered], ["closed", city.closed],
    ["closure rate", pct(city.closure_rate)], ["on time", pct(city.on_time_rate)],
    ["median time to close", time(city.close_time_p50_ms)], ["backlog", city.backlog_total],
    ["overdue", city.backlog_overdue]].map(([label, value]) =>
    `<div class="card"><span class="muted">${label}</span><b>${esc(value ?? "—")}</b></div>`).join("")}</div>
    <table class="list" id="case-departments"><thead><tr><th>department</th><th>registered</th><th>closed</th>
    <th>closure rate</th><th>on time</th><th>rework</th><th>median to close</th><th>backlog</th></tr></thead><tbody>
    ${departments.map(([name, f]) => `<tr><td>${esc(name)}</td><td>${f.registered}</td><td>${f.closed}</td>
      <td>${pct(f.closure_rate)}</td><td>${pct(f.on_time_rate)}</td><td>${pct(f.rework_rate)}</td>
      <td>${time(f.close_time_p50_ms)}</td><td>${f.backlog_total}</td></tr>`).join("")
      || `<tr><td colspan="8" class="empty">No cases in this period.</td></tr>`}</tbody></table>`;
}

// A report's page or CSV, fetched with the signed-in key (a plain link would carry none) and opened in a
// new tab as a local copy: the printable page is self-contained.
async function openReport(reportId, format) {
  const response = await fetch(`/v1/reports/${encodeURIComponent(reportId)}.${format}`, { headers: authHeaders() });
  if (!response.ok) throw new ApiError(response.status, null);
  const type = format === "html" ? "text/html" : "text/csv";
  const url = URL.createObjectURL(new Blob([await response.text()], { type }));
  if (format === "csv") {
    const link = Object.assign(document.createElement("a"), { href: url, download: `${reportId}.csv` });
    link.click();
  } else {
    window.open(url, "_blank");
  }
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}
