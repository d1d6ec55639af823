"""The attacks that issue 14 found, tried again on the devhost: each refused before any ARM write.

One devhost of its own, so that its emulator's write log (`/_emulator/requests`: every PUT, PATCH,
POST and DELETE that reached ARM) holds nothing but what these tests did. The policy is the shipped
one with both teams' dev workspaces in one shared resource group, so that a workspace of one team is
within reach of the other's requests and only the store's history stands between them. The callers
are the local directory's users, with tokens from the embedded issuer: bob (churn) attacks, alice
(fraud-detection) is the victim, olivia is an operator, admin may act for every team.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from models.identity import LOCAL_ISSUER_PATH
from tests.conftest import ROOT, example, poll
from tests.e2e.conftest import Devhost, started_devhost

SHARED_RG = "rg-ml-shared-dev"
DEV_SUB = "11111111-1111-1111-1111-111111111111"
PROD_SUB = "22222222-2222-2222-2222-222222222222"
FRAUD_PROD_RG = "rg-ml-fraud-detection-prod"
ALICE = "1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01"
BOB = "2e4b6d8f-0c3e-4f7a-9b2d-4f6b8d0f2c02"
CHURN_ANALYSTS = "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e"
STRANGER = "9a9a9a9a-0000-4000-8000-000000000001"  # in no group of the directory
PIPELINE_SP = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    data = tmp_path_factory.mktemp("attacks")
    policy = yaml.safe_load((ROOT / "policy" / "default.yaml").read_text())
    policy["environments"]["dev"]["resource_group"] = SHARED_RG
    path = data / "attack-policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    with started_devhost(data, user=None, VENDING_POLICY_FILE=str(path)) as running:
        yield running


def _token(host: Devhost, user: str) -> dict[str, str]:
    # As `cli login` asks: the embedded issuer's token endpoint, found through its discovery document.
    doc = host.http.get(f"{LOCAL_ISSUER_PATH}/.well-known/openid-configuration").json()
    answer = host.http.post(doc["token_endpoint"], data={"grant_type": "password", "username": user})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@pytest.fixture(scope="module")
def tokens(host: Devhost) -> dict[str, dict[str, str]]:
    return {user: _token(host, user) for user in ("alice", "bob", "olivia", "admin")}


def _writes(host: Devhost) -> list[dict[str, Any]]:
    return list(host.emulator().get("/_emulator/requests").json()["requests"])


def _forget_writes(host: Devhost) -> None:
    host.emulator().delete("/_emulator/requests")


def _finished(host: Devhost, rid: str, headers: dict[str, str]) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        view = host.http.get(f"/api/workspaces/{rid}", headers=headers).json()
        return view if view["status"] in ("succeeded", "failed", "rejected") else None

    return poll(done, timeout=120, every=0.2, what=f"request {rid} to finish")


def _fraud_request(name: str = "mlw-fraud-shared") -> dict[str, Any]:
    body = copy.deepcopy(example("cpu-small.json"))
    body["workspace_name"] = name
    return body


def _refused(resp: httpx.Response, status: int, rule: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    if rule is not None:
        assert body["rule"] == rule, body
    return body


def _rules(body: dict[str, Any]) -> set[str]:
    return {e["code"] for e in body.get("errors", [])}


@pytest.fixture(scope="module")
def victim(host: Devhost, tokens: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Alice's fraud-detection workspace in the shared resource group, provisioned as any member would."""
    made = host.http.post("/api/workspaces", json=_fraud_request(), headers=tokens["alice"])
    assert made.status_code == 202, made.text
    view = _finished(host, made.json()["id"], tokens["alice"])
    assert view["status"] == "succeeded", view
    assert view["requester"] == ALICE  # the token's oid, not a header
    return view


def test_a_member_of_a_team_provisions_as_before(victim: dict[str, Any]) -> None:
    steps = {s["id"]: s for s in victim["steps"]}
    assert {s["status"] for s in steps.values()} == {"succeeded"}
    assert victim["outputs"]["config_json"]["resource_group"] == SHARED_RG


def test_another_teams_requests_are_not_listed_and_not_found(
    host: Devhost, tokens: dict[str, dict[str, str]], victim: dict[str, Any]
) -> None:
    listed = host.http.get("/api/workspaces", headers=tokens["bob"]).json()["items"]
    assert victim["id"] not in {r["id"] for r in listed}
    for path in (f"/api/workspaces/{victim['id']}", f"/api/workspaces/{victim['id']}/events"):
        _refused(host.http.get(path, headers=tokens["bob"]), 404)
    assert host.http.get(f"/api/workspaces/{victim['id']}", headers=tokens["alice"]).status_code == 200
    # A header naming the requester changes nothing: who calls is what the token proves.
    spoofed = host.http.get(
        f"/api/workspaces/{victim['id']}",
        headers={**tokens["bob"], "x-ms-client-principal-name": "alice@vending.example"},
    )
    _refused(spoofed, 404)


def test_no_token_no_service(host: Devhost) -> None:
    for method, path in (("GET", "/api/workspaces"), ("POST", "/api/workspaces")):
        resp = host.http.request(method, path, json=_fraud_request() if method == "POST" else None)
        _refused(resp, 401)


