"""A workspace's whole life on the devhost, over HTTP as a user drives it (docs/lifecycle.md).

One devhost of its own, whose policy adds the lifecycle's rules: `test` workspaces expire seconds after
they are made, and the lifecycle timer ticks twice a second, so that an expiry and a drift check come in
the time of a test. Each test has a team of its own, so that what the emulator holds of one request is
told apart by its resource group (`rg-ml-{team}-{environment}`). What the emulator holds is read through
its own endpoints: `/_emulator/resources` (what exists), `/_emulator/deleted` (what soft-delete keeps),
`/_emulator/stats` (creates and deletes per resource id), and its ARM locks API, as an operator would use.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import ROOT, example, poll
from tests.e2e.conftest import E2E_GROUP, Devhost, started_devhost

SUB = "11111111-1111-1111-1111-111111111111"
LOCKS_API = "2020-05-01"  # ManagementLocks_*, Microsoft.Authorization/locks/stable/2020-05-01/locks.json
STORAGE_API = "2026-09-01"
RESOURCES_API = "2025-04-01"
ML_API = "2024-10-01-preview"
ALICE = "1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01"  # in the local directory's fraud-detection group
LEADS = "5f0b7c1e-8a55-4a3e-9a9e-2d4b1f0c7a11"  # fraud-detection-leads, nested in fraud-detection
TEAMS = ["life-whole", "life-purge", "life-lock", "life-byo", "life-expiry"]
AI_ADMINISTRATOR = "b78c5d69-af96-48a3-bf8d-a8b4d589de94"  # Azure AI Administrator, Azure ML's own grant
WORKSPACE_TYPE = "Microsoft.MachineLearningServices/workspaces"
SETTLED = ("succeeded", "failed", "cancelled", "deleted", "rejected")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    data = tmp_path_factory.mktemp("lifecycle")
    policy = yaml.safe_load((ROOT / "policy" / "default.yaml").read_text())
    for team in TEAMS:
        policy["teams"][team] = {"groups": [E2E_GROUP]}
    policy["lifecycle"] = {
        # A `test` workspace lives about 3 s after it is accepted: the timer then tears it down.
        "expiry": {"test": {"default_days": 3 / 86400, "max_days": 30, "remind_days": 0}},
        "drift_interval_s": 0,  # only when asked (POST .../drift), so that nothing else reads the cloud
    }
    path = data / "lifecycle-policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    with started_devhost(data, VENDING_POLICY_FILE=str(path), VENDING_LIFECYCLE_INTERVAL_S="0.5") as running:
        yield running


# ----- helpers ----------------------------------------------------------------------------------------------


def _body(team: str, **extra: Any) -> dict[str, Any]:
    body = copy.deepcopy(example("cpu-small.json"))
    body.update(team=team, members=[{"object_id": ALICE, "type": "User", "display_name": "alice"}], **extra)
    return body


def _view(host: Devhost, rid: str) -> dict[str, Any]:
    answer = host.http.get(f"/api/workspaces/{rid}")
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


def _settles(host: Devhost, rid: str, timeout: float = 120) -> dict[str, Any]:
    """Wait for a request's run to end (any settled status) and return it."""

    def settled() -> dict[str, Any] | None:
        view = _view(host, rid)
        return view if view["status"] in SETTLED else None

    found: dict[str, Any] = poll(settled, timeout=timeout, every=0.2, what=f"request {rid} to settle")
    return found


def _ends(host: Devhost, rid: str, status: str, timeout: float = 120) -> dict[str, Any]:
    view = _settles(host, rid, timeout)
    assert view["status"] == status, view
    return view


def _events(host: Devhost, rid: str) -> list[str]:
    return [e["name"] for e in host.http.get(f"/api/workspaces/{rid}/events").json()["items"]]


def _has_events(host: Devhost, rid: str, *names: str) -> list[str]:
    """Wait until the timeline holds each name (a status is written just before its event)."""
    found: list[str] = poll(
        lambda: (seen := _events(host, rid)) and set(names) <= set(seen) and seen,
        timeout=30,
        every=0.2,
        what=f"events {names} of {rid}",
    )
    return found


def _submit(host: Devhost, body: dict[str, Any]) -> str:
    answer = host.http.post("/api/workspaces", json=body)
    assert answer.status_code == 202, answer.text
    rid: str = answer.json()["id"]
    return rid


