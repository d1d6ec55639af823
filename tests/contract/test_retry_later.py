"""Retry later, not again, on the devhost: its queue workers on the SQLite bus, with the real engine and HTTP callbacks.

Short outages are ridden out with scheduled copies; a failure that never clears is dead-lettered
with its reason after the configured tries or total wait; a poison step is failed after its
handlings keep failing; worker threads survive anything a handler raises.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from adapters.sqlite_bus import SqliteBus
from adapters.sqlite_store import SqliteStore
from composition import Container
from devhost.runtime import queue_workers
from devhost.workers import QueueWorkers
from engine.intake import queue_key
from engine.ports import OutgoingMessage, ReceivedMessage
from engine.redelivery import RetryPolicy
from models.errors import TransientError
from models.messages import StepMessage
from models.records import RequestStatus, StepStatus
from models.request import parse_request
from models.settings import Settings
from tests.callers import ADMIN_OID, PLATFORM, PermitAll, Unconfined, sender
from tests.conftest import example, poll
from tests.fakes import FakeCloud, OutcomeWriteFails, StoreOutage, receiver
from tests.loopback import loopback_callbacks_for

QUEUES = ("onboarding", "steps", "notifications")


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(data_dir=tmp_path, retry_base_s=0.0, retry_cap_s=0.0, **overrides)


@contextmanager
def devhost(settings: Settings, *, store: Any) -> Iterator[Container]:
    """The devhost's queue workers (as `devhost.runtime` wires them) on an in-memory bus, with a fake cloud."""
    bus = SqliteBus(":memory:", lock_s=settings.bus_lock_s, max_deliveries=settings.bus_max_deliveries)
    container = Container(
        settings, store=store, bus=bus, cloud=FakeCloud(), authorizer=PermitAll(), confinement=Unconfined()
    )
    workers = queue_workers(container)
    for w in workers:
        w.start()
    try:
        yield container
    finally:
        for w in workers:
            w.stop()


def _onboarding(container: Container, message_id: str, team: str) -> OutgoingMessage:
    return OutgoingMessage(
        message_id=message_id,
        body=json.dumps(example("onboarding.json") | {"team": team}).encode(),
        application_properties=sender(container),
    )


def _no_dead_letters(container: Container) -> None:
    for queue in QUEUES:
        assert container.bus.dead_letters(queue) == [], queue


def test_a_store_outage_of_seconds_during_onboarding_ends_with_every_message_processed(tmp_path: Path) -> None:
    store = StoreOutage(SqliteStore(":memory:"))
    settings = _settings(tmp_path, message_max_attempts=10, message_retry_base_s=0.5, message_retry_cap_s=2.0)
    teams = [f"outage-{i}" for i in range(4)]
    with devhost(settings, store=store) as container:
        store.outage(3.0)
        for i, team in enumerate(teams):
            container.bus.send("onboarding", _onboarding(container, f"hr-{i}", team))

        def provisioned() -> bool:
            if store.down:
                return False
            made = [r for team in teams for r in store.list_requests(team=team).items]
            return len(made) == 12 and all(r.status == RequestStatus.SUCCEEDED for r in made)

        poll(provisioned, timeout=60, every=0.1, what="twelve requests, provisioned after the outage")
        _no_dead_letters(container)
    assert store.refused >= len(teams)  # every message met the outage at least once
    keys = sorted(r.idempotency_key or "" for r in store.list_requests(team="outage-0").items)
    assert keys == [
        queue_key("hr-0", "dev", sender=ADMIN_OID),
        queue_key("hr-0", "prod", sender=ADMIN_OID),
        queue_key("hr-0", "test", sender=ADMIN_OID),
    ]  # the original id, not a copy's


def _dead_letter_of(message_id: str, policy: RetryPolicy) -> tuple[Any, list[tuple[float, str]]]:
    """Send one message to a worker whose handler always fails; return its dead letter and the (time, id) tries."""
    bus = SqliteBus(":memory:")
    tries: list[tuple[float, str]] = []

    def handle(message: ReceivedMessage) -> None:
        tries.append((time.monotonic(), message.message_id))
        raise TransientError("the state store did not answer", code="StoreUnavailable")

    workers = QueueWorkers(bus=bus, queue="q", handle=handle, threads=1, name="q", retry=policy)
    workers.start()
    try:
        bus.send("q", OutgoingMessage(message_id=message_id, body=b"{}"))
        [dead] = poll(lambda: bus.dead_letters("q"), what="the message to be dead-lettered")
    finally:
        workers.stop()
    return dead, tries