def test_another_team_cannot_be_claimed(
    host: Devhost, tokens: dict[str, dict[str, str]], victim: dict[str, Any]
) -> None:
    _forget_writes(host)
    resp = host.http.post("/api/workspaces", json=_fraud_request("mlw-bob-as-fraud"), headers=tokens["bob"])
    _refused(resp, 403, "NotTeamMember")
    queued = host.http.post("/api/plan", json=_fraud_request("mlw-bob-as-fraud"), headers=tokens["bob"])
    _refused(queued, 403, "NotTeamMember")
    assert _writes(host) == []


def _churn(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "team": "churn",
        "environment": "dev",
        "region": "westeurope",
        "profile": "cpu-small",
        "owners": [{"object_id": CHURN_ANALYSTS, "type": "Group", "display_name": "churn-analysts"}],
        "tags": {"cost-center": "CC-3310"},
    }
    body.update(fields)
    return body


def test_the_prod_resource_group_of_another_team_is_out_of_reach(
    host: Devhost, tokens: dict[str, dict[str, str]], victim: dict[str, Any]
) -> None:
    _forget_writes(host)
    into_prod = _churn(subscription_id=PROD_SUB, resource_group=FRAUD_PROD_RG, workspace_name="mlw-in-fraud-prod")
    body = _refused(host.http.post("/api/workspaces", json=into_prod, headers=tokens["bob"]), 403)
    assert body["rule"] == "SubscriptionNotAllowed" and "SubscriptionNotAllowed" in _rules(body)
    same_sub = _churn(subscription_id=DEV_SUB, resource_group="rg-ml-fraud-detection-dev")
    body = _refused(host.http.post("/api/workspaces", json=same_sub, headers=tokens["bob"]), 403)
    assert body["rule"] == "ResourceGroupNotAllowed"
    # An admin acting for the team is held to the team's scopes too.
    body = _refused(host.http.post("/api/workspaces", json=into_prod, headers=tokens["admin"]), 403)
    assert body["rule"] == "SubscriptionNotAllowed"
    assert _writes(host) == []


def test_another_teams_resources_cannot_be_linked_nor_granted_to_strangers(
    host: Devhost, tokens: dict[str, dict[str, str]], victim: dict[str, Any]
) -> None:
    held = host.emulator().get("/_emulator/stats").json()["resources"]
    storage = next(r for r in held if "/storageAccounts/" in r and SHARED_RG in r)
    vault = next(r for r in held if "/vaults/" in r and SHARED_RG in r)
    _forget_writes(host)
    attack = _churn(
        workspace_name="mlw-churn-linked",
        existing={"storage_account_id": storage, "key_vault_id": vault},
        members=[
            {"object_id": STRANGER, "type": "User", "display_name": "someone"},
            {"object_id": PIPELINE_SP, "type": "ServicePrincipal", "display_name": "a pipeline"},
        ],
    )
    body = _refused(host.http.post("/api/workspaces", json=attack, headers=tokens["bob"]), 403)
    # Same resource group as the victim's (shared), so placement passes: ARM's tags say whose they are.
    assert {"ExistingNotTeamTagged", "PrincipalNotTeamMember", "ServicePrincipalNotAllowed"} <= _rules(body), body
    fields = {e["field"] for e in body["errors"]}
    assert {"existing.storage_account_id", "existing.key_vault_id", "members[0]", "members[1]"} <= fields
    assert _writes(host) == []
    # Nothing of the victim's changed: its resource group still says it is the team's.
    rg = host.emulator().get(
        f"/subscriptions/{DEV_SUB}/resourceGroups/{SHARED_RG}",
        params={"api-version": "2021-04-01"},
        headers={"Authorization": "Bearer test"},
    )
    assert rg.status_code == 200 and rg.json()["tags"]["team"] == "fraud-detection", rg.text


def test_another_teams_failed_workspace_cannot_be_adopted(
    host: Devhost, tokens: dict[str, dict[str, str]], victim: dict[str, Any]
) -> None:
    # Alice's second workspace fails (the emulator refuses its workspace PUT): its name claim is
    # released, but the store remembers whose it was.
    # azure-ai-ml creates a workspace through an ARM deployment named after it (<workspace>-<number>).
    faults = [
        {
            "type": "Microsoft.Resources/deployments",
            "method": "PUT",
            "name": "mlw-fraud-failed-*",
            "status": 400,
            "code": "InvalidTemplate",
            "message": "refused for the test",
            "times": None,
        }
    ]
    assert host.emulator().put("/_emulator/faults", json={"faults": faults}).status_code == 200
    try:
        made = host.http.post("/api/workspaces", json=_fraud_request("mlw-fraud-failed"), headers=tokens["alice"])
        assert made.status_code == 202, made.text
        assert _finished(host, made.json()["id"], tokens["alice"])["status"] == "failed", (
            [(w["method"], w["path"]) for w in _writes(host)],
            host.emulator().get("/_emulator/faults").json(),
        )
    finally:
        host.emulator().put("/_emulator/faults", json={"faults": []})
    _forget_writes(host)
    a100 = {"name": "a100", "vm_size": "Standard_NC24ads_A100_v4", "min_nodes": 0, "max_nodes": 10}
    for name in ("mlw-fraud-failed", "mlw-fraud-shared"):
        attack = _churn(workspace_name=name, compute=[a100])
        body = _refused(host.http.post("/api/workspaces", json=attack, headers=tokens["bob"]), 403)
        assert body["rule"] == "WorkspaceOfAnotherTeam", body
    # Ten always-on nodes are refused whoever's workspace it is.
    always_on = _churn(workspace_name="mlw-churn-a100", compute=[{**a100, "min_nodes": 10}])
    resp = host.http.post("/api/workspaces", json=always_on, headers=tokens["bob"])
    assert resp.status_code == 422 and "min_nodes" in resp.text, resp.text
    assert _writes(host) == []


