"""Approval in Slack, end to end on the devhost: a prod GPU request asked over REST waits; its approval
message is posted to the approvers' channel; a click by someone without the right, a forged button and a
replayed signed click are refused; the approver's click approves it, it is provisioned, and the message
shows who decided.

A local receiver stands in for the Slack Web API (chat.postMessage, chat.update) and the clicks'
response_url.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import yaml

from tests.capture import Capture, capture_server
from tests.conftest import ROOT, example, poll
from tests.e2e.conftest import Devhost, started_devhost

SLACK_SECRET = "slack-signing-secret-for-approvals-01"
CHANNEL = "C0APPROVERS"
FIONA_SLACK, FIONA = "U0FIONA", "7e1a2b3c-4d5e-4f6a-8b7c-9d0e1f2a3b07"  # fraud-detection's approver
CAROL_SLACK, CAROL = "U0CAROL", "6a8f0b2d-4a7c-4dbe-9f6b-8d0f2c4e6a06"  # a fraud-detection member, no approve role
TS = "1700000000.000300"


@pytest.fixture(scope="module")
def approving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devhost, Capture]]:
    data = tmp_path_factory.mktemp("approvals-slack")
    policy = yaml.safe_load((ROOT / "policy" / "default.yaml").read_text())
    policy["approvals"]["channels"] = {"slack_channel": CHANNEL}
    policy["chat_users"] = [
        {
            "slack_user": FIONA_SLACK,
            "principal": FIONA,
            "name": "Fiona Lead",
            "roles": ["Workspaces.Approve", "Workspaces.Request"],
        },
        {"slack_user": CAROL_SLACK, "principal": CAROL, "name": "Carol Diaz", "roles": ["Workspaces.Request"]},
    ]
    (data / "policy.yaml").write_text(yaml.safe_dump(policy))
    with capture_server() as receiver:
        receiver.reply = json.dumps({"ok": True, "channel": CHANNEL, "ts": TS}).encode()
        env = {
            "VENDING_POLICY_FILE": str(data / "policy.yaml"),
            "SLACK_SIGNING_SECRET": SLACK_SECRET,
            "SLACK_BOT_TOKEN": "xoxb-approvals-token-0123456789",
            "SLACK_API_URL": f"{receiver.url}/slack-api/",
        }
        with started_devhost(data, user="alice", **env) as host:
            yield host, receiver


def _signed(host: Devhost, body: str) -> httpx.Response:
    stamp = str(int(time.time()))
    mac = hmac.new(SLACK_SECRET.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": stamp,
        "x-slack-signature": f"v0={mac}",
    }
    return host.http.post("/api/chat/slack/interactions", content=body, headers=headers)


def _click(
    host: Devhost, receiver: Capture, user: str, action: str, token: str, answer: str, reason: str = ""
) -> httpx.Response:
    """Press a button of the approval message as a Slack user; the answer goes to /slack-response/<answer>."""
    payload = {
        "type": "block_actions",
        "user": {"id": user},
        "channel": {"id": CHANNEL},
        "container": {"type": "message", "message_ts": TS, "channel_id": CHANNEL},
        "response_url": f"{receiver.url}/slack-response/{answer}",
        "trigger_id": f"trigger.{answer}",
        "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}},
        "actions": [{"action_id": action, "block_id": "actions", "value": token}],
    }
    clicked = _signed(host, urlencode({"payload": json.dumps(payload)}))
    assert clicked.status_code == 200, clicked.text
    return clicked


def _answer(receiver: Capture, answer: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = poll(
        lambda: receiver.bodies(f"/slack-response/{answer}"), timeout=30, what=f"the answer to {answer}"
    )
    return found[0]


def _status(host: Devhost, rid: str) -> str:
    got = host.http.get(f"/api/workspaces/{rid}")
    assert got.status_code == 200, got.text
    status: str = got.json()["status"]
    return status


def test_a_prod_gpu_request_is_approved_in_slack_and_provisioned(approving: tuple[Devhost, Capture]) -> None:
    host, receiver = approving
    body = example("cpu-small.json") | {
        "team": "fraud-detection",
        "environment": "prod",
        "workspace_name": "mlw-gpu-e2e",
    }
    body["compute"] = [{"name": "gpu", "vm_size": "Standard_NC6s_v3", "min_nodes": 0, "max_nodes": 1}]
    made = host.http.post("/api/workspaces", json=body)
    assert made.status_code == 202, made.text
    assert made.json()["status"] == "awaiting_approval"
    rid: str = made.json()["id"]

    # The approvers' channel is asked, with sealed Approve and Deny buttons and a reason box.
    posted = poll(
        lambda: [m for m in receiver.bodies("/slack-api/chat.postMessage") if rid in json.dumps(m)],
        timeout=30,
        what="the approval message",
    )[0]
    assert posted["channel"] == CHANNEL and "Approval asked: mlw-gpu-e2e (fraud-detection, prod)" in posted["text"]
    assert "Alice Fraser asks for" in posted["text"] and "prod-gpu" in posted["text"]
    buttons = {e["action_id"]: e for b in posted["blocks"] if b["type"] == "actions" for e in b["elements"]}
    approve = buttons["approve"]["value"]
    assert buttons["approve"]["style"] == "primary" and buttons["deny"]["style"] == "danger"
    assert any(b["type"] == "input" and b["element"]["action_id"] == "reason" for b in posted["blocks"])

    # A team member without the approve role: refused, to her only; the message stays for the approvers.
    carol = _click(host, receiver, CAROL_SLACK, "approve", approve, "carol")
    refused = _answer(receiver, "carol")
    assert refused["replace_original"] is False and refused["response_type"] == "ephemeral"
    assert "You may not do that from chat." in refused["text"] and "Workspaces.Approve" in refused["text"]
    # A forged button, even from the approver.
    _click(host, receiver, FIONA_SLACK, "approve", approve[:-6] + "AAAAAA", "forged")
    forged = _answer(receiver, "forged")
    assert forged["replace_original"] is False and "not valid" in forged["text"]
    # The very signed click again: Slack's signature and timestamp are checked, and a replay refused.
    replay = host.http.post(
        "/api/chat/slack/interactions", content=carol.request.content, headers=dict(carol.request.headers)
    )
    assert replay.status_code == 401 and "already received" in replay.json()["detail"]
    assert len(receiver.bodies("/slack-response/carol")) == 1
    assert _status(host, rid) == "awaiting_approval"

    # The approver's click approves it: the message shows who decided, for everyone.
    _click(host, receiver, FIONA_SLACK, "approve", approve, "fiona", reason="budgeted for Q1")
    approved = _answer(receiver, "fiona")
    assert approved["replace_original"] is True
    assert "Approved: mlw-gpu-e2e (fraud-detection, prod)" in approved["text"]
    assert "Approved by Fiona Lead: budgeted for Q1" in approved["text"]
    assert not [b for b in approved["blocks"] if b["type"] in ("actions", "input")]
    poll(lambda: _status(host, rid) in ("succeeded", "failed"), timeout=120, every=0.2, what="the approved run")
    assert _status(host, rid) == "succeeded"
    view = host.http.get(f"/api/workspaces/{rid}").json()
    assert view["approval"]["decisions"][0]["by"] == FIONA and view["approval"]["decisions"][0]["door"] == "slack"

    # And the posted message itself is replaced with the outcome (chat.update of its ts).
    updated = poll(
        lambda: [m for m in receiver.bodies("/slack-api/chat.update") if m.get("ts") == TS],
        timeout=30,
        what="the approval message to be updated",
    )[0]
    assert updated["channel"] == CHANNEL and "Approved by Fiona Lead" in updated["text"]
    assert not [b for b in updated["blocks"] if b["type"] == "actions"]
