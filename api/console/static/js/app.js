// The console's shell: sign-in, the session (scopes, time zone, map layers), the live stream and the
// view router (#/map, #/queue, #/intersections, #/dispatch, #/stats). Each view is a module with
// mount(element, context) returning its unmount function.

import { ApiError, get, key } from "./api.js";
import { setTimeZone } from "./format.js";
import { LiveViolations } from "./live.js";

const VIEWS = {
  map: () => import("./views/map.js"),
  queue: () => import("./views/queue.js"),
  intersections: () => import("./views/intersection.js"),
  dispatch: () => import("./views/dispatch.js"),
  stats: () => import("./views/stats.js"),
};

const $ = (id) => document.getElementById(id);
let context = null;
let unmount = null;

async function startSession() {
  const session = await get("/v1/console/session");
  setTimeZone(session.time_zone);
  const scopes = new Set(session.scopes);
  const live = new LiveViolations();
  context = { session, live, can: (scope) => scopes.has(scope) };
  $("who").textContent = session.auth === "disabled" ? "open access (local demo)" : `key ${session.name}`;
  $("sign-out").hidden = session.auth === "disabled";
  $("nav").hidden = false;
  $("sign-in").hidden = true;
  live.addEventListener("status", ({ detail }) => {
    $("live").textContent = detail.connected ? "● live" : "○ reconnecting";
    $("live").classList.toggle("on", detail.connected);
  });
  if (context.can("violations:read")) live.start();
  else $("live").textContent = "no live stream (needs violations:read)";
  await route();
}

function showSignIn(message = "") {
  context?.live.stop();
  context = null;
  $("nav").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("view").replaceChildren();
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
  $("key").focus();
}

async function route() {
  if (!context) return;
  const name = (location.hash.match(/^#\/(\w+)/) || [])[1] || "map";
  const load = VIEWS[name] || VIEWS.map;
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.view === name);
  }
  unmount?.();
  unmount = null;
  const view = $("view");
  view.replaceChildren();
  const module = await load();
  const element = document.createElement("div");
  element.className = "view";
  element.style.cssText = "flex:1;display:flex;min-width:0;min-height:0";
  view.append(element);
  unmount = module.mount(element, context);
}

$("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  key.set($("key").value.trim());
  $("key").value = "";
  try {
    await startSession();
  } catch (error) {
    key.clear();
    showSignIn(error instanceof ApiError && error.status === 401 ? "This key is not valid." : error.message);
  }
});

$("sign-out").addEventListener("click", () => { key.clear(); showSignIn(); });
window.addEventListener("citywatch:unauthorized", () => {
  if (context && context.session.auth !== "disabled") { key.clear(); showSignIn("The key was refused."); }
});
window.addEventListener("hashchange", () => route());

// A stored key, or the keyless demo (auth disabled): open directly; otherwise ask for a key.
if (!key.get() && document.body.dataset.auth !== "disabled") showSignIn();
else startSession().catch((error) => {
  key.clear();
  showSignIn(error instanceof ApiError && error.status === 401 ? "" : error.message);
});
