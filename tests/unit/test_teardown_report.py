"""What a teardown's record says (engine.finish.teardown_report): pure, from the run's plan and its steps' outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine import revise
from engine.finish import teardown_report
from engine.planner import plan as make_plan
from engine.policy import admit
from models.lifecycle import DeleteResult, TeardownReport
from models.records import RequestRecord, RequestStatus, StepRecord, StepStatus
from models.request import parse_request
from tests.conftest import example, shipped_policy

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def _teardown(purge: bool) -> tuple[RequestRecord, list[StepRecord]]:
    """A cpu-small request being torn down, every step of its run succeeded with a plain delete."""
    policy = shipped_policy()
    made = make_plan(admit(parse_request(example("cpu-small.json")), policy), policy)
    plan, _ = revise.teardown_plan(made, made, purge=purge)
    record = RequestRecord(
        id="r",
        status=RequestStatus.DELETING,
        team="fraud-detection",
        environment="dev",
        plan=plan,
        operation="delete",
        run=2,
        teardown=TeardownReport(purge=purge),
        created_at=NOW,
        updated_at=NOW,
    )
    steps = [
        StepRecord(
            request_id="r",
            step_id=s.id,
            kind=s.kind,
            status=StepStatus.SUCCEEDED,
            run=2,
            updated_at=NOW,
            outputs=DeleteResult(deleted=True, purged=purge).model_dump(mode="json"),
        )
        for s in plan.steps
    ]
    return record, steps


def _with_outputs(steps: list[StepRecord], step_id: str, result: DeleteResult) -> list[StepRecord]:
    return [
        s.model_copy(update={"outputs": result.model_dump(mode="json")}) if s.step_id == step_id else s for s in steps
    ]


def test_a_vault_purge_protection_keeps_is_listed_as_a_held_name() -> None:
    record, steps = _teardown(purge=True)
    until = NOW + timedelta(days=90)
    protected = DeleteResult(deleted=True, soft_deleted_until=until, kept="it has purge protection")
    report = teardown_report(record, _with_outputs(steps, "key-vault", protected))
    [held] = report.soft_deleted
    assert (held.step_id, held.until) == ("key-vault", until)
    assert "purge protection" in held.purge
    assert [k.step_id for k in report.kept] == ["key-vault"]  # kept, and why
    assert record.plan is not None
    assert record.plan.step("key-vault").resource_id in report.deleted


def test_deleted_lists_each_resource_once_and_no_role_assignment_scope() -> None:
    record, steps = _teardown(purge=False)
    report = teardown_report(record, steps)
    assert len(report.deleted) == len(set(report.deleted))
    assert record.plan is not None
    made = {s.resource_id for s in record.plan.steps if s.kind != "access"}
    assert set(report.deleted) == made
    # An access step deletes role assignments on a scope (the workspace, say): the scope itself is not deleted.
    failed = [s.model_copy(update={"status": StepStatus.FAILED}) if s.step_id == "workspace" else s for s in steps]
    workspace = record.plan.step("workspace").resource_id
    assert workspace not in teardown_report(record, failed).deleted
