"""Approval gates on the devhost, end to end: `python -m devhost` in its own process, called over HTTP as the
local directory's users (policy/directory.example.yaml) with tokens of the embedded identity provider.

The shipped policy's rule prod-gpu catches a GPU cluster in prod: such a request is planned and
pre-flighted, then waits in awaiting_approval, and nothing is written to Azure until it is approved.
alice (fraud-detection) asks; she cannot approve her own request; fiona (fraud-detection-leads, with
Workspaces.Approve) sees it in GET /api/approvals and approves, and the workspace is made. victor (a
platform approver) denies another with a reason, which the view and the events keep. A devhost whose
policy lets a request wait only a few seconds ends a waiting one expired on its lifecycle timer.

What reaches Azure is read from the ARM emulator's own log of write calls (`/_emulator/requests`: every
PUT, PATCH, POST and DELETE as sent) and its inventory (`/_emulator/resources`). Pre-flight's name checks
are POSTs on the subscription's providers, not in the resource group, and reads are not logged.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, example, poll
from tests.e2e.conftest import Devhost, started_devhost

PROD_SUB = "22222222-2222-2222-2222-222222222222"
PROD_GROUP = f"/subscriptions/{PROD_SUB}/resourcegroups/rg-ml-fraud-detection-prod"  # lower case, as compared
USERS = ("alice", "fiona", "victor")
OIDS = {  # policy/directory.example.yaml
    "alice": "1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01",
    "fiona": "7e1a2b3c-4d5e-4f6a-8b7c-9d0e1f2a3b07",
    "victor": "8f2b3c4d-5e6f-4a7b-9c8d-0e1f2a3b4c08",
}
FRAUD_LEADS = "5f0b7c1e-8a55-4a3e-9a9e-2d4b1f0c7a11"
WORKSPACE_APPROVERS = "8b3f6e2a-1c4d-4e5f-9a6b-7c8d9e0f1a2b"
SETTLED = ("succeeded", "failed", "cancelled", "denied", "expired", "rejected")


# ----- the devhosts and who calls them -----------------------------------------------------------------------


def login(host: Devhost, user: str) -> str:
    """`cli login <user>`, and the access token it keeps for the CLI."""
    done = host.cli("login", user)
    assert done.returncode == 0, done.stderr
    token: str = json.loads((host.data_dir / "cli-token.json").read_text())["access_token"]
    return token


class Users:
    """One devhost called as several users of its local directory."""

    def __init__(self, host: Devhost, *names: str) -> None:
        self.host = host
        self.tokens = {name: login(host, name) for name in names}

    def call(self, user: str, method: str, path: str, **kw: Any) -> Any:
        return self.host.http.request(method, path, headers={"Authorization": f"Bearer {self.tokens[user]}"}, **kw)

    def view(self, rid: str, user: str = "alice") -> dict[str, Any]:
        got = self.call(user, "GET", f"/api/workspaces/{rid}")
        assert got.status_code == 200, got.text
        view: dict[str, Any] = got.json()
        return view

    def events(self, rid: str, user: str = "alice") -> list[dict[str, Any]]:
        got = self.call(user, "GET", f"/api/workspaces/{rid}/events")
        assert got.status_code == 200, got.text
        items: list[dict[str, Any]] = got.json()["items"]
        return items

    def event(self, rid: str, name: str) -> dict[str, Any]:
        """Wait for the request's event of this name (an event is emitted after its record is written)."""
        found: dict[str, Any] = poll(
            lambda: next((e for e in self.events(rid) if e["name"] == name), None),
            timeout=30,
            every=0.2,
            what=f"event {name} of {rid}",
        )
        return found

    def settles(self, rid: str, timeout: float = 120) -> dict[str, Any]:
        found: dict[str, Any] = poll(
            lambda: (view := self.view(rid))["status"] in SETTLED and view,
            timeout=timeout,
            every=0.2,
            what=f"request {rid} to settle",
        )
        return found

    def waiting(self, name: str) -> str:
        """alice asks for a prod GPU workspace; it waits for approval."""
        made = self.call("alice", "POST", "/api/workspaces", json=prod_gpu(name))
        assert made.status_code == 202, made.text
        assert made.json()["status"] == "awaiting_approval", made.json()
        rid: str = made.json()["id"]
        return rid

    def writes(self) -> list[dict[str, Any]]:
        """The emulator's log of write calls, in order."""
        with self.host.emulator() as arm:
            logged: list[dict[str, Any]] = arm.get("/_emulator/requests").json()["requests"]
        return logged

    def resources(self) -> list[str]:
        with self.host.emulator() as arm:
            return [r["id"].lower() for r in arm.get("/_emulator/resources").json()["resources"]]


