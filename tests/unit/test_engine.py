"""The step engine with an in-memory fake cloud: ordering, fan-in, retries, failures, recovery."""

from __future__ import annotations

from collections import Counter

import pytest

from composition import Container
from devhost.workers import QueueWorkers
from models.outcomes import Fail
from models.records import RequestStatus, StepStatus
from models.request import parse_request
from tests.callers import PLATFORM, PermitAll, Unconfined
from tests.conftest import assert_closes_the_timeline, example, poll, running_steps, whole_timeline
from tests.fakes import FakeCloud


def _finished(container: Container, rid: str) -> bool:
    record = container.store.get_request(rid)
    return record is not None and record.status.terminal


def test_request_reaches_succeeded_with_every_step_succeeded(
    service: tuple[Container, QueueWorkers], fake_cloud: FakeCloud
) -> None:
    container, _ = service
    sub = container.intake.submit(request=parse_request(example("gpu-research.json")), caller=PLATFORM, source="test")
    poll(lambda: _finished(container, sub.record.id), what="request to finish")
    record = container.store.get_request(sub.record.id)
    assert record is not None and record.status == RequestStatus.SUCCEEDED
    steps = container.store.get_steps(record.id)
    assert {s.status for s in steps} == {StepStatus.SUCCEEDED}
    assert record.outputs["config_json"]["workspace_name"] == "mlw-vision-test"
    assert record.outputs["studio_url"].startswith("https://ml.azure.com/home?wsid=/subscriptions/")
    assert all(n == 1 for n in fake_cloud.creates.values())
    assert fake_cloud.overlaps == []
    # Every step ran after its prerequisites finished.
    by_id = {s.step_id: s for s in steps}
    for s in steps:
        for d in s.depends_on:
            assert by_id[d].finished_at is not None and s.started_at is not None
            assert by_id[d].finished_at <= s.started_at
    names = whole_timeline(lambda: [e.name.value for e in container.store.list_events(record.id)], steps=len(steps))
    assert names[0] == "WorkspaceRequestAccepted"
    assert_closes_the_timeline(names, "WorkspaceProvisioned")
    assert names.count("WorkspaceStepSucceeded") == len(steps)


def test_transient_errors_are_retried_and_unexpected_errors_too(
    service: tuple[Container, QueueWorkers], fake_cloud: FakeCloud
) -> None:
    container, _ = service
    fake_cloud.retry_first["storage"] = 2
    fake_cloud.raise_first["key-vault"] = 1
    sub = container.intake.submit(request=parse_request(example("cpu-small.json")), caller=PLATFORM, source="test")
    poll(lambda: _finished(container, sub.record.id), what="request to finish")
    record = container.store.get_request(sub.record.id)
    assert record is not None and record.status == RequestStatus.SUCCEEDED
    storage = container.store.get_step(record.id, "storage")
    assert storage is not None and storage.retries == 2
    kv = container.store.get_step(record.id, "key-vault")
    assert kv is not None and kv.retries == 1
    names = Counter(e.name.value for e in container.store.list_events(record.id))
    assert names["WorkspaceStepRetrying"] == 3


def test_permanent_failure_skips_dependents_and_fails_request(
    service: tuple[Container, QueueWorkers], fake_cloud: FakeCloud
) -> None:
    container, _ = service
    fake_cloud.fail["key-vault"] = Fail("the vault name is held by a soft-deleted vault; purge it.", "VaultSoftDeleted")
    sub = container.intake.submit(request=parse_request(example("cpu-small.json")), caller=PLATFORM, source="test")
    poll(lambda: _finished(container, sub.record.id), what="request to finish")
    record = container.store.get_request(sub.record.id)
    assert record is not None and record.status == RequestStatus.FAILED
    assert record.error is not None and record.error.code == "VaultSoftDeleted"
    assert "key-vault" in record.error.message
    steps = {s.step_id: s for s in container.store.get_steps(record.id)}
    assert steps["key-vault"].status == StepStatus.FAILED
    assert steps["storage"].status == StepStatus.SUCCEEDED  # independent branches finish
    for sid, s in steps.items():
        if sid.startswith(("workspace", "compute:", "datastore:", "access:")):
            assert s.status == StepStatus.SKIPPED, sid
            assert s.status_reason == "skipped because 'key-vault' failed"


def test_retries_are_capped(service: tuple[Container, QueueWorkers], fake_cloud: FakeCloud) -> None:
    container, _ = service
    container.settings.step_max_retries = 3
    fake_cloud.retry_first["insights"] = 100
    sub = container.intake.submit(request=parse_request(example("cpu-small.json")), caller=PLATFORM, source="test")
    poll(lambda: _finished(container, sub.record.id), what="request to finish")
    step = container.store.get_step(sub.record.id, "insights")
    assert step is not None and step.status == StepStatus.FAILED
    assert step.error is not None and "gave up after 3 retries" in step.error.message
    assert fake_cloud.calls[f"{sub.record.id}/insights"] == 4