def test_a_workspace_no_request_of_the_team_made_is_not_adopted(
    host: Devhost, tokens: dict[str, dict[str, str]]
) -> None:
    # Someone made a workspace in the shared resource group by hand, outside the service.
    ws = f"/subscriptions/{DEV_SUB}/resourceGroups/{SHARED_RG}/providers/Microsoft.MachineLearningServices/workspaces/mlw-by-hand"
    held = host.emulator().get("/_emulator/stats").json()["resources"]
    storage = next(r for r in held if "/storageAccounts/" in r and SHARED_RG in r)
    vault = next(r for r in held if "/vaults/" in r and SHARED_RG in r)
    insights = next(r for r in held if "/components/" in r and SHARED_RG in r)
    made = host.emulator().put(
        ws,
        params={"api-version": "2024-04-01"},
        json={
            "location": "westeurope",
            "identity": {"type": "SystemAssigned"},
            "properties": {
                "storageAccount": storage,
                "keyVault": vault,
                "applicationInsights": insights,
                "systemDatastoresAuthMode": "identity",  # the storage account allows no shared keys
            },
        },
        headers={"Authorization": "Bearer someone-else"},
    )
    assert made.status_code in (200, 201, 202), made.text
    _forget_writes(host)
    body = _refused(
        host.http.post("/api/workspaces", json=_churn(workspace_name="mlw-by-hand"), headers=tokens["bob"]), 403
    )
    assert body["rule"] == "WorkspaceNotMadeByTeam", body
    assert _writes(host) == []


def test_a_callback_to_loopback_is_refused(host: Devhost, tokens: dict[str, dict[str, str]]) -> None:
    _forget_writes(host)
    attack = _churn(
        workspace_name="mlw-churn-callback", callback_url=f"http://127.0.0.1:{host.url.rsplit(':', 1)[1]}/x"
    )
    resp = host.http.post("/api/workspaces", json=attack, headers=tokens["bob"])
    assert resp.status_code == 422 and "callback_url" in resp.text, resp.text
    assert _writes(host) == []


def test_dead_letters_are_for_operators_and_each_action_is_recorded(
    host: Devhost, tokens: dict[str, dict[str, str]]
) -> None:
    for user in ("bob", "alice"):
        _refused(host.http.get("/api/operator/deadletters", headers=tokens[user]), 403, "MissingRole")
        _refused(host.http.post("/api/operator/deadletters/x/replay", headers=tokens[user]), 403, "MissingRole")
    assert host.http.get("/api/operator/deadletters", headers=tokens["olivia"]).status_code == 200
    swept = host.http.post("/api/operator/sweep", headers=tokens["olivia"])
    assert swept.status_code == 200, swept.text
    events = [json.loads(line) for line in (host.data_dir / "events.jsonl").read_text().splitlines() if line]
    actions = [e for e in events if e["name"] == "VendingOperatorAction"]
    assert actions and actions[-1]["caller"] == "3d5c7e9a-1d4f-4a8b-8c3e-5a7c9e1b3d03"  # olivia
    refused = [e for e in events if e["name"] == "VendingAccessRefused" and e["act"] == "operate"]
    assert {e["caller"] for e in refused} >= {BOB, ALICE}


def test_the_queue_door_holds_a_sender_to_its_own_teams(
    host: Devhost, tokens: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    message = tmp_path / "as-fraud.json"
    message.write_text(json.dumps({**_fraud_request("mlw-queued-as-fraud"), "requested_by": "alice@vending.example"}))
    _forget_writes(host)
    sent = host.cli("--as", "bob", "onboard", str(message))
    assert sent.returncode == 0, sent.stderr

    def rejected() -> dict[str, Any] | None:
        items = host.http.get("/api/workspaces", headers=tokens["admin"], params={"status": "rejected"}).json()["items"]
        return next((r for r in items if r.get("requester") == BOB), None)

    record = poll(rejected, timeout=30, every=0.2, what="bob's onboarding message to be rejected")
    view = host.http.get(f"/api/workspaces/{record['id']}", headers=tokens["admin"]).json()
    assert any(p["code"] == "NotTeamMember" for p in view["problems"]), view
    assert _writes(host) == []
