// The workspace form: choices from GET /api/choices, checked as you type by POST /api/validate (the
// same rules and words as POST /api/workspaces), reviewed by POST /api/plan, created by POST
// /api/workspaces. On /workspaces/{id}/edit the same form changes a workspace: the review is
// POST /api/workspaces/{id}/plan and the change a JSON Merge Patch (RFC 7396).
import { compact, mergePatch } from "./patch.js";
import { api, ApiError, el, money, pageData, showProblem } from "./portal.js";

const requestId = pageData("requestId");
const form = document.getElementById("workspace-form");
const summary = document.getElementById("summary");
const summaryList = document.getElementById("summary-list");
const live = document.getElementById("live-status");
const reviewPanel = document.getElementById("review-panel");
const reviewBody = document.getElementById("review-body");
const reviewProblem = document.getElementById("review-problem");
const createButton = document.getElementById("create");

let choices = null;
let original = null; // the request as it stands (edit), to write the merge patch against
let touched = new Set(); // field paths the user has changed: their problems show as they type
let showAll = false; // after a review was asked for, every problem shows
let checking = 0;
let timer = null;
let idempotencyKey = null; // one per reviewed body: a second click on Create is the same request

const ROWS = {
  compute: { container: "compute-rows", template: "compute-row", title: "Compute" },
  datastores: { container: "datastore-rows", template: "datastore-row", title: "Datastore" },
  owners: { container: "owner-rows", template: "principal-row", title: "Owner" },
  members: { container: "member-rows", template: "principal-row", title: "Member" },
  tags: { container: "tag-rows", template: "tag-row", title: "Tag" },
};

function option(value, text) {
  return el("option", { value }, text ?? value);
}

function fill(select, values, { blank } = {}) {
  select.replaceChildren(...(blank ? [option("", blank)] : []), ...values.map((v) => (Array.isArray(v) ? option(v[0], v[1]) : option(v))));
}

function vmLabel(size) {
  const parts = [`${size.vcpus} vCPU`];
  if (size.gpus) parts.push(`${size.gpus} GPU`);
  if (size.hourly !== null && size.hourly !== undefined) parts.push(`${choices.currency} ${size.hourly.toFixed(2)}/h`);
  return `${size.name} (${parts.join(", ")})`;
}

// ----- repeatable rows -------------------------------------------------------------------------

function addRow(kind, values = {}) {
  const spec = ROWS[kind];
  const row = document.getElementById(spec.template).content.firstElementChild.cloneNode(true);
  row.dataset.kind = kind;
  if (kind === "compute") {
    fill(row.querySelector('[data-key="kind"]'), choices.compute_kinds);
    fill(row.querySelector('[data-key="vm_size"]'), choices.vm_sizes.map((s) => [s.name, vmLabel(s)]));
    fill(row.querySelector('[data-key="tier"]'), choices.tiers.map((t) => [t, t.replace("_", " ")]));
  }
  if (kind === "datastores") fill(row.querySelector('[data-key="kind"]'), choices.datastore_kinds);
  for (const input of row.querySelectorAll("[data-key]")) {
    const value = values[input.dataset.key];
    if (value === undefined || value === null) continue;
    if (input.type === "checkbox") input.checked = Boolean(value);
    else input.value = String(value);
  }
  row.querySelector(".remove").addEventListener("click", () => {
    const container = row.parentElement;
    row.remove();
    renumber(kind);
    touched.add(kind);
    changed();
    const next = container.querySelector("input, select") || document.getElementById(`add-${kind === "datastores" ? "datastore" : kind.replace(/s$/, "")}`);
    next.focus();
  });
  document.getElementById(spec.container).append(row);
  renumber(kind);
  showKind(row);
  return row;
}

