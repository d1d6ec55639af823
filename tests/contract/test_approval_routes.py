"""The approval routes over HTTP: who may decide, what waits, and what a decision does.

Each refusal here fails if its check is removed: the requester approving their own request, a team
member without the approve role, an approver of another team, an approval without a reason to deny.
Nothing is sent to the step queue before approval: the fake cloud sees no call for a waiting request.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from composition import Container
from engine.notify import deliver
from engine.ports import OutgoingMessage, ReceivedMessage
from handlers.api import create_api
from models.approvals import ApprovalMessage, ApproverChannels
from models.errors import TransientError
from models.events import EventName, StatusEvent
from models.records import RequestRecord, RequestStatus
from models.settings import Settings
from tests.callers import bearer
from tests.conftest import example, poll, running_steps, served
from tests.fakes import FakeCloud


class Seen(list[StatusEvent]):
    """Every event, as emitted."""

    def emit(self, event: StatusEvent) -> None:
        self.append(event)


def events(c: Container, rid: str) -> list[StatusEvent]:
    seen = c.events.sinks[0]
    assert isinstance(seen, Seen)
    return [e for e in seen if e.request_id == rid]


@pytest.fixture
def api(settings: Settings) -> Iterator[tuple[Container, FakeCloud, httpx.Client]]:
    cloud = FakeCloud()
    container = Container(settings, cloud=cloud, sinks=[Seen()])
    container.swap(preflight=None)
    with (
        running_steps(container),
        served(create_api(lambda: container)) as base,
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        yield container, cloud, http


def prod_gpu(team: str = "fraud-detection", name: str = "mlw-fraud-gpu") -> dict[str, Any]:
    body = example("cpu-small.json") | {"team": team, "environment": "prod", "workspace_name": name}
    body["compute"] = [{"name": "gpu", "vm_size": "Standard_NC6s_v3", "min_nodes": 0, "max_nodes": 1}]
    return body


def _view(c: Container, http: httpx.Client, rid: str, user: str = "alice") -> dict[str, Any]:
    got = http.get(f"/api/workspaces/{rid}", headers=bearer(c, user))
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    return body


def _waiting(c: Container, http: httpx.Client, user: str = "alice", **kw: Any) -> str:
    made = http.post("/api/workspaces", json=prod_gpu(**kw), headers=bearer(c, user))
    assert made.status_code == 202, made.text
    assert made.json()["status"] == "awaiting_approval"
    rid: str = made.json()["id"]
    return rid


def test_a_prod_gpu_request_waits_and_nothing_is_made(api: tuple[Container, FakeCloud, httpx.Client]) -> None:
    c, cloud, http = api
    rid = _waiting(c, http)
    view = _view(c, http, rid)
    assert view["approval"]["rules"][0]["rule"] == "prod-gpu"
    assert view["approval"]["still_needed"] == {"prod-gpu": 1}
    gpu_line = next(line for line in view["estimate"]["lines"] if line["compute"] == "gpu")
    assert gpu_line["monthly_max"] == pytest.approx(3.06 * 730, abs=0.01)
    assert [s["status"] for s in view["steps"]] == ["pending"] * len(view["steps"])
    assert not cloud.calls
    # The plan says so before anything is asked.
    plan = http.post("/api/plan", json=prod_gpu(name="mlw-other"), headers=bearer(c, "alice")).json()
    assert [t["rule"] for t in plan["approval"]] == ["prod-gpu"]
    assert plan["estimate"]["currency"] == "USD"


def test_the_requester_cannot_approve_their_own(api: tuple[Container, FakeCloud, httpx.Client]) -> None:
    c, cloud, http = api
    rid = _waiting(c, http, user="fiona")  # fiona approves for fraud-detection, and asked for this one
    refused = http.post(f"/api/workspaces/{rid}/approve", json={}, headers=bearer(c, "fiona"))
    assert refused.status_code == 403, refused.text
    assert refused.json()["rule"] == "OwnRequest"
    assert [r["id"] for r in http.get("/api/approvals", headers=bearer(c, "fiona")).json()["items"]] == []
    assert _view(c, http, rid, "fiona")["status"] == "awaiting_approval"
    assert not cloud.calls


def test_who_may_not_approve(api: tuple[Container, FakeCloud, httpx.Client]) -> None:
    c, _, http = api
    rid = _waiting(c, http)
    # A member of the team without the approve role: 403 naming the role.
    carol = http.post(f"/api/workspaces/{rid}/approve", json={}, headers=bearer(c, "carol"))
    assert (carol.status_code, carol.json()["rule"]) == (403, "MissingRole")
    # Another team's member: the request is not shown to exist.
    bob = http.post(f"/api/workspaces/{rid}/approve", json={}, headers=bearer(c, "bob"))
    assert bob.status_code == 404
    # A reader of every team, not an approver.
    platform = http.post(f"/api/workspaces/{rid}/approve", json={}, headers=bearer(c, "platform"))
    assert (platform.status_code, platform.json()["rule"]) == (403, "MissingRole")
    # No token.
    assert http.post(f"/api/workspaces/{rid}/approve", json={}).status_code == 401
    assert _view(c, http, rid)["status"] == "awaiting_approval"


def test_an_approver_approves_and_it_provisions(api: tuple[Container, FakeCloud, httpx.Client]) -> None:
    c, cloud, http = api
    rid = _waiting(c, http)
    listed = http.get("/api/approvals", headers=bearer(c, "fiona")).json()["items"]
    assert [i["id"] for i in listed] == [rid]
    done = http.post(f"/api/workspaces/{rid}/approve", json={"reason": "budgeted"}, headers=bearer(c, "fiona"))
    assert done.status_code == 200, done.text
    assert done.json()["outcome"] == "approved"
    poll(lambda: _view(c, http, rid)["status"] == "succeeded", what="the approved request to succeed")
    assert cloud.calls
    again = http.post(f"/api/workspaces/{rid}/approve", json={}, headers=bearer(c, "fiona"))
    assert (again.status_code, again.json()["recorded"]) == (200, False)
    # Denying what is approved is a conflict, not a change.
    late = http.post(f"/api/workspaces/{rid}/deny", json={"reason": "no"}, headers=bearer(c, "victor"))
    assert (late.status_code, late.json()["code"]) == (409, "ApprovalSettled")
    names = [e.name for e in events(c, rid)]
    assert EventName.APPROVAL_REQUESTED in names and EventName.APPROVED in names
    approved = next(e for e in events(c, rid) if e.name == EventName.APPROVED)
    assert approved.caller == c.local_issuer.directory.find("fiona").object_id  # type: ignore[union-attr]


def test_a_denial_needs_a_reason_and_ends_the_request(api: tuple[Container, FakeCloud, httpx.Client]) -> None:
    c, cloud, http = api
    rid = _waiting(c, http)
    no_reason = http.post(f"/api/workspaces/{rid}/deny", json={}, headers=bearer(c, "victor"))
    assert no_reason.status_code == 422
    denied = http.post(f"/api/workspaces/{rid}/deny", json={"reason": "no GPU budget"}, headers=bearer(c, "victor"))
    assert denied.status_code == 200, denied.text
    view = _view(c, http, rid)
    assert view["status"] == "denied"
    assert view["approval"]["decisions"][0]["reason"] == "no GPU budget"
    assert view["error"]["code"] == "ApprovalDenied"
    assert not cloud.calls
    # The name is free again, and a denied request cannot be retried past its approvers.
    retry = http.post(f"/api/workspaces/{rid}/retry", headers=bearer(c, "alice"))
    assert (retry.status_code, retry.json()["code"]) == (409, "RequestNotApproved")
    assert http.post("/api/workspaces", json=prod_gpu(), headers=bearer(c, "alice")).status_code == 202


def test_two_approvers_for_a_costly_request(api: tuple[Container, FakeCloud, httpx.Client]) -> None:
    c, _, http = api
    body = example("cpu-small.json") | {"team": "fraud-detection", "environment": "dev", "workspace_name": "mlw-big"}
    body["compute"] = [{"name": "big", "vm_size": "Standard_NC24ads_A100_v4", "min_nodes": 0, "max_nodes": 3}]
    made = http.post("/api/workspaces", json=body, headers=bearer(c, "alice")).json()
    assert made["status"] == "awaiting_approval"
    rid = made["id"]
    # fiona approves for the team, but the costly rule is the platform's: she is no approver of it.
    fiona = http.post(f"/api/workspaces/{rid}/approve", json={}, headers=bearer(c, "fiona"))
    assert (fiona.status_code, fiona.json()["rule"]) == (403, "NotApprover")
    first = http.post(f"/api/workspaces/{rid}/approve", json={}, headers=bearer(c, "victor")).json()
    assert (first["outcome"], first["still_needed"]) == ("pending", {"costly": 1})
    second = http.post(f"/api/workspaces/{rid}/approve", json={}, headers=bearer(c, "wendy")).json()
    assert second["outcome"] == "approved"


def test_a_request_left_waiting_expires(api: tuple[Container, FakeCloud, httpx.Client]) -> None:
    c, cloud, http = api
    rid = _waiting(c, http)
    later = c.clock() + timedelta(hours=73)
    c.approvals.clock = lambda: later
    assert c.approvals.expire_due() == 1
    view = _view(c, http, rid)
    assert (view["status"], view["approval"]["outcome"]) == ("expired", "expired")
    assert not cloud.calls
    assert EventName.APPROVAL_EXPIRED in [e.name for e in events(c, rid)]


def test_withdrawn_by_its_requester(api: tuple[Container, FakeCloud, httpx.Client]) -> None:
    c, cloud, http = api
    rid = _waiting(c, http)
    done = http.post(f"/api/workspaces/{rid}/cancel", headers=bearer(c, "alice"))
    assert done.status_code == 200, done.text
    assert _view(c, http, rid)["status"] == "cancelled"
    late = http.post(f"/api/workspaces/{rid}/approve", json={}, headers=bearer(c, "fiona"))
    assert late.status_code == 409
    assert not cloud.calls


def test_a_revision_that_adds_a_gpu_waits_and_a_denial_keeps_the_workspace(
    api: tuple[Container, FakeCloud, httpx.Client],
) -> None:
    c, _, http = api
    body = example("cpu-small.json") | {"team": "fraud-detection", "environment": "prod", "workspace_name": "mlw-cpu"}
    rid = http.post("/api/workspaces", json=body, headers=bearer(c, "alice")).json()["id"]
    poll(lambda: _view(c, http, rid)["status"] == "succeeded", what="the CPU workspace")
    before = _view(c, http, rid)["request"]["compute"]
    gpu = [*before, {"name": "gpu", "vm_size": "Standard_NC6s_v3", "min_nodes": 0, "max_nodes": 1}]
    patched = http.patch(f"/api/workspaces/{rid}", json={"compute": gpu}, headers=bearer(c, "alice"))
    assert patched.status_code == 202, patched.text
    assert patched.json()["status"] == "awaiting_approval"
    view = _view(c, http, rid)
    assert view["approval"]["operation"] == "update" and view["revision"] == 1
    denied = http.post(f"/api/workspaces/{rid}/deny", json={"reason": "not now"}, headers=bearer(c, "fiona"))
    assert denied.status_code == 200, denied.text
    view = _view(c, http, rid)
    assert (view["status"], view["revision"]) == ("succeeded", 1)
    assert view["request"]["compute"] == before
    revisions = http.get(f"/api/workspaces/{rid}/revisions", headers=bearer(c, "alice")).json()["items"]
    assert [r["status"] for r in revisions] == ["applied", "denied"]
    # Asked again and approved, it applies.
    http.patch(f"/api/workspaces/{rid}", json={"compute": gpu}, headers=bearer(c, "alice"))
    ok = http.post(f"/api/workspaces/{rid}/approve", json={}, headers=bearer(c, "fiona"))
    assert ok.json()["outcome"] == "approved", ok.text
    poll(lambda: _view(c, http, rid)["revision"] == 2 and _view(c, http, rid)["status"] == "succeeded", what="rev 2")
    assert RequestStatus(_view(c, http, rid)["status"]) == RequestStatus.SUCCEEDED


def test_a_withdrawn_request_is_never_torn_down_at_its_expiry(api: tuple[Container, FakeCloud, httpx.Client]) -> None:
    c, cloud, http = api
    body = example("cpu-small.json") | {"workspace_name": "mlw-big-dev"}  # dev: expires after 30 days
    body["compute"] = [{"name": "big", "vm_size": "Standard_NC24ads_A100_v4", "min_nodes": 0, "max_nodes": 3}]
    rid = http.post("/api/workspaces", json=body, headers=bearer(c, "alice")).json()["id"]
    assert http.post(f"/api/workspaces/{rid}/cancel", headers=bearer(c, "alice")).status_code == 200
    later = c.clock() + timedelta(days=400)
    c.lifecycle.clock = lambda: later
    assert c.lifecycle.expire_due() == 0
    assert _view(c, http, rid)["status"] == "cancelled"
    assert not cloud.calls


def test_past_its_due_time_an_approval_expires_it(api: tuple[Container, FakeCloud, httpx.Client]) -> None:
    c, cloud, http = api
    rid = _waiting(c, http)
    later = c.clock() + timedelta(hours=100)
    c.approvals.clock = lambda: later  # the timer has not come by
    late = http.post(f"/api/workspaces/{rid}/approve", json={}, headers=bearer(c, "fiona"))
    assert (late.status_code, late.json()["code"]) == (409, "ApprovalSettled"), late.text
    assert _view(c, http, rid)["status"] == "expired"
    assert not cloud.calls


def test_who_made_the_request_does_not_approve_a_teammates_revision(
    api: tuple[Container, FakeCloud, httpx.Client],
) -> None:
    c, _, http = api
    body = example("cpu-small.json") | {"team": "fraud-detection", "environment": "prod", "workspace_name": "mlw-fi"}
    rid = http.post("/api/workspaces", json=body, headers=bearer(c, "fiona")).json()["id"]
    poll(lambda: _view(c, http, rid)["status"] == "succeeded", what="fiona's workspace")
    before = _view(c, http, rid)["request"]["compute"]
    gpu = [*before, {"name": "gpu", "vm_size": "Standard_NC6s_v3", "min_nodes": 0, "max_nodes": 1}]
    assert http.patch(f"/api/workspaces/{rid}", json={"compute": gpu}, headers=bearer(c, "alice")).status_code == 202
    refused = http.post(f"/api/workspaces/{rid}/approve", json={}, headers=bearer(c, "fiona"))
    assert (refused.status_code, refused.json()["rule"]) == (403, "OwnRequest")
    ok = http.post(f"/api/workspaces/{rid}/approve", json={}, headers=bearer(c, "victor"))
    assert ok.json()["outcome"] == "approved", ok.text
    poll(lambda: _view(c, http, rid)["revision"] == 2, what="the revision to apply")
    revisions = http.get(f"/api/workspaces/{rid}/revisions", headers=bearer(c, "alice")).json()["items"]
    assert revisions[-1]["by"] == c.local_issuer.directory.find("alice").object_id  # type: ignore[union-attr]


class _BusDown:
    def send(self, queue: str, message: OutgoingMessage) -> None:
        raise TransientError("the bus is down", retry_after_s=1)


def _queued(c: Container) -> list[ReceivedMessage]:
    return c.bus.receive(c.settings.notifications_queue, max_messages=50)


def test_an_announcement_never_sent_is_sent_by_the_timer(api: tuple[Container, FakeCloud, httpx.Client]) -> None:
    c, _, http = api
    real = c.approvals.bus
    c.approvals.bus = _BusDown()  # the process dies, as it were, between the write and the send
    rid = _waiting(c, http)
    c.approvals.bus = real
    assert f"{rid}/approval/1/announce" not in [m.message_id for m in _queued(c)]
    later = c.clock() + timedelta(minutes=2)
    c.approvals.clock = lambda: later
    c.approvals.expire_due()
    assert f"{rid}/approval/1/announce" in [m.message_id for m in _queued(c)]


def test_a_dead_lettered_announcement_is_recorded_on_the_approval(
    api: tuple[Container, FakeCloud, httpx.Client],
) -> None:
    c, _, http = api
    body = prod_gpu() | {"callback_url": "https://hooks.example.com/vending"}
    rid = http.post("/api/workspaces", json=body, headers=bearer(c, "alice")).json()["id"]
    letter = next(m for m in _queued(c) if m.message_id == f"{rid}/approval/1/announce")
    c.bus.dead_letter(letter, reason="NotConfigured", description="the Teams bot is not configured")
    assert c.deadletters.process() >= 1
    record = c.store.get_request(rid)
    assert record is not None
    assert record.approval is not None
    assert "not posted" in (record.approval.announce_error or "")
    assert record.notification is not None
    assert record.notification.status == "pending"  # the requester's notice is another message
    # The requester's approval notice is the sweeper's to resend, though the request is not finished.
    assert rid in [r.id for r in c.store.pending_notifications(before=c.clock() + timedelta(minutes=5))]


def test_a_change_says_it_would_wait_and_an_extension_meanwhile_stands(
    api: tuple[Container, FakeCloud, httpx.Client],
) -> None:
    c, _, http = api
    body = example("cpu-small.json") | {"team": "fraud-detection", "environment": "prod", "workspace_name": "mlw-ext"}
    rid = http.post("/api/workspaces", json=body, headers=bearer(c, "alice")).json()["id"]
    poll(lambda: _view(c, http, rid)["status"] == "succeeded", what="the workspace")
    before = _view(c, http, rid)["request"]["compute"]
    gpu = {"compute": [*before, {"name": "gpu", "vm_size": "Standard_NC6s_v3", "min_nodes": 0, "max_nodes": 1}]}
    preview = http.post(f"/api/workspaces/{rid}/plan", json=gpu, headers=bearer(c, "alice")).json()
    assert [a.split(":")[0] for a in preview["approval"]] == ["prod-gpu"]
    tags = http.post(f"/api/workspaces/{rid}/plan", json={"tags": {"x": "y"}}, headers=bearer(c, "alice")).json()
    assert tags["approval"] == []
    assert http.patch(f"/api/workspaces/{rid}", json=gpu, headers=bearer(c, "alice")).status_code == 202
    extended = http.post(f"/api/workspaces/{rid}/extend", json={"days": 5}, headers=bearer(c, "alice"))
    assert extended.status_code == 200, extended.text
    when = extended.json()["expires_at"]
    assert (
        http.post(f"/api/workspaces/{rid}/approve", json={}, headers=bearer(c, "fiona")).json()["outcome"] == "approved"
    )
    assert _view(c, http, rid)["expires_at"] == when


def test_a_decision_while_the_approvers_message_is_posted_still_updates_it(
    api: tuple[Container, FakeCloud, httpx.Client],
) -> None:
    c, _, http = api
    fiona = c.authenticator.authenticate(bearer(c, "fiona"))
    settled: list[str] = []

    class DecidesMeanwhile:
        def announce(
            self, record: RequestRecord, channels: ApproverChannels, delivery_id: str
        ) -> list[ApprovalMessage]:
            c.approvals.approve(record.id, caller=fiona, door="slack")  # a click lands before the post is recorded
            return [ApprovalMessage(platform="slack", channel="C0APPROVERS", message_id="1700000000.000100")]

        def settle(self, record: RequestRecord, message: ApprovalMessage) -> None:
            assert record.approval is not None
            settled.append(f"{message.message_id}:{record.approval.outcome}")

    policy = c.policy.model_copy(
        update={
            "approvals": c.policy.approvals.model_copy(
                update={"channels": ApproverChannels(slack_channel="C0APPROVERS")}
            )
        }
    )
    c.approvals.policy = policy
    rid = _waiting(c, http)
    result = c.approvals.announce(rid, 1, announcer=DecidesMeanwhile())
    assert "settled: approved" in result
    assert settled == ["1700000000.000100:approved"]


class _Told:
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []

    def post(self, url: str, payload: dict[str, Any], delivery_id: str = "") -> None:
        self.posts.append((delivery_id, payload))


def test_the_requester_is_told_each_time(api: tuple[Container, FakeCloud, httpx.Client]) -> None:
    c, _, http = api
    told = _Told()

    def tell(rid: str) -> None:
        deliver(request_id=rid, store=c.store, notifier=told)

    body = prod_gpu() | {"callback_url": "https://hooks.example.com/vending"}
    waiting = http.post("/api/workspaces", json=body, headers=bearer(c, "alice")).json()["id"]
    tell(waiting)
    denied_body = prod_gpu(name="mlw-fraud-gpu-2") | {"callback_url": "https://hooks.example.com/vending"}
    denied = http.post("/api/workspaces", json=denied_body, headers=bearer(c, "alice")).json()["id"]
    http.post(f"/api/workspaces/{waiting}/approve", json={"reason": "ok"}, headers=bearer(c, "fiona"))
    tell(waiting)
    http.post(f"/api/workspaces/{denied}/deny", json={"reason": "no budget"}, headers=bearer(c, "victor"))
    tell(denied)
    seen = [(d, p["event"], p["approval"]["outcome"]) for d, p in told.posts]
    assert seen == [
        (f"{waiting}:approval:1:pending", "approval", "pending"),
        (f"{waiting}:approval:1:approved", "approval", "approved"),
        (f"{denied}:approval:1:denied", "approval", "denied"),
    ]
    reasons = told.posts[-1][1]["approval"]["decisions"]
    assert [(d["decision"], d["reason"]) for d in reasons] == [("deny", "no budget")]
    assert told.posts[0][1]["approval"]["rules"][0]["rule"] == "prod-gpu"
