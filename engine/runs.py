"""Runs: each create, revision and teardown of a request is one run of its plan over the request's step records.

A step record says which run it last took part in (`run`) and what that run does with it
(`action`). Opening a run brings the record of every step of the run's plan to that run: a new
step gets a record, a step to apply or delete is reopened (pending, counters reset, its attempt
number kept, so every message id stays unique for good), a step to keep is only marked. Records
of steps the run's plan does not name stay as their last run left them: they are history.

Opening is idempotent and is what the sweeper repeats after a crash: a request's record is written
with its new run first, so a run that is not open yet is one whose plan names a step without a
record of that run (`current` answers None).
"""

from __future__ import annotations

from datetime import datetime

from engine.ports import Store
from models.errors import StaleWriteError
from models.plan import Plan, StepAction
from models.records import RequestRecord, StepRecord, StepStatus


def current(record: RequestRecord, steps: list[StepRecord]) -> list[StepRecord] | None:
    """Return the records of the current run's steps in plan order; None while the run is not open yet."""
    if record.plan is None:
        return []
    by_id = {s.step_id: s for s in steps}
    found = []
    for plan_step in record.plan.steps:
        s = by_id.get(plan_step.id)
        if s is None or s.run != record.run:
            return None
        found.append(s)
    return found


def opened(step: StepRecord, *, run: int, action: StepAction, depends_on: list[str], now: datetime) -> StepRecord:
    """Return a step's record taking part in `run`: pending again, or only marked when it is kept as it is."""
    if action == StepAction.KEEP:
        return step.model_copy(update={"run": run, "action": action, "depends_on": depends_on, "updated_at": now})
    return step.model_copy(
        update={
            "run": run,
            "opened_attempt": step.attempt,
            "action": action,
            "depends_on": depends_on,
            "status": StepStatus.PENDING,
            "retries": 0,
            "waited_s": 0.0,
            "handling_failures": 0,
            "due_at": None,
            "lease_until": None,
            "started_at": None,
            "finished_at": None,
            "error": None,
            "status_reason": None,
            "updated_at": now,
        }
    )


def new_records(record: RequestRecord, plan: Plan, existing: list[StepRecord], *, now: datetime) -> list[StepRecord]:
    """Return records for the plan's steps that have none yet, already in the record's run."""
    have = {s.step_id for s in existing}
    return [
        StepRecord(
            request_id=record.id,
            step_id=s.id,
            kind=s.kind,
            depends_on=s.depends_on,
            run=record.run,
            action=s.action,
            updated_at=now,
        )
        for s in plan.steps
        if s.id not in have
    ]


def to_open(record: RequestRecord, steps: list[StepRecord], *, now: datetime) -> list[StepRecord]:
    """Return the existing records the current run must reopen or mark, each as it must be written."""
    assert record.plan is not None
    by_id = {s.step_id: s for s in steps}
    out = []
    for plan_step in record.plan.steps:
        s = by_id.get(plan_step.id)
        if s is None or s.run == record.run:
            continue
        action = plan_step.action
        if action == StepAction.KEEP and (s.status != StepStatus.SUCCEEDED or s.action == StepAction.DELETE):
            action = StepAction.APPLY  # a keep needs a made resource to keep: otherwise the run applies it
        out.append(opened(s, run=record.run, action=action, depends_on=plan_step.depends_on, now=now))
    return out


class RunOpener:
    """Opens the current run of a request: the writes `to_open` and `new_records` call for."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def open(self, record: RequestRecord, steps: list[StepRecord], *, now: datetime) -> list[StepRecord] | None:
        """Open the record's run and return its steps (as `current` would); None if another writer got in between."""
        assert record.plan is not None
        for step in to_open(record, steps, now=now):
            try:
                self.store.update_step(step)
            except StaleWriteError:
                return None
        fresh = new_records(record, record.plan, steps, now=now)
        if fresh:
            self.store.add_steps(record.id, fresh)
        return current(record, self.store.get_steps(record.id))