function renumber(kind) {
  const spec = ROWS[kind];
  const rows = document.getElementById(spec.container).querySelectorAll(":scope > .row");
  rows.forEach((row, i) => {
    const title = `${spec.title} ${i + 1}`;
    row.querySelector(".row-title").textContent = title;
    row.querySelector(".remove").setAttribute("aria-label", `Remove ${title.toLowerCase()}`);
    row.dataset.field = kind === "tags" ? `tags#${i}` : `${kind}[${i}]`;
    for (const part of row.querySelectorAll("[data-part]")) {
      const key = part.dataset.part;
      const path = kind === "tags" ? `tags#${i}.${key}` : `${kind}[${i}].${key}`;
      const id = `${kind}-${i}-${key}`;
      const input = part.querySelector("[data-key]");
      const error = part.querySelector(".field-error");
      part.dataset.field = path;
      input.id = id;
      input.name = path;
      error.id = `err-${path}`;
      input.setAttribute("aria-describedby", error.id);
      part.querySelector("label").htmlFor = id;
    }
  });
}

function showKind(row) {
  if (row.dataset.kind !== "compute") return;
  const instance = row.querySelector('[data-key="kind"]').value === "instance";
  for (const part of row.querySelectorAll(".cluster-only")) part.hidden = instance;
  for (const part of row.querySelectorAll(".instance-only")) part.hidden = !instance;
}

// ----- the request the form says -----------------------------------------------------------------

function text(id) {
  return document.getElementById(id).value.trim();
}

function number(value) {
  // A number the user typed goes as a number; anything else goes as typed, for the API to word the problem.
  return /^-?\d+$/.test(value.trim()) ? Number(value) : value;
}

function rowValues(kind) {
  return [...document.getElementById(ROWS[kind].container).querySelectorAll(":scope > .row")].map((row) => {
    const out = {};
    for (const input of row.querySelectorAll("[data-key]")) {
      if (input.closest("[hidden]")) continue;
      const value = input.value.trim();
      if (input.type === "number") out[input.dataset.key] = number(value);
      else if (value !== "" || !["display_name", "assigned_user"].includes(input.dataset.key)) out[input.dataset.key] = value;
    }
    return out;
  });
}

function collect() {
  const request = {
    team: text("team"),
    environment: text("environment"),
    region: text("region"),
    compute: rowValues("compute"),
    datastores: rowValues("datastores"),
    owners: rowValues("owners"),
    members: rowValues("members"),
    tags: {},
    container_registry: document.getElementById("container_registry").checked,
  };
  for (const [key, id] of [["workspace_name", "workspace_name"], ["profile", "profile"], ["subscription_id", "subscription_id"], ["resource_group", "resource_group"], ["callback_url", "callback_url"]]) {
    if (text(id)) request[key] = text(id);
  }
  const expires = text("expires_at");
  // The field shows a day; an expiry the user left on its day keeps its time.
  if (expires) request.expires_at = original && String(original.expires_at || "").slice(0, 10) === expires ? original.expires_at : `${expires}T00:00:00Z`;
  const existing = {};
  for (const input of document.querySelectorAll('[id^="existing-"]')) {
    if (input.value.trim()) existing[input.id.slice("existing-".length)] = input.value.trim();
  }
  if (Object.keys(existing).length) request.existing = existing;
  for (const input of document.querySelectorAll("#required-tags input")) {
    request.tags[input.dataset.tag] = input.value;
  }
  for (const { key, value } of rowValues("tags")) {
    if (key !== "" || value !== "") request.tags[key] = value;
  }
  return request;
}

function setForm(request) {
  for (const key of ["team", "environment", "region", "workspace_name", "profile", "subscription_id", "resource_group", "callback_url"]) {
    const input = document.getElementById(key);
    const value = request[key];
    if (value === undefined || value === null) continue;
    if (input.tagName === "SELECT" && ![...input.options].some((o) => o.value === value)) input.append(option(value));
    input.value = value;
  }
  document.getElementById("container_registry").checked = Boolean(request.container_registry);
  if (request.expires_at) document.getElementById("expires_at").value = String(request.expires_at).slice(0, 10);
  for (const [key, value] of Object.entries(request.existing || {})) {
    const input = document.getElementById(`existing-${key}`);
    if (input && value) input.value = value;
  }
  for (const kind of ["compute", "datastores", "owners", "members"]) {
    document.getElementById(ROWS[kind].container).replaceChildren();
    for (const values of request[kind] || []) addRow(kind, values);
  }
  document.getElementById("tag-rows").replaceChildren();
  for (const [key, value] of Object.entries(request.tags || {})) {
    const required = document.querySelector(`#required-tags input[data-tag="${CSS.escape(key)}"]`);
    if (required) required.value = value;
    else addRow("tags", { key, value });
  }
  describeProfile();
}

