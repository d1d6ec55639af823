"""Races, proven on both stores with real threads: fan-in dispatches once, crashes are recovered.

Each test runs the real step engine on SQLite and on Azure Tables (Azurite).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from adapters.sqlite_bus import SqliteBus
from composition import Container
from engine.ports import OutgoingMessage, StepContext, Store
from models.messages import StepMessage
from models.outcomes import Done, Outcome
from models.plan import Step
from models.records import RequestStatus, StepStatus
from models.request import parse_request
from models.settings import Settings
from tests.callers import PLATFORM, PermitAll, Unconfined
from tests.conftest import example, poll, running_steps
from tests.fakes import FakeCloud

Make = Callable[..., Store]


class CountingBus(SqliteBus):
    """Counts every message id sent, duplicates included."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.sent: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def send(self, queue: str, message: OutgoingMessage) -> None:
        with self._count_lock:
            self.sent[message.message_id] += 1
        super().send(queue, message)


def _finished(container: Container, rid: str) -> bool:
    record = container.store.get_request(rid)
    return record is not None and record.status.terminal


def _submit(container: Container, body: dict[str, object]) -> str:
    return container.intake.submit(request=parse_request(body), caller=PLATFORM, source="test").record.id


def test_many_requests_in_parallel_each_step_once_each_dependent_dispatched_once(
    settings: Settings, new_store: Make
) -> None:
    """Many requests, 8 workers, slow reconciles so that steps finish together and race to fan in."""
    cloud = FakeCloud(work_s=0.002)
    store = new_store()
    bus = CountingBus()
    container = Container(settings, store=store, bus=bus, cloud=cloud, authorizer=PermitAll(), confinement=Unconfined())
    with running_steps(container, threads=8):
        ids = [_submit(container, example("gpu-research.json") | {"team": f"team-{i:02d}"}) for i in range(12)]
        poll(lambda: all(_finished(container, r) for r in ids), timeout=180, what="12 requests to finish")
    for rid in ids:
        record = store.get_request(rid)
        assert record is not None and record.status == RequestStatus.SUCCEEDED
        for step in store.get_steps(rid):
            assert step.status == StepStatus.SUCCEEDED
            assert bus.sent[f"{rid}/{step.step_id}/1"] == 1, step.step_id  # the fan-in claim, sent once
    assert cloud.overlaps == []
    planned = sum(len(store.get_steps(rid)) for rid in ids)
    assert planned == 12 * 17
    assert len(cloud.creates) == planned and set(cloud.creates.values()) == {1}


