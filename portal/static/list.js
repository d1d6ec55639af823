// The caller's teams' requests (GET /api/workspaces), newest first, filtered by team, status and name.
import { api, badge, el, showProblem, when } from "./portal.js";

const STATUSES = ["awaiting_approval", "accepted", "provisioning", "succeeded", "failed", "updating", "cancelling", "cancelled", "deleting", "deleted", "rejected", "denied", "expired"];
const $ = (name) => document.getElementById(name);
let next = null;
let shown = [];

function row(r) {
  return el(
    "tr",
    { "data-id": r.id },
    el("th", { scope: "row" }, el("a", { href: `/workspaces/${encodeURIComponent(r.id)}` }, r.workspace_name || r.id)),
    el("td", {}, badge(r.status)),
    el("td", {}, r.team),
    el("td", {}, r.environment),
    el("td", {}, r.requester_name || r.requester),
    el("td", {}, el("time", { datetime: r.created_at }, when(r.created_at))),
  );
}

function render() {
  const text = $("filter-text").value.trim().toLowerCase();
  const rows = shown.filter((r) => !text || (r.workspace_name || r.id).toLowerCase().includes(text));
  $("workspaces").tBodies[0].replaceChildren(...rows.map(row));
  $("count").textContent = rows.length
    ? `${rows.length} workspace request${rows.length === 1 ? "" : "s"}${next ? " so far" : ""}.`
    : "No workspace requests match. New workspace asks for one.";
  $("more").hidden = !next;
}

async function load(url) {
  try {
    const page = await api(url);
    shown = url === first() ? page.items : shown.concat(page.items);
    next = page.next ? new URL(page.next, location.href).pathname + new URL(page.next, location.href).search : null;
    $("load-problem").hidden = true;
    render();
  } catch (err) {
    showProblem($("load-problem"), err);
  }
}

function first() {
  const query = new URLSearchParams();
  if ($("filter-team").value) query.set("team", $("filter-team").value);
  if ($("filter-status").value) query.set("status", $("filter-status").value);
  query.set("limit", "50");
  return `/api/workspaces?${query}`;
}

function keepInAddress() {
  const query = new URLSearchParams();
  for (const [key, input] of [["team", "filter-team"], ["status", "filter-status"], ["q", "filter-text"]]) {
    if ($(input).value) query.set(key, $(input).value);
  }
  history.replaceState(null, "", query.toString() ? `/?${query}` : "/");
}

async function start() {
  const wanted = new URLSearchParams(location.search);
  for (const s of STATUSES) $("filter-status").append(el("option", { value: s }, s.replaceAll("_", " ")));
  try {
    const me = await api("/api/me");
    for (const t of me.teams) $("filter-team").append(el("option", { value: t }, t));
  } catch (err) {
    showProblem($("load-problem"), err);
  }
  for (const [key, input] of [["team", "filter-team"], ["status", "filter-status"], ["q", "filter-text"]]) {
    if (wanted.get(key)) {
      if ($(input).tagName === "SELECT" && ![...$(input).options].some((o) => o.value === wanted.get(key))) $(input).append(el("option", { value: wanted.get(key) }, wanted.get(key)));
      $(input).value = wanted.get(key);
    }
  }
  $("filter-team").addEventListener("change", () => { keepInAddress(); load(first()); });
  $("filter-status").addEventListener("change", () => { keepInAddress(); load(first()); });
  $("filter-text").addEventListener("input", () => { keepInAddress(); render(); });
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  $("more").addEventListener("click", () => next && load(next));
  await load(first());
  document.getElementById("main").dataset.ready = "true";
}

start();