function editable(request) {
  // What GET shows that the form does not edit (the callback is shown masked) stays out of the patch,
  // and so does what the request leaves unset: the patch then holds only what the user changed.
  const out = compact(request);
  if (String(out.callback_url || "").endsWith("/***")) delete out.callback_url;
  return out;
}

// ----- problems, by field ------------------------------------------------------------------------

/** Where a problem's field path is shown: the field itself, else the nearest part of the form that holds it. */
function placeFor(path) {
  const tagMatch = /^tags\.(.+)$/.exec(path);
  let candidates = [path];
  if (tagMatch) {
    const name = tagMatch[1];
    const required = document.querySelector(`#required-tags [data-tag="${CSS.escape(name)}"]`);
    if (required) return required.closest("[data-field]");
    const rows = [...document.querySelectorAll("#tag-rows > .row")];
    const row = rows.find((r) => r.querySelector('[data-key="key"]').value.trim() === name);
    if (row) return row.querySelector('[data-part="key"]');
  }
  let p = path;
  while (p) {
    candidates.push(p);
    const cut = Math.max(p.lastIndexOf("."), p.lastIndexOf("["));
    p = cut > 0 ? p.slice(0, cut) : "";
  }
  for (const c of candidates) {
    const found = document.querySelector(`[data-field="${CSS.escape(c)}"]`);
    if (found) return found;
  }
  return null;
}

function clearProblems() {
  for (const error of form.querySelectorAll(".field-error")) {
    error.hidden = true;
    error.textContent = "";
  }
  for (const input of form.querySelectorAll('[aria-invalid="true"]')) input.removeAttribute("aria-invalid");
}

function visible(path) {
  if (showAll) return true;
  for (const t of touched) {
    if (path === t || path.startsWith(`${t}.`) || path.startsWith(`${t}[`) || t.startsWith(`${path}.`) || t.startsWith(`${path}[`)) return true;
  }
  return false;
}

function showProblems(problems) {
  clearProblems();
  const shown = [];
  for (const problem of problems) {
    if (!visible(problem.field)) continue;
    const place = placeFor(problem.field);
    shown.push({ problem, place });
    if (!place) continue;
    const error = place.querySelector(":scope > .field-error") || document.getElementById(`err-${place.dataset.field}`);
    if (error) {
      error.textContent = error.textContent ? `${error.textContent} ${problem.message}` : problem.message;
      error.hidden = false;
    }
    const input = place.querySelector(":scope > input, :scope > select");
    if (input) input.setAttribute("aria-invalid", "true");
  }
  summaryList.replaceChildren(
    ...shown.map(({ problem, place }) => {
      const target = place && (place.querySelector("input, select") || place);
      const label = `${problem.field}: ${problem.message}`;
      if (!target || !target.id) return el("li", {}, label);
      return el("li", {}, el("a", { href: `#${target.id}`, onclick: (e) => { e.preventDefault(); target.focus(); } }, label));
    }),
  );
  summary.hidden = shown.length === 0 || !showAll;
  return shown.length;
}

async function check() {
  const mine = ++checking;
  live.textContent = "Checking…";
  try {
    const result = await api("/api/validate", { method: "POST", body: collect() });
    if (mine !== checking) return null; // a newer check is under way
    const count = showProblems(result.problems);
    const hidden = result.problems.length - count;
    live.textContent = result.valid
      ? `Looks right.${result.approval.length ? " This request will wait for approval." : ""}${result.estimate ? ` Estimated ${money(result.estimate.monthly_max, result.estimate.currency)} a month at most.` : ""}`
      : `${result.problems.length} thing${result.problems.length === 1 ? "" : "s"} to fix${hidden > 0 ? ` (${hidden} in fields not filled yet)` : ""}.`;
    return result;
  } catch (err) {
    if (mine === checking) live.textContent = `Cannot check now: ${err.message}`;
    return null;
  }
}