def _group(team: str, environment: str = "dev") -> str:
    return f"/subscriptions/{SUB}/resourceGroups/rg-ml-{team}-{environment}"


def _inventory(arm: httpx.Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = arm.get("/_emulator/resources").json()["resources"]
    return items


def _held_in(arm: httpx.Client, group: str) -> list[str]:
    """Ids of what the emulator holds in a resource group, the group included."""
    marker = group.lower()
    return [r["id"] for r in _inventory(arm) if r["id"].lower() == marker or r["id"].lower().startswith(marker + "/")]


def _soft_deleted_in(arm: httpx.Client, group: str) -> dict[str, str]:
    """Name -> id of the vaults and workspaces of a resource group that soft-delete holds."""
    deleted = arm.get("/_emulator/deleted").json()
    return {
        item["name"].lower() if "name" in item else item["id"].rsplit("/", 1)[-1].lower(): item["id"]
        for kind in ("vaults", "workspaces")
        for item in deleted[kind]
        if item["id"].lower().startswith(group.lower() + "/")
    }


def _deleted(arm: httpx.Client) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = arm.get("/_emulator/deleted").json()
    return found


def _arm(host: Devhost) -> httpx.Client:
    """The emulator as someone working behind the service's back reaches it: its ARM API, any bearer token."""
    arm = host.emulator()
    arm.headers["Authorization"] = "Bearer someone-else"
    arm.timeout = httpx.Timeout(30)
    return arm


def _steps(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in view["steps"]}


def _left_nothing(arm: httpx.Client, view: dict[str, Any], team: str) -> None:
    """Assert that a torn-down request left nothing in Azure but the soft-deleted names its record lists."""
    teardown = view["teardown"]
    assert teardown["remaining"] == [], teardown
    assert _held_in(arm, _group(team)) == []
    listed = {s["name"].lower(): s["resource_id"].lower() for s in teardown["soft_deleted"]}
    held = {name: rid.lower() for name, rid in _soft_deleted_in(arm, _group(team)).items()}
    assert held == listed, (held, listed)


# ----- the tests --------------------------------------------------------------------------------------------


def test_a_workspace_is_cancelled_retried_patched_checked_for_drift_and_torn_down(host: Devhost) -> None:
    team = "life-whole"
    arm = _arm(host)
    # The workspace takes long to make (its PUT accepted, its operation 10 minutes long on the emulator's clock),
    # so that the request is certainly in flight when it is cancelled.
    slow = {"faults": [{"type": WORKSPACE_TYPE, "method": "PUT", "latency_s": 600, "times": None}]}
    assert arm.put("/_emulator/faults", json=slow).status_code == 200
    rid = _submit(host, _body(team))
    poll(
        lambda: _steps(_view(host, rid)).get("workspace", {}).get("status") == "waiting",
        timeout=60,
        every=0.2,
        what="the workspace step to wait on Azure",
    )
    cancel = host.http.post(f"/api/workspaces/{rid}/cancel")
    assert cancel.status_code == 202, cancel.text
    cancelled = _ends(host, rid, "cancelled")
    steps = _steps(cancelled)
    assert steps["workspace"]["status"] == "cancelled"
    assert steps["compute:cpu-cluster"]["status"] == "cancelled"
    assert steps["storage"]["status"] == "succeeded"
    assert cancelled["error"]["code"] == "Cancelled" and "retry" in cancelled["error"]["message"]
    assert host.http.post(f"/api/workspaces/{rid}/cancel").status_code == 200  # cancelling again: as it is
    # The operation Azure was running goes on: let its time pass, and the retry finds it made.
    assert arm.put("/_emulator/faults", json={"faults": []}).status_code == 200
    assert arm.put("/_emulator/clock", json={"advance_s": 601}).status_code == 200
    retry = host.http.post(f"/api/workspaces/{rid}/retry")
    assert retry.status_code == 202, retry.text
    made = _ends(host, rid, "succeeded")
    assert {s["status"] for s in made["steps"]} == {"succeeded"}
    assert _steps(made)["storage"]["attempts"] == steps["storage"]["attempts"]  # what had succeeded is not run again
    workspace_id = made["outputs"]["workspace_id"]
    assert arm.get("/_emulator/stats").json()["creates"][workspace_id.lower()] == 1

    # A revision: a compute added, the member removed, a tag changed.
    request = made["request"]
    compute = [*request["compute"], {"name": "cpu-big", "vm_size": "Standard_DS4_v2", "min_nodes": 0, "max_nodes": 2}]
    patch = {"compute": compute, "members": [], "tags": {"cost-center": "CC-2077"}}
    preview = host.http.post(f"/api/workspaces/{rid}/plan", json=patch)
    assert preview.status_code == 200, preview.text
    planned = {c["step_id"]: c["change"] for c in preview.json()["changes"]}
    assert planned["compute:cpu-big"] == "create"
    assert "delete" in {planned[s] for s in planned if s.startswith("access:")}
    changed = host.http.patch(f"/api/workspaces/{rid}", json=patch)
    assert changed.status_code == 202, changed.text
    assert changed.json()["revision"] == 2
    updated = _ends(host, rid, "succeeded")
    assert updated["operation"] == "update" and updated["revision"] == 2
    actions = {s["id"]: s["action"] for s in updated["steps"]}
    assert actions["compute:cpu-big"] == "apply" and actions["compute:cpu-cluster"] == "keep"
    removed = [s for s, a in actions.items() if a == "delete"]
    assert removed and all(s.startswith("access:") for s in removed), actions
    big = _steps(updated)["compute:cpu-big"]["outputs"]["id"]
    assert arm.get(f"{big}?api-version={ML_API}").status_code == 200
    tags = arm.get(f"{workspace_id}?api-version={ML_API}").json()["tags"]
    assert tags["cost-center"] == "CC-2077"
    assignments = arm.get(
        f"{_group(team)}/providers/Microsoft.Authorization/roleAssignments",
        params={"api-version": "2022-04-01", "$filter": f"principalId eq '{ALICE}'"},
    ).json()["value"]
    assert assignments == []  # the member's roles are gone
    # The same patch again changes nothing: no new revision.
    again = host.http.patch(f"/api/workspaces/{rid}", json=patch)
    assert again.status_code == 200 and again.json()["started"] is False
    revisions = host.http.get(f"/api/workspaces/{rid}/revisions").json()["items"]
    assert [(r["number"], r["status"]) for r in revisions] == [(1, "applied"), (2, "applied")]
    assert revisions[1]["request"]["tags"]["cost-center"] == "CC-2077" and revisions[1]["request"]["members"] == []

    # Drift: a cluster resized behind the service's back is found by the next check.
    cluster = _steps(updated)["compute:cpu-cluster"]["outputs"]["id"]
    body = arm.get(f"{cluster}?api-version={ML_API}").json()
    body["properties"]["properties"]["scaleSettings"]["maxNodeCount"] = 9
    resized = arm.put(f"{cluster}?api-version={ML_API}", json={k: body[k] for k in ("location", "properties")})
    assert resized.status_code in (200, 201), resized.text
    assert host.http.post(f"/api/workspaces/{rid}/drift").status_code == 202
    drift = poll(
        lambda: (d := host.http.get(f"/api/workspaces/{rid}/drift").json()) and d["findings"] and d,
        timeout=30,
        every=0.2,
        what="the drift check to find the resized cluster",
    )
    # Only the resize: the revision's tags, say, are on every resource as the service last applied them.
    [found] = drift["findings"]
    assert found["step_id"] == "compute:cpu-cluster" and found["drift"] == "changed", drift
    assert found["actual"] == "9" and found["expected"] == "4", found

    # Teardown, soft-deleting: nothing of it is left but the names soft-delete holds, as its record says.
    deleting = host.http.delete(f"/api/workspaces/{rid}")
    assert deleting.status_code == 202, deleting.text
    gone = _ends(host, rid, "deleted")
    assert gone["teardown"]["purge"] is False
    assert {s["kind"] for s in gone["teardown"]["soft_deleted"]} == {"workspace", "key-vault"}
    _left_nothing(arm, gone, team)
    stats = arm.get("/_emulator/stats").json()
    ours = [k for k in stats["creates"] if k.startswith(_group(team).lower())]
    assert ours and all(stats["deletes"].get(k, 0) == 1 for k in ours), {k: stats["deletes"].get(k) for k in ours}
    assert host.http.delete(f"/api/workspaces/{rid}").status_code == 200  # deleting again: as it is
    names = _has_events(
        host,
        rid,
        "WorkspaceCancelRequested",
        "WorkspaceRequestCancelled",
        "WorkspaceRetryRequested",
        "WorkspaceProvisioned",
        "WorkspaceUpdateRequested",
        "WorkspaceUpdated",
        "WorkspaceDriftDetected",
        "WorkspaceDeleteRequested",
        "WorkspaceDeleted",
    )
    order = [
        "WorkspaceCancelRequested",
        "WorkspaceRequestCancelled",
        "WorkspaceRetryRequested",
        "WorkspaceProvisioned",
        "WorkspaceUpdateRequested",
        "WorkspaceUpdated",
        "WorkspaceDriftDetected",
        "WorkspaceDeleteRequested",
        "WorkspaceDeleted",
    ]
    assert [n for n in names if n in order] == order, names


def test_a_purged_teardown_frees_the_names_for_the_same_request_again(host: Devhost) -> None:
    team = "life-purge"
    arm = _arm(host)
    body = _body(team)
    rid = _submit(host, body)
    _ends(host, rid, "succeeded")
    assert host.http.delete(f"/api/workspaces/{rid}", params={"purge": "true"}).status_code == 202
    gone = _ends(host, rid, "deleted")
    assert gone["teardown"]["purge"] is True
    # The workspace is purged; the shipped policy's vaults have purge protection, so the vault stays soft-deleted
    # until its purge date, and the record says so (the policy recovers it for a new request of the same name).
    [held] = gone["teardown"]["soft_deleted"]
    assert held["kind"] == "key-vault" and held["until"] and "purge protection" in held["purge"], held
    _left_nothing(arm, gone, team)
    assert gone["outputs"]["workspace_id"].lower() not in {w["id"].lower() for w in _deleted(arm)["workspaces"]}
    again = _submit(host, body)
    made = _ends(host, again, "succeeded")
    assert made["outputs"]["workspace_id"] == gone["outputs"]["workspace_id"]
    assert _steps(made)["key-vault"]["outputs"]["id"].lower() == held["resource_id"].lower()


def test_a_lock_stops_the_teardown_and_a_retry_finishes_it_once_the_lock_is_gone(host: Devhost) -> None:
    team = "life-lock"
    arm = _arm(host)
    rid = _submit(host, _body(team))
    made = _ends(host, rid, "succeeded")
    storage = _steps(made)["storage"]["outputs"]["id"]
    lock = f"{storage}/providers/Microsoft.Authorization/locks/keep-the-data"
    put = arm.put(f"{lock}?api-version={LOCKS_API}", json={"properties": {"level": "CanNotDelete"}})
    assert put.status_code in (200, 201), put.text
    assert host.http.delete(f"/api/workspaces/{rid}").status_code == 202
    failed = _ends(host, rid, "failed")
    assert failed["operation"] == "delete"
    error = failed["error"]
    assert error["code"] == "ScopeLocked", error
    assert "the CanNotDelete lock 'keep-the-data'" in error["message"] and lock in error["message"], error
    # The lock forbids deleting anything at or under the account: the roles granted on it first, so the teardown
    # stops there, and what waits for them is not reached.
    remaining = {r["step_id"]: r for r in failed["teardown"]["remaining"]}
    locked = {sid for sid, r in remaining.items() if r["code"] == "ScopeLocked"}
    assert locked and all(sid.startswith("access:") for sid in locked), remaining
    for sid in locked:
        assert (
            "keep-the-data" in remaining[sid]["reason"] and f"/api/workspaces/{rid}/retry" in remaining[sid]["reason"]
        )
    assert {"storage", "workspace", "resource-group"} <= set(remaining)
    assert "not reached" in remaining["storage"]["reason"] or "skipped" in remaining["storage"]["reason"]
    assert storage not in failed["teardown"]["deleted"]
    assert arm.get(f"{storage}?api-version={STORAGE_API}").status_code == 200
    _has_events(host, rid, "WorkspaceDeleteFailed")
    assert arm.delete(f"{lock}?api-version={LOCKS_API}").status_code == 200
    retry = host.http.post(f"/api/workspaces/{rid}/retry")
    assert retry.status_code == 202, retry.text
    gone = _ends(host, rid, "deleted")
    _left_nothing(arm, gone, team)


def test_a_resource_the_team_brought_is_never_deleted(host: Devhost) -> None:
    team = "life-byo"
    arm = _arm(host)
    group = _group(team)
    account = f"{group}/providers/Microsoft.Storage/storageAccounts/stlifebyo0001"
    made_group = arm.put(f"{group}?api-version={RESOURCES_API}", json={"location": "westeurope"})
    assert made_group.status_code in (200, 201), made_group.text
    brought = arm.put(
        f"{account}?api-version={STORAGE_API}",
        json={
            "location": "westeurope",
            "sku": {"name": "Standard_LRS"},
            "kind": "StorageV2",
            "tags": {"team": team},
            "properties": {"allowSharedKeyAccess": False, "isHnsEnabled": False},
        },
    )
    assert brought.status_code in (200, 202), brought.text
    poll(
        lambda: (
            arm.get(f"{account}?api-version={STORAGE_API}").json()["properties"]["provisioningState"] == "Succeeded"
        ),
        timeout=30,
        what="the brought storage account",
    )
    rid = _submit(host, _body(team, existing={"storage_account_id": account}))
    _ends(host, rid, "succeeded")
    assert host.http.delete(f"/api/workspaces/{rid}").status_code == 202
    gone = _ends(host, rid, "deleted")
    kept = {k["step_id"]: k for k in gone["teardown"]["kept"]}
    assert kept["storage"]["resource_id"].lower() == account.lower(), kept
    assert "resource-group" in kept  # it was there before: not the service's to delete
    assert gone["teardown"]["remaining"] == []
    assert account.lower() not in {d.lower() for d in gone["teardown"]["deleted"]}
    # Left: the group and the account as they were brought, and beside them only what is not the service's to
    # delete: the data a datastore pointed at (a container in the account), the group's deployment history, and
    # the role Azure ML itself gave the workspace's identity on the group (docs/emulator.md).
    left = {r.lower() for r in _held_in(arm, group)} - {group.lower(), account.lower()}
    containers = {r for r in left if r.startswith(account.lower() + "/blobservices/default/containers/")}
    history = {r for r in left if "/providers/microsoft.resources/deployments/" in r}
    azure_own = {
        r
        for r in left
        if r.startswith(group.lower() + "/providers/microsoft.authorization/roleassignments/")
        and arm.get(f"{r}?api-version=2022-04-01").json()["properties"]["roleDefinitionId"].endswith(AI_ADMINISTRATOR)
    }
    assert left == containers | history | azure_own, left - containers - history - azure_own
    assert containers == {f"{account.lower()}/blobservices/default/containers/training-data"}
    assert arm.get("/_emulator/stats").json()["deletes"].get(account.lower(), 0) == 0
    deletes = [r["path"].lower() for r in arm.get("/_emulator/requests").json()["requests"] if r["method"] == "DELETE"]
    assert account.lower() not in deletes


def test_a_workspace_past_its_expiry_is_torn_down_by_the_service(host: Devhost) -> None:
    team = "life-expiry"
    arm = _arm(host)
    rid = _submit(host, _body(team, environment="test"))
    view = _view(host, rid)
    assert view["expires_at"] is not None
    names = poll(
        lambda: _view(host, rid)["status"] == "deleted" and _has_events(host, rid, "WorkspaceExpired"),
        timeout=120,
        every=0.3,
        what="the expired workspace to be torn down",
    )
    gone = _view(host, rid)
    assert names.index("WorkspaceProvisioned") < names.index("WorkspaceExpired")
    expired = [
        e
        for e in host.http.get(f"/api/workspaces/{rid}/events").json()["items"]
        if e["name"] in ("WorkspaceExpired", "WorkspaceDeleteRequested")
    ]
    assert {e["caller"] for e in expired} == {"workspace-vending"}
    teardown = gone["teardown"]
    assert teardown["remaining"] == []
    assert _held_in(arm, _group(team, "test")) == []
    listed = {s["name"].lower() for s in teardown["soft_deleted"]}
    assert set(_soft_deleted_in(arm, _group(team, "test"))) == listed
