"""An intake-only devhost: `VENDING_WORKERS=0` runs no step worker, and its warm-up skips the step SDKs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from models.settings import Settings


def test_zero_workers_is_an_intake_only_process_and_fewer_is_refused(tmp_path: Path) -> None:
    from composition import Container
    from devhost.runtime import queue_workers

    container = Container(Settings(data_dir=tmp_path, workers=0))
    steps = next(w for w in queue_workers(container) if w.queue == container.settings.steps_queue)
    assert steps.count == 0
    with pytest.raises(ValidationError, match="workers"):
        Settings(data_dir=tmp_path, workers=-1)


@pytest.mark.parametrize("steps", [False, True])
def test_the_warm_up_builds_intake_and_the_provider_and_step_sdks_only_where_steps_run(
    steps: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloud.clients import Clients
    from composition import Container

    built: list[str] = []

    class Recording(SimpleNamespace):
        def __getattr__(self, name: str) -> object:
            built.append(name)
            return object()

    warmed: list[bool] = []
    monkeypatch.setattr(Clients, "warm", staticmethod(lambda: warmed.append(True)))
    Container.warm(Recording(), steps=steps)  # type: ignore[arg-type]
    assert set(built) == {"intake", "resource_reader"} | ({"cloud"} if steps else set())
    assert len(warmed) == int(steps)


@pytest.mark.parametrize(("workers", "steps"), [(0, False), (4, True)])
def test_the_devhost_warms_the_step_sdks_only_where_its_workers_run_steps(workers: int, steps: bool) -> None:
    from devhost import runtime

    asked: list[bool] = []

    class Container:
        settings = SimpleNamespace(workers=workers)

        def warm(self, *, steps: bool) -> None:
            asked.append(steps)

    runtime._warm(Container())  # type: ignore[arg-type]
    assert asked == [steps]


def test_a_warm_up_that_fails_is_logged_and_the_process_carries_on(caplog: pytest.LogCaptureFixture) -> None:
    from devhost import runtime

    class Broken:
        settings = SimpleNamespace(workers=1)

        def warm(self, *, steps: bool) -> None:
            raise RuntimeError("the directory file is unreadable")

    runtime._warm(Broken())  # type: ignore[arg-type]
    assert "warming up failed" in caplog.text and "the directory file is unreadable" in caplog.text
