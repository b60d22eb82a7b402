// Charts with uPlot (canvas): sparklines in map popups, time series in the statistics view.

import { fmtDateTime, fmtTime } from "./format.js";

const uPlot = window.uPlot;
export const PALETTE = ["#2457c5", "#c62828", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#8d6e63",
  "#ad1457", "#558b2f", "#37474f"];

export function sparkline(holder, times, values, width = 260, height = 60) {
  return new uPlot({
    width, height, legend: { show: false }, cursor: { show: false },
    scales: { x: { time: false } },
    axes: [{ show: false }, { show: false }],
    series: [{}, { stroke: "#2457c5", width: 1.5, fill: "rgba(36,87,197,.12)" }],
  }, [times, values], holder);
}

// A time chart with one series per name; x in epoch ms, labels in the city's time zone. Bars are stacked
// (each series on those before it), so that no count hides behind another; the legend shows each own count.
export function timeChart(holder, title, times, seriesByName, { width = 760, height = 240, bars = false } = {}) {
  const names = Object.keys(seriesByName);
  const step = times.length > 1 ? times[1] - times[0] : 3600000;
  const stacked = [];
  names.forEach((name, i) => stacked.push(seriesByName[name].map((v, j) => v + (i ? stacked[i - 1][j] : 0))));
  const order = bars ? names.map((_, i) => names.length - 1 - i) : names.map((_, i) => i); // tallest first
  const options = {
    title, width, height,
    scales: { x: { time: false, range: () => [times[0] - step / 2, times[times.length - 1] + step / 2] } },
    axes: [
      // Whole hours and days (the city's zones are whole hours off UTC in practice).
      { incrs: [3600000, 7200000, 10800000, 21600000, 43200000, 86400000, 172800000, 604800000],
        values: (_, ticks) => ticks.map((t) => (times.length && times[times.length - 1] - times[0] > 2 * 86400000
          ? fmtDateTime(t).slice(5, 10) : fmtTime(t).slice(0, 5))) },
      {},
    ],
    series: [{ label: "time", value: (_, t) => (t == null ? "—" : fmtDateTime(t)) },
      ...order.map((i) => ({
        label: names[i], stroke: PALETTE[i % PALETTE.length], width: 1.5,
        fill: bars ? `${PALETTE[i % PALETTE.length]}cc` : undefined,
        points: { show: !bars },
        paths: bars ? uPlot.paths.bars({ size: [0.8, 60] }) : undefined,
        value: (u, v, si, index) => (index == null ? "—" : seriesByName[names[i]][index]),
      }))],
  };
  const data = [times, ...order.map((i) => (bars ? stacked[i] : seriesByName[names[i]]))];
  return new uPlot(options, data, holder);
}