def prod_gpu(name: str) -> dict[str, Any]:
    """examples/cpu-small.json in prod with one small GPU cluster: the shipped rule prod-gpu catches it."""
    body = copy.deepcopy(example("cpu-small.json"))
    body.update(
        environment="prod",
        workspace_name=name,
        compute=[{"name": "gpu", "vm_size": "Standard_NC6s_v3", "min_nodes": 0, "max_nodes": 1}],
    )
    return body


def in_prod_group(writes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The writes into fraud-detection's prod resource group (the group itself included)."""
    return [w for w in writes if w["path"].lower() == PROD_GROUP or w["path"].lower().startswith(PROD_GROUP + "/")]


def naming(writes: list[dict[str, Any]], workspace: str) -> list[dict[str, Any]]:
    return [w for w in writes if f"/workspaces/{workspace}".lower() in w["path"].lower()]


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Users]:
    """A devhost with the shipped policy (plus the e2e teams), called as alice, fiona and victor."""
    with started_devhost(tmp_path_factory.mktemp("approvals"), user=None) as host:
        yield Users(host, *USERS)


# ----- the tests ---------------------------------------------------------------------------------------------


def test_a_prod_gpu_request_waits_writes_nothing_and_is_made_once_the_team_lead_approves(users: Users) -> None:
    name = "mlw-fraud-gpu-approved"
    rid = users.waiting(name)
    view = users.view(rid)
    assert view["status"] == "awaiting_approval"
    approval = view["approval"]
    assert approval["outcome"] == "pending" and approval["requested_by"] == OIDS["alice"]
    [rule] = approval["rules"]
    assert rule["rule"] == "prod-gpu" and rule["approvers"] == "team" and rule["approvals"] == 1
    assert "environment prod" in rule["reasons"] and any("GPU" in r for r in rule["reasons"]), rule
    assert set(rule["groups"]) == {FRAUD_LEADS, WORKSPACE_APPROVERS}
    assert approval["still_needed"] == {"prod-gpu": 1}
    # The estimate, from the policy's price table: one NC6s_v3 node (3.06 an hour) for 730 hours at most.
    estimate = view["estimate"]
    assert estimate["currency"] == "USD" and estimate["monthly_idle"] == 0
    gpu = next(line for line in estimate["lines"] if line["compute"] == "gpu")
    assert gpu["monthly_max"] == pytest.approx(3.06 * 730, abs=0.01)
    assert estimate["monthly_max"] == pytest.approx(sum(line["monthly_max"] for line in estimate["lines"]), abs=0.05)
    assert approval["estimate"] == estimate
    # Due when the shipped policy's 72 hours have passed.
    waited = datetime.fromisoformat(approval["due_at"]) - datetime.fromisoformat(approval["requested_at"])
    assert waited.total_seconds() == pytest.approx(72 * 3600, abs=1)
    assert {s["status"] for s in view["steps"]} == {"pending"}
    requested = users.event(rid, "WorkspaceApprovalRequested")
    assert "prod-gpu" in requested["message"], requested

    # Planned and pre-flighted, and nothing written into the resource group.
    assert in_prod_group(users.writes()) == [], users.writes()

    # The requester cannot approve her own request: alice has no Workspaces.Approve (the role is checked
    # first), and fiona, who has it and may ask too, cannot approve a request of hers.
    own = users.call("alice", "POST", f"/api/workspaces/{rid}/approve", json={})
    assert own.status_code == 403, own.text
    assert own.json()["rule"] == "MissingRole", own.json()
    assert users.view(rid)["status"] == "awaiting_approval"
    hers = users.call("fiona", "POST", "/api/workspaces", json=prod_gpu("mlw-fraud-gpu-fionas"))
    assert hers.status_code == 202 and hers.json()["status"] == "awaiting_approval", hers.text
    fionas = hers.json()["id"]
    refused = users.call("fiona", "POST", f"/api/workspaces/{fionas}/approve", json={})
    assert refused.status_code == 403, refused.text
    assert refused.json()["rule"] == "OwnRequest", refused.json()
    assert users.call("fiona", "POST", f"/api/workspaces/{fionas}/cancel").status_code == 200  # withdrawn
    assert users.view(fionas, "fiona")["status"] == "cancelled"

    # fiona approves for fraud-detection: she sees alice's waiting (never her own), and approves.
    listed = users.call("fiona", "GET", "/api/approvals")
    assert listed.status_code == 200, listed.text
    assert fionas not in [i["id"] for i in listed.json()["items"]]
    item = next((i for i in listed.json()["items"] if i["id"] == rid), None)
    assert item is not None, listed.json()
    assert item["approval"]["rules"][0]["rule"] == "prod-gpu" and item["names"]["workspace"] == name
    assert in_prod_group(users.writes()) == []
    done = users.call("fiona", "POST", f"/api/workspaces/{rid}/approve", json={"reason": "budgeted for Q1"})
    assert done.status_code == 200, done.text
    assert done.json()["outcome"] == "approved" and done.json()["recorded"] is True, done.json()

    made = users.settles(rid)
    assert made["status"] == "succeeded", made
    assert made["approval"]["outcome"] == "approved"
    [decision] = made["approval"]["decisions"]
    assert (decision["by"], decision["decision"], decision["reason"]) == (OIDS["fiona"], "approve", "budgeted for Q1")
    approved = users.event(rid, "WorkspaceApproved")
    assert approved["caller"] == OIDS["fiona"], approved
    users.event(rid, "WorkspaceProvisioned")
    workspace_id = made["outputs"]["workspace_id"]
    assert workspace_id.lower() == f"{PROD_GROUP}/providers/microsoft.machinelearningservices/workspaces/{name}"
    held = users.resources()
    assert workspace_id.lower() in held
    assert f"{workspace_id}/computes/gpu".lower() in held
    # The control for every `nothing written` here: the approved request's writes are in the log.
    assert in_prod_group(users.writes()) and naming(users.writes(), name), users.writes()
    # No longer waiting: not listed for anyone to decide.
    assert rid not in [i["id"] for i in users.call("fiona", "GET", "/api/approvals").json()["items"]]


