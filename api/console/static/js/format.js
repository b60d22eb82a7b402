// Times in the city's time zone (never epoch ms on screen), and small text helpers.

let zone = "UTC";
let dateTime, timeOnly, dayOnly;

export function setTimeZone(name) {
  zone = name;
  const base = { timeZone: name, hourCycle: "h23" };
  dateTime = new Intl.DateTimeFormat("en-CA", { ...base, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit" });
  timeOnly = new Intl.DateTimeFormat("en-GB", { ...base, hour: "2-digit", minute: "2-digit", second: "2-digit" });
  dayOnly = new Intl.DateTimeFormat("en-CA", { ...base, year: "numeric", month: "2-digit", day: "2-digit" });
}
setTimeZone("UTC");

export const timeZone = () => zone;
export const fmtDateTime = (ms) => (ms == null ? "—" : dateTime.format(ms).replace(",", ""));
export const fmtTime = (ms) => (ms == null ? "—" : timeOnly.format(ms));
export const fmtDay = (ms) => (ms == null ? "—" : dayOnly.format(ms));

// The offset of the city's zone at `ms`, in minutes (for charts that draw local hours).
export function zoneOffsetMin(ms) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-US", { timeZone: zone, hourCycle: "h23",
    year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "numeric", second: "numeric" })
    .formatToParts(ms).map((p) => [p.type, p.value]));
  const local = Date.UTC(parts.year, parts.month - 1, parts.day, parts.hour, parts.minute, parts.second);
  return Math.round((local - Math.floor(ms / 1000) * 1000) / 60000);
}

// An RFC 3339 time with the city's offset, for the API's from/to parameters.
export function rfc3339(ms) {
  const offset = zoneOffsetMin(ms);
  const local = new Date(ms + offset * 60000).toISOString().slice(0, 19);
  const sign = offset < 0 ? "-" : "+";
  const abs = Math.abs(offset);
  return `${local}${sign}${String(Math.floor(abs / 60)).padStart(2, "0")}:${String(abs % 60).padStart(2, "0")}`;
}

// A datetime-local input's value (city time) as epoch ms, and back.
export function localInputToMs(value) {
  if (!value) return null;
  const guess = Date.parse(`${value}:00Z`);
  return guess - zoneOffsetMin(guess) * 60000;
}
export function msToLocalInput(ms) {
  return new Date(ms + zoneOffsetMin(ms) * 60000).toISOString().slice(0, 16);
}

export function duration(ms) {
  const s = Math.round(Math.abs(ms) / 1000);
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${Math.round(s / 86400)} d`;
}

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export const esc = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);

// The DOM element of an HTML string (trusted template; every value in it went through esc).
export function html(text) {
  const template = document.createElement("template");
  template.innerHTML = text.trim();
  return template.content.firstElementChild;
}

export function downloadCsv(filename, rows) {
  const cell = (v) => { const s = String(v ?? ""); return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s; };
  const text = rows.map((row) => row.map(cell).join(",")).join("\r\n") + "\r\n";
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
}
