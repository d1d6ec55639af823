"""The approvers' Slack messages against a local receiver standing in for the Slack Web API: the
approval message is posted with its buttons and reason box and says where it is (its ts); once decided it
is replaced with the outcome by chat.update; Slack's refusals are transient or permanent."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from adapters.approvers import ApprovalPosters
from adapters.slack import SlackApprovals
from engine.chat import Button, Reply
from models.approvals import ApprovalDecision, ApprovalMessage, ApprovalState, ApproverChannels, CostEstimate, Triggered
from models.errors import PermanentError, TransientError
from models.records import RequestRecord, RequestStatus
from tests.capture import capture_server

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
STATE = ApprovalState(
    operation="create",
    requested_by="1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01",
    requested_at=NOW,
    due_at=NOW + timedelta(hours=72),
    rules=[
        Triggered(
            rule="prod-gpu",
            reasons=["environment prod", "GPU compute (gpu)"],
            approvers="team",
            approvals=1,
            groups=["5f0b7c1e-8a55-4a3e-9a9e-2d4b1f0c7a11"],
        )
    ],
    estimate=CostEstimate(currency="USD", as_of=date(2026, 12, 1), source="test", monthly_idle=0.0, monthly_max=2233.8),
)
RECORD = RequestRecord(
    id="01JAPPROVAL0000000000000001",
    status=RequestStatus.AWAITING_APPROVAL,
    team="fraud-detection",
    environment="prod",
    workspace_name="mlw-fraud-gpu",
    requester="1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01",
    requester_name="Alice Fraser",
    approval=STATE,
    created_at=NOW,
    updated_at=NOW,
)


class Renderer:
    """Renders as engine.chat.Chat does, in a form the assertions can find."""

    def approval_request(self, record: RequestRecord) -> Reply:
        return Reply(
            f"Approval asked: {record.workspace_name}",
            lines=[t.rule for t in record.approval.rules] if record.approval else [],
            buttons=[
                Button("Approve", "approve", "sealed-yes", "primary"),
                Button("Deny", "deny", "sealed-no", "danger"),
            ],
            public=True,
        )

    def approval_settled(self, record: RequestRecord) -> Reply:
        denial = record.approval.denial if record.approval else None
        return Reply(f"Denied: {record.workspace_name}", lines=[f"Denied by {denial.name}" if denial else ""])


def _elements(posted: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for b in posted["blocks"] if b["type"] == "actions" for e in b["elements"]]


def test_the_approval_message_is_posted_with_its_buttons_and_updated_once_decided() -> None:
    with capture_server() as slack:
        slack.reply = b'{"ok": true, "channel": "C0APPROVERS", "ts": "1700000000.000200"}'
        poster = SlackApprovals(renderer=Renderer, bot_token="xoxb-approvals", api_url=f"{slack.url}/api/")
        [message] = ApprovalPosters(slack=poster, teams=None).announce(
            RECORD, ApproverChannels(slack_channel="C0APPROVERS"), "01JAPPROVAL0000000000000001:approval:1"
        )
        assert message == ApprovalMessage(platform="slack", channel="C0APPROVERS", message_id="1700000000.000200")
        denial = ApprovalDecision(
            by="8f2b3c4d-5e6f-4a7b-9c8d-0e1f2a3b4c08", name="Victor", decision="deny", reason="no", at=NOW, door="slack"
        )
        decided = RECORD.model_copy(
            update={
                "status": RequestStatus.DENIED,
                "approval": STATE.model_copy(
                    update={"outcome": "denied", "decisions": [denial], "messages": [message]}
                ),
            }
        )
        poster.settle(decided, message)
    [post, update] = slack.received
    assert post["path"] == "/api/chat.postMessage" and post["headers"]["Authorization"] == "Bearer xoxb-approvals"
    body = post["json"]
    assert body["channel"] == "C0APPROVERS" and "Approval asked: mlw-fraud-gpu" in body["text"]
    buttons = {e["action_id"]: e for e in _elements(body)}
    assert (buttons["approve"]["value"], buttons["approve"]["style"]) == ("sealed-yes", "primary")
    assert (buttons["deny"]["value"], buttons["deny"]["style"]) == ("sealed-no", "danger")
    box = next(b for b in body["blocks"] if b["type"] == "input")
    assert box["element"]["action_id"] == "reason" and box["element"]["type"] == "plain_text_input"
    assert body["metadata"]["event_payload"]["delivery_id"] == "01JAPPROVAL0000000000000001:approval:1"
    assert update["path"] == "/api/chat.update"
    assert (update["json"]["channel"], update["json"]["ts"]) == ("C0APPROVERS", "1700000000.000200")
    assert "Denied by Victor" in update["json"]["text"] and _elements(update["json"]) == []


def test_slack_refusals_of_approval_messages_are_transient_or_permanent() -> None:
    with capture_server() as slack:
        poster = SlackApprovals(renderer=Renderer, bot_token="xoxb-approvals", api_url=f"{slack.url}/api/")
        slack.reply = b'{"ok": false, "error": "ratelimited"}'
        slack.statuses = [429]
        with pytest.raises(TransientError):
            poster.announce(RECORD, "C0APPROVERS", "d")
        slack.reply = b'{"ok": false, "error": "internal_error"}'
        slack.statuses = [503]
        with pytest.raises(TransientError):
            poster.announce(RECORD, "C0APPROVERS", "d")
        slack.reply = b'{"ok": false, "error": "not_in_channel"}'
        with pytest.raises(PermanentError, match="invite the app to the approvers' channel"):
            poster.announce(RECORD, "C0APPROVERS", "d")
        slack.reply = b'{"ok": false, "error": "message_not_found"}'
        with pytest.raises(PermanentError, match="message_not_found"):
            poster.settle(RECORD, ApprovalMessage(platform="slack", channel="C0APPROVERS", message_id="1.2"))
        slack.reply = b'{"ok": true}'  # posted, but no ts to update it by
        with pytest.raises(PermanentError, match="no ts"):
            poster.announce(RECORD, "C0APPROVERS", "d")
    closed = SlackApprovals(renderer=Renderer, bot_token="xoxb-approvals", api_url="http://127.0.0.1:9/api/")
    with pytest.raises(TransientError, match="did not answer"):
        closed.announce(RECORD, "C0APPROVERS", "d")
