"""The portal in real headless Chromium, as its users drive it: sign-in, the form, review, progress, approvals.

One devhost per module (the `portal` fixture); each test uses workspace names of its own so that the
policy's one-name rule and the team's vCPU limit never make one test depend on another. Every page runs
in the `context` fixture, which fails a test on any request that would leave the machine.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import screenshot
from tests.conftest import ROOT
from tests.e2e.conftest import Devhost

EXAMPLES = ROOT / "examples"
RUN = 60_000  # a whole run on the emulator takes a few seconds; allow a minute
CHECK = 10_000  # a live check (350 ms debounce and POST /api/validate)
PHONE = {"width": 390, "height": 844}
NAMES = {
    "alice": "Alice Fraser",
    "bob": "Bob Chen",
    "fiona": "Fiona Lead",
}


# ----- helpers -----------------------------------------------------------------------------------


def sign_in(page: Page, portal: Devhost, login: str, target: str = "/") -> None:
    """Sign in as a user does: visit a page signed out, be sent to /signin, choose the user, Sign in."""
    page.goto(f"{portal.url}{target}")
    expect(page).to_have_url(re.compile(r"/signin\?next="))
    page.get_by_label(NAMES[login]).check()
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{portal.url}{target}")
    expect(page.locator("#signed-in-as")).to_have_text(NAMES[login])


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/signin"))


def open_form(page: Page, portal: Devhost) -> None:
    page.goto(f"{portal.url}/new")
    expect(page.locator("#workspace-form")).to_have_attribute("data-ready", "true")


def call(page: Page, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """Call the API from the page as its own scripts do: the cookie, and the CSRF header from vending_csrf."""
    result: dict[str, Any] = page.evaluate(
        """async ([method, path, body]) => {
            const found = document.cookie.split("; ").find((c) => c.startsWith("vending_csrf="));
            const csrf = found ? decodeURIComponent(found.slice("vending_csrf=".length)) : "";
            const init = {method, credentials: "same-origin", headers: {Accept: "application/json"}};
            if (method !== "GET") init.headers["X-CSRF-Token"] = csrf;
            if (body !== null) {
                init.headers["Content-Type"] = "application/json";
                init.body = JSON.stringify(body);
            }
            const response = await fetch(path, init);
            const text = await response.text();
            let json = null;
            try { json = JSON.parse(text); } catch {}
            return {status: response.status, json, csrf_sent: csrf.length > 0};
        }""",
        [method, path, body],
    )
    return result


def create_by_api(page: Page, request: dict[str, Any]) -> str:
    """Ask for a workspace from a signed-in page (setup for tests whose subject is what comes after)."""
    answer = call(page, "POST", "/api/workspaces", request)
    assert answer["status"] in (200, 201, 202), answer
    return str(answer["json"]["id"])


def wait_for_status(page: Page, status: str, timeout: int = RUN) -> None:
    expect(page.locator("main#main")).to_have_attribute("data-status", status, timeout=timeout)


def all_steps_succeeded(page: Page) -> None:
    steps = page.locator("#steps > li")
    expect(steps.first).to_be_visible()
    expect(page.locator("#steps > li:not([data-status='succeeded'])")).to_have_count(0)
    assert steps.count() > 0


def cpu_request(name: str, max_nodes: int = 2) -> dict[str, Any]:
    example = json.loads((EXAMPLES / "cpu-small.json").read_text())
    example["workspace_name"] = name
    example["compute"] = [
        {"name": "cpu-cluster", "vm_size": "Standard_DS3_v2", "min_nodes": 0, "max_nodes": max_nodes},
    ]
    return dict(example)


def unnamed(page: Page) -> list[str]:
    """The visible inputs, selects, textareas and buttons with no accessible name (label, aria-label, text)."""
    found: list[str] = page.evaluate(
        """() => {
            const out = [];
            const named = (el) => {
                const ids = (el.getAttribute("aria-labelledby") || "").split(/\\s+/).filter(Boolean);
                if (ids.some((id) => (document.getElementById(id)?.textContent || "").trim())) return true;
                if ((el.getAttribute("aria-label") || "").trim()) return true;
                if (el.labels && [...el.labels].some((l) => l.textContent.trim())) return true;
                if (el.tagName === "BUTTON" && el.textContent.trim()) return true;
                if (el.tagName === "INPUT" && ["submit", "button"].includes(el.type) && el.value.trim()) return true;
                if ((el.getAttribute("title") || "").trim()) return true;
                return false;
            };
            for (const el of document.querySelectorAll("input, select, textarea, button")) {
                if (el.type === "hidden") continue;
                const box = el.getBoundingClientRect();
                const style = getComputedStyle(el);
                if (box.width === 0 || box.height === 0 || style.visibility === "hidden") continue;
                if (!named(el)) out.push(el.outerHTML.slice(0, 160));
            }
            return out;
        }"""
    )
    return found


def low_contrast(page: Page, selectors: str) -> list[str]:
    """The visible elements among `selectors` whose text contrast with what is behind them is under 4.5:1."""
    found: list[str] = page.evaluate(
        """(selectors) => {
            const rgba = (s) => {
                const m = s.match(/rgba?\\(([^)]+)\\)/);
                if (!m) return [0, 0, 0, 0];
                const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
                return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
            };
            const over = (top, bottom) => {
                const a = top[3];
                return [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a)).concat([1]);
            };
            const background = (el) => {
                const layers = [];
                for (let node = el; node; node = node.parentElement) {
                    const c = rgba(getComputedStyle(node).backgroundColor);
                    if (c[3] > 0) layers.push(c);
                    if (c[3] >= 1) break;
                }
                let colour = [255, 255, 255, 1];
                for (const layer of layers.reverse()) colour = over(layer, colour);
                return colour;
            };
            const lum = (c) => {
                const [r, g, b] = c.slice(0, 3).map((v) => {
                    v /= 255;
                    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
                });
                return 0.2126 * r + 0.7152 * g + 0.0722 * b;
            };
            const out = [];
            for (const el of document.querySelectorAll(selectors)) {
                const box = el.getBoundingClientRect();
                if (box.width === 0 || box.height === 0 || !el.textContent.trim()) continue;
                const style = getComputedStyle(el);
                const bg = background(el);
                let fg = rgba(style.color);
                fg = over(fg, bg);
                let ratio = (Math.max(lum(fg), lum(bg)) + 0.05) / (Math.min(lum(fg), lum(bg)) + 0.05);
                // A disabled button is exempt (WCAG 1.4.3: inactive components).
                if (el.disabled) continue;
                if (ratio < 4.5) out.push(`${el.tagName}.${el.className} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}:1`);
            }
            return out;
        }""",
        selectors,
    )
    return found


def no_horizontal_scroll(page: Page) -> None:
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways at {widths[1]} px: {widths[0]} px wide"


TEXT = "main p, main li, main label, main dt, main dd, main td, main th, main h1, main h2, main .muted, main .hint"
CONTROLS = "button, .button, .badge, .top a, main a"


# ----- 1. the create flow --------------------------------------------------------------------------


def test_alice_creates_a_workspace_from_the_example_and_downloads_its_config(
    portal: Devhost, context: BrowserContext, page: Page
) -> None:
    example = json.loads((EXAMPLES / "cpu-small.json").read_text())
    name = "fraud-cpu-small"

    # Signed out, the form sends her to sign in, and back to the form after.
    page.goto(f"{portal.url}/new")
    expect(page).to_have_url(re.compile(r"/signin\?next=%2Fnew|/signin\?next=/new"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshot(page, "portal-signin")
    page.get_by_label(NAMES["alice"]).check()
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{portal.url}/new")
    expect(page.locator("#workspace-form")).to_have_attribute("data-ready", "true")

    # She copies examples/cpu-small.json into the form, field by field.
    page.get_by_label("Team").select_option(example["team"])
    page.get_by_label("Environment").select_option(example["environment"])
    page.get_by_label("Region").select_option(example["region"])
    page.get_by_label("Workspace name").fill(name)
    page.get_by_label("Profile", exact=True).select_option(example["profile"])
    for i, owner in enumerate(example["owners"]):
        page.get_by_role("button", name="Add owner").click()
        page.locator(f"#owners-{i}-object_id").fill(owner["object_id"])
        page.locator(f"#owners-{i}-type").select_option(owner["type"])
        page.locator(f"#owners-{i}-display_name").fill(owner["display_name"])
    for tag, value in example["tags"].items():
        page.get_by_label(tag).fill(value)
    live = page.locator("#live-status")
    expect(live).to_contain_text("Looks right", timeout=CHECK)
    screenshot(page, "portal-form")

    # An owner's object id that is not a GUID: the problem shows next to that field, and only there.
    owner_id = page.get_by_role("textbox", name="Object id").first
    owner_error = page.locator("[id='err-owners[0].object_id']")
    owner_id.fill("not-a-guid")
    expect(owner_error).to_be_visible(timeout=CHECK)
    expect(owner_error).not_to_be_empty()
    expect(owner_id).to_have_attribute("aria-invalid", "true")
    expect(live).to_contain_text(re.compile(r"\d+ things? to fix"))
    assert page.evaluate(
        "(id) => document.getElementById(id).getAttribute('aria-describedby')", "owners-0-object_id"
    ) == ("err-owners[0].object_id")
    screenshot(page, "portal-form-error")
    owner_id.fill(example["owners"][0]["object_id"])
    expect(owner_error).to_be_hidden(timeout=CHECK)
    expect(owner_id).not_to_have_attribute("aria-invalid", "true")
    expect(live).to_contain_text("Looks right")

    # The review: the resources' names, the steps, an estimate, pre-flight, no approval.
    page.get_by_role("button", name="Review + create").click()
    review = page.locator("#review-panel")
    expect(review).to_be_visible(timeout=CHECK)
    expect(page.locator("#review-title")).to_be_focused()
    expect(page.locator("#plan-steps > li").first).to_be_visible()
    assert page.locator("#plan-steps > li").count() >= 4
    resources = review.locator("table").first
    expect(resources).to_contain_text(name)
    subscription = resources.locator("tr", has_text="Subscription").locator("td").inner_text().strip()
    resource_group = resources.locator("tr", has_text="Resource group").locator("td").inner_text().strip()
    assert subscription == "11111111-1111-1111-1111-111111111111"
    assert resource_group == "rg-ml-fraud-detection-dev"
    expect(page.locator("#estimate-total")).to_contain_text(re.compile(r"USD [\d,]+ a month at most"))
    expect(page.locator("#preflight")).to_be_visible()
    expect(page.locator("#preflight")).to_contain_text("Nothing found")
    expect(page.locator("#approval-needed")).to_contain_text("No approval needed")
    screenshot(page, "portal-review")

    # Create: to the request's page, which follows the run until every step has succeeded. The emulator
    # makes the cluster's create take a few seconds, so that the page is seen (and shot) mid-run.
    slow = {"type": "Microsoft.MachineLearningServices/workspaces/computes", "method": "PUT", "name": "cpu-cluster"}
    with portal.emulator() as emulator:
        assert emulator.put("/_emulator/faults", json={"faults": [slow | {"latency_s": 6}]}).status_code == 200
    try:
        page.get_by_role("button", name="Create", exact=True).click()
        expect(page).to_have_url(re.compile(r"/workspaces/[^/]+$"))
        request_id = page.url.rsplit("/", 1)[1]
        cluster = page.locator("#steps > li[data-step='compute:cpu-cluster']")
        expect(cluster).to_have_attribute("data-status", re.compile(r"running|waiting"), timeout=RUN)
        expect(page.locator("#steps > li[data-status='succeeded']").first).to_be_visible()
        wait_for_status(page, "provisioning")
        screenshot(page, "portal-request-in-progress")
    finally:
        with portal.emulator() as emulator:
            emulator.put("/_emulator/faults", json={"faults": []})
    wait_for_status(page, "succeeded")
    all_steps_succeeded(page)
    expect(page.locator("#progress")).to_have_js_property("value", page.locator("#steps > li").count())
    ready = page.locator("#ready")
    expect(ready).to_be_visible()
    expect(ready.get_by_role("link", name="Open in Azure ML Studio")).to_have_attribute(
        "href", re.compile(r"^https://")
    )
    expect(page.locator("#timeline > li").first).to_be_visible()
    screenshot(page, "portal-request-succeeded")

    with page.expect_download() as info:
        ready.get_by_role("link", name="Download config.json").click()
    download = info.value
    assert download.suggested_filename == "config.json"
    config = json.loads(Path(download.path()).read_text())
    assert config["subscription_id"] == subscription
    assert config["resource_group"] == resource_group
    assert config["workspace_name"] == name

    # The list shows it, succeeded, and the filter by name finds it.
    page.get_by_role("link", name="All workspaces").click()
    expect(page.locator("main#main")).to_have_attribute("data-ready", "true")
    row = page.locator(f"#workspaces tbody tr[data-id='{request_id}']")
    expect(row).to_be_visible()
    expect(row.get_by_role("link", name=name)).to_be_visible()
    expect(row).to_contain_text("succeeded")
    page.get_by_label("Name contains").fill("cpu-small")
    expect(row).to_be_visible()
    page.get_by_label("Name contains").fill("no-such-name")
    expect(row).to_be_hidden()
    page.get_by_label("Name contains").fill("")
    screenshot(page, "portal-list")


@pytest.mark.parametrize(
    "profile",
    [
        "",
        "cpu-small",
    ],
    ids=["no-profile", "with-profile"],
)
def test_too_many_nodes_is_said_at_the_rows_maximum_nodes_field(
    portal: Devhost, context: BrowserContext, page: Page, profile: str
) -> None:
    sign_in(page, portal, "alice", "/new")
    expect(page.locator("#workspace-form")).to_have_attribute("data-ready", "true")
    page.get_by_label("Workspace name").fill("fraud-nodes")
    page.get_by_label("Profile", exact=True).select_option(profile)
    page.get_by_label("cost-center").fill("CC-1042")
    page.get_by_role("button", name="Add compute").click()
    page.get_by_label("Name", exact=True).fill("big-cluster")
    page.get_by_label("VM size").select_option("Standard_DS3_v2")
    max_nodes = page.get_by_label("Maximum nodes")
    live = page.locator("#live-status")
    expect(live).to_contain_text("Looks right", timeout=CHECK)
    # More nodes than the policy allows (max_nodes_per_cluster: 10): said at the row's field, and only there.
    max_nodes.fill("11")
    nodes_error = page.locator("[id='err-compute[0].max_nodes']")
    expect(live).to_contain_text("1 thing to fix", timeout=CHECK)
    expect(nodes_error).to_be_visible()
    expect(nodes_error).to_contain_text("policy limit of 10")
    expect(max_nodes).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#err-compute")).to_be_hidden()
    max_nodes.fill("4")
    expect(nodes_error).to_be_hidden(timeout=CHECK)
    expect(max_nodes).not_to_have_attribute("aria-invalid", "true")
    expect(live).to_contain_text("Looks right")


# ----- 2. another team can neither see nor act -------------------------------------------------------


def test_another_team_cannot_see_or_act_on_a_request(portal: Devhost, context: BrowserContext, page: Page) -> None:
    sign_in(page, portal, "alice")
    request_id = create_by_api(page, cpu_request("fraud-private"))
    page.goto(f"{portal.url}/workspaces/{request_id}")
    wait_for_status(page, "succeeded")
    before = call(page, "GET", f"/api/workspaces/{request_id}")
    assert before["status"] == 200
    assert call(page, "GET", f"/api/workspaces/{request_id}/config.json")["status"] == 200
    sign_out(page)

    sign_in(page, portal, "bob")
    # The page itself: "Not found", as for a request that does not exist, and its edit page too.
    for path in (f"/workspaces/{request_id}", f"/workspaces/{request_id}/edit"):
        response = page.goto(f"{portal.url}{path}")
        assert response is not None and response.status == 404, path
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        expect(page.locator("body")).not_to_contain_text("fraud-private")
        expect(page.locator("#steps")).to_have_count(0)
    page.goto(f"{portal.url}/workspaces/{request_id}")
    screenshot(page, "portal-not-found")

    # The list does not show it.
    page.goto(f"{portal.url}/")
    expect(page.locator("main#main")).to_have_attribute("data-ready", "true")
    expect(page.locator(f"#workspaces tbody tr[data-id='{request_id}']")).to_have_count(0)
    expect(page.locator("#workspaces")).not_to_contain_text("fraud-private")

    # The API from bob's page, with a good CSRF token (a call he may make shows it is good): all refused.
    control = call(page, "POST", "/api/validate", {"team": "churn", "environment": "dev", "region": "westeurope"})
    assert control["status"] == 200 and control["csrf_sent"], control
    for method, path, body in [
        ("GET", f"/api/workspaces/{request_id}", None),
        ("GET", f"/api/workspaces/{request_id}/events", None),
        ("GET", f"/api/workspaces/{request_id}/config.json", None),
        ("POST", f"/api/workspaces/{request_id}/cancel", None),
        ("POST", f"/api/workspaces/{request_id}/approve", {}),
        ("POST", f"/api/workspaces/{request_id}/deny", {"reason": "not mine"}),
        ("DELETE", f"/api/workspaces/{request_id}?purge=true", None),
    ]:
        answer = call(page, method, path, body)
        assert answer["status"] == 404, (method, path, answer)
    sign_out(page)

    # Alice's request is as it was.
    sign_in(page, portal, "alice", f"/workspaces/{request_id}")
    wait_for_status(page, "succeeded")
    after = call(page, "GET", f"/api/workspaces/{request_id}")
    assert after["status"] == 200
    for key in ("status", "revision", "run", "updated_at", "steps"):
        assert after["json"].get(key) == before["json"].get(key), key


# ----- 3. an approval in the browser ------------------------------------------------------------------


def test_a_prod_gpu_request_waits_for_the_team_approver_and_then_runs(
    portal: Devhost, context: BrowserContext, page: Page
) -> None:
    name = "fraud-gpu-prod"
    sign_in(page, portal, "alice", "/new")
    expect(page.locator("#workspace-form")).to_have_attribute("data-ready", "true")
    page.get_by_label("Team").select_option("fraud-detection")
    page.get_by_label("Environment").select_option("prod")
    page.get_by_label("Region").select_option("westeurope")
    page.get_by_label("Workspace name").fill(name)
    page.get_by_label("Profile", exact=True).select_option("")
    page.get_by_role("button", name="Add compute").click()
    page.get_by_label("Name", exact=True).fill("gpu-cluster")
    page.get_by_label("VM size").select_option("Standard_NC6s_v3")
    page.get_by_label("Maximum nodes").fill("1")
    page.get_by_label("cost-center").fill("CC-1042")
    live = page.locator("#live-status")
    expect(live).to_contain_text("will wait for approval", timeout=CHECK)

    page.get_by_role("button", name="Review + create").click()
    needed = page.locator("#approval-needed")
    expect(needed).to_contain_text("This request will wait for approval", timeout=CHECK)
    expect(needed).to_contain_text("prod-gpu")
    expect(needed).not_to_contain_text("costly")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page).to_have_url(re.compile(r"/workspaces/[^/]+$"))
    request_id = page.url.rsplit("/", 1)[1]
    wait_for_status(page, "awaiting_approval")
    expect(page.locator("#approval")).to_be_visible()
    expect(page.locator("#approval")).to_contain_text("prod-gpu")
    # The requester cannot approve her own request: no Approve or Deny button for her.
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    expect(page.get_by_role("button", name="Deny")).to_have_count(0)
    expect(page.get_by_role("button", name="Withdraw")).to_be_visible()
    assert call(page, "POST", f"/api/workspaces/{request_id}/approve", {})["status"] == 403
    screenshot(page, "portal-awaiting-approval")
    sign_out(page)

    # Fiona, who leads fraud-detection, finds it on /approvals and approves it on its page.
    sign_in(page, portal, "fiona", "/approvals")
    expect(page.locator("main#main")).to_have_attribute("data-ready", "true")
    row = page.locator(f"#approvals tbody tr[data-id='{request_id}']")
    expect(row).to_be_visible()
    expect(row).to_contain_text("prod-gpu")
    expect(row).to_contain_text(NAMES["alice"])
    screenshot(page, "portal-approvals")
    row.get_by_role("link", name=name).click()
    expect(page).to_have_url(f"{portal.url}/workspaces/{request_id}")
    wait_for_status(page, "awaiting_approval")
    page.get_by_label("Reason").fill("GPU for the fraud model, agreed")
    page.get_by_role("button", name="Approve").click()
    wait_for_status(page, "succeeded")
    all_steps_succeeded(page)
    expect(page.locator("#decisions")).to_contain_text("Fiona Lead approved")
    expect(page.get_by_role("button", name="Approve")).to_be_hidden()


# ----- 4. a change and a teardown -------------------------------------------------------------------


def test_a_change_to_max_nodes_is_reviewed_applied_and_then_the_workspace_is_deleted(
    portal: Devhost, context: BrowserContext, page: Page
) -> None:
    sign_in(page, portal, "alice")
    request_id = create_by_api(page, cpu_request("fraud-change", max_nodes=2))
    page.goto(f"{portal.url}/workspaces/{request_id}")
    wait_for_status(page, "succeeded")
    expect(page.locator("#facts")).to_contain_text("1 (run")

    page.get_by_role("link", name="Change").click()
    expect(page).to_have_url(f"{portal.url}/workspaces/{request_id}/edit")
    expect(page.locator("#workspace-form")).to_have_attribute("data-ready", "true")
    max_nodes = page.locator("#compute-0-max_nodes")
    expect(max_nodes).to_have_value("2")
    max_nodes.fill("3")
    page.get_by_role("button", name="Review changes").click()
    review = page.locator("#review-panel")
    expect(review).to_be_visible(timeout=CHECK)
    expect(page.locator("#review-title")).to_be_focused()
    expect(review).to_contain_text("Revision 2")
    change = review.locator("tbody tr", has_text="cpu-cluster")
    expect(change).to_contain_text("updated")
    expect(change).to_contain_text(re.compile(r"2 → 3"))
    expect(page.locator("#approval-needed")).to_contain_text("No approval needed")
    screenshot(page, "portal-review-changes")
    page.get_by_role("button", name="Apply changes").click()
    expect(page).to_have_url(f"{portal.url}/workspaces/{request_id}")
    expect(page.locator("#facts")).to_contain_text("2 (run", timeout=RUN)
    wait_for_status(page, "succeeded")
    all_steps_succeeded(page)
    answer = call(page, "GET", f"/api/workspaces/{request_id}")
    assert answer["json"]["revision"] == 2
    assert answer["json"]["request"]["compute"][0]["max_nodes"] == 3

    page.get_by_role("button", name="Delete…").click()
    dialog = page.get_by_role("dialog", name="Delete this workspace?")
    expect(dialog).to_be_visible()
    dialog.get_by_label(re.compile("Purge")).check()
    dialog.get_by_role("button", name="Delete", exact=True).click()
    expect(dialog).to_be_hidden()
    wait_for_status(page, "deleted")
    expect(page.locator("#state")).to_contain_text("Deleted")
    expect(page.get_by_role("link", name="Change")).to_have_count(0)


# ----- 5. accessible, and at phone width ------------------------------------------------------------


def test_the_form_works_from_the_keyboard(portal: Devhost, context: BrowserContext, page: Page) -> None:
    sign_in(page, portal, "alice", "/new")
    expect(page.locator("#workspace-form")).to_have_attribute("data-ready", "true")

    def tab_to(element_id: str, limit: int = 120) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement && document.activeElement.id") == element_id:
                return
        raise AssertionError(f"Tab never reached #{element_id}")

    # From the top of the page, Tab reaches the name; typed in, then on to Review + create.
    page.locator("body").focus()
    tab_to("workspace_name")
    page.keyboard.type("fraud-keys")
    tab_to("review")
    expect(page.get_by_role("button", name="Review + create")).to_be_focused()
    # The required tag is empty: Enter submits, and focus goes to the error summary.
    page.keyboard.press("Enter")
    summary = page.locator("#summary")
    expect(summary).to_be_visible(timeout=CHECK)
    expect(summary).to_be_focused()
    expect(summary).to_contain_text("cost-center")
    # Its link takes her to the field; she types the tag and submits again.
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#tag-cost-center")).to_be_focused()
    page.keyboard.type("CC-1042")
    tab_to("review")
    page.keyboard.press("Enter")
    expect(page.locator("#review-panel")).to_be_visible(timeout=CHECK)
    expect(page.locator("#review-title")).to_be_focused()
    expect(summary).to_be_hidden()


def test_every_page_fits_a_phone_names_its_controls_and_has_readable_text(
    portal: Devhost, context: BrowserContext, page: Page
) -> None:
    page.goto(f"{portal.url}/signin")
    assert unnamed(page) == []
    assert low_contrast(page, TEXT + ", " + CONTROLS) == []
    # The two checks find what they look for: a bare input, and grey text on white (2.3:1).
    # (The colour is set through the CSSOM: the page's CSP drops inline style attributes.)
    page.evaluate(
        """() => {
            document.querySelector("main").insertAdjacentHTML("beforeend",
                '<div id="probe"><input id="probe-input"><p>faint</p></div>');
            document.querySelector("#probe p").style.color = "#aaaaaa";
        }"""
    )
    assert len(unnamed(page)) == 1
    assert [found.split('"')[1] for found in low_contrast(page, TEXT)] == ["faint"]
    page.evaluate("() => document.getElementById('probe').remove()")
    sign_in(page, portal, "alice")
    request_id = create_by_api(page, cpu_request("fraud-phone", max_nodes=1))
    page.set_viewport_size(PHONE)

    # The form, with a row of each kind and a field error showing.
    open_form(page, portal)
    for button in ("Add compute", "Add datastore", "Add owner", "Add member", "Add tag"):
        page.get_by_role("button", name=button).click()
    page.locator("#owners-0-object_id").fill("not-a-guid")
    expect(page.locator("[id='err-owners[0].object_id']")).to_be_visible(timeout=CHECK)
    page.locator("#advanced > summary").click()
    no_horizontal_scroll(page)
    assert unnamed(page) == []
    assert low_contrast(page, TEXT + ", " + CONTROLS + ", .field-error") == []
    page.locator("#advanced > summary").click()
    page.locator("#owners-0-object_id").fill("")
    screenshot(page, "portal-form-phone")

    # The request page, once it has succeeded (the steps, the timeline, the ready box, the actions).
    page.goto(f"{portal.url}/workspaces/{request_id}")
    wait_for_status(page, "succeeded")
    no_horizontal_scroll(page)
    assert unnamed(page) == []
    assert low_contrast(page, TEXT + ", " + CONTROLS) == []
    page.get_by_role("button", name="Delete…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    no_horizontal_scroll(page)
    assert unnamed(page) == []
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    wait_for_status(page, "succeeded")
    screenshot(page, "portal-request-phone")

    # The list (its table may scroll inside .table-wrap, the page may not).
    page.goto(f"{portal.url}/")
    expect(page.locator("main#main")).to_have_attribute("data-ready", "true")
    expect(page.locator(f"#workspaces tbody tr[data-id='{request_id}']")).to_be_visible()
    no_horizontal_scroll(page)
    assert unnamed(page) == []
    assert low_contrast(page, TEXT + ", " + CONTROLS) == []
    screenshot(page, "portal-list-phone")

    # The approvals page, as an approver sees it.
    sign_out(page)
    sign_in(page, portal, "fiona", "/approvals")
    expect(page.locator("main#main")).to_have_attribute("data-ready", "true")
    no_horizontal_scroll(page)
    assert unnamed(page) == []
    assert low_contrast(page, TEXT + ", " + CONTROLS) == []
