// Violation queue for the control room: newest first, filtered; the evidence of the selected one and
// what people can do about it (acknowledge, dispatch, dismiss as false, close), as the key's scopes allow.

import { ApiError, get, post } from "../api.js";
import { esc, fmtDateTime, fmtTime, localInputToMs, rfc3339 } from "../format.js";

export const VIOLATION_TYPES = ["bin_overflow", "bin_near_full", "bin_fire", "bin_tilt", "bin_lid_open",
  "air_quality_exceedance", "construction_dust", "water_black_odour", "toilet_odour", "red_light",
  "pedestrian_red", "yield_crosswalk", "illegal_parking", "wrong_way", "speeding", "no_helmet", "congestion",
  "camera_violation", "device_offline", "low_battery", "sensor_stuck", "sensor_implausible"];
const PAGE = 100;

export function mount(element, context) {
  const { session, live, can } = context;
  const grids = featureValues(session.layers.grids, "grid");
  const districts = [...new Set([...featureValues(session.layers.grids, "district"),
    ...featureValues(session.layers.districts, "district")])];
  element.innerHTML = `<div class="pane">
    <h2>Violation queue</h2>
    <form class="filters" id="filters">
      <label>type <select name="type"><option value="">any</option>${VIOLATION_TYPES.map((t) =>
        `<option>${esc(t)}</option>`).join("")}</select></label>
      <label>severity <select name="severity"><option value="">any</option><option>high</option>
        <option>medium</option><option>low</option></select></label>
      <label>grid <input name="grid" list="grid-names" size="8"></label>
      <label>district <input name="district" list="district-names" size="10"></label>
      <label>department <input name="department" size="12"></label>
      <label>status <select name="status"><option value="open">open</option><option value="">all</option>
        <option value="cleared">cleared</option></select></label>
      <label>from <input name="from" type="datetime-local"></label>
      <label>to <input name="to" type="datetime-local"></label>
      <datalist id="grid-names">${grids.map((g) => `<option>${esc(g)}</option>`).join("")}</datalist>
      <datalist id="district-names">${districts.map((d) => `<option>${esc(d)}</option>`).join("")}</datalist>
    </form>
    <table class="list" id="queue"><thead><tr><th>started</th><th>type</th><th>severity</th><th>device</th>
      <th>grid</th><th>district</th><th>department</th><th>handling</th></tr></thead><tbody></tbody></table>
    <p><button type="button" id="more" hidden>Load more</button> <span id="count" class="muted"></span></p>
    </div><aside class="side" id="detail"><p class="muted">Select a violation to see its evidence.</p></aside>`;
  const form = element.querySelector("#filters");
  const body = element.querySelector("#queue tbody");
  const detail = element.querySelector("#detail");
  let cursor = null;
  let generation = 0;
  let selected = new URLSearchParams(location.hash.split("?")[1] || "").get("violation");

  function filters() {
    const data = new FormData(form);
    const from = localInputToMs(data.get("from"));
    const to = localInputToMs(data.get("to"));
    return { type: data.get("type"), severity: data.get("severity"), grid: data.get("grid").trim(),
      district: data.get("district").trim(), department: data.get("department").trim(),
      status: data.get("status"), from: from == null ? "" : rfc3339(from), to: to == null ? "" : rfc3339(to),
      fromMs: from, toMs: to };
  }

  function matches(violation, f) {
    const tags = violation.tags || {};
    return (!f.type || violation.type === f.type) && (!f.severity || violation.severity === f.severity)
      && (!f.grid || tags.grid === f.grid) && (!f.district || tags.district === f.district)
      && (!f.department || tags.department === f.department)
      && (!f.status || violation.status === f.status)
      && (f.fromMs == null || violation.start_time_ms >= f.fromMs)
      && (f.toMs == null || violation.start_time_ms < f.toMs);
  }

  async function load(more = false) {
    const mine = more ? generation : ++generation;
    const f = filters();
    const { fromMs, toMs, ...params } = f;
    const page = await get("/v1/violations", { ...params, limit: PAGE, cursor: more ? cursor : null });
    if (mine !== generation) return; // the filters changed while this page was on its way
    if (!more) body.replaceChildren();
    for (const violation of page.items) upsert(violation, false);
    cursor = page.next_cursor;
    element.querySelector("#more").hidden = !cursor;
    element.querySelector("#count").textContent = `${body.children.length} shown`;
    if (selected && !more) select(selected);
  }

  function upsert(violation, live) {
    const id = violation.violation_id;
    let row = body.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
    if (live && !matches(violation, filters())) {
      if (row && id !== selected) row.remove(); // e.g. cleared while the list shows open ones
      else if (row) upsertCells(row, violation);
      return;
    }
    if (!row) {
      row = document.createElement("tr");
      row.dataset.id = id;
      row.addEventListener("click", () => select(id));
      if (live) {
        row.className = "fresh";
        const later = [...body.children].find((r) => Number(r.dataset.start) < violation.start_time_ms);
        body.insertBefore(row, later || null);
      } else {
        body.append(row);
      }
    }
    upsertCells(row, violation);
  }

  function upsertCells(row, violation) {
    const id = violation.violation_id;
    const tags = violation.tags || {};
    const handling = violation.handling || row.handling || {};
    row.handling = handling;
    row.dataset.start = String(violation.start_time_ms);
    row.dataset.type = violation.type;
    row.classList.toggle("cleared", violation.status !== "open");
    row.classList.toggle("selected", id === selected);
    row.innerHTML = `<td>${fmtDateTime(violation.start_time_ms)}</td><td>${esc(violation.type)}</td>
      <td><span class="sev ${esc(violation.severity)}">${esc(violation.severity)}</span></td>
      <td>${esc(violation.device_id)}</td><td>${esc(tags.grid)}</td><td>${esc(tags.district)}</td>
      <td>${esc(tags.department)}</td><td>${esc(handlingText(handling, violation))}</td>`;
  }

  async function select(id) {
    selected = id;
    for (const row of body.children) row.classList.toggle("selected", row.dataset.id === id);
    const violation = await get(`/v1/violations/${encodeURIComponent(id)}`);
    if (selected !== id) return;
    upsert(violation, false);
    const history = await get(`/v1/violations/${encodeURIComponent(id)}/history`);
    const kase = can("cases:read") ? await caseOf(violation) : null;
    if (selected !== id) return;
    renderDetail(violation, history.entries, kase);
  }

  function renderDetail(violation, entries, kase) {
    const evidence = violation.evidence || {};
    const details = evidence.details || {};
    const links = [["snapshot", evidence.snapshot_url], ["clip", details.clip_url], ["snapshot", details.snapshot_url]]
      .filter(([, url]) => url);
    const signal = details.signal;
    detail.innerHTML = `<h2>${esc(violation.type)} <span class="sev ${esc(violation.severity)}">${esc(violation.severity)}</span></h2>
      <div class="muted">${esc(violation.violation_id)}</div>
      <dl class="evidence">
        <dt>device</dt><dd>${esc(violation.device_id)}</dd>
        <dt>started · detected · status</dt><dd>${fmtDateTime(violation.start_time_ms)} · ${fmtTime(violation.detected_time_ms)}
          · ${esc(violation.status)}${violation.end_time_ms ? ` (cleared ${fmtDateTime(violation.end_time_ms)})` : ""}</dd>
        <dt>plate</dt><dd class="plate">${esc(evidence.plate ?? details.plate ?? "—")}</dd>
        ${signal ? `<dt>signal phase</dt><dd class="signal">${esc(signal.phase ?? "")} ${esc(signal.state ?? "")}
          ${signal.red_for_s != null ? `red for ${esc(signal.red_for_s)} s` : ""} ${esc(signalText(signal))}</dd>` : ""}
        <dt>evidence links</dt><dd>${links.length ? links.map(([label, url]) =>
          `<a href="${esc(url)}" target="_blank" rel="noopener noreferrer">${label}</a>`).join(" · ")
          : `<span class="muted">${can("plates") ? "none" : "hidden: the key lacks the plates scope"}</span>`}</dd>
        <dt>event ids</dt><dd>${(evidence.event_ids || []).map(esc).join("<br>") || "—"}</dd>
        <dt>details</dt><dd><code>${esc(JSON.stringify(details))}</code></dd>
        ${kase ? `<dt>case</dt><dd>${esc(kase.case_id)} · ${esc(kase.state)} · ${esc(kase.department ?? "")}</dd>` : ""}
      </dl>
      <div class="actions" id="actions"></div><p class="error" id="action-error"></p>
      <h3>History</h3><table class="list">${entries.map((e) => `<tr><td>${fmtDateTime(e.time_ms)}</td>
        <td>${esc(e.change)}</td><td>${esc(e.actor_name || e.actor)}${e.note ? `<br>${esc(e.note)}` : ""}</td></tr>`).join("")}</table>`;
    const actions = detail.querySelector("#actions");
    const handling = violation.handling || {};
    const add = (label, run, enabled = true) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = label;
      button.disabled = !enabled;
      button.addEventListener("click", async () => {
        try {
          await run();
          await select(violation.violation_id);
        } catch (error) {
          detail.querySelector("#action-error").textContent = error.message;
        }
      });
      actions.append(button);
    };
    const dismissed = handling.dismissed_time_ms != null;
    if (can("violations:write")) {
      add("Acknowledge", () => act(violation, { action: "acknowledge" }),
        handling.acknowledged_time_ms == null && !dismissed);
      add("Dismiss as false", () => {
        const note = prompt("Why is it a false alarm?");
        return note ? act(violation, { action: "dismiss", note }) : Promise.resolve();
      }, !dismissed);
    }
    if (can("cases:write")) {
      const canDispatch = !kase || kase.allowed_transitions.includes("dispatched");
      add("Dispatch", async () => {
        await dispatchCase(violation, kase);
        // The violation says who has it, too (its handling), when the key may record that.
        const assignee = violation.tags?.department;
        if (assignee && can("violations:write") && handling.assignee !== assignee) {
          await act(violation, { action: "assign", assignee, note: "dispatched as a case" });
        }
      }, canDispatch && !dismissed);
      add("Close", () => post(`/v1/cases/${encodeURIComponent(kase.case_id)}/transitions`,
        { to: "closed", note: "closed from the console" }), !!kase && kase.allowed_transitions.includes("closed"));
    }
    if (!actions.children.length) {
      actions.innerHTML = `<span class="muted">Read only: actions need violations:write or cases:write.</span>`;
    }
  }

  async function onFilter() {
    selected = null;
    await load();
  }
  form.addEventListener("change", () => onFilter().catch(showError));
  form.addEventListener("input", (event) => { if (event.target.tagName === "INPUT" && event.target.type !== "datetime-local") debounce(onFilter); });
  element.querySelector("#more").addEventListener("click", () => load(true).catch(showError));
  const onChange = ({ detail: change }) => upsert(change.violation, true);
  live.addEventListener("change", onChange);
  load().catch(showError).finally(() => { element.dataset.ready = "true"; });

  function showError(error) { detail.innerHTML = `<p class="error">${esc(error.message)}</p>`; }
  return () => live.removeEventListener("change", onChange);
}

