"""Idempotency is settled before anything else, at every door, and each door's keys are its own.

The team here is over half its vCPU limit after the first request, so any replay judged again by
policy (the original counted a second time) would be refused: these tests fail on such an intake.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from adapters.sqlite_store import SqliteStore
from composition import Container
from engine.intake import queue_key, rest_key
from engine.ports import PreflightReport
from models.plan import Plan
from models.policy import Policy
from models.records import RequestStatus
from models.request import WorkspaceRequest
from models.settings import Settings
from tests.callers import PLATFORM, PermitAll, Unconfined, bearer
from tests.conftest import example, served
from tests.fakes import FakeCloud

CPU_SMALL_VCPUS = 16


@dataclass
class CountingPreflight:
    """A pre-flight that finds nothing and counts how often it was asked."""

    calls: list[str] = field(default_factory=list)

    def check(self, *, plan: Plan, request: WorkspaceRequest, policy: Policy) -> PreflightReport:
        self.calls.append(request.team)
        return PreflightReport()


@pytest.fixture
def container(settings: Settings) -> Container:
    c = Container(
        settings,
        store=SqliteStore(":memory:"),
        authorizer=PermitAll(),
        confinement=Unconfined(),
        cloud=FakeCloud(),
        preflight=CountingPreflight(),
    )
    # One cpu-small request (16 vCPUs) is more than half of the team's limit.
    c.swap(policy=c.policy.model_copy(update={"max_team_vcpus": CPU_SMALL_VCPUS + 10}))
    return c


@pytest.fixture
def client(container: Container) -> Iterator[httpx.Client]:
    from handlers.api import create_api

    with served(create_api(lambda: container)) as base, httpx.Client(base_url=base, headers=bearer(container)) as http:
        yield http


def test_a_rest_replay_returns_the_same_request_when_the_team_is_over_half_its_limit(
    client: httpx.Client, container: Container
) -> None:
    body = example("cpu-small.json")
    first = client.post("/api/workspaces", json=body, headers={"Idempotency-Key": "ci-run-42"})
    assert first.status_code == 202, first.text
    preflight = container.preflight
    assert isinstance(preflight, CountingPreflight) and len(preflight.calls) == 1
    # Same key, same body (formatted differently): the same request, before policy or pre-flight run.
    again = client.post(
        "/api/workspaces",
        content=json.dumps(body, indent=2),
        headers={"Idempotency-Key": "ci-run-42", "content-type": "application/json"},
    )
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"].endswith(f"/api/workspaces/{first.json()['id']}")
    assert len(preflight.calls) == 1
    # Same key, another body: 409, still before policy (this body would break it too).
    other = client.post(
        "/api/workspaces", json=body | {"workspace_name": "mlw-other"}, headers={"Idempotency-Key": "ci-run-42"}
    )
    assert other.status_code == 409 and other.headers["content-type"] == "application/problem+json"
    assert first.json()["id"] in other.text
    # A new key is a new request, and that one is judged by policy: the team is full.
    full = client.post(
        "/api/workspaces", json=body | {"workspace_name": "mlw-second"}, headers={"Idempotency-Key": "ci-run-43"}
    )
    assert full.status_code == 422 and "the team limit is 26" in full.text
    assert container.store.team_vcpus("fraud-detection") == CPU_SMALL_VCPUS


def test_keys_are_scoped_by_caller(container: Container, client: httpx.Client) -> None:
    body = example("cpu-small.json")
    alice = client.post(
        "/api/workspaces",
        json=body,
        headers={"Idempotency-Key": "same", **bearer(container, "alice")},
    )
    bob = client.post(
        "/api/workspaces",
        json=body | {"team": "vision"},
        headers={"Idempotency-Key": "same", **bearer(container, "bob")},
    )
    assert (alice.status_code, bob.status_code) == (202, 202), bob.text
    assert alice.json()["id"] != bob.json()["id"]
    # A caller whose name ends where another's key begins cannot spell the other's scoped key.
    assert rest_key("a:b", "c") != rest_key("a", "b:c")


def test_a_rest_caller_cannot_take_a_key_the_queue_will_use(client: httpx.Client, container: Container) -> None:
    onboarding = example("onboarding.json") | {"environments": ["dev"]}
    # The attacker sends the queue's own key for message "m-1", environment dev, over REST first.
    queue = queue_key("m-1", "dev", sender=PLATFORM.oid)
    for i, key in enumerate((queue, "queue:m-1:dev", f"queue:{queue}")):
        squat = client.post(
            "/api/workspaces",
            json=example("cpu-small.json") | {"team": f"squat-{i}"},
            headers={"Idempotency-Key": key},
        )
        assert squat.status_code == 202, squat.text
    made = container.intake.onboard(body=json.dumps(onboarding).encode(), message_id="m-1", sender=PLATFORM)
    assert [r.status for r in made] == [RequestStatus.ACCEPTED], [r.problems for r in made]
    assert made[0].idempotency_key == queue
    # Another sender's message with the same id is its own, under a key of its own.
    assert queue_key("m-1", "dev", sender="someone-else") != queue
    assert made[0].source == "queue" and made[0].workspace_name == "mlw-churn-dev"


def test_an_onboarding_redelivery_finds_what_its_first_delivery_made(container: Container) -> None:
    onboarding = example("onboarding.json") | {"team": "fraud-detection", "environments": ["dev", "test"]}
    body = json.dumps(onboarding).encode()
    first = container.intake.onboard(body=body, message_id="msg-7", sender=PLATFORM)
    # dev fits (16 of 26 vCPUs); test does not, and is recorded as rejected with the reason.
    assert [r.status for r in first] == [RequestStatus.ACCEPTED, RequestStatus.REJECTED]
    assert "the team limit is 26" in first[1].problems[0]["message"]
    again = container.intake.onboard(body=body, message_id="msg-7", sender=PLATFORM)
    assert [r.id for r in again] == [r.id for r in first]
    page = container.store.list_requests(team="fraud-detection")
    assert len(page.items) == 2
    preflight = container.preflight
    assert isinstance(preflight, CountingPreflight) and len(preflight.calls) == 1


def test_a_message_id_used_again_for_other_input_is_recorded_not_taken_for_a_redelivery(
    container: Container,
) -> None:
    first = container.intake.onboard(
        body=json.dumps(example("onboarding.json") | {"environments": ["dev"]}).encode(),
        message_id="m-2",
        sender=PLATFORM,
    )
    other = example("onboarding.json") | {"team": "vision", "environments": ["dev"]}
    second = container.intake.onboard(body=json.dumps(other).encode(), message_id="m-2", sender=PLATFORM)
    assert [r.status for r in first] == [RequestStatus.ACCEPTED]
    assert [r.status for r in second] == [RequestStatus.REJECTED] and second[0].team == "vision"
    assert second[0].problems[0]["code"] == "IdempotencyKeyReused" and first[0].id in second[0].problems[0]["message"]
    # The first message's redelivery is still a redelivery.
    again = container.intake.onboard(
        body=json.dumps(example("onboarding.json") | {"environments": ["dev"]}).encode(),
        message_id="m-2",
        sender=PLATFORM,
    )
    assert [r.id for r in again] == [first[0].id]
