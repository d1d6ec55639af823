"""Approvals in Teams end to end on the devhost: the bot's card is posted, clicks are verified and decided.

A loopback Bot Framework (tests/bot_framework.py) stands in for the Bot Connector, its OpenID
metadata, keys and token endpoint. alice asks for a prod GPU workspace over REST; the request waits
and its card is posted to the approvers' channel; a user without the approve role, a forged token, a
replayed activity and a card's seal pointed at another request are refused; fiona's click approves,
the workspace is made, and the card is updated to say who decided.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.bot_framework import CONVERSATION, FakeBotFramework, action, bot_framework, invoke
from tests.conftest import ROOT, example, poll
from tests.e2e.conftest import Devhost, started_devhost
from tests.tokens import rsa_key

FIONA_TEAMS = "bb22bb22-0000-4000-8000-00000000f10a"
FIONA = "7e1a2b3c-4d5e-4f6a-8b7c-9d0e1f2a3b07"  # approves for fraud-detection (policy/directory.example.yaml)
CAROL_TEAMS = "bb22bb22-0000-4000-8000-0000000ca201"
CAROL = "6a8f0b2d-4a7c-4dbe-9f6b-8d0f2c4e6a06"  # a fraud-detection member without Workspaces.Approve
TENANT = "5f1d3c2a-7b64-4e19-a8d0-3c2b1a0f9e87"  # the local directory's


@pytest.fixture(scope="module")
def teams_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devhost, FakeBotFramework]]:
    data = tmp_path_factory.mktemp("teams-approvals")
    with bot_framework() as fake:
        policy = yaml.safe_load((ROOT / "policy" / "default.yaml").read_text())
        policy["approvals"]["channels"] = {"teams_conversation": CONVERSATION, "teams_service_url": fake.service_url}
        policy["chat_users"] = [
            {
                "teams_user": FIONA_TEAMS,
                "principal": FIONA,
                "name": "Fiona Lead",
                "roles": ["Workspaces.Approve", "Workspaces.Request"],
            },
            {"teams_user": CAROL_TEAMS, "principal": CAROL, "name": "Carol Diaz", "roles": ["Workspaces.Request"]},
        ]
        (data / "policy.yaml").write_text(yaml.safe_dump(policy))
        with started_devhost(data, user="alice", VENDING_POLICY_FILE=str(data / "policy.yaml"), **fake.env()) as host:
            yield host, fake


def _waiting(host: Devhost, fake: FakeBotFramework, name: str) -> tuple[str, dict[str, Any]]:
    body = example("cpu-small.json") | {"team": "fraud-detection", "environment": "prod", "workspace_name": name}
    body["compute"] = [{"name": "gpu", "vm_size": "Standard_NC6s_v3", "min_nodes": 0, "max_nodes": 1}]
    made = host.http.post("/api/workspaces", json=body)
    assert made.status_code == 202, made.text
    assert made.json()["status"] == "awaiting_approval"
    rid: str = made.json()["id"]

    def posted() -> dict[str, Any] | None:
        return next((c for c in fake.posted_cards() if c["actions"][0]["data"]["request_id"] == rid), None)

    card: dict[str, Any] = poll(posted, timeout=60, every=0.1, what="the approval card to be posted")
    # The card's activity id is recorded once the connector answered: only then can it be updated.
    from adapters.sqlite_store import SqliteStore

    store = SqliteStore(host.data_dir / "state.db")

    def recorded() -> bool:
        record = store.get_request(rid)
        return bool(record and record.approval and record.approval.announced and record.approval.messages)

    poll(recorded, timeout=60, every=0.1, what="the posted card to be recorded")
    return rid, card


def _click(
    host: Devhost, fake: FakeBotFramework, act: dict[str, Any], *, user: str, token: str | None = None, **kw: Any
) -> httpx.Response:
    activity = invoke(service_url=fake.service_url, card_action=act, user=user, tenant=TENANT, **kw)
    # Sent without alice's token: the Bot Connector's is the only credential this endpoint reads.
    return httpx.post(
        f"{host.url}/api/chat/teams/bot",
        json=activity,
        headers={"authorization": f"Bearer {token or fake.token()}"},
        timeout=30,
    )


def _shown(card: dict[str, Any]) -> str:
    return "\n".join(e.get("text", "") for e in card["body"] if e["type"] == "TextBlock")


def _status(host: Devhost, rid: str) -> str:
    status: str = host.http.get(f"/api/workspaces/{rid}").json()["status"]
    return status


def test_a_prod_gpu_request_is_approved_from_its_teams_card(teams_host: tuple[Devhost, FakeBotFramework]) -> None:
    host, fake = teams_host
    rid, card = _waiting(host, fake, "mlw-fraud-teams")
    other_rid, _ = _waiting(host, fake, "mlw-fraud-teams2")
    shown = _shown(card)
    assert "Approval needed: mlw-fraud-teams" in shown and "Still needed: 1 more for prod-gpu" in shown
    facts = {f["title"]: f["value"] for e in card["body"] if e["type"] == "FactSet" for f in e["facts"]}
    assert facts["Requested by"] == "Alice Fraser" and facts["Team"] == "fraud-detection"
    assert facts["Estimate"].startswith("USD ")
    approve = action(card, "approve")

    # carol is known to the policy but may not approve: the one authorisation function says why.
    carol = _click(host, fake, approve, user=CAROL_TEAMS, activity_id="f:carol-1")
    assert carol.status_code == 200, carol.text
    assert carol.json()["statusCode"] == 200
    assert "Workspaces.Approve" in _shown(carol.json()["value"])
    # The same activity again: a replay, refused before anything is decided.
    replayed = _click(host, fake, approve, user=FIONA_TEAMS, activity_id="f:carol-1")
    assert replayed.status_code == 401 and "already received" in replayed.json()["detail"]
    # A token signed by another key under the published key id.
    forged = _click(host, fake, approve, user=FIONA_TEAMS, token=fake.token(key=rsa_key("forger")))
    assert forged.status_code == 401, forged.text
    # This card's seal sent for the other waiting request.
    pointed = approve | {"data": approve["data"] | {"request_id": other_rid}}
    elsewhere = _click(host, fake, pointed, user=FIONA_TEAMS)
    assert elsewhere.status_code == 200
    assert "were not made by the service" in _shown(elsewhere.json()["value"])
    assert (_status(host, rid), _status(host, other_rid)) == ("awaiting_approval", "awaiting_approval")
    assert not fake.requests("PUT")

    # fiona approves: the answer is the updated card, the workspace is made, the posted card is updated.
    approved = _click(host, fake, approve, user=FIONA_TEAMS, reason="budgeted for Q1")
    assert approved.status_code == 200, approved.text
    answer = approved.json()
    assert (answer["statusCode"], answer["type"]) == (200, "application/vnd.microsoft.card.adaptive")
    assert "Approved by Fiona Lead" in _shown(answer["value"]) and "actions" not in answer["value"]
    poll(lambda: _status(host, rid) == "succeeded", timeout=120, every=0.2, what="the approved request to succeed")
    assert _status(host, other_rid) == "awaiting_approval"
    updated = poll(fake.updated_cards, timeout=60, every=0.1, what="the posted card to be updated")
    assert "Approved: mlw-fraud-teams" in _shown(updated[0])
    assert "Approved by Fiona Lead at" in _shown(updated[0]) and "budgeted for Q1" in _shown(updated[0])
    assert "actions" not in updated[0]
    view = host.http.get(f"/api/workspaces/{rid}").json()
    decision = view["approval"]["decisions"][0]
    assert (decision["by"], decision["door"]) == (FIONA, "teams")
