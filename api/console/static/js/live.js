// Open violations, kept current by the SSE stream read with fetch() (EventSource cannot send the key).
//
// The stream is opened first and the list of open violations read after it, so a change stored between
// the two is in one or the other; whichever copy was updated last wins. After a drop the stream is
// reopened with Last-Event-ID = the last id received: the API sends every change after it (no gap). A
// cursor the API no longer holds (410, e.g. after a restart), or a drop before any change arrived,
// re-reads the list and starts afresh.

import { ApiError, authHeaders, getAll } from "./api.js";

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 5000;
// The API sends a keep-alive comment every alerts.stream_heartbeat_s (15 s by default): a stream silent
// much longer than that is dead even if the socket does not say so.
const SILENCE_MS = 40000;
const MAX_OPEN = 20000;

export class LiveViolations extends EventTarget {
  constructor() {
    super();
    this.open = new Map(); // violation_id -> violation
    this.lastId = null;
    this.connected = false;
    this.stopped = false;
    this.controller = null;
    this.retryMs = RETRY_MIN_MS;
    this.wake = null;
    // The browser knows when its network went away (a laptop off the Wi-Fi): drop the stream at once
    // rather than wait for the silence watchdog, and reconnect as soon as the network is back.
    this.onOffline = () => this.controller?.abort();
    this.onOnline = () => { this.retryMs = RETRY_MIN_MS; this.wake?.(); };
  }

  async start() {
    this.stopped = false;
    window.addEventListener("offline", this.onOffline);
    window.addEventListener("online", this.onOnline);
    this.run();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("offline", this.onOffline);
    window.removeEventListener("online", this.onOnline);
    this.controller?.abort();
  }

  // Emits "change" with {violation, change} for each opened/cleared violation, "status" on (dis)connect.
  emitChange(violation, change) {
    this.dispatchEvent(new CustomEvent("change", { detail: { violation, change } }));
  }

  setConnected(connected) {
    if (this.connected === connected) return;
    this.connected = connected;
    this.dispatchEvent(new CustomEvent("status", { detail: { connected } }));
  }

  apply(violation, change) {
    const known = this.open.get(violation.violation_id);
    if (known && known.updated_time_ms > violation.updated_time_ms) return; // an older copy
    if (violation.status === "open") this.open.set(violation.violation_id, violation);
    else this.open.delete(violation.violation_id);
    this.emitChange(violation, change);
  }

  async loadOpen() {
    const items = await getAll("/v1/violations", { status: "open" }, MAX_OPEN);
    for (const violation of items) this.apply(violation, "listed");
    this.dispatchEvent(new CustomEvent("loaded"));
  }

  async run() {
    let needList = true;
    while (!this.stopped) {
      this.controller = new AbortController();
      const stream = this.connect(this.controller);
      try {
        const response = await stream.response;
        if (needList) {
          needList = false;
          this.loadOpen().catch((error) => console.warn("citywatch: open violations not read:", error.message));
        }
        await this.read(response, this.controller);
      } catch (error) {
        if (this.stopped) return;
        if (error instanceof ApiError && error.status === 410) {
          this.lastId = null; // the feed no longer holds our position: read the list again
          needList = true;
        } else if (error instanceof ApiError && [401, 403].includes(error.status)) {
          this.setConnected(false);
          return; // retrying cannot fix the key
        }
      }
      this.setConnected(false);
      if (this.stopped) return;
      // Nothing received before the drop: no position to resume from, so the list is read again.
      if (!this.lastId) needList = true;
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, this.retryMs);
        this.wake = () => { clearTimeout(timer); resolve(); };
      });
      this.wake = null;
      this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    }
  }

  connect(controller) {
    const headers = { ...authHeaders(), Accept: "text/event-stream" };
    if (this.lastId) headers["Last-Event-ID"] = this.lastId;
    const response = fetch("/v1/stream/violations", { headers, signal: controller.signal, cache: "no-store" })
      .then(async (answer) => {
        if (!answer.ok) {
          let problem = null;
          try { problem = await answer.json(); } catch { /* not JSON */ }
          throw new ApiError(answer.status, problem);
        }
        return answer;
      });
    return { response };
  }

  async read(response, controller) {
    this.setConnected(true);
    this.retryMs = RETRY_MIN_MS;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let watchdog = setTimeout(() => controller.abort(), SILENCE_MS);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        clearTimeout(watchdog);
        watchdog = setTimeout(() => controller.abort(), SILENCE_MS);
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          this.dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } finally {
      clearTimeout(watchdog);
    }
  }

  // One SSE message: `id:`, `event:` and `data:` lines; comments (keep-alives) start with ':'.
  dispatch(block) {
    let id = null;
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") id = value;
      else if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (id) this.lastId = id;
    if (!data.length) return;
    const message = JSON.parse(data.join("\n"));
    if (event === "violation" && message.violation) this.apply(message.violation, message.change);
    else if (event === "error") console.warn("citywatch: the stream ended:", message.error, message.detail);
  }
}
