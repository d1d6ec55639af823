"""End to end on embedded defaults: submit over HTTP, watch every step succeed against the ARM emulator."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.conftest import LAST_EVENTS, assert_closes_the_timeline, example, poll
from tests.e2e.conftest import Devhost


def _wait(devhost: Devhost, rid: str, timeout: float = 90) -> dict[str, Any]:
    """Wait for a request to finish, and for its timeline: its final status is written just before its last events."""

    def done() -> dict[str, Any] | None:
        view = devhost.http.get(f"/api/workspaces/{rid}").json()
        if view["status"] not in ("succeeded", "failed", "rejected"):
            return None
        if view["status"] == "rejected":
            return view
        names = [e["name"] for e in devhost.http.get(f"/api/workspaces/{rid}/events").json()["items"]]
        if not LAST_EVENTS.intersection(names):
            return None
        if view["status"] == "succeeded" and names.count("WorkspaceStepSucceeded") < len(view["steps"]):
            return None
        return view

    return poll(done, timeout=timeout, every=0.2, what=f"request {rid} to finish")


def test_a_request_reaches_succeeded_with_outputs_and_a_timeline(devhost: Devhost) -> None:
    resp = devhost.http.post("/api/workspaces", json=example("gpu-research.json"))
    assert resp.status_code == 202
    rid = resp.json()["id"]
    assert resp.headers["location"] == f"{devhost.url}/api/workspaces/{rid}"
    view = _wait(devhost, rid)
    assert view["status"] == "succeeded", view
    assert {s["status"] for s in view["steps"]} == {"succeeded"}
    assert len(view["steps"]) == 17
    ws_id = view["outputs"]["workspace_id"]
    assert ws_id.endswith("/providers/Microsoft.MachineLearningServices/workspaces/mlw-vision-test")
    assert view["outputs"]["config_json"] == {
        "subscription_id": "11111111-1111-1111-1111-111111111111",
        "resource_group": "rg-ml-vision-test",
        "workspace_name": "mlw-vision-test",
    }
    steps = {s["id"]: s for s in view["steps"]}
    assert steps["storage"]["outputs"]["hierarchical_namespace"] is True
    assert steps["compute:gpu-cluster"]["outputs"]["vm_size"] == "Standard_NC24ads_A100_v4"
    held = devhost.emulator().get("/_emulator/stats").json()["resources"]
    assert ws_id in held
    assert any(r.endswith("/computes/gpu-cluster") for r in held)
    events = devhost.http.get(f"/api/workspaces/{rid}/events").json()["items"]
    names = [e["name"] for e in events]
    assert names[0] == "WorkspaceRequestAccepted"
    assert_closes_the_timeline(names, "WorkspaceProvisioned")
    assert Counter(names)["WorkspaceStepSucceeded"] == 17
    # The same request again is refused: its workspace name is held by a live request.
    again = devhost.http.post("/api/workspaces", json=example("gpu-research.json"))
    assert again.status_code == 409 and again.json()["existing_id"] == rid


def test_a_bad_request_gets_every_problem_as_problem_json(devhost: Devhost) -> None:
    resp = devhost.http.post("/api/workspaces", json=example("bad-request.json"))
    assert resp.status_code == 422
    assert resp.headers["content-type"] == "application/problem+json"
    fields = {e["field"] for e in resp.json()["errors"]}
    assert {"team", "environment", "region", "compute[0].max_nodes", "compute[2].name", "tags"} <= fields
    assert devhost.http.get("/api/workspaces/unknown").status_code == 404


def test_an_onboarding_message_with_three_environments(devhost: Devhost) -> None:
    out = devhost.cli("onboard", "examples/onboarding.json", "--message-id", "onboard-churn-1")
    assert out.returncode == 0, out.stderr
    found = poll(
        lambda: (
            (items := devhost.http.get("/api/workspaces", params={"team": "churn"}).json()["items"])
            and len(items) == 3
            and items
        ),
        timeout=30,
        what="three requests from the onboarding message",
    )
    assert sorted(r["environment"] for r in found) == ["dev", "prod", "test"]
    assert {r["source"] for r in found} == {"queue"}
    for r in found:
        assert _wait(devhost, r["id"])["status"] == "succeeded"
    # The same message again (a redelivery) makes no new requests.
    devhost.cli("onboard", "examples/onboarding.json", "--message-id", "onboard-churn-1")
    assert len(devhost.http.get("/api/workspaces", params={"team": "churn"}).json()["items"]) == 3


def test_many_requests_in_parallel_one_create_per_resource(devhost: Devhost) -> None:
    bodies = [example("cpu-small.json") | {"team": f"par-{i:02d}", "environment": "test"} for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        ids = [r.json()["id"] for r in pool.map(lambda b: devhost.http.post("/api/workspaces", json=b), bodies)]
    views = [_wait(devhost, rid, timeout=180) for rid in ids]
    assert {v["status"] for v in views} == {"succeeded"}
    stats = devhost.emulator().get("/_emulator/stats").json()
    ours = {k: n for k, n in stats["creates"].items() if "/rg-ml-par-" in k}
    planned = sum(len(v["steps"]) for v in views)
    # Every step's resource, plus per request: the blob container, the Log Analytics workspace, the ARM
    # deployment of the workspace and the owners' three further role assignments (docs/access.md: a
    # step reports its first). Each created exactly once. (What Azure makes itself with a workspace, its
    # system datastores and its identity's role, is not a create of ours.)
    assert len(ours) == planned + 6 * len(views)
    assert set(ours.values()) == {1}
    for v in views:
        for step in v["steps"]:
            assert step["outputs"]["id"].lower() in ours, step["id"]
    for v in views:
        events = devhost.http.get(f"/api/workspaces/{v['id']}/events").json()["items"]
        starts = Counter((e["step"], e["attempt"]) for e in events if e["name"] == "WorkspaceStepStarted")
        assert set(starts.values()) == {1}  # no step attempt was started by two workers


def test_the_cli_follows_a_request_to_the_end(devhost: Devhost) -> None:
    out = devhost.cli("submit", "examples/cpu-small.json", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "succeeded" in out.stdout and "Studio:" in out.stdout
    assert "✔ workspace" in out.stdout
    listing = devhost.cli("list", "--team", "fraud-detection")
    assert "succeeded" in listing.stdout