let debounceTimer = null;
function debounce(run) {
  clearTimeout(debounceTimer);
  debounceTimer = setTimeout(() => run(), 400);
}

function featureValues(collection, property) {
  return [...new Set((collection?.features || []).map((f) => f.properties?.[property]).filter(Boolean))].sort();
}

function handlingText(handling, violation) {
  if (handling.dismissed_time_ms != null) return "dismissed";
  const parts = [];
  if (handling.acknowledged_time_ms != null) parts.push("acknowledged");
  if (handling.assignee) parts.push(`→ ${handling.assignee}`);
  return parts.join(" ") || (violation.status === "open" ? "new" : "");
}

function signalText(signal) {
  const rest = Object.entries(signal).filter(([name]) => !["phase", "state", "red_for_s"].includes(name));
  return rest.map(([name, value]) => `${name} ${typeof value === "object" ? JSON.stringify(value) : value}`).join(", ");
}

async function act(violation, body) {
  return post(`/v1/violations/${encodeURIComponent(violation.violation_id)}/actions`, body);
}

// The case of a violation: one routing opened for it, or one made for it by hand (here or elsewhere).
async function caseOf(violation) {
  try {
    const page = await get("/v1/cases", { violation: violation.violation_id, limit: 1 });
    return page.items[0] || null;
  } catch (error) {
    if (error instanceof ApiError && error.status === 503) return null; // this instance runs no cases
    throw error;
  }
}

// Dispatch to the violation's department: its case when there is one, a new case linking it otherwise.
async function dispatchCase(violation, kase) {
  const department = violation.tags?.department || undefined;
  let target = kase;
  if (!target) {
    target = await post("/v1/cases", {
      type: violation.type, description: `${violation.type} at ${violation.device_id}`,
      violation_ids: [violation.violation_id],
      department, grid: violation.tags?.grid, district: violation.tags?.district,
      location: violation.location || undefined,
    });
  }
  const body = { to: "dispatched", note: `from the console, violation ${violation.violation_id}` };
  if (department) body.department = department;
  if (!department) body.assignee = "duty officer";
  return post(`/v1/cases/${encodeURIComponent(target.case_id)}/transitions`, body);
}
