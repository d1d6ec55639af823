"""Approval from chat, without a network: the `approvals`, `approve` and `deny` commands, the approvers'
message and a click on its buttons. Every refusal here passes only while its check is there: a forged
button, a button of another request or round, a clicker the policy does not know, the requester
approving their own request, a team member without the approve role or outside the approver groups,
and a denial without a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

import pytest

from adapters.slack import blocks
from composition import Container
from engine.authz import Authorizer
from engine.chat import Button, Chat, Reply, Who
from models.identity import AppRole
from models.policy import ChatUser, Policy
from models.records import RequestRecord, RequestStatus, StepStatus, TeamsConversation
from models.settings import Settings
from tests.fakes import FakeCloud

FRAUD = "3a8e5c1f-2d47-4b96-8e0a-6f1c2d3b4a51"  # fraud-detection's group (policy/default.yaml)
LEADS = "5f0b7c1e-8a55-4a3e-9a9e-2d4b1f0c7a11"  # fraud-detection-leads: the team's approvers
ALICE = ChatUser(
    slack_user="U0ALICE",
    principal=UUID("1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01"),
    name="Alice Fraser",
    # She may approve too (another team's, say): her own request she may not.
    roles=[AppRole.REQUEST, AppRole.APPROVE],
)
FIONA = ChatUser(
    slack_user="U0FIONA",
    principal=UUID("7e1a2b3c-4d5e-4f6a-8b7c-9d0e1f2a3b07"),
    name="Fiona Lead",
    roles=[AppRole.APPROVE, AppRole.REQUEST],
)
CAROL = ChatUser(slack_user="U0CAROL", principal=UUID("6a8f0b2d-4a7c-4dbe-9f6b-8d0f2c4e6a06"), name="Carol Diaz")
DAVE = ChatUser(
    slack_user="U0DAVE",
    principal=UUID("6a8f0b2d-4a7c-4dbe-9f6b-00000000da7e"),
    name="Dave",
    roles=[AppRole.REQUEST, AppRole.APPROVE],
)
PROD_GPU = (
    "create team=fraud-detection env=prod region=westeurope profile=gpu-research name=mlw-fraud-gpu "
    "cost-center=CC-1 confirm=yes"
)


@dataclass
class Directory:
    """The membership port as Microsoft Graph answers it."""

    members: dict[str, set[str]] = field(default_factory=dict)

    def member_groups(self, *, principal: str, groups: list[str]) -> frozenset[str]:
        return frozenset(g for g in groups if g in self.members.get(principal, set()))


@dataclass
class Bed:
    container: Container
    chat: Chat

    def slack(self, user: ChatUser | None, user_id: str = "U999") -> Who:
        return Who("slack", user.slack_user or "" if user else user_id, user)

    def record(self, request_id: str) -> RequestRecord:
        record = self.container.store.get_request(request_id)
        assert record is not None
        return record


@pytest.fixture
def bed(settings: Settings) -> Bed:
    container = Container(settings, cloud=FakeCloud())
    policy: Policy = container.policy.model_copy(update={"chat_users": [ALICE, FIONA, CAROL, DAVE]})
    directory = Directory(
        {
            str(ALICE.principal): {FRAUD},
            str(FIONA.principal): {FRAUD, LEADS},
            str(CAROL.principal): {FRAUD},
            str(DAVE.principal): {FRAUD},
        }
    )
    authorizer = Authorizer(policy=policy, membership=directory)
    container.swap(policy=policy, membership=directory, authorizer=authorizer, preflight=None)
    chat = Chat(
        intake=container.intake,
        lifecycle=container.lifecycle,
        store=container.store,
        policy=lambda: policy,
        signing_key=b"chat-test-key",
        studio_url=container.settings.studio_url,
        authorizer=lambda: authorizer,
        approvals=container.approvals,
    )
    return Bed(container, chat)


def _asked(bed: Bed) -> RequestRecord:
    """Ask for a prod GPU workspace from Teams, as Alice: it waits for approval."""
    reply = bed.chat.handle(
        who=Who("teams", "alice-aad", ALICE), text=PROD_GPU, reply_to=TeamsConversation(message_id="m1")
    )
    assert reply.title == "Workspace mlw-fraud-gpu (fraud-detection, prod) waits for approval.", reply.text()
    assert "prod-gpu" in reply.text() and "Due:" in reply.text()
    [record] = bed.container.store.list_requests(team="fraud-detection").items
    assert record.status == RequestStatus.AWAITING_APPROVAL
    return record


def _buttons(reply: Reply) -> tuple[Button, Button]:
    approve, deny = reply.buttons
    assert (approve.action, approve.style, deny.action, deny.style) == ("approve", "primary", "deny", "danger")
    return approve, deny


def test_the_approvers_message_says_what_waits_and_offers_sealed_buttons(bed: Bed) -> None:
    record = _asked(bed)
    ask = bed.chat.approval_request(record)
    text = ask.text()
    assert ask.title == "Approval asked: mlw-fraud-gpu (fraud-detection, prod)" and ask.public
    assert "Alice Fraser asks for mlw-fraud-gpu" in text
    assert "prod-gpu (GPU compute in production): environment prod; GPU compute (gpu-cluster)" in text
    assert "Compute gpu-cluster: Standard_NC6s_v3 low-priority, up to 4 nodes" in text
    assert "Estimated cost: USD" in text and "Still needed: 1 approval for prod-gpu" in text
    assert ("requester", "Alice Fraser") in ask.fields and any(k == "decide by" for k, _ in ask.fields)
    approve, deny = _buttons(ask)
    assert record.id not in approve.value and approve.value != deny.value  # sealed, not the id in clear
    # On Slack, Deny reads its reason from a box in the message.
    rendered = blocks(ask)
    reason = next(b for b in rendered if b["type"] == "input")
    assert reason["element"] == {"type": "plain_text_input", "action_id": "reason", "max_length": 1000}
    assert rendered.index(reason) == len(rendered) - 2 and rendered[-1]["type"] == "actions"


def test_a_forged_or_crossed_button_is_refused(bed: Bed) -> None:
    record = _asked(bed)
    approve, deny = _buttons(bed.chat.approval_request(record))
    forged = bed.chat.decide_click(who=bed.slack(FIONA), token=approve.value[:-4] + "AAAA", decision="approve")
    assert not forged.ok and "not valid" in forged.problems[0].message
    # The Approve button's token does not deny, nor the Deny button's approve.
    crossed = bed.chat.decide_click(who=bed.slack(FIONA), token=approve.value, decision="deny", reason="no")
    assert not crossed.ok and "not valid" in crossed.problems[0].message
    crossed = bed.chat.decide_click(who=bed.slack(FIONA), token=deny.value, decision="approve")
    assert not crossed.ok and "not valid" in crossed.problems[0].message
    assert bed.record(record.id).status == RequestStatus.AWAITING_APPROVAL
    assert bed.record(record.id).approval.decisions == []  # type: ignore[union-attr]


def test_a_button_of_another_request_or_round_is_no_longer_valid(bed: Bed) -> None:
    record = _asked(bed)
    gone = bed.chat._seal_approval(record.model_copy(update={"id": "01J0NOTHERE0000000000000000"}), "approve")
    other = bed.chat.decide_click(who=bed.slack(FIONA), token=gone, decision="approve")
    assert not other.ok and "no longer valid" in other.problems[0].message
    approve, _ = _buttons(bed.chat.approval_request(record))
    assert record.approval is not None
    # The request is asked again (a new round): the first message's buttons decide nothing.
    bed.container.store.update_request(
        record.model_copy(update={"approval": record.approval.model_copy(update={"round": 2})})
    )
    old = bed.chat.decide_click(who=bed.slack(FIONA), token=approve.value, decision="approve")
    assert not old.ok and "no longer valid" in old.problems[0].message
    assert bed.record(record.id).status == RequestStatus.AWAITING_APPROVAL


def test_who_clicks_is_decided_when_they_click(bed: Bed) -> None:
    record = _asked(bed)
    approve, _ = _buttons(bed.chat.approval_request(record))
    stranger = bed.chat.decide_click(who=bed.slack(None), token=approve.value, decision="approve")
    assert stranger.title == "I do not know you yet." and "chat_users" in stranger.problems[0].message
    own = bed.chat.decide_click(who=bed.slack(ALICE), token=approve.value, decision="approve")
    assert own.title == "You cannot approve your own request." and "nobody approves their own" in own.lines[0]
    member = bed.chat.decide_click(who=bed.slack(CAROL), token=approve.value, decision="approve")
    assert member.title == "You may not do that from chat." and AppRole.APPROVE.value in member.lines[0]
    outsider = bed.chat.decide_click(who=bed.slack(DAVE), token=approve.value, decision="approve")
    assert outsider.title == "You are not an approver of this request." and "prod-gpu" in outsider.lines[0]
    assert bed.record(record.id).status == RequestStatus.AWAITING_APPROVAL
    assert bed.record(record.id).approval.decisions == []  # type: ignore[union-attr]


def test_an_approvers_click_approves_and_provisioning_starts(bed: Bed) -> None:
    record = _asked(bed)
    approve, deny = _buttons(bed.chat.approval_request(record))
    asked = bed.chat.decide_click(who=bed.slack(FIONA), token=deny.value, decision="deny", reason="  ")
    assert asked.title == "Say why you deny it." and "reason box" in asked.lines[0] and not asked.ok
    assert bed.record(record.id).status == RequestStatus.AWAITING_APPROVAL
    done = bed.chat.decide_click(who=bed.slack(FIONA), token=approve.value, decision="approve", reason="budgeted")
    assert done.ok and done.title == "Approved: mlw-fraud-gpu (fraud-detection, prod)" and not done.buttons
    assert "Approved by Fiona Lead: budgeted" in done.lines
    now = bed.record(record.id)
    assert now.status == RequestStatus.ACCEPTED and now.approval is not None
    assert [d.by for d in now.approval.decisions] == [str(FIONA.principal)]
    assert any(s.status == StepStatus.QUEUED for s in bed.container.store.get_steps(record.id))
    # The requester is told who approved it; the approvers' message now says so, without buttons.
    told = bed.chat.result(now, bed.container.store.get_steps(record.id))
    assert told.title == "mlw-fraud-gpu (fraud-detection, prod) is approved by Fiona Lead." and told.public
    settled = bed.chat.approval_settled(now)
    assert settled.title.startswith("Approved: ") and "Approved by Fiona Lead: budgeted" in settled.lines
    assert not settled.buttons and bed.chat.approval_request(now).buttons == []
    # Too late to deny it; the same click again records nothing more.
    late = bed.chat.decide_click(who=bed.slack(FIONA), token=deny.value, decision="deny", reason="second thoughts")
    assert late.title == "That request is already decided." and "approved by Fiona Lead" in late.lines[0]
    again = bed.chat.decide_click(who=bed.slack(FIONA), token=approve.value, decision="approve")
    assert again.ok and len(bed.record(record.id).approval.decisions) == 1  # type: ignore[union-attr]


def test_the_commands_list_approve_and_deny_with_a_reason(bed: Bed) -> None:
    record = _asked(bed)
    here = TeamsConversation(message_id="c1")
    waiting = bed.chat.handle(who=bed.slack(FIONA), text="approvals", reply_to=here)
    assert waiting.title == "Waiting for your approval: 1 request" and record.id in waiting.text()
    assert "asked by Alice Fraser" in waiting.text()
    # Not the requester's to decide, nor a member's without the role.
    assert bed.chat.handle(who=bed.slack(ALICE), text="approvals", reply_to=here).title == (
        "Nothing waits for your approval."
    )
    refused = bed.chat.handle(who=bed.slack(CAROL), text=f"approve {record.id}", reply_to=here)
    assert refused.title == "You may not do that from chat." and not refused.ok
    own = bed.chat.handle(who=bed.slack(ALICE), text=f"approve {record.id} looks fine", reply_to=here)
    assert own.title == "You cannot approve your own request."
    bare = bed.chat.handle(who=bed.slack(FIONA), text=f"deny {record.id}", reply_to=here)
    assert not bare.ok and bare.problems[0].field == "reason"
    assert bed.chat.handle(who=bed.slack(FIONA), text="approve", reply_to=here).problems[0].field == "id"
    # A reason is free text: apostrophes and '=' are words of it.
    denied = bed.chat.handle(who=bed.slack(FIONA), text=f"deny {record.id} no budget=0, don't", reply_to=here)
    assert denied.title == "Denied: mlw-fraud-gpu (fraud-detection, prod)." and denied.ok
    now = bed.record(record.id)
    assert now.status == RequestStatus.DENIED and now.approval is not None
    assert now.approval.denial is not None and now.approval.denial.reason == "no budget=0, don't"
    for reply in (
        bed.chat.result(now, []),
        bed.chat.handle(who=Who("teams", "alice-aad", ALICE), text=f"status {record.id}", reply_to=here),
    ):
        assert reply.title == "mlw-fraud-gpu (fraud-detection, prod) was denied by Fiona Lead.", reply.text()
        assert "Denied by Fiona Lead: no budget=0, don't" in reply.lines and not reply.ok
    assert bed.chat.approval_settled(now).title.startswith("Denied: ")


def test_status_shows_a_request_awaiting_approval(bed: Bed) -> None:
    record = _asked(bed)
    shown = bed.chat.handle(
        who=Who("teams", "alice-aad", ALICE), text=f"status {record.id}", reply_to=TeamsConversation()
    )
    text = shown.text()
    assert shown.title == "Workspace mlw-fraud-gpu (fraud-detection, prod) waits for approval."
    assert "GPU compute (gpu-cluster)" in text and "Still needed: 1 approval for prod-gpu" in text
    assert "Estimated cost: USD" in text and "Due: " in text
    # Withdrawn (the requester's cancel), the approvers' message and the notice say so.
    withdrawn = bed.container.approvals.withdraw(record, caller=bed.chat._asking(bed.slack(ALICE), "t").caller)
    assert (
        bed.chat.result(withdrawn, []).title == "mlw-fraud-gpu (fraud-detection, prod) was withdrawn before approval."
    )
    assert bed.chat.approval_settled(withdrawn).title.startswith("Withdrawn: ")