function changed() {
  reviewPanel.hidden = true;
  clearTimeout(timer);
  timer = setTimeout(check, 350);
}

function describeProfile() {
  const name = text("profile");
  const profile = choices.profiles.find((p) => p.name === name);
  const hint = document.getElementById("profile-description");
  if (!profile) {
    hint.textContent = "No profile: the compute and datastores below are all there is.";
    return;
  }
  const compute = profile.compute.map((c) => `${c.name} (${c.vm_size}, ${c.kind === "instance" ? "instance" : `${c.min_nodes}–${c.max_nodes} nodes`})`);
  const stores = profile.datastores.map((d) => d.name);
  hint.textContent = `${profile.description} Gives compute ${compute.join(", ") || "none"}; datastores ${stores.join(", ") || "none"}${profile.container_registry ? "; a container registry" : ""}. Rows below add to these; a row with the name of one of them replaces it.`;
}

// ----- review and create ---------------------------------------------------------------------------

function table(headers, rows, { numeric = [] } = {}) {
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      {},
      el("thead", {}, el("tr", {}, headers.map((h, i) => el("th", { scope: "col", class: numeric.includes(i) ? "num" : null }, h)))),
      el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c, i) => el(i === 0 ? "th" : "td", { scope: i === 0 ? "row" : null, class: numeric.includes(i) ? "num" : null }, c))))),
    ),
  );
}

function renderEstimate(estimate) {
  if (!estimate) return el("p", { class: "muted" }, "No estimate: the policy has no prices.");
  return el(
    "div",
    {},
    table(
      ["Compute", "VM size", "Tier", "Idle a month", "At most a month"],
      estimate.lines.map((l) => [l.compute, l.vm_size, l.tier.replace("_", " "), money(l.monthly_idle, estimate.currency), money(l.monthly_max, estimate.currency)]),
      { numeric: [3, 4] },
    ),
    el("p", { id: "estimate-total" }, el("strong", {}, `${money(estimate.monthly_max, estimate.currency)} a month at most`), ` (${money(estimate.monthly_idle, estimate.currency)} idle). Prices of ${estimate.as_of}, ${estimate.source}.`),
    estimate.notes.length ? el("ul", { class: "muted" }, estimate.notes.map((n) => el("li", {}, n))) : null,
  );
}

function renderApproval(rules) {
  if (!rules.length) return el("p", { id: "approval-needed", class: "notice good" }, "No approval needed: it starts as soon as you create it.");
  return el(
    "div",
    { id: "approval-needed", class: "notice wait" },
    el("p", {}, el("strong", {}, "This request will wait for approval"), " before anything is created:"),
    el("ul", {}, rules.map((r) => el("li", {}, `${r.rule}: ${r.reasons.join("; ")} (${r.approvals} approval${r.approvals === 1 ? "" : "s"} from the ${r.approvers === "team" ? "team's approvers" : "platform's approvers"})`))),
  );
}

function renderPlan(plan) {
  const names = plan.names;
  const nameRows = [
    ["Subscription", names.subscription_id],
    ["Resource group", names.resource_group],
    ["Region", names.location],
    ["Workspace", names.workspace],
    ["Storage account", names.storage_account],
    ["Key vault", names.key_vault],
    ["Application Insights", names.application_insights],
    ["Log Analytics", names.log_analytics],
  ];
  if (names.container_registry) nameRows.push(["Container registry", names.container_registry]);
  reviewBody.replaceChildren(
    el("h3", {}, "Resources"),
    table(["What", "Name"], nameRows),
    el("h3", {}, `Steps (${plan.steps.length})`),
    el(
      "ol",
      { id: "plan-steps" },
      plan.steps.map((s) => el("li", {}, el("strong", {}, s.kind.replaceAll("_", " ")), s.resource_name ? ` ${s.resource_name}` : "", s.depends_on.length ? el("span", { class: "muted" }, ` after ${s.depends_on.join(", ")}`) : "")),
    ),
    el("h3", {}, "Estimated cost"),
    renderEstimate(plan.estimate),
    el("h3", {}, "Pre-flight"),
    plan.preflight.length
      ? el("ul", { id: "preflight" }, plan.preflight.map((p) => el("li", {}, `${p.field}: ${p.message}`)))
      : el("p", { id: "preflight" }, "Nothing found: the subscription has the quota, the names are free and the providers are registered."),
    el("h3", {}, "Approval"),
    renderApproval(plan.approval),
  );
}

