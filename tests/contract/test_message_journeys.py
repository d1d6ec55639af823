"""Each queue's messages through the Functions entry points, including poison, crash and dead-letter paths.

A small host plays the Functions runtime on the SQLite bus: it delivers each message to the
registered function as an `azure.functions` Service Bus message, completes it when the function
returns, abandons it when the function raises, and leaves it locked when the worker 'crashes'.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from azure.functions.servicebus import ServiceBusMessage

from adapters.sqlite_bus import SqliteBus
from adapters.sqlite_store import SqliteStore
from engine.intake import queue_key
from models.errors import TransientError
from models.outcomes import Outcome
from models.records import RequestStatus, StepRecord, StepStatus
from tests.callers import ADMIN_OID, PLATFORM, PermitAll, Unconfined, sender
from tests.conftest import example, poll
from tests.contract.test_function_app import _functions, _http
from tests.fakes import FakeCloud


class WorkerCrash(BaseException):
    """The worker process dies mid-step (nothing is settled)."""


class FlakyStore(SqliteStore):
    """A store that fails, while `down` says so, one step's reads and claims, or the onboarding checks.

    A step run reads its request's steps in one call, so the store goes down for the step at its
    claim (the write to running) and at any read of that step alone (the dead-letter recorder's).
    """

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.down_for_step: str | None = None
        self.down_for_onboarding = False

    def get_step(self, request_id: str, step_id: str):  # type: ignore[no-untyped-def]
        if step_id == self.down_for_step:
            raise TransientError("the state store did not answer", code="StoreUnavailable")
        return super().get_step(request_id, step_id)

    def update_step(self, step: StepRecord) -> StepRecord:
        if step.step_id == self.down_for_step and step.status == StepStatus.RUNNING:
            raise TransientError("the state store did not answer", code="StoreUnavailable")
        return super().update_step(step)

    def team_vcpus(self, team: str) -> int:
        if self.down_for_onboarding:
            raise TransientError("the state store did not answer", code="StoreUnavailable")
        return super().team_vcpus(team)


class CrashingCloud(FakeCloud):
    crash_on: str | None = None

    def reconcile(self, step: Any, ctx: Any) -> Outcome:
        if step.id == self.crash_on:
            self.crash_on = None
            raise WorkerCrash
        return super().reconcile(step, ctx)


class Host:
    """Deliver messages to the registered functions as the Functions host would."""

    def __init__(self, module: ModuleType, bus: SqliteBus) -> None:
        self.fns = {name: f.get_user_function() for name, f in _functions(module).items()}
        self.bus = bus
        self.settings = module.container.settings
        self.crashes = 0
        self.delivered: list[tuple[str, dict[str, str]]] = []  # (message id, application properties)
        self.completed: list[str] = []

    def pump(self) -> None:
        for queue, fn in (
            (self.settings.onboarding_queue, "onboarding"),
            (self.settings.steps_queue, "steps"),
            (self.settings.notifications_queue, "notifications"),
        ):
            for m in self.bus.receive(queue, max_messages=10):
                self.delivered.append((m.message_id, m.application_properties))
                msg = ServiceBusMessage(
                    body=m.body,
                    message_id=m.message_id,
                    delivery_count=m.delivery_count,
                    application_properties=m.application_properties,
                    user_properties=m.application_properties,
                    content_type="application/json",
                    correlation_id=m.correlation_id,
                )
                try:
                    self.fns[fn](msg)
                except WorkerCrash:
                    self.crashes += 1  # the process died: no settlement, the lock runs out
                except Exception:  # noqa: BLE001 - the host abandons on any error
                    self.bus.abandon(m)
                else:
                    self.bus.complete(m)
                    self.completed.append(m.message_id)

    def timer(self, name: str) -> None:
        self.fns[name](None)

    def until(self, check: Any, what: str, timeout: float = 30) -> Any:
        def step() -> Any:
            self.pump()
            return check()

        return poll(step, timeout=timeout, every=0.05, what=what)


# Small budgets, so a failure that never clears is dead-lettered within a test: three tries, fast.
JOURNEY_SETTINGS: dict[str, Any] = {
    "bus_lock_s": 1.0,
    "bus_max_deliveries": 3,
    "retry_base_s": 0.0,
    "retry_cap_s": 0.0,
    "message_max_attempts": 3,
    "message_retry_base_s": 0.05,
    "message_retry_cap_s": 0.1,
}


@pytest.fixture
def journey(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ModuleType, Host, FlakyStore, CrashingCloud]]:
    monkeypatch.setenv("VENDING_DATA_DIR", str(tmp_path))
    module = importlib.import_module("function_app")
    store, cloud = FlakyStore(), CrashingCloud()
    bus = SqliteBus(tmp_path / "bus.db", lock_s=1.0, max_deliveries=3)
    settings = module.container.settings
    old = dict(vars(settings))  # the module-level settings are shared with other tests: put every value back
    for name, value in JOURNEY_SETTINGS.items():
        setattr(settings, name, value)
    # Every part anew: earlier tests in this process swapped parts of the same module-level container.
    module.container.swap(
        store=store,
        bus=bus,
        cloud=cloud,
        policy=None,
        sinks=None,
        notifier=None,
        preflight=None,
        authorizer=PermitAll(),
        confinement=Unconfined(),
    )
    yield module, Host(module, bus), store, cloud
    for name, value in old.items():
        setattr(settings, name, value)


def _submit(module: ModuleType, body: dict[str, Any]) -> str:
    from models.request import parse_request

    return str(module.container.intake.submit(request=parse_request(body), caller=PLATFORM, source="test").record.id)


def test_a_step_whose_message_dies_is_recorded_failed_and_replayed_to_the_end(journey: Any) -> None:
    module, host, store, _ = journey
    store.down_for_step = "storage"
    rid = _submit(module, example("cpu-small.json") | {"team": "dlq-step"})
    dead = host.until(lambda: module.container.bus.dead_letters("steps"), "the storage message to be dead-lettered")
    # Tried three times, each a scheduled copy; then the function raises and Service Bus dead-letters the last copy.
    letter = f"{rid}/storage/1/retry-2"
    assert dead[0].message_id == letter and dead[0].reason == "MaxDeliveryCountExceeded"
    assert [m for m, _ in host.delivered if m.startswith(f"{rid}/storage/")][:3] == [
        f"{rid}/storage/1",
        f"{rid}/storage/1/retry-1",
        letter,
    ]
    host.timer("deadletters")  # the store is still down: nothing recorded yet, the letter stays for the next run
    store.down_for_step = None
    assert store.get_step(rid, "storage").status == StepStatus.QUEUED
    host.timer("deadletters")
    step = store.get_step(rid, "storage")
    assert step.status == StepStatus.FAILED and step.error.code == "DeadLettered"
    assert "dead-lettered after 3 tries over 0 s (the last one delivered 3 times) (MaxDeliveryCountExceeded" in (
        step.error.message
    )
    assert f"python -m cli deadletters replay {letter}" in step.error.message
    record = host.until(lambda: (r := store.get_request(rid)).status.terminal and r, "the request to fail")
    assert record.status == RequestStatus.FAILED
    assert store.get_step(rid, "workspace").status == StepStatus.SKIPPED
    events = [e for e in store.list_events(rid) if e.name.value == "WorkspaceStepFailed"]
    assert [e.error_code for e in events] == ["DeadLettered"]
    host.timer("deadletters")  # recording again changes nothing
    assert len([e for e in store.list_events(rid) if e.name.value == "WorkspaceStepFailed"]) == 1

    # The operator fixed the cause (the store is back) and replays the message.
    outcome = module.container.deadletters.replay(letter)
    assert outcome == f"resumed step storage of request {rid}"
    assert module.container.bus.dead_letters("steps") == []
    done = host.until(lambda: (r := store.get_request(rid)).status.terminal and r, "the replayed request to finish")
    assert done.status == RequestStatus.SUCCEEDED
    assert {s.status for s in store.get_steps(rid)} == {StepStatus.SUCCEEDED}


def test_an_onboarding_message_that_dies_becomes_a_rejected_request_and_can_be_replayed(journey: Any) -> None:
    module, host, store, _ = journey
    store.down_for_onboarding = True
    module.container.bus.send(
        "onboarding", _outgoing(module, "hr-42", example("onboarding.json") | {"team": "dlq-onboard"})
    )
    [dead] = host.until(
        lambda: module.container.bus.dead_letters("onboarding"), "the onboarding message to be dead-lettered"
    )
    assert dead.message_id == "hr-42/retry-2"
    host.timer("deadletters")
    host.timer("deadletters")  # recorded once
    # One rejected request per environment the message asked for, each with its team: listed by team.
    rejected = store.list_requests(team="dlq-onboard").items
    assert sorted((r.environment, r.status) for r in rejected) == [
        ("dev", RequestStatus.REJECTED),
        ("prod", RequestStatus.REJECTED),
        ("test", RequestStatus.REJECTED),
    ]
    assert {r.problems[0]["code"] for r in rejected} == {"DeadLettered"}
    assert all("not processed" in r.problems[0]["message"] for r in rejected)
    assert all("after 3 tries" in r.problems[0]["message"] for r in rejected)
    listed = _http(module, "GET", "/api/workspaces?team=dlq-onboard")
    assert listed.status_code == 200
    assert sorted(item["environment"] for item in json.loads(listed.get_body())["items"]) == ["dev", "prod", "test"]
    store.down_for_onboarding = False
    # Replayed as its sender (the token the message carries), processed now under a new id.
    outcome = module.container.deadletters.replay("hr-42/retry-2")
    assert outcome.startswith("processed again as hr-42/replay-"), outcome
    assert "sent by 5b7e9a1c-3f6b-4cad-8e5a-7c9e1b3d5f05" in outcome  # the directory's admin, who sent it
    made = host.until(
        lambda: len(store.list_requests(team="dlq-onboard", status=RequestStatus.SUCCEEDED).items) == 3,
        "three requests from the replayed message",
        timeout=60,
    )
    assert made
    assert module.container.bus.dead_letters("onboarding") == []


def test_a_duplicate_delivery_dispatches_nothing_twice(journey: Any) -> None:
    module, host, store, cloud = journey
    rid = _submit(module, example("cpu-small.json") | {"team": "dupe"})
    [m] = module.container.bus.receive("steps")
    fn = host.fns["steps"]
    for _ in range(2):  # the same message, delivered twice
        fn(
            ServiceBusMessage(
                body=m.body, message_id=m.message_id, delivery_count=1, application_properties={}, user_properties={}
            )
        )
    module.container.bus.complete(m)
    assert cloud.calls[f"{rid}/resource-group"] == 1  # the second copy was dropped before the cloud
    step = store.get_step(rid, "resource-group")
    assert step.status == StepStatus.WAITING and step.attempt == 2  # moved on exactly once
    starts = [e for e in store.list_events(rid) if e.name.value == "WorkspaceStepStarted"]
    assert len(starts) == 1
    host.until(lambda: store.get_request(rid).status.terminal, "the request to finish")
    assert store.get_request(rid).status == RequestStatus.SUCCEEDED


def test_a_crash_mid_step_resumes_after_the_lock_and_finishes_once(journey: Any) -> None:
    module, host, store, cloud = journey
    cloud.crash_on = "key-vault"
    rid = _submit(module, example("cpu-small.json") | {"team": "crash"})
    started = time.monotonic()
    done = host.until(lambda: (r := store.get_request(rid)).status.terminal and r, "the request to finish", timeout=60)
    assert done.status == RequestStatus.SUCCEEDED
    assert host.crashes == 1 and time.monotonic() - started >= 0.5  # waited for the lease to run out
    kv = store.get_step(rid, "key-vault")
    assert kv.status == StepStatus.SUCCEEDED and kv.retries == 0
    assert all(n == 1 for n in cloud.creates.values())


def _outgoing(module: ModuleType, message_id: str, body: dict[str, Any]) -> Any:
    from engine.ports import OutgoingMessage

    return OutgoingMessage(
        message_id=message_id, body=json.dumps(body).encode(), application_properties=sender(module.container)
    )


def test_a_callback_and_the_sweeper_through_their_functions(journey: Any) -> None:
    from tests.capture import capture_server
    from tests.loopback import loopback_callbacks_for

    module, host, store, _ = journey
    with capture_server() as cap, loopback_callbacks_for(module.container):
        cap.statuses = [503]  # the receiver is down once: the notifications function raises, the host abandons
        rid = _submit(module, example("cpu-small.json") | {"team": "notify", "callback_url": f"{cap.url}/done"})
        note = host.until(
            lambda: (
                (n := store.get_request(rid).notification) is not None and n.done and n.model_dump(exclude_none=True)
            ),
            "the callback to be delivered",
        )
        assert note["status"] == "delivered"
        assert [c["status"] for c in cap.received] == [503, 200]
        assert cap.received[-1]["json"]["status"] == "succeeded"
    # The sweeper timer: a queued step whose message was lost is sent again.
    lost = _submit(module, example("cpu-small.json") | {"team": "sweep"})
    [m] = module.container.bus.receive("steps")
    module.container.bus.complete(m)  # the message is gone, the step still queued
    module.container.settings.sweep_grace_s = 0.0
    host.timer("sweeper")
    done = host.until(lambda: (r := store.get_request(lost)).status.terminal and r, "the swept request to finish")
    assert done.status == RequestStatus.SUCCEEDED
    assert store.get_step(lost, "resource-group").attempt >= 2


def test_an_invalid_request_and_a_receiver_that_never_answers_are_recorded(journey: Any) -> None:
    from tests.capture import capture_server

    module, host, store, _ = journey
    bad = example("cpu-small.json") | {"team": "Bad Team", "environment": "staging"}
    module.container.bus.send("onboarding", _outgoing(module, "hr-bad", bad))
    host.until(lambda: store.list_requests(status=RequestStatus.REJECTED).items, "the invalid request to be rejected")
    [rejected] = store.list_requests(status=RequestStatus.REJECTED).items
    assert {p["field"] for p in rejected.problems} == {"team", "environment"}
    assert module.container.bus.dead_letters("onboarding") == []  # completed, never retried
    from tests.loopback import loopback_callbacks_for

    with capture_server() as cap, loopback_callbacks_for(module.container):
        cap.statuses = [503] * 10  # down for longer than the queue's three deliveries
        rid = _submit(module, example("cpu-small.json") | {"team": "never", "callback_url": f"{cap.url}/x"})
        note = host.until(
            lambda: (
                (n := store.get_request(rid).notification) is not None and n.done and n.model_dump(exclude_none=True)
            ),
            "the callback outcome",
        )
        assert len(cap.received) == 3
    assert note["status"] == "failed" and "gave up after the last try" in note["error"]
    assert module.container.bus.dead_letters("notifications") == []  # recorded on the request, not dead-lettered


def test_a_store_outage_of_seconds_during_onboarding_is_ridden_out_with_scheduled_copies(journey: Any) -> None:
    from adapters.sqlite_store import SqliteStore
    from tests.fakes import StoreOutage

    module, host, _, _ = journey
    settings = module.container.settings
    # Defaults scaled down: enough tries, doubling from 0.5 s, to ride out a three-second outage.
    settings.message_max_attempts, settings.message_retry_base_s, settings.message_retry_cap_s = 10, 0.5, 2.0
    store = StoreOutage(SqliteStore(":memory:"))
    module.container.swap(store=store)
    teams = [f"outage-{i}" for i in range(3)]
    store.outage(3.0)
    for i, team in enumerate(teams):
        module.container.bus.send(
            "onboarding", _outgoing(module, f"hr-out-{i}", example("onboarding.json") | {"team": team})
        )
    host.pump()
    # Each message was tried, the function returned (the original is completed) and a copy is scheduled.
    assert sorted(host.completed) == ["hr-out-0", "hr-out-1", "hr-out-2"]
    counts = module.container.bus.counts("onboarding")
    assert counts == {"active": 0, "scheduled": 3, "locked": 0, "dead": 0}
    assert store.down

    def everything_provisioned() -> bool:
        if store.down:
            return False
        made = [r for team in teams for r in store.list_requests(team=team).items]
        return len(made) == 9 and all(r.status == RequestStatus.SUCCEEDED for r in made)

    host.until(everything_provisioned, "nine requests, provisioned after the outage", timeout=60)
    assert store.refused > 0
    copies = [(m, props) for m, props in host.delivered if m.startswith("hr-out-0/retry-")]
    assert copies and copies[0][1]["original_message_id"] == "hr-out-0" and copies[0][1]["delivery_attempt"] == "2"
    # The copies were handled under the original id: intake's keys are the ones the first try would have made.
    keys = sorted(r.idempotency_key or "" for r in store.list_requests(team="outage-0").items)
    assert keys == [
        queue_key("hr-out-0", "dev", sender=ADMIN_OID),
        queue_key("hr-out-0", "prod", sender=ADMIN_OID),
        queue_key("hr-out-0", "test", sender=ADMIN_OID),
    ]
    for queue in ("onboarding", "steps", "notifications"):
        assert module.container.bus.dead_letters(queue) == [], queue
