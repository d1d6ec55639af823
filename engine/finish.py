"""Finishing: fail a step and skip what it blocks, end the request once, emit the events."""

from __future__ import annotations

import logging
from typing import Any

from engine import graph, transitions
from engine.events import status_event
from engine.notify_message import notification_message
from engine.step_store import StepHost, StepWrites
from models.errors import StaleWriteError
from models.events import EventName
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

        The steps are read after the failure was written (so that of two steps finishing together
        the later reader sees both); the skips are ours, so they are applied to that read, and only
        a skip that lost a race makes the steps be read again.
        """
        store = self.host.store
        steps = store.get_steps(record.id)
        blocked = graph.blocked_by(steps, failed.step_id)
        now = self.host.clock()
        reason = f"skipped because '{failed.step_id}' failed"
        lost = False
        for s in steps:
            if s.step_id in blocked and s.status == StepStatus.PENDING:
                try:
                    steps = graph.with_step(steps, self.writes.step(transitions.skipped(s, reason=reason, now=now)))
                except StaleWriteError:
                    lost = True
        return store.get_steps(record.id) if lost else steps

    # ----- finishing the request ------------------------------------------------------------

    def finish_if_done(
        self, record: RequestRecord, steps: list[StepRecord] | None = None, *, reread: bool = True
    ) -> bool:
        """Move the request to succeeded or failed once every step is finished; exactly once.

        With `reread=False` the caller's record is written as it is: the write is conditional on its
        version, and a stale one is read again and the write retried (`StepWrites.request`).
        """
        steps = steps if steps is not None else self.host.store.get_steps(record.id)
        if not graph.all_finished(steps):
            return False
        current = self.host.store.get_request(record.id) if reread else record
        if current is None or current.status.terminal:
            return False
        failed = [s for s in steps if s.status == StepStatus.FAILED]
        if failed:
            first = failed[0]
            error = ErrorInfo(
                code=first.error.code if first.error else "StepFailed",
                message=f"step '{first.step_id}' failed: {first.error.message if first.error else 'unknown error'}",
            )
            done = self.writes.request(current, status=RequestStatus.FAILED, error=error, **self._notify(current))
            if done:
                log.warning("request %s failed at step %s: %s", done.id, first.step_id, error.message)
                self.announce(done)
                self.emit(
                    done,
                    EventName.PROVISIONING_FAILED,
                    None,
                    status="failed",
                    error_code=error.code,
                    message=error.message,
                )
            return done is not None
        outputs = self._outputs(current, steps)
        done = self.writes.request(current, status=RequestStatus.SUCCEEDED, outputs=outputs, **self._notify(current))
        if done:
            log.info("request %s provisioned in %.1f s", done.id, _request_ms(done) / 1000)
            self.announce(done)
            self.emit(done, EventName.PROVISIONED, None, status="succeeded", duration_ms=_request_ms(done))
        return done is not None

    def _notify(self, record: RequestRecord) -> dict[str, Any]:
        # Marked pending in the same write that finishes the request, so the sweeper can resend it.
        wanted = record.request.get("callback_url") or record.reply_to
        return {"notification": Notification()} if wanted else {}

    def announce(self, record: RequestRecord) -> None:
        """Send the request's notification, if it wants one."""
        if record.notification:
            self.host.bus.send(self.host.settings.notifications_queue, notification_message(record))

    def _outputs(self, record: RequestRecord, steps: list[StepRecord]) -> dict[str, Any]:
        assert record.plan is not None
        n = record.plan.names
        ws = next((s for s in steps if s.step_id == "workspace"), None)
        ws_id = (ws.outputs.get("id") if ws else None) or record.plan.step("workspace").resource_id
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