const CHANGE_WORDS = { create: "created", update: "updated", delete: "deleted", unchanged: "unchanged" };

function renderDiff(diff) {
  const changes = diff.changes.filter((c) => c.change !== "unchanged");
  reviewBody.replaceChildren(
    el("p", {}, `Revision ${diff.revision}: ${changes.length ? `${changes.length} resource${changes.length === 1 ? "" : "s"} change.` : "nothing changes."}`),
    changes.length
      ? table(
          ["Resource", "Change", "What"],
          changes.map((c) => [
            `${c.kind.replaceAll("_", " ")} ${c.resource_name}`,
            CHANGE_WORDS[c.change] || c.change,
            c.fields.map((f) => `${f.field}: ${f.before ?? "(none)"} → ${f.after ?? "(none)"}`).join("; "),
          ]),
        )
      : null,
    el("h3", {}, "Approval"),
    diff.approval.length
      ? el("div", { id: "approval-needed", class: "notice wait" }, el("p", {}, el("strong", {}, "This change will wait for approval:")), el("ul", {}, diff.approval.map((a) => el("li", {}, a))))
      : el("p", { id: "approval-needed", class: "notice good" }, "No approval needed."),
  );
  createButton.disabled = changes.length === 0;
}

async function review(event) {
  event.preventDefault();
  showAll = true;
  reviewProblem.hidden = true;
  const result = await check();
  if (result === null) return;
  if (!result.valid) {
    summary.hidden = false;
    summary.focus();
    return;
  }
  const button = document.getElementById("review");
  button.disabled = true;
  live.textContent = "Planning…";
  try {
    if (requestId) {
      const patch = mergePatch(editable(original), compact(collect()));
      renderDiff(await api(`/api/workspaces/${requestId}/plan`, { method: "POST", body: patch, contentType: "application/merge-patch+json" }));
    } else {
      renderPlan(await api("/api/plan", { method: "POST", body: collect() }));
      createButton.disabled = false;
    }
    idempotencyKey = crypto.randomUUID();
    live.textContent = "";
    reviewPanel.hidden = false;
    document.getElementById("review-title").focus();
  } catch (err) {
    live.textContent = "";
    if (err instanceof ApiError && err.status === 422 && err.problem.errors) {
      showProblems(err.problem.errors);
      summary.hidden = false;
      summary.focus();
    } else {
      reviewPanel.hidden = false;
      reviewBody.replaceChildren();
      createButton.disabled = true;
      showProblem(reviewProblem, err);
    }
  } finally {
    button.disabled = false;
  }
}

async function create() {
  createButton.disabled = true;
  reviewProblem.hidden = true;
  try {
    const answer = requestId
      ? await api(`/api/workspaces/${requestId}`, { method: "PATCH", body: mergePatch(editable(original), compact(collect())), contentType: "application/merge-patch+json" })
      : await api("/api/workspaces", { method: "POST", body: collect(), headers: { "Idempotency-Key": idempotencyKey } });
    window.location.assign(`/workspaces/${encodeURIComponent(answer.id)}`);
  } catch (err) {
    createButton.disabled = false;
    if (err instanceof ApiError && err.status === 422 && err.problem.errors) {
      reviewPanel.hidden = true;
      showProblems(err.problem.errors);
      summary.hidden = false;
      summary.focus();
    } else {
      showProblem(reviewProblem, err);
    }
  }
}

