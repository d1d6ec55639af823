// A request's page: its steps live (polling GET /api/workspaces/{id} while a run is under way), the
// timeline (GET .../events), what went wrong with its fix, and on success the Studio link and
// config.json. The actions are the REST API's; the service decides each one.
import { api, badge, el, money, pageData, showProblem, when } from "./portal.js";

const id = pageData("requestId");
const base = `/api/workspaces/${encodeURIComponent(id)}`;
const $ = (name) => document.getElementById(name);
const MOVING = new Set(["accepted", "provisioning", "updating", "cancelling", "deleting"]);
const DONE_STEPS = new Set(["succeeded", "skipped"]);
let timer = null;
let me = null;
let view = null;
let lastStatus = null;

const STATE_WORDS = {
  accepted: "Accepted: the steps are starting.",
  provisioning: "Provisioning: the steps are running.",
  updating: "Updating: the change is being applied.",
  cancelling: "Cancelling: steps under way finish, the rest do not start.",
  deleting: "Deleting: the resources are being torn down.",
  awaiting_approval: "Waiting for approval: nothing is created until it is approved.",
  cancelled: "Cancelled.",
  deleted: "Deleted: its resources are gone.",
  denied: "Denied: nothing was created.",
  expired: "Expired: nobody decided in time; nothing was created.",
  rejected: "Rejected: the request was not valid.",
};

function fact(term, ...value) {
  return [el("dt", {}, term), el("dd", {}, ...value)];
}

function renderState(v) {
  const box = $("state");
  const parts = [];
  if (v.status === "succeeded") {
    const studio = v.outputs && v.outputs.studio_url;
    parts.push(
      el(
        "div",
        { class: "notice good", id: "ready" },
        el("p", {}, el("strong", {}, "Your workspace is ready.")),
        el(
          "div",
          { class: "actions" },
          studio ? el("a", { class: "button primary", href: studio, target: "_blank", rel: "noopener noreferrer", id: "studio-link" }, "Open in Azure ML Studio") : null,
          el("a", { class: "button", href: `${base}/config.json`, download: "config.json", id: "config-download" }, "Download config.json"),
        ),
        el("p", { class: "muted" }, "Put config.json beside your notebook: MLClient.from_config(credential) finds the workspace with it."),
      ),
    );
  } else if (v.status === "failed" && v.error) {
    parts.push(
      el(
        "div",
        { class: "notice bad", id: "failure" },
        el("p", {}, el("strong", {}, `It failed (${v.error.code}).`)),
        el("p", {}, v.error.message),
        el("p", { class: "muted" }, "Fix what it says, then Retry: the steps that succeeded are not done again."),
      ),
    );
  } else if (v.status === "rejected") {
    parts.push(
      el(
        "div",
        { class: "notice bad", id: "failure" },
        el("p", {}, el("strong", {}, STATE_WORDS.rejected)),
        el("ul", {}, v.problems.map((p) => el("li", {}, `${p.field}: ${p.message}`))),
      ),
    );
  } else {
    parts.push(el("p", { class: `notice${MOVING.has(v.status) ? "" : " wait"}` }, STATE_WORDS[v.status] || v.status));
  }
  for (const w of v.warnings || []) parts.push(el("p", { class: "notice wait" }, `Note: ${w.message || JSON.stringify(w)}`));
  if (v.drift && v.drift.requested) {
    parts.push(el("p", { class: "notice", id: "drift-requested" }, "A drift check was asked for: the lifecycle timer runs it at its next tick."));
  }
  if (v.drift && v.drift.findings.length) {
    parts.push(el("p", { class: "notice wait", id: "drift" }, `Drift: ${v.drift.findings.length} thing${v.drift.findings.length === 1 ? "" : "s"} in Azure no longer match what was asked (checked ${when(v.drift.checked_at)}).`));
  }
  box.replaceChildren(...parts);
}

function renderFacts(v) {
  $("ws-name").textContent = v.workspace_name || v.id;
  document.title = `${v.workspace_name || v.id} · Workspace Vending`;
  $("ws-status").replaceChildren(badge(v.status));
  const est = v.estimate;
  $("facts").replaceChildren(
    ...fact("Team", v.team),
    ...fact("Environment", v.environment),
    ...fact("Requested by", v.requester_name || v.requester),
    ...fact("Requested", when(v.created_at)),
    ...fact("Request id", el("code", {}, v.id)),
    ...(v.names ? fact("Resource group", v.names.resource_group) : []),
    ...(v.names ? fact("Region", v.names.location) : []),
    ...(est ? fact("Estimated cost", `${money(est.monthly_max, est.currency)} a month at most (${money(est.monthly_idle, est.currency)} idle)`) : []),
    ...(v.expires_at ? fact("Torn down on", when(v.expires_at)) : []),
    ...fact("Revision", `${v.revision} (run ${v.run}: ${v.operation})`),
  );
}

function renderSteps(v) {
  const steps = v.steps;
  const done = steps.filter((s) => DONE_STEPS.has(s.status)).length;
  $("progress").max = Math.max(steps.length, 1);
  $("progress").value = done;
  $("progress-text").textContent = steps.length ? `${done} of ${steps.length} steps done.` : "No steps yet.";
  $("steps").replaceChildren(
    ...steps.map((s) =>
      el(
        "li",
        { "data-step": s.id, "data-status": s.status },
        el("div", {}, badge(s.status)),
        el(
          "div",
          {},
          el("strong", {}, s.id),
          el("span", { class: "muted" }, ` ${s.kind.replaceAll("_", " ")}${s.action !== "apply" ? ` (${s.action})` : ""}`),
          s.retries > 0 ? el("span", { class: "muted" }, ` · retried ${s.retries} time${s.retries === 1 ? "" : "s"}`) : null,
          s.status_reason ? el("span", { class: "small muted" }, s.status_reason) : null,
          s.error ? el("span", { class: "small error" }, `${s.error.code}: ${s.error.message}`) : null,
        ),
      ),
    ),
  );
}

