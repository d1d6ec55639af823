"""The step graph: which steps are ready, which a failure blocks, which follow a step."""

from __future__ import annotations

from collections.abc import Iterable

from models.records import StepRecord, StepStatus


def succeeded_ids(steps: Iterable[StepRecord]) -> set[str]:
    """Return the ids of the succeeded steps."""
    return {s.step_id for s in steps if s.status == StepStatus.SUCCEEDED}


def ready(steps: list[StepRecord]) -> list[StepRecord]:
    """Return the pending steps whose prerequisites have all succeeded."""
    done = succeeded_ids(steps)
    return [s for s in steps if s.status == StepStatus.PENDING and all(d in done for d in s.depends_on)]


def all_finished(steps: list[StepRecord]) -> bool:
    """Say whether the request has steps and every one of them is finished."""
    return bool(steps) and all(s.status.terminal for s in steps)


def blocked_by(steps: list[StepRecord], failed_id: str) -> set[str]:
    """Return the pending steps that can no longer run because `failed_id` failed (transitively)."""
    blocked = {failed_id}
    changed = True
    while changed:
        changed = False
        for s in steps:
            if s.status == StepStatus.PENDING and blocked.intersection(s.depends_on) and s.step_id not in blocked:
                blocked.add(s.step_id)
                changed = True
    blocked.discard(failed_id)
    return blocked


def downstream(steps: list[StepRecord], step_id: str) -> set[str]:
    """Return `step_id` and every step that depends on it, directly or not."""
    found = {step_id}
    changed = True
    while changed:
        changed = False
        for s in steps:
            if s.step_id not in found and found.intersection(s.depends_on):
                found.add(s.step_id)
                changed = True
    return found


def with_step(steps: list[StepRecord], step: StepRecord) -> list[StepRecord]:
    """Return the steps with `step` in place of its earlier record."""
    return [step if s.step_id == step.step_id else s for s in steps]


def dependents_decided(steps: list[StepRecord], succeeded: StepRecord) -> bool:
    """Say whether steps read before `succeeded` succeeded still tell, for sure, what to dispatch next.

    True only when the step has pending dependents and every prerequisite of each is succeeded in
    `steps`: a success is never undone, so they are ready whatever happened since. Otherwise (a
    fan-in waiting on a step that may have finished since, or no dependent left, so the request
    may be finishing) the steps must be read again after the write, so that of two steps
    finishing together the later reader sees both.
    """
    done = succeeded_ids(steps)
    waiting = [s for s in steps if s.status == StepStatus.PENDING and succeeded.step_id in s.depends_on]
    return bool(waiting) and all(all(d in done for d in s.depends_on) for s in waiting)