// ----- a request pasted as JSON --------------------------------------------------------------------

const FORM_KEYS = new Set(["team", "environment", "region", "workspace_name", "profile", "compute", "datastores", "owners", "members", "tags", "container_registry", "subscription_id", "resource_group", "callback_url", "expires_at", "existing"]);

function importRequest() {
  const result = document.getElementById("import-result");
  let request;
  try {
    request = JSON.parse(document.getElementById("import-json").value);
  } catch (err) {
    result.className = "error";
    result.textContent = `That is not JSON: ${err.message}.`;
    return;
  }
  if (request === null || typeof request !== "object" || Array.isArray(request)) {
    result.className = "error";
    result.textContent = "Paste one request: a JSON object with team, environment, region and the rest.";
    return;
  }
  const left = Object.keys(request).filter((k) => !FORM_KEYS.has(k));
  setForm(request);
  for (const key of Object.keys(request)) touched.add(key);
  result.className = left.length ? "error" : "";
  result.textContent = left.length
    ? `Filled the form, but the form has no field for ${left.join(", ")}: those were left out.`
    : "Filled the form from the request. Check it, then Review + create.";
  changed();
}

// ----- start ---------------------------------------------------------------------------------------

async function start() {
  try {
    choices = await api("/api/choices");
    if (requestId) original = (await api(`/api/workspaces/${requestId}`)).request;
  } catch (err) {
    showProblem(document.getElementById("load-problem"), err);
    return;
  }
  if (!choices.teams.length && !requestId) {
    showProblem(document.getElementById("load-problem"), new ApiError(403, { title: "You are in no team", detail: "Ask the platform team to add one of your Entra groups to a team in the policy." }));
  }
  fill(document.getElementById("team"), choices.teams);
  fill(document.getElementById("environment"), choices.environments);
  fill(document.getElementById("region"), choices.regions);
  fill(document.getElementById("profile"), choices.profiles.map((p) => p.name), { blank: "No profile" });
  const tags = document.getElementById("required-tags");
  tags.replaceChildren(
    ...choices.required_tags.map((name) => {
      const id = `tag-${name}`;
      return el(
        "div",
        { class: "field", "data-field": `tags.${name}` },
        el("label", { for: id }, name, el("span", { class: "muted" }, " (required)")),
        el("input", { id, "data-tag": name, required: true, autocomplete: "off", "aria-describedby": `err-tags.${name}` }),
        el("p", { class: "field-error", id: `err-tags.${name}`, hidden: true }),
      );
    }),
  );
  if (original) {
    setForm(editable(original));
  } else if (choices.profiles.length) {
    document.getElementById("profile").value = choices.profiles[0].name;
  }
  describeProfile();
  for (const [button, kind] of [["add-compute", "compute"], ["add-datastore", "datastores"], ["add-owner", "owners"], ["add-member", "members"], ["add-tag", "tags"]]) {
    document.getElementById(button).addEventListener("click", () => {
      const row = addRow(kind, kind === "compute" ? { idle_seconds: 1800, min_nodes: 0, max_nodes: 1 } : {});
      touched.add(kind);
      row.querySelector("input, select").focus();
      changed();
    });
  }
  const mark = (event) => {
    const target = event.target;
    const path = target.closest("[data-field]")?.dataset.field;
    if (path) touched.add(path.replace(/^tags#\d+\.key$/, "tags").replace(/^tags#\d+\.value$/, "tags"));
    if (target.dataset.key === "kind") showKind(target.closest(".row"));
    if (target.id === "profile") describeProfile();
    changed();
  };
  form.addEventListener("input", mark);
  form.addEventListener("change", mark);
  form.addEventListener("submit", review);
  createButton.addEventListener("click", create);
  document.getElementById("back").addEventListener("click", () => {
    reviewPanel.hidden = true;
    document.getElementById("review").focus();
  });
  const fillButton = document.getElementById("import-fill");
  if (fillButton) fillButton.addEventListener("click", importRequest);
  form.setAttribute("aria-busy", "false");
  form.dataset.ready = "true";
  if (original) check();
}

start();
