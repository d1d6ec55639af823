"""Fakes for engine and journey tests: an in-memory cloud (resources appear after one Wait, failures on
demand) and stores that fail as real ones do (an outage for a while, a step whose outcome cannot be written), and a
callback receiver that asks to be called again later."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from adapters.sqlite_store import SqliteStore
from engine.ports import StepContext
from models.errors import TransientError
from models.lifecycle import DeleteResult, DriftFinding
from models.outcomes import Done, Fail, Outcome, Retry, Wait
from models.plan import Step, StepAction
from models.records import StepRecord, StepStatus
from tests.capture import serving


@dataclass
class FakeCloud:
    """Keeps resources in a dict; checks that no step is reconciled by two workers at once."""

    work_s: float = 0.0
    fail: dict[str, Fail] = field(default_factory=dict)  # step id -> permanent failure
    retry_first: dict[str, int] = field(default_factory=dict)  # step id -> transient failures before success
    raise_first: dict[str, int] = field(default_factory=dict)  # step id -> unexpected exceptions first
    fail_delete: dict[str, Fail] = field(default_factory=dict)  # step id -> a delete that fails (a lock, say)
    gates: dict[str, threading.Event] = field(
        default_factory=dict
    )  # step id -> reconcile waits for it (Wait meanwhile)
    changed: dict[str, DriftFinding] = field(default_factory=dict)  # step id -> drift that inspect reports

    def __post_init__(self) -> None:
        self.resources: dict[str, str] = {}
        self.creates: Counter[str] = Counter()
        self.deletes: Counter[str] = Counter()
        self.applied: Counter[str] = Counter()  # step id -> applies after its resource existed (updates)
        self.calls: Counter[str] = Counter()
        self.overlaps: list[str] = []
        self._active: set[str] = set()
        self._lock = threading.Lock()

    def reconcile(self, step: Step, ctx: StepContext) -> Outcome:
        key = f"{ctx.request_id}/{step.id}"
        with self._lock:
            if key in self._active:
                self.overlaps.append(key)
            self._active.add(key)
            self.calls[key] += 1
            calls = self.calls[key]
        try:
            if self.work_s:
                time.sleep(self.work_s)
            if step.action == StepAction.DELETE:
                return self._delete(step, ctx)
            gate = self.gates.get(step.id)
            if gate is not None and not gate.is_set():
                return Wait(0.0, "held at its gate")
            if step.id in self.fail:
                return self.fail[step.id]
            if calls <= self.raise_first.get(step.id, 0):
                raise RuntimeError("boom")
            if calls <= self.retry_first.get(step.id, 0):
                return Retry(0.0, "throttled", "TooManyRequests")
            for dep in step.depends_on:
                assert ctx.dependency_outputs.get(dep, {}).get("id"), f"{step.id} ran before {dep} had outputs"
            rid = self.rid(ctx.request_id, step)
            with self._lock:
                state = self.resources.get(rid)
                if state is None:
                    self.resources[rid] = "creating"
                    self.creates[rid] += 1
                    return Wait(0.0, "creating")
                if state == "ready":
                    self.applied[step.id] += 1
                self.resources[rid] = "ready"
                self.changed.pop(step.id, None)
            return Done({"id": step.resource_id, "name": step.resource_name})
        finally:
            with self._lock:
                self._active.discard(key)

    @staticmethod
    def rid(request_id: str, step: Step) -> str:
        """Return the key a step's resource has in `resources`."""
        return f"{request_id}:{step.resource_id}:{step.resource_name}"

    def _delete(self, step: Step, ctx: StepContext) -> Outcome:
        if step.id in self.fail_delete:
            return self.fail_delete[step.id]
        rid = self.rid(ctx.request_id, step)
        with self._lock:
            state = self.resources.get(rid)
            if state is None:
                return Done(DeleteResult(deleted=False).model_dump(mode="json"))
            if state != "deleting":
                self.resources[rid] = "deleting"
                return Wait(0.0, "deleting")
            del self.resources[rid]
            self.deletes[rid] += 1
        purged = bool(getattr(step.spec, "purge_on_delete", False))
        return Done(DeleteResult(deleted=True, purged=purged).model_dump(mode="json"))

    def inspect(self, step: Step, ctx: StepContext) -> list[DriftFinding]:
        with self._lock:
            if self.rid(ctx.request_id, step) not in self.resources:
                return [
                    DriftFinding(
                        step_id=step.id,
                        kind=step.kind,
                        resource_id=step.resource_id,
                        drift="missing",
                        message=f"{step.resource_name} is gone",
                    )
                ]
            found = self.changed.get(step.id)
        return [found] if found else []


class StoreOutage:
    """Wraps a store: while an outage lasts, every call raises `TransientError` (as the stores do when unreachable)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.refused = 0
        self._until = 0.0
        self._lock = threading.Lock()

    def outage(self, seconds: float) -> None:
        """Start an outage of `seconds` from now."""
        self._until = time.monotonic() + seconds

    @property
    def down(self) -> bool:
        return time.monotonic() < self._until

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                with self._lock:
                    self.refused += 1
                raise TransientError("the state store did not answer", code="StoreUnavailable")
            return attr(*args, **kwargs)

        return call


class OutcomeWriteFails(SqliteStore):
    """A store that cannot write one step's outcome: its claim, and marking it failed, still work."""

    def __init__(self, step_id: str) -> None:
        super().__init__(":memory:")
        self.step_id = step_id
        self.refused = 0

    def update_step(self, step: StepRecord) -> StepRecord:
        if step.step_id == self.step_id and step.status in (StepStatus.WAITING, StepStatus.SUCCEEDED):
            self.refused += 1
            raise RuntimeError(f"cannot write the outcome of {step.request_id}/{step.step_id}")
        return super().update_step(step)


@contextmanager
def receiver(answers: list[tuple[int, dict[str, str]]]) -> Iterator[tuple[str, list[tuple[float, int]]]]:
    """A callback receiver on loopback that answers with `answers` first, then 200; yield its URL and (time, status) calls."""
    calls: list[tuple[float, int]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            with lock:
                status, headers = answers.pop(0) if answers else (200, {})
                calls.append((time.monotonic(), status))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as url:
        yield url, calls