function renderApproval(v) {
  const a = v.approval;
  $("approval").hidden = !a;
  if (!a) return;
  const needed = Object.entries(a.still_needed);
  $("approval-body").replaceChildren(
    el("p", {}, `${a.operation === "update" ? "A change" : "This request"} met ${a.rules.length} rule${a.rules.length === 1 ? "" : "s"}; outcome: `, badge(a.outcome), a.outcome === "pending" ? ` (decide by ${when(a.due_at)})` : ""),
    el("ul", {}, a.rules.map((r) => el("li", {}, `${r.rule}: ${r.reasons.join("; ")}`))),
    needed.length ? el("p", {}, `Still needed: ${needed.map(([rule, n]) => `${n} for ${rule}`).join(", ")}.`) : null,
    a.decisions.length
      ? el("ul", { id: "decisions" }, a.decisions.map((d) => el("li", {}, `${d.name || d.by} ${d.decision === "approve" ? "approved" : "denied"} at ${when(d.at)}${d.reason ? `: ${d.reason}` : ""}`)))
      : null,
  );
  const mayDecide = me && a.outcome === "pending" && (me.roles.includes("Workspaces.Approve") || me.roles.includes("Vending.Admin")) && me.oid !== v.requester && me.oid !== a.requested_by;
  $("decide").hidden = !mayDecide;
}

function action(label, handler, { primary = false, danger = false, idName } = {}) {
  return el("button", { type: "button", class: [primary ? "primary" : "", danger ? "danger" : ""].join(" ").trim() || null, id: idName, onclick: handler }, label);
}

async function act(path, options) {
  $("action-problem").hidden = true;
  try {
    await api(path, options);
    await refresh();
  } catch (err) {
    showProblem($("action-problem"), err);
  }
}

function renderActions(v) {
  const buttons = [];
  const settled = ["succeeded", "failed"].includes(v.status);
  if (settled) buttons.push(el("a", { class: "button", href: `/workspaces/${encodeURIComponent(v.id)}/edit`, id: "change" }, "Change"));
  if (v.status === "failed") buttons.push(action("Retry", () => act(`${base}/retry`, { method: "POST" }), { primary: true, idName: "retry" }));
  if (MOVING.has(v.status) && v.status !== "cancelling" && v.status !== "deleting" || v.status === "awaiting_approval") {
    buttons.push(action(v.status === "awaiting_approval" ? "Withdraw" : "Cancel", () => act(`${base}/cancel`, { method: "POST" }), { idName: "cancel" }));
  }
  if (v.expires_at && settled) {
    buttons.push(action("Keep 30 more days", () => act(`${base}/extend`, { method: "POST", body: { days: 30 } }), { idName: "extend" }));
  }
  if (v.status === "succeeded") {
    buttons.push(action("Check drift", () => act(`${base}/drift`, { method: "POST" }), { idName: "drift-check" }));
  }
  if (settled || v.status === "cancelled") buttons.push(action("Delete…", () => $("delete-dialog").showModal(), { danger: true, idName: "delete" }));
  $("actions").replaceChildren(...buttons);
}

function renderTimeline(events) {
  $("timeline").replaceChildren(
    ...events.map((e) =>
      el(
        "li",
        {},
        el("time", { datetime: e.time }, when(e.time)),
        ` ${e.name.replace(/^Workspace/, "")}`,
        e.step ? ` · ${e.step}` : "",
        e.message ? el("span", { class: "small muted" }, e.message) : null,
      ),
    ),
  );
}

async function refresh() {
  clearTimeout(timer);
  try {
    const [v, events] = await Promise.all([api(base), api(`${base}/events`)]);
    view = v;
    $("load-problem").hidden = true;
    renderFacts(v);
    renderState(v);
    renderApproval(v);
    renderActions(v);
    renderSteps(v);
    renderTimeline(events.items);
    document.getElementById("main").dataset.status = v.status;
    lastStatus = v.status;
  } catch (err) {
    showProblem($("load-problem"), err);
  }
  // Poll while a run moves (each second) or an approval waits (every five); stop once it settles.
  if (MOVING.has(lastStatus)) timer = setTimeout(refresh, 1000);
  else if (lastStatus === "awaiting_approval") timer = setTimeout(refresh, 5000);
}

async function decide(decision) {
  const reason = $("decision-reason").value.trim();
  await act(`${base}/${decision}`, { method: "POST", body: reason ? { reason } : {} });
}

async function start() {
  try {
    me = await api("/api/me");
  } catch {
    me = null;
  }
  $("approve").addEventListener("click", () => decide("approve"));
  $("deny").addEventListener("click", () => decide("deny"));
  $("delete-dialog").addEventListener("close", () => {
    if ($("delete-dialog").returnValue === "delete") {
      act(`${base}${$("purge").checked ? "?purge=true" : ""}`, { method: "DELETE" });
    }
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && view) refresh();
  });
  await refresh();
}

start();
