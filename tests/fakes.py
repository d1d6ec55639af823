"""An in-memory cloud for engine tests: resources appear after one Wait, failures on demand."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from engine.ports import StepContext
from models.outcomes import Done, Fail, Outcome, Retry, Wait
from models.plan import Step


@dataclass
class FakeCloud:
    """Keeps resources in a dict; checks that no step is reconciled by two workers at once."""

    work_s: float = 0.0
    fail: dict[str, Fail] = field(default_factory=dict)  # step id -> permanent failure
    retry_first: dict[str, int] = field(default_factory=dict)  # step id -> transient failures before success
    raise_first: dict[str, int] = field(default_factory=dict)  # step id -> unexpected exceptions first

    def __post_init__(self) -> None:
        self.resources: dict[str, str] = {}
        self.creates: Counter[str] = Counter()
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
            if step.id in self.fail:
                return self.fail[step.id]
            if calls <= self.raise_first.get(step.id, 0):
                raise RuntimeError("boom")
            if calls <= self.retry_first.get(step.id, 0):
                return Retry(0.0, "throttled", "TooManyRequests")
            for dep in step.depends_on:
                assert ctx.dependency_outputs.get(dep, {}).get("id"), f"{step.id} ran before {dep} had outputs"
            rid = f"{ctx.request_id}:{step.resource_id}:{step.resource_name}"
            with self._lock:
                state = self.resources.get(rid)
                if state is None:
                    self.resources[rid] = "creating"
                    self.creates[rid] += 1
                    return Wait(0.0, "creating")
                self.resources[rid] = "ready"
            return Done({"id": step.resource_id, "name": step.resource_name})
        finally:
            with self._lock:
                self._active.discard(key)