def test_a_new_requests_first_steps_are_claimed_in_the_write_that_creates_it(settings: object) -> None:
    from adapters.sqlite_bus import SqliteBus
    from adapters.sqlite_store import SqliteStore
    from models.settings import Settings

    assert isinstance(settings, Settings)
    writes: list[str] = []
    lost: list[str] = []

    class Counting(SqliteStore):
        def update_step(self, step, **kw):  # type: ignore[no-untyped-def]
            writes.append(step.step_id)
            return super().update_step(step, **kw)

    class Losing(SqliteBus):
        def send(self, queue, message):  # type: ignore[no-untyped-def]
            lost.append(message.message_id)  # the process dies right after the write: nothing is sent

    store = Counting(":memory:")
    container = Container(
        settings.model_copy(update={"sweep_grace_s": 0.0}),
        store=store,
        bus=Losing(":memory:"),
        cloud=FakeCloud(),
        authorizer=PermitAll(),
        confinement=Unconfined(),
    )
    rid = container.intake.submit(
        request=parse_request(example("cpu-small.json")), caller=PLATFORM, source="test"
    ).record.id
    steps = store.get_steps(rid)
    first = [s for s in steps if not s.depends_on]
    assert first and all(s.status == StepStatus.QUEUED and s.attempt == 1 for s in first)
    assert all(s.status == StepStatus.PENDING and s.attempt == 0 for s in steps if s.depends_on)
    assert writes == []  # no second write claims them
    assert lost == [f"{rid}/{s.step_id}/1" for s in first]  # their messages were sent after the write
    # Their messages never arrived: the sweeper sends them again, as after any lost message.
    assert container.engine.sweep() >= len(first)
    assert {s.step_id: s.attempt for s in store.get_steps(rid) if not s.depends_on} == {s.step_id: 2 for s in first}


def test_sweeper_redispatches_a_step_whose_message_was_lost(settings: object) -> None:
    from adapters.sqlite_bus import SqliteBus
    from adapters.sqlite_store import SqliteStore
    from models.settings import Settings

    assert isinstance(settings, Settings)
    cloud = FakeCloud()
    store = SqliteStore(":memory:")

    class LosingBus(SqliteBus):
        lost = 0

        def send(self, queue, message):  # type: ignore[no-untyped-def]
            if message.message_id.endswith("/storage/1"):
                LosingBus.lost += 1
                return  # a crash between the status write and the send
            super().send(queue, message)

    bus = LosingBus(":memory:")
    container = Container(settings, store=store, bus=bus, cloud=cloud, authorizer=PermitAll(), confinement=Unconfined())
    with running_steps(container, threads=2):
        rid = container.intake.submit(
            request=parse_request(example("cpu-small.json")), caller=PLATFORM, source="test"
        ).record.id
        # The step is marked queued just before its message is sent (and lost): wait for both.
        poll(
            lambda: (
                (s := store.get_step(rid, "storage")) is not None
                and s.status == StepStatus.QUEUED
                and LosingBus.lost == 1
                and all(x.status.terminal for x in store.get_steps(rid) if x.step_id in ("key-vault", "insights"))
            ),
            what="the storage message to be lost and the other steps to finish",
        )
        assert container.engine.sweep() >= 1
        poll(lambda: _finished(container, rid), what="request to finish after the sweep")
    record = store.get_request(rid)
    assert record is not None and record.status == RequestStatus.SUCCEEDED
    storage = store.get_step(rid, "storage")
    assert storage is not None and storage.attempt >= 2


def test_a_step_found_running_is_resumed_so_its_reconcile_knows_an_earlier_worker_may_have_acted(
    settings: object,
) -> None:
    """A worker that dies after the cloud acted leaves its step running; the redelivery's reconcile is told so."""
    import threading
    from datetime import timedelta

    from adapters.sqlite_bus import SqliteBus
    from adapters.sqlite_store import SqliteStore
    from engine.ports import StepContext
    from models.messages import StepMessage
    from models.outcomes import Outcome
    from models.plan import Step
    from models.settings import Settings

    assert isinstance(settings, Settings)

    class Died(BaseException):
        """The worker process dies: nothing in the engine catches it."""

    seen: list[tuple[int, bool]] = []
    first = ""

    class DyingCloud(FakeCloud):
        def reconcile(self, step: Step, ctx: StepContext) -> Outcome:
            outcome = super().reconcile(step, ctx)
            if step.id == first:
                seen.append((ctx.attempt, ctx.resumed))
                if len(seen) == 1:
                    raise Died
            return outcome

    store = SqliteStore(":memory:")
    container = Container(
        settings,
        store=store,
        bus=SqliteBus(":memory:"),
        cloud=(cloud := DyingCloud()),
        authorizer=PermitAll(),
        confinement=Unconfined(),
    )
    rid = container.intake.submit(
        request=parse_request(example("cpu-small.json")), caller=PLATFORM, source="test"
    ).record.id
    engine = container.engine
    record = store.get_request(rid)
    assert record is not None
    engine.dispatch_ready(record)
    first = next(s.step_id for s in store.get_steps(rid) if s.status == StepStatus.QUEUED)
    cloud.gates[first] = threading.Event()  # the cloud answers Wait until it is set
    message = StepMessage(request_id=rid, step_id=first, attempt=1)
    with pytest.raises(Died):  # the worker dies after the cloud acted, before the outcome is recorded
        engine.run_step(message=message)
    step = store.get_step(rid, first)
    assert step is not None and step.status == StepStatus.RUNNING and step.lease_until is not None
    # Redelivered while the dead worker's lease holds: dropped, the cloud not called.
    assert engine.run_step(message=message).disposition == "dropped: another worker holds the step"
    now = engine.clock()
    engine.clock = lambda: now + engine.lease + timedelta(seconds=1)
    engine.run_step(message=message)  # the lock ran out: the message comes again, to a live worker
    assert seen == [(1, False), (1, True)]
    # A step claimed from the queue, or after a Wait, is not resumed.
    waited = store.get_step(rid, first)
    assert waited is not None and waited.status == StepStatus.WAITING
    engine.run_step(message=StepMessage(request_id=rid, step_id=first, attempt=waited.attempt))
    assert seen[-1] == (2, False)
