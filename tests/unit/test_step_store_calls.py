"""How many store calls one step run makes: pinned, so that a change that reads more is caught."""

from __future__ import annotations

from collections import Counter
from typing import Any

from adapters.sqlite_bus import SqliteBus
from adapters.sqlite_store import SqliteStore
from composition import Container
from models.messages import StepMessage
from models.outcomes import Done, Fail
from models.records import RequestStatus
from models.request import parse_request
from models.settings import Settings
from tests.callers import PLATFORM, PermitAll, Unconfined
from tests.conftest import example
from tests.fakes import FakeCloud


class CountingStore:
    """Passes every call to a real store and counts them by method name."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return call


def _run_plan(
    settings: Settings, body: dict[str, Any], cloud: FakeCloud
) -> tuple[CountingStore, str, list[tuple[str, Any, Counter[str]]]]:
    """Submit a request and run its step messages one by one; return each run's step, outcome and store calls."""
    store = CountingStore(SqliteStore(":memory:"))
    bus = SqliteBus(":memory:")
    container = Container(settings, store=store, bus=bus, cloud=cloud, authorizer=PermitAll(), confinement=Unconfined())
    rid = container.intake.submit(request=parse_request(body), caller=PLATFORM, source="test").record.id
    runs: list[tuple[str, Any, Counter[str]]] = []
    while messages := bus.receive(settings.steps_queue, max_messages=10):
        for message in messages:
            step_message = StepMessage.model_validate_json(message.body)
            store.calls.clear()
            result = container.engine.run_step(message=step_message)
            runs.append((step_message.step_id, result.outcome, Counter(store.calls)))
            bus.complete(message)
    return store, rid, runs


def _reads(calls: Counter[str]) -> int:
    return sum(n for name, n in calls.items() if name.startswith("get_"))


def _own(calls: Counter[str], outcome: Any) -> int:
    """Count a run's store calls but the writes that dispatch other steps (one per dependent made ready)."""
    dispatches = calls["update_step"] - 2 if isinstance(outcome, Done) else 0
    return sum(calls.values()) - max(0, dispatches)


def test_a_step_run_reads_its_steps_once_and_again_only_where_a_race_needs_it(settings: Settings) -> None:
    store, rid, runs = _run_plan(settings, example("gpu-research.json"), FakeCloud())
    record = store.inner.get_request(rid)
    assert record is not None and record.status == RequestStatus.SUCCEEDED
    assert len(runs) == 34  # 17 steps, each a wait (creating) then a success
    for step_id, outcome, calls in runs:
        # The steps and the request are read once each; a success may read the steps once more.
        assert calls["get_step"] == 0 and calls["get_request"] == 1, (step_id, calls)
        assert calls["get_steps"] <= (2 if isinstance(outcome, Done) else 1), (step_id, calls)
        # Reads, the claim, the outcome, two events: 6 or 7; the first run also moves the request to
        # provisioning, the last one finishes it (a write and one more event).
        assert _own(calls, outcome) <= 9, (step_id, calls)
    # Before the steps were passed through, this plan took 120 reads and 275 calls.
    assert sum(_reads(c) for _, _, c in runs) <= 80
    assert sum(sum(c.values()) for _, _, c in runs) <= 235


def test_a_failed_step_reads_the_steps_once_after_its_failure(settings: Settings) -> None:
    cloud = FakeCloud(fail={"storage": Fail("the account name is taken", "StorageAccountAlreadyTaken")})
    store, rid, runs = _run_plan(settings, example("cpu-small.json"), cloud)
    record = store.inner.get_request(rid)
    assert record is not None and record.status == RequestStatus.FAILED
    [(_, _, calls)] = [(s, o, c) for s, o, c in runs if isinstance(o, Fail)]
    # The steps before the claim, after the failure was written (for the skips), and after the skips: a
    # step succeeding meanwhile may have read them before the skips were written, so only this last
    # read is sure to see every step ended (else neither finishes the request).
    assert calls["get_steps"] == 3 and calls["get_request"] == 1 and calls["get_step"] == 0, calls
