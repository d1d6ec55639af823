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


@pytest.mark.parametrize(("workers", "imports"), [(0, 0), (4, 1)])
def test_the_warm_up_builds_intake_and_the_provider_and_step_sdks_only_where_steps_run(
    workers: int, imports: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloud.clients import Clients
    from devhost import runtime

    built: list[str] = []

    class Recording(SimpleNamespace):
        def __getattr__(self, name: str) -> object:
            built.append(name)
            return object()

    warmed: list[bool] = []
    monkeypatch.setattr(Clients, "warm", staticmethod(lambda: warmed.append(True)))
    runtime._warm(Recording(settings=SimpleNamespace(workers=workers)))  # type: ignore[arg-type]
    assert set(built) == {"intake", "resource_reader"} | ({"cloud"} if imports else set())
    assert len(warmed) == imports


def test_a_warm_up_that_fails_is_logged_and_the_process_carries_on(caplog: pytest.LogCaptureFixture) -> None:
    from devhost import runtime

    class Broken:
        settings = SimpleNamespace(workers=1)

        @property
        def intake(self) -> object:
            raise RuntimeError("the directory file is unreadable")

    runtime._warm(Broken())  # type: ignore[arg-type]
    assert "warming up failed" in caplog.text and "the directory file is unreadable" in caplog.text
