// Devices and their latest readings, shared by the map and the dispatch view.

import { get, getAll } from "./api.js";

export const SENSOR_KINDS = ["air", "water", "odour"];
export const READING_KINDS = ["bin", ...SENSOR_KINDS, "detector"];
// The attribute a device's sparkline shows, per kind (the first numeric one otherwise).
export const MAIN_ATTRIBUTE = { bin: "fill_pct", air: "pm25_ugm3", odour: "nh3_ppm", detector: "occupancy_pct",
  water: "dissolved_oxygen_mg_l" };
// Violations that say what an environmental sensor's category is now (the rules judge, the map shows).
export const SENSOR_VIOLATIONS = ["air_quality_exceedance", "construction_dust", "water_black_odour", "toilet_odour"];

export async function loadDevices(can) {
  if (!can("readings:read")) return [];
  return (await get("/v1/console/devices")).items;
}

// The newest reading of every reading device, and the bins' fill forecasts.
export async function loadReadings(can) {
  if (!can("readings:read")) return { latest: new Map(), predictions: [] };
  const [predictions, ...latestByKind] = await Promise.all([
    get("/v1/bins/predictions", { limit: 10000 }).then((answer) => answer.items),
    ...READING_KINDS.map((kind) => getAll("/v1/readings/latest", { kind }, 20000)),
  ]);
  const latest = new Map();
  for (const events of latestByKind) for (const event of events) latest.set(event.device_id, event);
  return { latest, predictions };
}

export function mainAttribute(kind, attributes = {}) {
  const preferred = MAIN_ATTRIBUTE[kind];
  if (preferred && typeof attributes[preferred] === "number") return preferred;
  return Object.keys(attributes).find((name) => typeof attributes[name] === "number" && name !== "battery_pct")
    || preferred || null;
}
