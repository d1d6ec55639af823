// The requests waiting for the caller's decision (GET /api/approvals); deciding is on each request's page.
import { api, el, money, showProblem, when } from "./portal.js";

const $ = (name) => document.getElementById(name);

async function start() {
  try {
    const list = await api("/api/approvals");
    $("approvals").tBodies[0].replaceChildren(
      ...list.items.map((item) => {
        const a = item.approval;
        const est = a.estimate;
        return el(
          "tr",
          { "data-id": item.id },
          el("th", { scope: "row" }, el("a", { href: `/workspaces/${encodeURIComponent(item.id)}` }, item.workspace_name || item.id)),
          el("td", {}, item.team),
          el("td", {}, item.requester_name || item.requester),
          el("td", {}, a.rules.map((r) => `${r.rule}: ${r.reasons.join("; ")}`).join(" · ")),
          el("td", { class: "num" }, est ? money(est.monthly_max, est.currency) : "–"),
          el("td", {}, el("time", { datetime: a.due_at }, when(a.due_at))),
        );
      }),
    );
    $("count").textContent = list.items.length ? `${list.items.length} waiting.` : "Nothing waits for you.";
  } catch (err) {
    showProblem($("load-problem"), err);
  }
  document.getElementById("main").dataset.ready = "true";
}

start();