def test_a_platform_approver_denies_with_a_reason_and_nothing_is_written(users: Users) -> None:
    name = "mlw-fraud-gpu-denied"
    before = len(users.writes())
    rid = users.waiting(name)
    assert rid in [i["id"] for i in users.call("victor", "GET", "/api/approvals").json()["items"]]
    reason = "no GPU budget left in prod this quarter"
    denied = users.call("victor", "POST", f"/api/workspaces/{rid}/deny", json={"reason": reason})
    assert denied.status_code == 200, denied.text
    assert denied.json()["outcome"] == "denied", denied.json()

    view = users.view(rid)
    assert view["status"] == "denied"
    assert view["approval"]["outcome"] == "denied"
    [decision] = view["approval"]["decisions"]
    assert (decision["by"], decision["decision"], decision["reason"]) == (OIDS["victor"], "deny", reason)
    assert view["error"]["code"] == "ApprovalDenied" and reason in view["error"]["message"], view["error"]
    assert {s["status"] for s in view["steps"]} <= {"pending", "cancelled", "skipped"}, view["steps"]
    event = users.event(rid, "WorkspaceApprovalDenied")
    assert event["caller"] == OIDS["victor"], event
    assert reason in (event["message"] or ""), event

    # Nothing for it reached Azure, then or after the denial (fraud-detection's prod group is shared with
    # the approved workspace above, so the log is read from this request's submission on).
    since = users.writes()[before:]
    assert in_prod_group(since) == [], since
    assert naming(users.writes(), name) == []
    assert not [r for r in users.resources() if f"/workspaces/{name}" in r]
    # Decided: not listed any more, and deciding again is a conflict.
    assert rid not in [i["id"] for i in users.call("fiona", "GET", "/api/approvals").json()["items"]]
    late = users.call("fiona", "POST", f"/api/workspaces/{rid}/approve", json={})
    assert late.status_code == 409, late.text


def test_a_request_nobody_decides_expires_on_the_lifecycle_timer(tmp_path_factory: pytest.TempPathFactory) -> None:
    data = tmp_path_factory.mktemp("approvals-expiry")
    policy = yaml.safe_load((ROOT / "policy" / "default.yaml").read_text())
    policy["approvals"]["timeout_hours"] = 0.0005  # 1.8 s
    path = data / "expiry-policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    with started_devhost(data, user=None, VENDING_POLICY_FILE=str(path), VENDING_LIFECYCLE_INTERVAL_S="0.5") as host:
        them = Users(host, "alice", "fiona")
        rid = them.waiting("mlw-fraud-gpu-expires")
        waiting = them.view(rid)
        due = datetime.fromisoformat(waiting["approval"]["due_at"])
        asked = datetime.fromisoformat(waiting["approval"]["requested_at"])
        assert (due - asked).total_seconds() == pytest.approx(1.8, abs=0.01)

        ended = them.settles(rid, timeout=60)
        assert ended["status"] == "expired", ended
        assert ended["approval"]["outcome"] == "expired" and ended["approval"]["decisions"] == []
        assert ended["error"]["code"] == "ApprovalExpired", ended["error"]
        event = them.event(rid, "WorkspaceApprovalExpired")
        assert event["status"] == "expired", event

        assert in_prod_group(them.writes()) == [], them.writes()
        assert not [r for r in them.resources() if r.startswith(PROD_GROUP)]
        assert rid not in [i["id"] for i in them.call("fiona", "GET", "/api/approvals").json()["items"]]
        late = them.call("fiona", "POST", f"/api/workspaces/{rid}/approve", json={})
        assert late.status_code == 409, late.text
