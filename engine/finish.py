"""Finishing: fail a step and skip what it blocks, end the request once, emit the events."""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import ValidationError

from engine import graph, revise, runs, transitions
from engine.events import status_event
from engine.notify_message import notification_message
from engine.step_store import StepHost, StepWrites
from models.errors import StaleWriteError
from models.events import EventName
from models.lifecycle import DeleteResult, Remaining, Revision, SoftDeleted, TeardownReport
from models.plan import StepKind
from models.records import ErrorInfo, Notification, RequestRecord, RequestStatus, StepRecord, StepStatus

log = logging.getLogger("engine.steps")


class Finisher:
    """Moves steps and requests to their end and announces it."""

    def __init__(self, host: StepHost, writes: StepWrites) -> None:
        self.host = host
        self.writes = writes

    # ----- failing a step -------------------------------------------------------------------

    def fail(self, record: RequestRecord, step: StepRecord, error: ErrorInfo, **update: Any) -> bool:
        """Mark a step failed (a conditional write), announce it, skip its dependents and finish the request."""
        step = self.writes.step(transitions.failed(step, error=error, now=self.host.clock(), **update))
        self.emit(record, EventName.STEP_FAILED, step, status="failed", error_code=error.code, message=error.message)
        self.finish_if_done(record, self.skip_dependents(record, step), reread=False)
        return True

    def skip_dependents(self, record: RequestRecord, failed: StepRecord) -> list[StepRecord]:
        """Skip the pending steps the failed step blocks; return the request's steps as they now are.

        The steps are read after the failure was written, and again after the skips are: a step that
        succeeded meanwhile may have read them before the skips, so this later read is what sees
        every step ended.
        """
        store = self.host.store
        steps = runs.current(record, store.get_steps(record.id)) or []
        blocked = graph.blocked_by(steps, failed.step_id)
        now = self.host.clock()
        reason = f"skipped because '{failed.step_id}' failed"
        for s in steps:
            if s.step_id in blocked and s.status == StepStatus.PENDING:
                try:
                    self.writes.step(transitions.skipped(s, reason=reason, now=now))
                except StaleWriteError:
                    continue  # another finisher skipped it, or it was cancelled
        # Read again after the skips: a step finishing meanwhile read the steps before they were written,
        # so of the two this is the reader that sees every step end (else the request would stay unfinished).
        return runs.current(record, store.get_steps(record.id)) or []

    # ----- finishing the request ------------------------------------------------------------

    def finish_if_done(
        self, record: RequestRecord, steps: list[StepRecord] | None = None, *, reread: bool = True
    ) -> bool:
        """End the request's run once every step of it is finished; exactly once.

        A create or revision ends succeeded or failed, a teardown deleted or failed, a run being
        cancelled cancelled. With `reread=False` the caller's record is written as it is: the write
        is conditional on its version, and a stale one is read again and the write retried
        (`StepWrites.request`).
        """
        steps = steps if steps is not None else self.host.store.get_steps(record.id)
        run_steps = runs.current(record, steps)
        if not run_steps or not graph.all_finished(run_steps):
            return False
        current = self.host.store.get_request(record.id) if reread else record
        if current is None or not current.status.in_flight:
            return False
        if current.run != record.run:
            return False  # a newer run began since these steps were read
        if current.status == RequestStatus.CANCELLING:
            return self._cancelled(current, run_steps)
        if current.operation == "delete":
            return self._torn_down(current, run_steps)
        failed = [s for s in run_steps if s.status == StepStatus.FAILED]
        revision = current.operation == "update"
        if failed:
            first = failed[0]
            error = ErrorInfo(
                code=first.error.code if first.error else "StepFailed",
                message=f"step '{first.step_id}' failed: {first.error.message if first.error else 'unknown error'}",
            )
            assert current.plan is not None
            done = self.writes.request(
                current,
                status=RequestStatus.FAILED,
                error=error,
                applied=revise.made(current.applied, current.plan, run_steps),
                revisions=_revision_status(current, "failed"),
                **self._notify(current),
            )
            if done:
                log.warning("request %s failed at step %s: %s", done.id, first.step_id, error.message)
                self.announce(done)
                self.emit(
                    done,
                    EventName.UPDATE_FAILED if revision else EventName.PROVISIONING_FAILED,
                    None,
                    status="failed",
                    error_code=error.code,
                    message=error.message,
                )
            return done is not None or self._again(current)
        assert current.plan is not None
        outputs = self._outputs(current, steps)
        done = self.writes.request(
            current,
            status=RequestStatus.SUCCEEDED,
            outputs=outputs,
            error=None,
            applied=revise.made(current.applied, current.plan, run_steps),
            revisions=_revision_status(current, "applied"),
            **self._notify(current),
        )
        if done:
            log.info("request %s %s in %.1f s", done.id, "updated" if revision else "provisioned", _run_s(done))
            self.announce(done)
            self.emit(
                done,
                EventName.UPDATED if revision else EventName.PROVISIONED,
                None,
                status="succeeded",
                duration_ms=_request_ms(done) if not revision else None,
                message=done.revisions[-1].summary if revision and done.revisions else None,
            )
        return done is not None or self._again(current)

    def _again(self, record: RequestRecord) -> bool:
        """Decide the run's end again from the request as it now is: a cancel came in between, say."""
        fresh = self.host.store.get_request(record.id)
        if fresh is None or not fresh.status.in_flight or fresh.run != record.run or fresh.status == record.status:
            return False
        return self.finish_if_done(fresh)

    def _cancelled(self, record: RequestRecord, run_steps: list[StepRecord]) -> bool:
        made = [s.step_id for s in run_steps if s.status == StepStatus.SUCCEEDED]
        left = [s.step_id for s in run_steps if s.status != StepStatus.SUCCEEDED]
        error = ErrorInfo(
            code="Cancelled",
            message=f"cancelled: {len(made)} of {len(run_steps)} steps had succeeded ({', '.join(made) or 'none'}); "
            f"not done: {', '.join(left) or 'none'}. POST .../retry to finish it, or DELETE to tear down what exists.",
        )
        assert record.plan is not None
        update: dict[str, Any] = {
            "status": RequestStatus.CANCELLED,
            "error": error,
            "revisions": _revision_status(record, "cancelled"),
        }
        if record.operation != "delete":
            update["outputs"] = self._outputs(record, run_steps)
            update["applied"] = revise.made(record.applied, record.plan, run_steps)
        else:
            update["teardown"] = teardown_report(record, run_steps)
        done = self.writes.request(record, **update, **self._notify(record))
        if done:
            log.info("request %s cancelled", done.id)
            self.announce(done)
            self.emit(done, EventName.CANCELLED, None, status="cancelled", message=error.message)
        return done is not None

    def _torn_down(self, record: RequestRecord, run_steps: list[StepRecord]) -> bool:
        report = teardown_report(record, run_steps)
        failed = [s for s in run_steps if s.status == StepStatus.FAILED]
        if failed:
            first = failed[0]
            error = ErrorInfo(
                code=first.error.code if first.error else "StepFailed",
                message=f"teardown stopped at '{first.step_id}': "
                f"{first.error.message if first.error else 'unknown error'} "
                f"{len(report.remaining)} resources remain (see teardown.remaining); fix the cause, then POST "
                ".../retry to go on.",
            )
            done = self.writes.request(
                record, status=RequestStatus.FAILED, error=error, teardown=report, **self._notify(record)
            )
            if done:
                self.announce(done)
                self.emit(
                    done, EventName.DELETE_FAILED, None, status="failed", error_code=error.code, message=error.message
                )
            return done is not None or self._again(record)
        held = ", ".join(f"{s.name} until {s.until:%Y-%m-%d}" if s.until else s.name for s in report.soft_deleted)
        done = self.writes.request(
            record, status=RequestStatus.DELETED, error=None, teardown=report, **self._notify(record)
        )
        if done:
            log.info("request %s torn down", done.id)
            self.announce(done)
            self.emit(
                done,
                EventName.DELETED,
                None,
                status="deleted",
                message=f"torn down; names held by soft-delete: {held}" if held else "torn down; no name is held",
            )
        return done is not None or self._again(record)

    def _notify(self, record: RequestRecord) -> dict[str, Any]:
        # Marked pending in the same write that finishes the run, so the sweeper can resend it.
        wanted = record.callback_url or record.reply_to
        return {"notification": Notification()} if wanted else {}

    def announce(self, record: RequestRecord) -> None:
        """Send the request's notification, if it wants one."""
        if record.notification:
            self.host.bus.send(self.host.settings.notifications_queue, notification_message(record))

    def _outputs(self, record: RequestRecord, steps: list[StepRecord]) -> dict[str, Any]:
        assert record.plan is not None
        n = record.plan.names
        ws = next((s for s in steps if s.step_id == "workspace"), None)
        planned = next((s.resource_id for s in record.plan.steps if s.id == "workspace"), "")
        ws_id = (ws.outputs.get("id") if ws else None) or planned
        return {
            "workspace_id": ws_id,
            "studio_url": f"{self.host.settings.studio_url}/home?wsid={ws_id}",
            "config_json": {
                "subscription_id": n.subscription_id,
                "resource_group": n.resource_group,
                "workspace_name": n.workspace,
            },
            "resources": {s.step_id: s.outputs.get("id") for s in steps if s.outputs.get("id")},
        }

    # ----- events ---------------------------------------------------------------------------

    def emit(
        self,
        record: RequestRecord,
        name: EventName,
        step: StepRecord | None,
        *,
        status: str,
        duration_ms: float | None = None,
        error_code: str | None = None,
        message: str | None = None,
    ) -> None:
        """Emit one status event of the request (and step)."""
        self.host.events.emit(
            status_event(
                record,
                name,
                time=self.host.clock(),
                status=status,
                step=step,
                duration_ms=duration_ms,
                error_code=error_code,
                message=message,
            )
        )


