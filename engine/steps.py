"""The step engine: run one step message, apply its outcome, fan in, finish requests, sweep.

DESIGN sections 3 and 4. Every status change is a conditional write on the record's version;
whoever loses a race re-reads and stands down, so duplicates, crashes and concurrent workers
never run a step twice in one attempt or dispatch a dependent twice.

`StepEngine` runs one step message and is the face of its parts: `engine.step_store` (the
conditional writes), `engine.transitions` (pure record changes), `engine.graph` (readiness and
skipping), `engine.dispatch` (next attempts and their messages), `engine.finish` (failing,
ending the request, events) and `engine.recovery` (failed handlings, sweeps, operators).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from engine import graph, runs, transitions
from engine.control import RunControl
from engine.dispatch import Dispatcher, encode_step_message
from engine.events import EventFanout
from engine.finish import Finisher, step_ms
from engine.ports import Cloud, Sender, StepContext, Store
from engine.recovery import Recovery
from engine.redelivery import backoff_s
from engine.step_store import StepWrites
from models.errors import BackPressure, PermanentError, StaleWriteError, TransientError
from models.events import EventName
from models.messages import StepMessage
from models.outcomes import Done, Fail, Outcome, Retry, Wait
from models.plan import Step, StepAction
from models.records import ErrorInfo, RequestRecord, RequestStatus, StepRecord, StepStatus
from models.redact import redact
from models.settings import Settings

__all__ = ["StepEngine", "StepResult", "encode_step_message", "utcnow"]

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class StepResult:
    """What happened to one step message: for logs, tests and settlement."""

    disposition: str
    outcome: Outcome | None = None


class StepEngine:
    """Runs steps against the cloud and moves requests to their end."""

    def __init__(
        self,
        *,
        store: Store,
        bus: Sender,
        cloud: Callable[[], Cloud],
        events: EventFanout,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.bus = bus
        self._cloud = cloud
        self.events = events
        self.settings = settings
        self.clock = clock
        self.rng = rng
        # The lease is half the message lock: a redelivery after a crash finds it expired.
        self.lease = timedelta(seconds=settings.bus_lock_s / 2)
        self._writes = StepWrites(self)
        self._dispatcher = Dispatcher(self, self._writes)
        self._finisher = Finisher(self, self._writes)
        self._recovery = Recovery(self, self._writes, self._dispatcher, self._finisher)
        self._control = RunControl(self, self._writes, self._dispatcher, self._finisher)

    # ----- the parts' faces -----------------------------------------------------------------

    def dispatch_ready(self, record: RequestRecord, steps: list[StepRecord] | None = None) -> int:
        """Claim and send every pending step whose prerequisites have all succeeded."""
        steps = steps if steps is not None else self.store.get_steps(record.id)
        return self._dispatcher.dispatch_ready(record, runs.current(record, steps) or [])

    def claimed_at_creation(self, steps: list[StepRecord]) -> list[StepRecord]:
        """Return a new request's steps with the ready ones claimed, for the write that creates the request."""
        return self._dispatcher.claimed_at_creation(steps)

    def send_claimed(self, record: RequestRecord, steps: list[StepRecord]) -> int:
        """Send the messages of the steps claimed when the request was created; return how many."""
        return self._dispatcher.send_claimed(record, steps)

    def finish_if_done(self, record: RequestRecord, steps: list[StepRecord] | None = None) -> bool:
        """Move the request to succeeded or failed once every step is finished; exactly once."""
        return self._finisher.finish_if_done(record, steps)

    def fail_step(self, *, request_id: str, step_id: str, error: ErrorInfo, attempt: int | None = None) -> bool:
        """Fail an unfinished step from outside (its message was dead-lettered); skip dependents, finish."""
        return self._recovery.fail_step(request_id=request_id, step_id=step_id, error=error, attempt=attempt)

    def resume_step(self, *, request_id: str, step_id: str) -> bool:
        """Run a failed step again (an operator fixed the cause); the dependents it skipped wait again."""
        return self._recovery.resume_step(request_id=request_id, step_id=step_id)

    def sweep(self) -> int:
        """Re-dispatch steps that a crash or a lost message left stuck; finish finished requests."""
        return self._recovery.sweep()

    def start_run(self, record: RequestRecord) -> RequestRecord:
        """Open the record's current run (its record is written already) and send what is ready; finish an empty one."""
        return self._control.start(record)

    def cancel(self, record: RequestRecord) -> RequestRecord:
        """Cancel the request's run in flight: no new step starts; it ends cancelled once running ones stop."""
        return self._control.cancel(record)

    def retry(self, record: RequestRecord) -> RequestRecord:
        """Resume a failed or cancelled run from the steps that did not succeed."""
        return self._control.retry(record)

    # ----- one step message -----------------------------------------------------------------

    def run_step(self, *, message: StepMessage) -> StepResult:
        """Work on one step message: claim, reconcile, record the outcome, fan in."""
        # The request's steps are read once here; later reads are only those a race needs (see `_apply`).
        all_steps = self.store.get_steps(message.request_id)
        step = next((s for s in all_steps if s.step_id == message.step_id), None)
        now = self.clock()
        refusal = transitions.claim_refusal(step, message, now=now)
        if refusal is not None or step is None:
            return StepResult(refusal or "dropped: no such step")
        record = self.store.get_request(message.request_id)
        if record is None or record.plan is None:
            return StepResult("dropped: no such request")
        steps = runs.current(record, all_steps)
        if steps is None or step.run != record.run:
            return StepResult("dropped: the step is not part of the request's current run")
        if record.status == RequestStatus.CANCELLING:
            return StepResult(self._control.cancel_step(record, step))
        # How long the message waited between being due and being worked on (queue latency).
        queued_ms = max(0.0, (now - (step.due_at or step.updated_at)).total_seconds() * 1000)
        resumed = step.status == StepStatus.RUNNING  # claimed before and never recorded: it may have acted
        try:
            step = self._writes.step(transitions.claimed(step, now=now, lease=self.lease))
        except StaleWriteError:
            return StepResult("dropped: another worker claimed the step")
        try:
            return self._work(record, step, graph.with_step(steps, step), queued_ms, all_steps, resumed=resumed)
        except Exception as exc:
            if self._recovery.handling_failed(record, step, exc):
                return StepResult("failed: its handling kept failing")
            raise

    def _work(
        self,
        record: RequestRecord,
        step: StepRecord,
        steps: list[StepRecord],
        queued_ms: float,
        all_steps: list[StepRecord],
        *,
        resumed: bool = False,
    ) -> StepResult:
        """Work on a claimed step: reconcile it and record the outcome.

        `steps` are the request's steps as read before the claim: the prerequisites' outputs are
        final (a success is never undone), and `_apply` reads again where a race needs it.
        """
        assert record.plan is not None
        plan = record.plan
        self._finisher.emit(record, EventName.STEP_STARTED, step, status="running", duration_ms=queued_ms)
        if record.status == RequestStatus.ACCEPTED:
            record = self._writes.request(record, status=RequestStatus.PROVISIONING) or record
        # A cancel that came in since the request was read lets this call finish; the next stops.

        plan_step = plan.step(step.step_id)
        ctx = StepContext(
            request_id=record.id,
            names=plan.names,
            attempt=step.attempt - step.opened_attempt,
            step_started_at=step.started_at,
            dependency_outputs=_dependency_outputs(plan_step, step, steps, all_steps),
            resumed=resumed,
            ran_before=step.opened_attempt > 0,
        )
        started = time.perf_counter()
        outcome = self._reconcile(plan_step, ctx)
        elapsed_ms = (time.perf_counter() - started) * 1000
        try:
            self._apply(record, step, steps, outcome, elapsed_ms)
        except StaleWriteError:
            # Our lease ran out and another worker took the step; its result stands.
            return StepResult("dropped: lease lost before the outcome was written", outcome)
        return StepResult("ran", outcome)

    def _reconcile(self, plan_step: Any, ctx: StepContext) -> Outcome:
        outcome = self._reconcile_raw(plan_step, ctx)
        # Whatever the cloud said goes into records, events and logs: no secret may ride along.
        if isinstance(outcome, Wait):
            return Wait(outcome.after_s, redact(outcome.reason))
        if isinstance(outcome, Retry):
            return Retry(outcome.after_s, redact(outcome.error), outcome.code)
        if isinstance(outcome, Fail):
            return Fail(redact(outcome.error), outcome.code)
        return outcome

    def _reconcile_raw(self, plan_step: Any, ctx: StepContext) -> Outcome:
        try:
            return self._cloud().reconcile(plan_step, ctx)
        except BackPressure as exc:
            return Wait(exc.retry_after_s or 1.0, str(exc))
        except TransientError as exc:
            return Retry(exc.retry_after_s or 0.0, str(exc), exc.code)
        except PermanentError as exc:
            return Fail(str(exc), exc.code)
        except Exception as exc:
            log.exception("reconcile of %s/%s raised", ctx.request_id, plan_step.id)
            return Retry(
                0.0, f"unexpected error in the provider: {type(exc).__name__}: {str(exc)[:300]}", "InternalError"
            )

    def _apply(
        self, record: RequestRecord, step: StepRecord, steps: list[StepRecord], outcome: Outcome, elapsed_ms: float
    ) -> None:
        """Write the outcome, then dispatch what it made ready and finish the request if it was the last.

        After a success the steps read before the claim are enough when they show its dependents
        ready for sure; otherwise they are read again after the write, which is what makes fan-in
        and finishing safe when steps finish together (`graph.dependents_decided`). The request is
        finished from the record in hand: that write is conditional on its version.
        """
        s = self.settings
        emit = self._finisher.emit
        outcome = transitions.within_limits(outcome, step, s)
        if isinstance(outcome, Wait):
            self._dispatcher.advance(
                record,
                step,
                status=StepStatus.WAITING,
                delay_s=outcome.after_s,
                waited_s=step.waited_s + outcome.after_s,
                handling_failures=0,
                status_reason=outcome.reason,
                announce=partial(emit, record, EventName.STEP_WAITING, step, status="waiting", message=outcome.reason),
            )
            return
        if isinstance(outcome, Retry):
            retries = step.retries + 1
            backoff = backoff_s(retries, base_s=s.retry_base_s, cap_s=s.retry_cap_s, jitter=self.rng())
            self._dispatcher.advance(
                record,
                step,
                status=StepStatus.WAITING,
                delay_s=max(outcome.after_s, backoff),
                retries=retries,
                handling_failures=0,
                error=ErrorInfo(code=outcome.code, message=outcome.error),
                status_reason="retrying",
                announce=partial(
                    emit,
                    record,
                    EventName.STEP_RETRYING,
                    step,
                    status="waiting",
                    error_code=outcome.code,
                    message=outcome.error,
                ),
            )
            return
        now = self.clock()
        if isinstance(outcome, Done):
            step = self._writes.step(transitions.succeeded(step, outputs=outcome.outputs, now=now))
            emit(record, EventName.STEP_SUCCEEDED, step, status="succeeded", duration_ms=step_ms(step))
            steps = graph.with_step(steps, step)
            if not graph.dependents_decided(steps, step):
                steps = runs.current(record, self.store.get_steps(record.id)) or []
            _, lost = self._dispatcher.dispatch_counting(record, steps)
            if lost:
                # A dependent changed under us (a cancel cancelled it): finish from what is stored now.
                self._finisher.finish_if_done(record, runs.current(record, self.store.get_steps(record.id)) or [])
                return
        else:
            step = self._writes.step(
                transitions.failed(step, error=ErrorInfo(code=outcome.code, message=outcome.error), now=now)
            )
            emit(record, EventName.STEP_FAILED, step, status="failed", error_code=outcome.code, message=outcome.error)
            steps = self._finisher.skip_dependents(record, step)
        self._finisher.finish_if_done(record, steps, reread=False)


def _dependency_outputs(
    plan_step: Step, step: StepRecord, steps: list[StepRecord], all_steps: list[StepRecord]
) -> dict[str, dict[str, Any]]:
    """Return what the reconcile may read: its own record's last outputs and its prerequisites' (final: a success stays).

    A delete also reads its own record's outputs (what the create reported: ids, identities) and
    those of every step of the request, as the resources they name are what it removes.
    """
    if plan_step.action == StepAction.DELETE:
        return {s.step_id: s.outputs for s in all_steps}
    by_id = {s.step_id: s for s in steps}
    return {step.step_id: step.outputs, **{d: by_id[d].outputs for d in plan_step.depends_on if d in by_id}}