def test_threads_finishing_prerequisites_together_dispatch_the_dependent_once(
    settings: Settings, new_store: Make
) -> None:
    store = new_store()
    bus = CountingBus()
    container = Container(
        settings, store=store, bus=bus, cloud=FakeCloud(), authorizer=PermitAll(), confinement=Unconfined()
    )
    rid = _submit(container, example("cpu-small.json"))
    record = store.get_request(rid)
    assert record is not None
    # Every step but the workspace has succeeded; its prerequisites finished "at once".
    for step in store.get_steps(rid):
        if step.step_id != "workspace" and "workspace" not in step.depends_on:
            current = store.get_step(rid, step.step_id)
            assert current is not None
            store.update_step(current.model_copy(update={"status": StepStatus.SUCCEEDED, "outputs": {"id": "x"}}))
    dependents = [s for s in store.get_steps(rid) if s.status == StepStatus.PENDING]
    assert "workspace" in {s.step_id for s in dependents}
    barrier = threading.Barrier(16)
    dispatched: list[int] = []

    def finisher() -> None:
        barrier.wait()
        dispatched.append(container.engine.dispatch_ready(record))

    threads = [threading.Thread(target=finisher) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(dispatched) == 1
    assert bus.sent[f"{rid}/workspace/1"] == 1
    workspace = store.get_step(rid, "workspace")
    assert workspace is not None and workspace.status == StepStatus.QUEUED and workspace.attempt == 1


class Crash(BaseException):
    """The worker process dies (not an Exception: nothing in the engine may catch it)."""


class CrashAfterCreate(FakeCloud):
    """Creates the storage account, then the process dies before the engine writes the step's status."""

    crashed = 0

    def reconcile(self, step: Step, ctx: StepContext) -> Outcome:
        outcome = super().reconcile(step, ctx)
        if step.id == "storage" and not self.crashed:
            self.crashed += 1
            raise Crash
        return outcome


def test_a_crash_between_create_and_status_write_is_recovered_by_the_next_reconcile(
    settings: Settings, new_store: Make
) -> None:
    clock = [datetime.now(UTC)]
    store = new_store()
    bus = CountingBus()
    cloud = CrashAfterCreate()
    container = Container(
        settings.model_copy(update={"bus_lock_s": 60.0}),
        store=store,
        bus=bus,
        cloud=cloud,
        authorizer=PermitAll(),
        confinement=Unconfined(),
    )
    engine = container.engine
    engine.clock = lambda: clock[0]
    rid = _submit(container, example("cpu-small.json"))

    def drain() -> int:
        crashed = 0
        while messages := bus.receive(container.settings.steps_queue, max_messages=10):
            for message in messages:
                try:
                    engine.run_step(message=StepMessage.model_validate_json(message.body))
                except Crash:
                    crashed += 1
                    bus.dead_letter(message, reason="lost", description="the process died; its message is gone")
                    continue
                bus.complete(message)
        return crashed

    assert drain() == 1
    storage = store.get_step(rid, "storage")
    assert storage is not None and storage.status == StepStatus.RUNNING  # the status write never happened
    assert engine.sweep() == 0  # the lease still holds: nobody takes the step yet
    clock[0] += timedelta(seconds=31)  # the lease (half the 60 s lock) runs out
    assert engine.sweep() >= 1
    drain()
    record = store.get_request(rid)
    assert record is not None and record.status == RequestStatus.SUCCEEDED
    storage = store.get_step(rid, "storage")
    assert storage is not None and storage.status == StepStatus.SUCCEEDED and storage.attempt == 2
    assert set(cloud.creates.values()) == {1}  # the storage account was created once, found the second time


class FanInCloud:
    """Holds the workspace's prerequisites at a barrier, so each run read its steps before any of them succeeded."""

    def __init__(self, held: set[str]) -> None:
        self.held = held
        self.barrier = threading.Barrier(len(held), timeout=30)

    def reconcile(self, step: Step, ctx: StepContext) -> Outcome:
        if step.id in self.held:
            self.barrier.wait()
        return Done({"id": f"/fake/{step.id}"})


def test_prerequisites_succeeding_together_from_stale_reads_dispatch_the_dependent_once(
    settings: Settings, new_store: Make
) -> None:
    """Each run's steps, read before its claim, show the others unfinished: the read after the write must fan in."""
    store = new_store()
    bus = CountingBus()
    held = {"storage", "key-vault", "insights"}
    container = Container(
        settings, store=store, bus=bus, cloud=FanInCloud(held), authorizer=PermitAll(), confinement=Unconfined()
    )
    rid = _submit(container, example("cpu-small.json"))
    workspace = store.get_step(rid, "workspace")
    assert workspace is not None and set(workspace.depends_on) == held
    [first] = bus.receive(settings.steps_queue, max_messages=10)
    container.engine.run_step(message=StepMessage.model_validate_json(first.body))  # the resource group
    bus.complete(first)
    messages = bus.receive(settings.steps_queue, max_messages=10)
    assert {StepMessage.model_validate_json(m.body).step_id for m in messages} == held
    results: list[str] = []

    def run(body: bytes) -> None:
        results.append(container.engine.run_step(message=StepMessage.model_validate_json(body)).disposition)

    threads = [threading.Thread(target=run, args=(m.body,)) for m in messages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["ran"] * 3
    assert bus.sent[f"{rid}/workspace/1"] == 1
    workspace = store.get_step(rid, "workspace")
    assert workspace is not None and workspace.status == StepStatus.QUEUED and workspace.attempt == 1
