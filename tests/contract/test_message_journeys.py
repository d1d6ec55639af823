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
from models.errors import TransientError
from models.outcomes import Outcome
from models.records import RequestStatus, StepStatus
from tests.conftest import example, poll
from tests.contract.test_function_app import _functions
from tests.fakes import FakeCloud


class WorkerCrash(BaseException):
    """The worker process dies mid-step (nothing is settled)."""


class FlakyStore(SqliteStore):
    """A store whose reads fail, while `down` says so, for one step or for the onboarding checks."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.down_for_step: str | None = None
        self.down_for_onboarding = False

    def get_step(self, request_id: str, step_id: str):  # type: ignore[no-untyped-def]
        if step_id == self.down_for_step:
            raise TransientError("the state store did not answer", code="StoreUnavailable")
        return super().get_step(request_id, step_id)

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

    def pump(self) -> None:
        for queue, fn in (
            (self.settings.onboarding_queue, "onboarding"),
            (self.settings.steps_queue, "steps"),
            (self.settings.notifications_queue, "notifications"),
        ):
            for m in self.bus.receive(queue, max_messages=10):
                msg = ServiceBusMessage(
                    body=m.body,
                    message_id=m.message_id,
                    delivery_count=m.delivery_count,
                    application_properties=m.application_properties,
                    user_properties=m.application_properties,
                    content_type="application/json",
                )
                try:
                    self.fns[fn](msg)
                except WorkerCrash:
                    self.crashes += 1  # the process died: no settlement, the lock runs out
                except Exception:  # noqa: BLE001 - the host abandons on any error
                    self.bus.abandon(m)
                else:
                    self.bus.complete(m)

    def timer(self, name: str) -> None:
        self.fns[name](None)

    def until(self, check: Any, what: str, timeout: float = 30) -> Any:
        def step() -> Any:
            self.pump()
            return check()

        return poll(step, timeout=timeout, every=0.05, what=what)


@pytest.fixture
def journey(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ModuleType, Host, FlakyStore, CrashingCloud]]:
    monkeypatch.setenv("VENDING_DATA_DIR", str(tmp_path))
    module = importlib.import_module("function_app")
    store, cloud = FlakyStore(), CrashingCloud()
    bus = SqliteBus(tmp_path / "bus.db", lock_s=1.0, max_deliveries=3)
    settings = module.container.settings
    old = (
        settings.bus_lock_s,
        settings.bus_max_deliveries,
        settings.retry_base_s,
        settings.retry_cap_s,
        settings.sweep_grace_s,
    )
    settings.bus_lock_s, settings.bus_max_deliveries, settings.retry_base_s, settings.retry_cap_s = 1.0, 3, 0.0, 0.0
    # Every part anew: earlier tests in this process swapped parts of the same module-level container.
    module.container.swap(store=store, bus=bus, cloud=cloud, policy=None, sinks=None, notifier=None, preflight=None)
    yield module, Host(module, bus), store, cloud
    (
        settings.bus_lock_s,
        settings.bus_max_deliveries,
        settings.retry_base_s,
        settings.retry_cap_s,
        settings.sweep_grace_s,
    ) = old


def _submit(module: ModuleType, body: dict[str, Any]) -> str:
    from models.request import parse_request

    return str(module.container.intake.submit(request=parse_request(body), requester="t", source="test").record.id)


def test_a_step_whose_message_dies_is_recorded_failed_and_replayed_to_the_end(journey: Any) -> None:
    module, host, store, _ = journey
    store.down_for_step = "storage"
    rid = _submit(module, example("cpu-small.json") | {"team": "dlq-step"})
    dead = host.until(lambda: module.container.bus.dead_letters("steps"), "the storage message to be dead-lettered")
    assert dead[0].message_id == f"{rid}/storage/1" and dead[0].reason == "MaxDeliveryCountExceeded"
    host.timer("deadletters")  # the store is still down: nothing recorded yet, the letter stays for the next run
    store.down_for_step = None
    assert store.get_step(rid, "storage").status == StepStatus.QUEUED
    host.timer("deadletters")
    step = store.get_step(rid, "storage")
    assert step.status == StepStatus.FAILED and step.error.code == "DeadLettered"
    assert "dead-lettered after 3 deliveries (MaxDeliveryCountExceeded" in step.error.message
    assert f"python -m cli deadletters replay {rid}/storage/1" in step.error.message
    record = host.until(lambda: (r := store.get_request(rid)).status.terminal and r, "the request to fail")
    assert record.status == RequestStatus.FAILED
    assert store.get_step(rid, "workspace").status == StepStatus.SKIPPED
    events = [e for e in store.list_events(rid) if e.name.value == "WorkspaceStepFailed"]
    assert [e.error_code for e in events] == ["DeadLettered"]
    host.timer("deadletters")  # recording again changes nothing
    assert len([e for e in store.list_events(rid) if e.name.value == "WorkspaceStepFailed"]) == 1

    # The operator fixed the cause (the store is back) and replays the message.
    outcome = module.container.deadletters.replay(f"{rid}/storage/1")
    assert outcome == f"resumed step storage of request {rid}"
    assert module.container.bus.dead_letters("steps") == []
    done = host.until(lambda: (r := store.get_request(rid)).status.terminal and r, "the replayed request to finish")
    assert done.status == RequestStatus.SUCCEEDED
    assert {s.status for s in store.get_steps(rid)} == {StepStatus.SUCCEEDED}


def test_an_onboarding_message_that_dies_becomes_a_rejected_request_and_can_be_replayed(journey: Any) -> None:
    module, host, store, _ = journey
    store.down_for_onboarding = True
    module.container.bus.send("onboarding", _outgoing("hr-42", example("onboarding.json") | {"team": "dlq-onboard"}))
    host.until(lambda: module.container.bus.dead_letters("onboarding"), "the onboarding message to be dead-lettered")
    host.timer("deadletters")
    [rejected] = store.list_requests(status=RequestStatus.REJECTED).items
    assert rejected.problems[0]["code"] == "DeadLettered"
    assert "not processed" in rejected.problems[0]["message"]
    store.down_for_onboarding = False
    assert module.container.deadletters.replay("hr-42").startswith("sent again to 'onboarding' as hr-42/replay-")
    made = host.until(
        lambda: len(store.list_requests(team="dlq-onboard", status=RequestStatus.SUCCEEDED).items) == 3,
        "three requests from the replayed message",
        timeout=60,
    )
    assert made


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


def _outgoing(message_id: str, body: dict[str, Any]) -> Any:
    from engine.ports import OutgoingMessage

    return OutgoingMessage(message_id=message_id, body=json.dumps(body).encode())


def test_a_callback_and_the_sweeper_through_their_functions(journey: Any) -> None:
    from tests.capture import capture_server

    module, host, store, _ = journey
    with capture_server() as cap:
        cap.statuses = [503]  # the receiver is down once: the notifications function raises, the host abandons
        rid = _submit(module, example("cpu-small.json") | {"team": "notify", "callback_url": f"{cap.url}/done"})
        note = host.until(
            lambda: (n := (store.get_request(rid).notification or {})).get("status") not in (None, "pending") and n,
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
    module.container.bus.send("onboarding", _outgoing("hr-bad", bad))
    host.until(lambda: store.list_requests(status=RequestStatus.REJECTED).items, "the invalid request to be rejected")
    [rejected] = store.list_requests(status=RequestStatus.REJECTED).items
    assert {p["field"] for p in rejected.problems} == {"team", "environment"}
    assert module.container.bus.dead_letters("onboarding") == []  # completed, never retried
    with capture_server() as cap:
        cap.statuses = [503] * 10  # down for longer than the queue's three deliveries
        rid = _submit(module, example("cpu-small.json") | {"team": "never", "callback_url": f"{cap.url}/x"})
        note = host.until(
            lambda: (n := (store.get_request(rid).notification or {})).get("status") not in (None, "pending") and n,
            "the callback outcome",
        )
        assert len(cap.received) == 3
    assert note["status"] == "failed" and "gave up after the last delivery" in note["error"]