def step_ms(step: StepRecord) -> float | None:
    """Return how long the step ran, once it has finished."""
    if step.started_at and step.finished_at:
        return (step.finished_at - step.started_at).total_seconds() * 1000
    return None


def _request_ms(record: RequestRecord) -> float:
    return (record.updated_at - record.created_at).total_seconds() * 1000


def _run_s(record: RequestRecord) -> float:
    started = record.revisions[-1].at if record.revisions else record.created_at
    return (record.updated_at - started).total_seconds()


def _revision_status(record: RequestRecord, status: Literal["applied", "failed", "cancelled"]) -> list[Revision]:
    """Return the record's revisions with the one its current run applies marked `status`."""
    # A revision that waited for approval and was denied, expired or withdrawn named a run that never started.
    dropped = ("denied", "expired", "withdrawn")
    return [
        r.model_copy(update={"status": status}) if r.run == record.run and r.status not in dropped else r
        for r in record.revisions
    ]


def teardown_report(record: RequestRecord, run_steps: list[StepRecord]) -> TeardownReport:
    """Say what a teardown run removed, what it left and why, and which names soft-delete holds, until when."""
    assert record.plan is not None
    base = record.teardown or TeardownReport(purge=False)
    planned = {s.id: s for s in record.plan.steps}
    deleted: list[str] = []
    remaining: list[Remaining] = []
    kept = [k for k in base.kept if k.step_id not in planned]
    soft: list[SoftDeleted] = []
    for s in run_steps:
        step = planned[s.step_id]
        if s.status == StepStatus.SUCCEEDED:
            try:
                result = DeleteResult.model_validate(s.outputs)
            except ValidationError:
                result = DeleteResult(deleted=True)
            if result.kept:
                kept.append(Remaining(step_id=s.step_id, kind=s.kind, resource_id=step.resource_id, reason=result.kept))
                if not result.soft_deleted_until:
                    continue
                # Deleted, and kept soft-deleted (a vault under purge protection): its name is held, say until when.
            # An access step deletes role assignments at its resource's scope, not the resource itself.
            if result.deleted and s.kind != StepKind.ACCESS and step.resource_id not in deleted:
                deleted.append(step.resource_id)
            if s.kind in revise.SOFT_DELETING and not result.purged and (result.deleted or result.soft_deleted_until):
                soft.append(
                    SoftDeleted(
                        step_id=s.step_id,
                        kind=s.kind,
                        name=step.resource_name,
                        resource_id=step.resource_id,
                        until=result.soft_deleted_until,
                        purge=_purge_hint(s.kind, step.resource_name),
                    )
                )
            continue
        reason = (
            s.error.message
            if s.error
            else (s.status_reason or f"not reached ({s.status.value}): a step it waits for did not finish")
        )
        remaining.append(
            Remaining(
                step_id=s.step_id,
                kind=s.kind,
                resource_id=step.resource_id,
                reason=reason,
                code=s.error.code if s.error else None,
            )
        )
    return base.model_copy(update={"deleted": deleted, "kept": kept, "remaining": remaining, "soft_deleted": soft})


def _purge_hint(kind: str, name: str) -> str:
    if kind == "key-vault":
        return f"az keyvault purge --name {name} (not possible while purge protection is on: wait for the date)"
    return f"az ml workspace delete --name {name} --permanently-delete, or DELETE this request again with ?purge=true"
