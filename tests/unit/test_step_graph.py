"""The step graph: readiness, what a failure blocks, and when steps read earlier still decide a fan-in."""

from __future__ import annotations

from datetime import UTC, datetime

from engine import graph
from models.plan import StepKind
from models.records import StepRecord, StepStatus

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _step(step_id: str, status: StepStatus, *depends_on: str) -> StepRecord:
    return StepRecord(
        request_id="r",
        step_id=step_id,
        kind=StepKind.STORAGE,
        status=status,
        depends_on=list(depends_on),
        updated_at=NOW,
    )


def test_a_dependent_whose_prerequisites_all_succeeded_is_decided_from_an_earlier_read() -> None:
    steps = [
        _step("a", StepStatus.SUCCEEDED),
        _step("b", StepStatus.SUCCEEDED, "a"),
        _step("c", StepStatus.PENDING, "a", "b"),
    ]
    assert graph.dependents_decided(steps, steps[1])
    assert [s.step_id for s in graph.ready(steps)] == ["c"]


def test_a_fan_in_waiting_on_an_unfinished_prerequisite_needs_a_fresh_read() -> None:
    steps = [
        _step("a", StepStatus.SUCCEEDED),
        _step("b", StepStatus.RUNNING),  # may have succeeded since the read
        _step("c", StepStatus.PENDING, "a", "b"),
        _step("d", StepStatus.PENDING, "a"),
    ]
    assert not graph.dependents_decided(steps, steps[0])


def test_a_step_without_pending_dependents_needs_a_fresh_read_for_the_finish() -> None:
    steps = [_step("a", StepStatus.SUCCEEDED), _step("b", StepStatus.RUNNING)]
    assert not graph.dependents_decided(steps, steps[0])


def test_a_failure_blocks_its_pending_dependents_transitively_and_nothing_else() -> None:
    steps = [
        _step("a", StepStatus.FAILED),
        _step("b", StepStatus.PENDING, "a"),
        _step("c", StepStatus.PENDING, "b"),
        _step("d", StepStatus.QUEUED, "a"),
        _step("e", StepStatus.PENDING),
    ]
    assert graph.blocked_by(steps, "a") == {"b", "c"}
    assert graph.downstream(steps, "a") == {"a", "b", "c", "d"}
