"""Shared fixtures: settings in a temporary folder, an in-memory service with a fake cloud."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from adapters.sqlite_bus import SqliteBus
from adapters.sqlite_store import SqliteStore
from composition import Container
from devhost.workers import QueueWorkers
from handlers.queues import handle_notification, handle_step
from models.settings import Settings
from tests.fakes import FakeCloud

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, retry_base_s=0.0, retry_cap_s=0.0, sweep_grace_s=0.0)


@pytest.fixture
def fake_cloud() -> FakeCloud:
    return FakeCloud()


@pytest.fixture
def service(settings: Settings, fake_cloud: FakeCloud) -> Iterator[tuple[Container, QueueWorkers]]:
    store = SqliteStore(":memory:")
    bus = SqliteBus(":memory:", lock_s=settings.bus_lock_s)
    container = Container(settings, store=store, bus=bus, cloud=fake_cloud)
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


def example(name: str) -> dict[str, Any]:
    import json

    return json.loads((ROOT / "examples" / name).read_text())