def test_when_the_tries_run_out_the_message_is_dead_lettered_with_the_reason() -> None:
    dead, tries = _dead_letter_of("m-1", RetryPolicy(max_attempts=4, base_s=0.05, cap_s=0.1, max_wait_s=60))
    assert [m for _, m in tries] == ["m-1", "m-1/retry-1", "m-1/retry-2", "m-1/retry-3"]
    assert all(b - a >= 0.025 for (a, _), (b, _) in pairwise(tries))  # later, never at once
    assert dead.message_id == "m-1/retry-3" and dead.reason == "RetriesExhausted"
    assert "TransientError: the state store did not answer" in dead.description
    assert "try 4 of 4" in dead.description and "no try left" in dead.description
    assert dead.application_properties["original_message_id"] == "m-1"


def test_the_total_wait_caps_the_tries() -> None:
    policy = RetryPolicy(max_attempts=1000, base_s=0.1, cap_s=0.2, max_wait_s=1.0)
    dead, tries = _dead_letter_of("m-2", policy)
    span = tries[-1][0] - tries[0][0]
    assert len(tries) < 20 and dead.reason == "RetriesExhausted" and "no try left" in dead.description
    # No try starts more than the total wait after the first; the last is within one delay of it.
    # (The upper margin allows for a loaded machine delivering a scheduled copy a little late.)
    assert policy.max_wait_s - policy.cap_s - 0.1 <= span <= policy.max_wait_s + 0.5


class Bomb(BaseException):
    """Not an Exception: what used to kill a worker thread silently."""


