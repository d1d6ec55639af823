"""Chaos: many requests through the real engine, provider and emulator while everything goes wrong.

The emulator throttles, answers 5xx, makes operations slow and has no GPU quota in one region;
step workers are killed mid-step (after the cloud call, before the status write; the message stays
locked until its lock runs out, and a new worker takes the dead one's place); and messages are
delivered twice. Afterwards, for every request: it is finished; each step's status agrees with
what the emulator holds; every planned resource was created exactly once and nothing else was
created; and every message was completed or dead-lettered with a recorded reason.

Size: `VENDING_CHAOS_REQUESTS` (CI: 24; `VENDING_CHAOS_REQUESTS=200` for the larger run).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from composition import Container
from devhost.workers import QueueWorkers
from emulator.faults import Fault
from emulator.server import EmulatorServer
from emulator.state import Config
from engine.ports import ReceivedMessage, StepContext
from engine.redelivery import RetryPolicy
from handlers.queues import handle_step
from models.outcomes import Outcome
from models.plan import Step
from models.records import RequestStatus, StepStatus
from models.request import parse_request
from models.settings import Settings
from tests.callers import PLATFORM, PermitAll, Unconfined
from tests.conftest import example, poll

REQUESTS = int(os.environ.get("VENDING_CHAOS_REQUESTS", "24"))
KILL_RATE = 0.08
DUPLICATE_RATE = 0.15
FAULTS = [
    Fault(
        type="Microsoft.Storage/storageAccounts",
        method="PUT",
        status=429,
        code="TooManyRequests",
        message="throttled",
        retry_after_s=1,
        every=3,
        times=None,
    ),
    Fault(
        type="Microsoft.KeyVault/vaults",
        method="PUT",
        status=503,
        code="ServiceUnavailable",
        message="unavailable",
        every=4,
        times=None,
    ),
    Fault(
        type="Microsoft.Insights/components",
        method="PUT",
        status=500,
        code="InternalServerError",
        message="boom",
        every=5,
        times=None,
    ),
    Fault(type="Microsoft.MachineLearningServices/workspaces", method="PUT", latency_s=1.5, every=3, times=None),
]
# No GPU quota in swedencentral: GPU requests there fail at their compute step.
# Plenty of CPU quota where the CPU requests go, so that only the GPU ones fail, at any size.
QUOTA = {
    "swedencentral": {"standardNCADSA100v4Family": 0, "standardNCSv3Family": 0, "lowPriority": 0},
    "westeurope": {"standardDSv2Family": 10**6},
}


class Killed(BaseException):
    """A worker process dies: nothing in the engine or the worker loop may catch it."""


class ChaosCloud:
    """The real provider, with workers dying right after the cloud did its part."""

    def __init__(self, inner: Any, rng: random.Random) -> None:
        self.inner = inner
        self.rng = rng
        self.kills = 0
        self._lock = threading.Lock()

    def reconcile(self, step: Step, ctx: StepContext) -> Outcome:
        outcome = self.inner.reconcile(step, ctx)
        with self._lock:
            die = self.rng.random() < KILL_RATE
            if die:
                self.kills += 1
        if die:
            raise Killed
        return outcome


class ChaosWorkers:
    """Step workers that die when killed (a replacement starts) and sometimes get a message twice."""

    def __init__(self, container: Container, *, threads: int, rng: random.Random) -> None:
        self.container = container
        self.rng = rng
        self.count = threads
        self.stop_event = threading.Event()
        self.duplicates = 0
        self.deaths = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.settler = QueueWorkers(
            bus=container.bus,
            queue=container.settings.steps_queue,
            handle=self._handle,
            threads=0,
            name="chaos",
            retry=RetryPolicy.from_settings(container.settings),
        )

    def start(self) -> None:
        for _ in range(self.count):
            self._spawn()

    def _spawn(self) -> None:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _handle(self, message: ReceivedMessage) -> None:
        handle_step(body=message.body, engine=self.container.engine)

    def _run(self) -> None:
        bus = self.container.bus
        queue = self.container.settings.steps_queue
        while not self.stop_event.is_set():
            for message in bus.receive(queue, max_messages=1, wait_s=0.2):  # type: ignore[call-arg]
                try:
                    error: BaseException | None = None
                    try:
                        self._handle(message)
                    except Exception as exc:  # noqa: BLE001 - settlement decides
                        error = exc
                    self.settler.settle(message, error)  # as the devhost's workers settle: retry later, or dead-letter
                    with self._lock:
                        twice = self.rng.random() < DUPLICATE_RATE
                    if twice:  # the same message delivered again, after it was handled
                        with self._lock:
                            self.duplicates += 1
                        with contextlib.suppress(Exception):  # a redelivery may fail like any other
                            self._handle(message)
                except Killed:
                    with self._lock:
                        self.deaths += 1
                    self._spawn()  # the platform starts a new instance; this one is gone, lock and all
                    return

    def stop(self) -> None:
        self.stop_event.set()
        for thread in list(self._threads):
            thread.join(5)


@contextlib.contextmanager
def chaos_running(
    tmp_path: Path, emulator: EmulatorServer, *, seed: int, preflight: bool = True
) -> Iterator[tuple[Container, ChaosWorkers, ChaosCloud]]:
    """Run a service against `emulator` with chaos workers and cloud and a sweeper; stop it all after the block."""
    settings = Settings(
        data_dir=tmp_path,
        emulator_url=emulator.url,
        emulator_ca_bundle=emulator.ca_bundle,
        poll_s=0.2,
        retry_base_s=0.1,
        retry_cap_s=1.0,
        message_retry_base_s=0.1,
        message_retry_cap_s=1.0,
        step_max_retries=30,
        bus_lock_s=3.0,
        sweep_grace_s=2.0,
        callback_timeout_s=2.0,
    )
    container = Container(settings, authorizer=PermitAll(), confinement=Unconfined())
    policy = container.policy
    if not preflight:
        policy = policy.model_copy(update={"preflight": policy.preflight.model_copy(update={"enabled": False})})
    rng = random.Random(seed)
    cloud = ChaosCloud(container.cloud, rng)
    container.swap(cloud=cloud, policy=policy)
    workers = ChaosWorkers(container, threads=8, rng=rng)
    workers.start()
    stop_sweeper = threading.Event()

    def sweep() -> None:
        while not stop_sweeper.wait(1.0):
            try:
                container.engine.sweep()
                container.deadletters.process()
            except Exception:
                logging.getLogger(__name__).exception("sweep failed")

    sweeper = threading.Thread(target=sweep, daemon=True)
    sweeper.start()
    try:
        yield container, workers, cloud
    finally:
        stop_sweeper.set()
        workers.stop()


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[tuple[Container, EmulatorServer, ChaosWorkers, ChaosCloud]]:
    emulator = EmulatorServer(data_dir=tmp_path, config=Config(latency_s=0.2, quota=QUOTA), faults=FAULTS).start()
    try:
        # Pre-flight off: the quota failures must reach the compute step instead of being refused at the door.
        with chaos_running(tmp_path, emulator, seed=20261128, preflight=False) as (container, workers, cloud):
            yield container, emulator, workers, cloud
    finally:
        emulator.stop()


def _body(i: int) -> dict[str, Any]:
    if i % 6 == 5:  # GPU in a region without GPU quota: fails at its compute step
        return example("gpu-research.json") | {"team": f"chaos-{i:03d}", "region": "swedencentral"}
    return example("cpu-small.json") | {"team": f"chaos-{i:03d}"}


def test_every_request_ends_consistent_with_the_cloud_and_no_message_is_lost(
    chaos: tuple[Container, EmulatorServer, ChaosWorkers, ChaosCloud],
) -> None:
    container, emulator, workers, cloud = chaos
    store = container.store
    ids = [
        container.intake.submit(request=parse_request(_body(i)), caller=PLATFORM, source="test").record.id
        for i in range(REQUESTS)
    ]

    def finished() -> bool:
        return all((r := store.get_request(rid)) is not None and r.status.terminal for rid in ids)

    started = time.monotonic()
    poll(finished, timeout=120 + REQUESTS * 6, every=0.5, what=f"{REQUESTS} requests to finish under chaos")
    elapsed = time.monotonic() - started
    assert cloud.kills > 0 and workers.deaths == cloud.kills and workers.duplicates > 0

    held = set(emulator.state.resource_ids())
    creates = emulator.state.stats()["creates"]
    planned: set[str] = set()
    outcome: Counter[str] = Counter()
    for i, rid in enumerate(ids):
        record = store.get_request(rid)
        assert record is not None and record.plan is not None
        outcome[record.status.value] += 1
        gpu = i % 6 == 5
        assert record.status == (RequestStatus.FAILED if gpu else RequestStatus.SUCCEEDED), (rid, record.error)
        for step in store.get_steps(rid):
            assert step.status.terminal, (rid, step.step_id, step.status)
            plan_step = record.plan.step(step.step_id)
            rid_lower = plan_step.resource_id.lower()
            if step.status == StepStatus.SUCCEEDED and plan_step.kind.value not in ("access",):
                assert rid_lower in {h.lower() for h in held}, f"{step.step_id} succeeded but Azure has no {rid_lower}"
                planned.add(rid_lower)
            if step.status == StepStatus.FAILED:
                assert gpu and step.step_id.startswith("compute:"), (rid, step.step_id, step.error)
                assert step.error is not None and "quota" in step.error.message.lower()
                assert rid_lower not in {h.lower() for h in held}, f"{step.step_id} failed yet exists in Azure"
    # Exactly one resource per planned name: each created once, nothing created that no plan names.
    by_id = {key.lower(): n for key, n in creates.items()}
    for resource_id in planned:
        matches = [n for key, n in by_id.items() if key == resource_id or key.endswith(resource_id)]
        assert matches == [1], (resource_id, matches)
    strays = [
        h
        for h in held
        if h.lower() not in planned
        and not any(h.lower().startswith(p + "/") for p in planned)
        and "/providers/microsoft.authorization/roleassignments/" not in h.lower()
    ]
    assert strays == [], strays[:10]
    # No message unaccounted for: queues drained; anything dead-lettered carries its reason.
    # Locks held by killed workers run out, their messages come back and are settled; copies come due.
    poll(
        lambda: all(
            container.bus.counts(q)["active"] + container.bus.counts(q)["locked"] + container.bus.counts(q)["scheduled"]
            == 0  # type: ignore[attr-defined]
            for q in (container.settings.steps_queue, container.settings.notifications_queue)
        ),
        timeout=60,
        what="the queues to drain",
    )
    for queue in (container.settings.steps_queue, container.settings.notifications_queue):
        for letter in container.bus.dead_letters(queue):
            assert letter.reason and letter.description, letter
    print(
        f"\nchaos: {REQUESTS} requests in {elapsed:.1f} s; {dict(outcome)}; {cloud.kills} workers killed, "
        f"{workers.duplicates} duplicate deliveries, {sum(creates.values())} creates for {len(planned)} resources"
    )
