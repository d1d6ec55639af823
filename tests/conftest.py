"""Shared fixtures: settings in a temporary folder, an in-memory service with a fake cloud."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from adapters.sqlite_bus import SqliteBus
from adapters.sqlite_store import SqliteStore
from composition import Container, policy_with_tenant
from devhost.workers import QueueWorkers
from engine.policy import load_policy
from engine.ports import Store
from handlers.queues import handle_notification, handle_step
from models.policy import Policy
from models.settings import DEFAULT_POLICY, Settings
from tests.azurite import Azurite
from tests.callers import PermitAll, Unconfined
from tests.fakes import FakeCloud

ROOT = Path(__file__).resolve().parent.parent


def shipped_policy() -> Policy:
    """The shipped policy as the devhost runs it: its tenant is the local directory's (composition.policy_with_tenant)."""
    return policy_with_tenant(load_policy(DEFAULT_POLICY), Settings(cloud="emulator"))


# Hypothesis profiles, chosen by HYPOTHESIS_PROFILE. `ci` (set by .ci/run) is the same run every time:
# a fixed seed, no example database carried between runs, the reproduction blob printed on failure,
# and no limit on time per example or on data generation speed, which a slow runner must not fail.
# `dev` (the default) explores new random examples on every run and replays past failures first.
hypothesis_settings.register_profile(
    "ci", derandomize=True, database=None, print_blob=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.register_profile("dev")
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def poll(check: Callable[[], Any], *, timeout: float = 30.0, every: float = 0.02, what: str = "condition") -> Any:
    """Call `check` until it returns something truthy or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


LAST_EVENTS = frozenset({"WorkspaceProvisioned", "WorkspaceProvisioningFailed"})
STEP_ENDS = frozenset({"WorkspaceStepSucceeded", "WorkspaceStepFailed"})


def whole_timeline(names: Callable[[], list[str]], *, steps: int | None = None, timeout: float = 30.0) -> list[str]:
    """Poll a request's event names until they hold its last event (and, given `steps`, each step's success).

    A request's final status is written just before its last event, and a step's status just before
    its event: a test that saw the status must wait for the events before it reads the timeline.
    """

    def whole() -> list[str] | None:
        seen = names()
        if not LAST_EVENTS.intersection(seen):
            return None
        if steps is not None and seen.count("WorkspaceStepSucceeded") < steps:
            return None
        return seen

    found: list[str] = poll(whole, timeout=timeout, what="the request's whole timeline")
    return found


def assert_closes_the_timeline(names: list[str], last: str) -> None:
    """Assert that `last` comes once, after every step started, and that only steps' ends follow it.

    Two steps that finish together both record their end; the one that finishes the request may
    record the request's event before the other records its own.
    """
    assert names.count(last) == 1, names
    at = names.index(last)
    assert all(i < at for i, name in enumerate(names) if name == "WorkspaceStepStarted"), names
    assert set(names[at + 1 :]) <= STEP_ENDS, names


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """Azurite's Table service for the session; a clear failure, never a skip, when it cannot start."""
    server, why = None, ""
    try:
        server = Azurite().start()
    except RuntimeError as exc:
        why = str(exc)
    if server is None:
        pytest.fail(why, pytrace=False)
    yield server
    server.stop()


def tables_store(server: Azurite, **options: Any) -> Any:
    """A Tables store with tables of its own (a fresh prefix) in the given Azurite."""
    from adapters.tables_store import TablesStore, connect

    return TablesStore(
        connect(connection_string=server.connection_string), prefix=f"t{uuid.uuid4().hex[:16]}", **options
    )


@pytest.fixture(params=["sqlite", "tables"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Each store test runs once per store."""
    return str(request.param)


@pytest.fixture
def new_store(store_kind: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., Store]]:
    """Make empty stores of the kind under test (Tables ones get tables of their own in Azurite)."""
    made: list[Store] = []

    def make(**options: Any) -> Store:
        store: Store
        if store_kind == "sqlite":
            store = SqliteStore(":memory:")
        else:
            store = tables_store(request.getfixturevalue("azurite"), **options)
        made.append(store)
        return store

    yield make
    for store in made:
        close = getattr(store, "close", None)
        if close is not None:
            close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        retry_base_s=0.0,
        retry_cap_s=0.0,
        sweep_grace_s=0.0,
        submissions_per_window=1000,
        plans_per_window=1000,
    )


@pytest.fixture
def fake_cloud() -> FakeCloud:
    return FakeCloud()


@pytest.fixture
def service(settings: Settings, fake_cloud: FakeCloud) -> Iterator[tuple[Container, QueueWorkers]]:
    store = SqliteStore(":memory:")
    bus = SqliteBus(":memory:", lock_s=settings.bus_lock_s)
    container = Container(
        settings, store=store, bus=bus, cloud=fake_cloud, authorizer=PermitAll(), confinement=Unconfined()
    )
    notifications = QueueWorkers(
        bus=bus,
        queue=settings.notifications_queue,
        handle=lambda m: handle_notification(body=m.body, delivery_count=m.delivery_count, container=container),
        threads=1,
        name="notifications",
    )
    notifications.start()
    with running_steps(container) as workers:
        yield container, workers
    notifications.stop()


@contextmanager
def running_steps(container: Container, *, threads: int = 4) -> Iterator[QueueWorkers]:
    """Run step workers for a container's bus while the block runs."""
    workers = QueueWorkers(
        bus=container.bus,
        queue=container.settings.steps_queue,
        handle=lambda m: handle_step(body=m.body, engine=container.engine),
        threads=threads,
        name="steps",
    )
    workers.start()
    try:
        yield workers
    finally:
        workers.stop()


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port while the block runs; yield its base URL."""
    import threading

    import uvicorn

    from emulator.server import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="asgi", daemon=True)
    thread.start()
    try:
        poll(lambda: server.started, timeout=10, what="the test server to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def example(name: str) -> dict[str, Any]:
    import json

    return json.loads((ROOT / "examples" / name).read_text())