def test_a_worker_thread_survives_a_base_exception_and_logs_it_once(caplog: pytest.LogCaptureFixture) -> None:
    bus = SqliteBus(":memory:")
    seen: list[str] = []

    def handle(message: ReceivedMessage) -> None:
        seen.append(message.message_id)
        if message.message_id == "bomb":
            raise Bomb("the handler blew up")

    workers = QueueWorkers(
        bus=bus,
        queue="q",
        handle=handle,
        threads=1,
        name="q",
        retry=RetryPolicy(3, base_s=0.05, cap_s=0.1, max_wait_s=60),
    )
    caplog.set_level(logging.WARNING)
    workers.start()
    try:
        bus.send("q", OutgoingMessage(message_id="bomb", body=b"{}"))
        bus.send("q", OutgoingMessage(message_id="next", body=b"{}"))
        poll(lambda: {"next", "bomb/retry-1"} <= set(seen), what="the next message and the bomb's retry")
        assert all(t.is_alive() for t in workers._threads)
    finally:
        workers.stop()
    assert seen[:2] == ["bomb", "next"]
    failures = [r for r in caplog.records if "bomb" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert failures[0].exc_info is not None and failures[0].exc_info[0] is Bomb
    assert "Bomb: the handler blew up" in failures[0].getMessage()
    assert bus.counts("q") == {"active": 0, "scheduled": 0, "locked": 0, "dead": 0}


class BrokenBus(SqliteBus):
    """A bus that cannot be read for its first few receives."""

    def __init__(self, failures: int) -> None:
        super().__init__(":memory:")
        self.failures = failures

    def receive(self, queue: str, *, max_messages: int = 1, wait_s: float = 0.0) -> list[ReceivedMessage]:
        if self.failures > 0:
            self.failures -= 1
            raise TransientError("the bus did not answer", code="BusUnavailable")
        return super().receive(queue, max_messages=max_messages, wait_s=wait_s)


def test_a_bus_that_cannot_be_read_is_logged_once_until_it_works_again(caplog: pytest.LogCaptureFixture) -> None:
    bus = BrokenBus(failures=2)
    seen: list[str] = []
    workers = QueueWorkers(bus=bus, queue="q", handle=lambda m: seen.append(m.message_id), threads=1, name="q")
    caplog.set_level(logging.WARNING)
    bus.send("q", OutgoingMessage(message_id="m", body=b"{}"))
    workers.start()
    try:
        poll(lambda: seen == ["m"], timeout=10, what="the message once the bus works")
    finally:
        workers.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert [line for line in lines if line.startswith("receive from q")] == [
        "receive from q failed; trying again every second",
        "receive from q works again",
    ]


# ----- a step whose handling fails after its reconcile ------------------------------------------


def _poison_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return _settings(tmp_path, step_max_handling_failures=3, message_max_attempts=20, **overrides)


def _failed(container: Container, rid: str) -> Any:
    record = container.store.get_request(rid)
    return record if record is not None and record.status.terminal else None


def _assert_failed_by_handling(container: Container, rid: str) -> None:
    record = container.store.get_request(rid)
    assert record is not None and record.status == RequestStatus.FAILED
    assert record.error is not None and record.error.code == "StepHandlingFailed"
    storage = container.store.get_step(rid, "storage")
    assert storage is not None and storage.status == StepStatus.FAILED and storage.handling_failures == 3
    assert storage.error is not None and storage.error.code == "StepHandlingFailed"
    assert "failed 3 times in a row" in storage.error.message
    assert f"cannot write the outcome of {rid}/storage" in storage.error.message
    assert "submit the request again" in storage.error.message
    steps = {s.step_id: s.status for s in container.store.get_steps(rid)}
    assert steps["workspace"] == StepStatus.SKIPPED
    assert all(steps[s] == StepStatus.SKIPPED for s in steps if s.startswith(("compute:", "datastore:", "access:")))
    failed = [e for e in container.store.list_events(rid) if e.name.value == "WorkspaceStepFailed"]
    assert [(e.step, e.error_code) for e in failed] == [("storage", "StepHandlingFailed")]
    _no_dead_letters(container)


def test_a_step_whose_outcome_cannot_be_written_fails_after_its_handlings(tmp_path: Path) -> None:
    store = OutcomeWriteFails("storage")
    # The lease (half the 60 s lock) would hold a copy back for 30 s; a failed handling releases it.
    settings = _poison_settings(tmp_path, message_retry_base_s=0.1, message_retry_cap_s=0.2)
    with devhost(settings, store=store) as container:
        rid = container.intake.submit(
            request=parse_request(example("cpu-small.json")), caller=PLATFORM, source="t"
        ).record.id
        poll(lambda: _failed(container, rid), timeout=20, what="the request to fail")
        _assert_failed_by_handling(container, rid)
    assert store.refused == 3


def test_the_sweeper_in_between_does_not_reset_the_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = OutcomeWriteFails("storage")
    # Copies come late (1 s and more) and the sweeper early (0.3 s): it re-dispatches the step between handlings.
    settings = _poison_settings(tmp_path, message_retry_base_s=2.0, message_retry_cap_s=4.0, sweep_grace_s=0.3)
    caplog.set_level(logging.WARNING)
    with devhost(settings, store=store) as container:
        rid = container.intake.submit(
            request=parse_request(example("cpu-small.json")), caller=PLATFORM, source="t"
        ).record.id

        def swept_until_failed() -> Any:
            container.engine.sweep()
            return _failed(container, rid)

        poll(swept_until_failed, timeout=30, every=0.2, what="the request to fail")
        _assert_failed_by_handling(container, rid)
        storage = container.store.get_step(rid, "storage")
        assert storage is not None and storage.attempt >= 3  # each handling ran under a new dispatch
    swept = [r for r in caplog.records if r.getMessage().startswith(f"sweeper re-dispatched {rid}/storage")]
    assert len(swept) >= 2
    assert store.refused == 3


def test_a_failed_handling_that_cannot_be_counted_is_raised_for_a_retry_later(tmp_path: Path) -> None:
    class NothingWrites(OutcomeWriteFails):
        """Once the step is claimed, no write of it succeeds (the store went down mid-handling)."""

        claimed = False
        writes = 0

        def update_step(self, step: Any) -> Any:
            if step.step_id == self.step_id and self.claimed:
                self.writes += 1
                raise TransientError(f"write {self.writes} after the claim failed", code="StoreUnavailable")
            if step.step_id == self.step_id and step.status == StepStatus.RUNNING:
                self.claimed = True
            return super().update_step(step)

    store = NothingWrites("resource-group")
    bus = SqliteBus(":memory:")
    container = Container(
        _poison_settings(tmp_path),
        store=store,
        bus=bus,
        cloud=FakeCloud(),
        authorizer=PermitAll(),
        confinement=Unconfined(),
    )
    rid = container.intake.submit(
        request=parse_request(example("cpu-small.json")), caller=PLATFORM, source="t"
    ).record.id
    with pytest.raises(TransientError, match="write 1 after the claim failed"):  # the outcome's, not the count's
        container.engine.run_step(message=StepMessage(request_id=rid, step_id="resource-group", attempt=1))
    assert store.writes == 2  # the outcome, then the count
    step = store.get_step(rid, "resource-group")
    assert step is not None and step.status == StepStatus.RUNNING and step.handling_failures == 0


# ----- callbacks that ask to be retried later ---------------------------------------------------


def test_a_receiver_asking_for_2_s_is_retried_after_2_s_and_told_once(tmp_path: Path) -> None:
    settings = _settings(tmp_path, message_retry_base_s=0.1, message_retry_cap_s=0.2)
    busy = (503, {"Retry-After": "2"})
    with (
        receiver([busy, busy]) as (url, calls),
        devhost(settings, store=SqliteStore(":memory:")) as container,
        loopback_callbacks_for(container),
    ):
        body = example("cpu-small.json") | {"callback_url": f"{url}/hook"}
        rid = container.intake.submit(request=parse_request(body), caller=PLATFORM, source="t").record.id

        def told() -> Any:
            note = (container.store.get_request(rid) or _never()).notification
            return note.model_dump(exclude_none=True) if note is not None and note.done else None

        note = poll(told, timeout=30, what="the callback outcome")
        assert note["status"] == "delivered"
        _no_dead_letters(container)
    assert [status for _, status in calls] == [503, 503, 200]
    gaps = [b - a for (a, _), (b, _) in pairwise(calls)]
    assert all(gap >= 2.0 for gap in gaps), gaps


def _never() -> Any:
    raise AssertionError("the request vanished")


def test_a_dead_lettered_onboarding_message_is_recorded_per_environment_with_its_team(tmp_path: Path) -> None:
    store = SqliteStore(":memory:")
    bus = SqliteBus(":memory:")
    container = Container(
        _settings(tmp_path), store=store, bus=bus, cloud=FakeCloud(), authorizer=PermitAll(), confinement=Unconfined()
    )
    # An earlier try made the dev request before the message's tries ran out: the same sender.
    dev = example("onboarding.json")
    signed = sender(container)
    admin = container.authenticator.authenticate({"authorization": signed["Authorization"]})
    made = container.intake.onboard(
        body=json.dumps(dev | {"environments": ["dev"]}).encode(), message_id="hr-9", sender=admin
    )
    assert [r.idempotency_key for r in made] == [queue_key("hr-9", "dev", sender=ADMIN_OID)]
    bus.send(
        "onboarding",
        OutgoingMessage(
            message_id="hr-9/retry-14",
            body=json.dumps(dev).encode(),
            application_properties={
                **signed,
                "original_message_id": "hr-9",
                "delivery_attempt": "15",
                "first_attempt_at": "2026-01-01T00:00:00+00:00",
            },
        ),
    )
    [message] = bus.receive("onboarding")
    bus.dead_letter(message, reason="RetriesExhausted", description="try 15 of 15; no try left")
    assert container.deadletters.process() == 2
    assert container.deadletters.process() == 0  # recorded once
    listed = {(r.environment, r.status) for r in store.list_requests(team="churn").items}
    assert listed == {
        ("dev", RequestStatus.ACCEPTED),
        ("test", RequestStatus.REJECTED),
        ("prod", RequestStatus.REJECTED),
    }
    rejected = store.list_requests(team="churn", status=RequestStatus.REJECTED).items
    assert {r.idempotency_key for r in rejected} == {
        queue_key("hr-9", "test", sender=ADMIN_OID),
        queue_key("hr-9", "prod", sender=ADMIN_OID),
    }
    problem = rejected[0].problems[0]
    assert problem["code"] == "DeadLettered" and "after 15 tries" in problem["message"]
    assert "python -m cli deadletters replay hr-9/retry-14" in problem["message"]
