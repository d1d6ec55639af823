"""The step engine: run one step message, apply its outcome, fan in, finish requests, sweep.

DESIGN sections 3 and 4. Every status change is a conditional write on the record's version;
whoever loses a race re-reads and stands down, so duplicates, crashes and concurrent workers
never run a step twice in one attempt or dispatch a dependent twice.
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

from engine.events import EventFanout, status_event
from engine.notify_message import notification_message
from engine.ports import Cloud, OutgoingMessage, Sender, StepContext, Store
from engine.redelivery import backoff_s
from models.errors import BackPressure, PermanentError, StaleWriteError, TransientError
from models.events import EventName
from models.messages import StepMessage
from models.outcomes import Done, Fail, Outcome, Retry, Wait
from models.records import ErrorInfo, RequestRecord, RequestStatus, StepRecord, StepStatus
from models.redact import redact
from models.settings import Settings

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class StepResult:
    """What happened to one step message: for logs, tests and settlement."""

    disposition: str
    outcome: Outcome | None = None


def encode_step_message(message: StepMessage, *, at: datetime | None = None) -> OutgoingMessage:
    """Build the bus message for a step dispatch."""
    props = {"request_id": message.request_id, "step_id": message.step_id, "attempt": str(message.attempt)}
    if message.traceparent:
        props["traceparent"] = message.traceparent
    return OutgoingMessage(
        message_id=message.message_id,
        body=message.model_dump_json().encode(),
        correlation_id=message.request_id,
        application_properties=props,
        scheduled_at=at,
    )


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

    # ----- dispatch -------------------------------------------------------------------------

    def dispatch_ready(self, record: RequestRecord, steps: list[StepRecord] | None = None) -> int:
        """Claim and send every pending step whose prerequisites have all succeeded."""
        steps = steps if steps is not None else self.store.get_steps(record.id)
        done = {s.step_id for s in steps if s.status == StepStatus.SUCCEEDED}
        sent = 0
        for step in steps:
            if step.status == StepStatus.PENDING and all(d in done for d in step.depends_on):
                sent += self._dispatch(record, step)
        return sent

    def _dispatch(self, record: RequestRecord, step: StepRecord) -> int:
        try:
            self._advance(record, step, status=StepStatus.QUEUED)
        except StaleWriteError:
            return 0  # another finisher dispatched it
        return 1

    def _advance(
        self,
        record: RequestRecord,
        step: StepRecord,
        *,
        status: StepStatus,
        delay_s: float = 0.0,
        announce: Callable[[], None] | None = None,
        **update: Any,
    ) -> StepRecord:
        """Move a step to its next attempt (a conditional write), then send that attempt's message.

        `announce` emits the transition's event between the write and the send, so that a worker
        taking the next attempt at once cannot emit its events before this one.
        """
        now = self.clock()
        due = now + timedelta(seconds=delay_s)
        step = self.store.update_step(
            step.model_copy(
                update={
                    **update,
                    "status": status,
                    "attempt": step.attempt + 1,
                    "due_at": due,
                    "lease_until": None,
                    "updated_at": now,
                }
            )
        )
        if announce is not None:
            announce()
        self._send(record, step, at=due if delay_s > 0 else None)
        return step

    def _send(self, record: RequestRecord, step: StepRecord, *, at: datetime | None) -> None:
        msg = StepMessage(
            request_id=step.request_id, step_id=step.step_id, attempt=step.attempt, traceparent=record.traceparent
        )
        self.bus.send(self.settings.steps_queue, encode_step_message(msg, at=at))

    # ----- one step message -----------------------------------------------------------------

    def run_step(self, *, message: StepMessage) -> StepResult:
        """Work on one step message: claim, reconcile, record the outcome, fan in."""
        step = self.store.get_step(message.request_id, message.step_id)
        if step is None:
            return StepResult("dropped: no such step")
        if step.status.terminal:
            return StepResult(f"dropped: step already {step.status.value}")
        if message.attempt != step.attempt:
            return StepResult(f"dropped: stale attempt {message.attempt}, step is at {step.attempt}")
        now = self.clock()
        if step.status == StepStatus.RUNNING and step.lease_until and step.lease_until > now:
            return StepResult("dropped: another worker holds the step")
        if step.status not in (StepStatus.QUEUED, StepStatus.WAITING, StepStatus.RUNNING):
            return StepResult(f"dropped: step is {step.status.value}")
        record = self.store.get_request(message.request_id)
        if record is None or record.plan is None:
            return StepResult("dropped: no such request")
        # How long the message waited between being due and being worked on (queue latency).
        queued_ms = max(0.0, (now - (step.due_at or step.updated_at)).total_seconds() * 1000)
        try:
            step = self.store.update_step(
                step.model_copy(
                    update={
                        "status": StepStatus.RUNNING,
                        "status_reason": None,
                        "lease_until": now + self.lease,
                        "started_at": step.started_at or now,
                        "updated_at": now,
                    }
                )
            )
        except StaleWriteError:
            return StepResult("dropped: another worker claimed the step")
        try:
            return self._work(record, step, queued_ms)
        except Exception as exc:
            if self._handling_failed(record, step, exc):
                return StepResult("failed: its handling kept failing")
            raise

    def _work(self, record: RequestRecord, step: StepRecord, queued_ms: float) -> StepResult:
        """Work on a claimed step: reconcile it and record the outcome."""
        assert record.plan is not None
        plan = record.plan
        self._emit(record, EventName.STEP_STARTED, step, status="running", duration_ms=queued_ms)
        if record.status == RequestStatus.ACCEPTED:
            record = self._set_request(record, status=RequestStatus.PROVISIONING) or record

        plan_step = plan.step(step.step_id)
        all_steps = {s.step_id: s for s in self.store.get_steps(record.id)}
        ctx = StepContext(
            request_id=record.id,
            names=plan.names,
            attempt=step.attempt,
            step_started_at=step.started_at,
            dependency_outputs={d: all_steps[d].outputs for d in plan_step.depends_on if d in all_steps},
        )
        started = time.perf_counter()
        outcome = self._reconcile(plan_step, ctx)
        elapsed_ms = (time.perf_counter() - started) * 1000
        try:
            self._apply(record, step, outcome, elapsed_ms)
        except StaleWriteError:
            # Our lease ran out and another worker took the step; its result stands.
            return StepResult("dropped: lease lost before the outcome was written", outcome)
        return StepResult("ran", outcome)

    def _handling_failed(self, record: RequestRecord, claimed: StepRecord, exc: Exception) -> bool:
        """Count a failed handling of a claimed step, releasing its lease in the same write; fail it at the limit.

        Return True when the step was failed (its message is done with). Return False when the
        failure was counted, or could not be (the store is down), or came after the outcome was
        written: the message is then tried again later, and its copy may take the step at once.
        """
        limit = self.settings.step_max_handling_failures
        what = f"{type(exc).__name__}: {str(exc)[:300]}"
        try:
            current = self.store.get_step(claimed.request_id, claimed.step_id)
            if current is None or current.version != claimed.version:
                return False  # its outcome was written before the failure, or another worker took it over
            failures = current.handling_failures + 1
            if failures < limit:
                self.store.update_step(
                    current.model_copy(
                        update={
                            "handling_failures": failures,
                            "lease_until": None,
                            "status_reason": f"handling failed ({failures} of {limit} allowed): {what}",
                            "updated_at": self.clock(),
                        }
                    )
                )
                return False
            error = ErrorInfo(
                code="StepHandlingFailed",
                message=f"its handling failed {failures} times in a row after the cloud was asked ({what}). "
                f"Look for '{claimed.request_id}/{claimed.step_id}' in the service's log, fix the cause "
                "(often the state store), then submit the request again: what exists in Azure is reused.",
            )
            return self._fail(record, current, error, handling_failures=failures)
        except Exception as count_error:  # noqa: BLE001 - the message's retry later still applies
            log.warning(
                "could not count the failed handling of %s/%s: %s", claimed.request_id, claimed.step_id, count_error
            )
            return False

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

    def _apply(self, record: RequestRecord, step: StepRecord, outcome: Outcome, elapsed_ms: float) -> None:
        now = self.clock()
        s = self.settings
        if isinstance(outcome, Wait):
            waited = step.waited_s + outcome.after_s
            if waited > s.step_max_wait_s:
                outcome = Fail(
                    f"gave up waiting after {waited:.0f} s (limit {s.step_max_wait_s:.0f} s): {outcome.reason}. "
                    "Check the resource in the Azure portal; submit again to resume.",
                    "StepTimedOut",
                )
            else:
                self._advance(
                    record,
                    step,
                    status=StepStatus.WAITING,
                    delay_s=outcome.after_s,
                    waited_s=waited,
                    handling_failures=0,
                    status_reason=outcome.reason,
                    announce=partial(
                        self._emit, record, EventName.STEP_WAITING, step, status="waiting", message=outcome.reason
                    ),
                )
                return
        if isinstance(outcome, Retry):
            retries = step.retries + 1
            if retries > s.step_max_retries:
                outcome = Fail(f"gave up after {step.retries} retries; last error: {outcome.error}", outcome.code)
            else:
                backoff = backoff_s(retries, base_s=s.retry_base_s, cap_s=s.retry_cap_s, jitter=self.rng())
                delay = max(outcome.after_s, backoff)
                error = ErrorInfo(code=outcome.code, message=outcome.error)
                self._advance(
                    record,
                    step,
                    status=StepStatus.WAITING,
                    delay_s=delay,
                    retries=retries,
                    handling_failures=0,
                    error=error,
                    status_reason="retrying",
                    announce=partial(
                        self._emit,
                        record,
                        EventName.STEP_RETRYING,
                        step,
                        status="waiting",
                        error_code=outcome.code,
                        message=outcome.error,
                    ),
                )
                return
        if isinstance(outcome, Done):
            step = self.store.update_step(
                step.model_copy(
                    update={
                        "status": StepStatus.SUCCEEDED,
                        "outputs": outcome.outputs,
                        "finished_at": now,
                        "updated_at": now,
                        "lease_until": None,
                        "due_at": None,
                        "error": None,
                        "status_reason": None,
                    }
                )
            )
            self._emit(record, EventName.STEP_SUCCEEDED, step, status="succeeded", duration_ms=self._duration(step))
            steps = self.store.get_steps(record.id)
            self.dispatch_ready(record, steps)
        elif isinstance(outcome, Fail):
            step = self.store.update_step(
                step.model_copy(
                    update={
                        "status": StepStatus.FAILED,
                        "error": ErrorInfo(code=outcome.code, message=outcome.error),
                        "finished_at": now,
                        "updated_at": now,
                        "lease_until": None,
                        "due_at": None,
                    }
                )
            )
            self._emit(
                record, EventName.STEP_FAILED, step, status="failed", error_code=outcome.code, message=outcome.error
            )
            steps = self._skip_dependents(record, step)
        self.finish_if_done(record, steps)

    def _skip_dependents(self, record: RequestRecord, failed: StepRecord) -> list[StepRecord]:
        assert record.plan is not None
        blocked = {failed.step_id}
        changed = True
        steps = self.store.get_steps(record.id)
        while changed:
            changed = False
            for s in steps:
                if s.status == StepStatus.PENDING and blocked.intersection(s.depends_on) and s.step_id not in blocked:
                    blocked.add(s.step_id)
                    changed = True
        now = self.clock()
        for s in steps:
            if s.step_id in blocked and s.status == StepStatus.PENDING:
                reason = f"skipped because '{failed.step_id}' failed"
                try:
                    self.store.update_step(
                        s.model_copy(update={"status": StepStatus.SKIPPED, "status_reason": reason, "updated_at": now})
                    )
                except StaleWriteError:
                    continue
        return self.store.get_steps(record.id)

    # ----- operators ------------------------------------------------------------------------

    def fail_step(self, *, request_id: str, step_id: str, error: ErrorInfo) -> bool:
        """Fail an unfinished step from outside (its message was dead-lettered); skip dependents, finish."""
        for _ in range(5):
            record = self.store.get_request(request_id)
            step = self.store.get_step(request_id, step_id)
            if record is None or step is None or step.status.terminal:
                return False
            try:
                return self._fail(record, step, error)
            except StaleWriteError:
                continue
        return False

    def _fail(self, record: RequestRecord, step: StepRecord, error: ErrorInfo, **update: Any) -> bool:
        """Mark a step failed (a conditional write), announce it, skip its dependents and finish the request."""
        now = self.clock()
        step = self.store.update_step(
            step.model_copy(
                update={
                    **update,
                    "status": StepStatus.FAILED,
                    "error": error,
                    "finished_at": now,
                    "updated_at": now,
                    "lease_until": None,
                    "due_at": None,
                }
            )
        )
        self._emit(record, EventName.STEP_FAILED, step, status="failed", error_code=error.code, message=error.message)
        self.finish_if_done(record, self._skip_dependents(record, step))
        return True

    def resume_step(self, *, request_id: str, step_id: str) -> bool:
        """Run a failed step again (an operator fixed the cause); the dependents it skipped wait again."""
        record = self.store.get_request(request_id)
        step = self.store.get_step(request_id, step_id)
        if record is None or record.plan is None or step is None or step.status != StepStatus.FAILED:
            return False
        now = self.clock()
        steps = self.store.get_steps(request_id)
        downstream = {step_id}
        changed = True
        while changed:
            changed = False
            for s in steps:
                if s.step_id not in downstream and downstream.intersection(s.depends_on):
                    downstream.add(s.step_id)
                    changed = True
        for s in steps:
            if s.step_id in downstream and s.status == StepStatus.SKIPPED:
                self.store.update_step(
                    s.model_copy(update={"status": StepStatus.PENDING, "status_reason": None, "updated_at": now})
                )
        if record.status.terminal:
            record = self._set_request(record, status=RequestStatus.PROVISIONING, error=None) or record
        self._advance(
            record,
            step,
            status=StepStatus.QUEUED,
            retries=0,
            waited_s=0.0,
            handling_failures=0,
            error=None,
            finished_at=None,
            status_reason="resumed by an operator",
        )
        return True

    # ----- finishing ------------------------------------------------------------------------

    def finish_if_done(self, record: RequestRecord, steps: list[StepRecord] | None = None) -> bool:
        """Move the request to succeeded or failed once every step is finished; exactly once."""
        steps = steps if steps is not None else self.store.get_steps(record.id)
        if not steps or not all(s.status.terminal for s in steps):
            return False
        current = self.store.get_request(record.id)
        if current is None or current.status.terminal:
            return False
        failed = [s for s in steps if s.status == StepStatus.FAILED]
        if failed:
            first = failed[0]
            error = ErrorInfo(
                code=first.error.code if first.error else "StepFailed",
                message=f"step '{first.step_id}' failed: {first.error.message if first.error else 'unknown error'}",
            )
            done = self._set_request(current, status=RequestStatus.FAILED, error=error, **self._notify(current))
            if done:
                log.warning("request %s failed at step %s: %s", done.id, first.step_id, error.message)
                self._announce(done)
                self._emit(
                    done,
                    EventName.PROVISIONING_FAILED,
                    None,
                    status="failed",
                    error_code=error.code,
                    message=error.message,
                )
            return done is not None
        outputs = self._outputs(current, steps)
        done = self._set_request(current, status=RequestStatus.SUCCEEDED, outputs=outputs, **self._notify(current))
        if done:
            log.info("request %s provisioned in %.1f s", done.id, self._request_ms(done) / 1000)
            self._announce(done)
            self._emit(done, EventName.PROVISIONED, None, status="succeeded", duration_ms=self._request_ms(done))
        return done is not None

    def _notify(self, record: RequestRecord) -> dict[str, Any]:
        # Marked pending in the same write that finishes the request, so the sweeper can resend it.
        wanted = record.request.get("callback_url") or record.reply_to
        return {"notification": {"status": "pending"}} if wanted else {}

    def _announce(self, record: RequestRecord) -> None:
        if record.notification:
            self.bus.send(self.settings.notifications_queue, notification_message(record))

    def _outputs(self, record: RequestRecord, steps: list[StepRecord]) -> dict[str, Any]:
        assert record.plan is not None
        n = record.plan.names
        ws = next((s for s in steps if s.step_id == "workspace"), None)
        ws_id = (ws.outputs.get("id") if ws else None) or record.plan.step("workspace").resource_id
        return {
            "workspace_id": ws_id,
            "studio_url": f"{self.settings.studio_url}/home?wsid={ws_id}",
            "config_json": {
                "subscription_id": n.subscription_id,
                "resource_group": n.resource_group,
                "workspace_name": n.workspace,
            },
            "resources": {s.step_id: s.outputs.get("id") for s in steps if s.outputs.get("id")},
        }

    def _set_request(self, record: RequestRecord, **update: Any) -> RequestRecord | None:
        """Conditionally update the request; None when another writer got there first."""
        now = self.clock()
        for _ in range(5):
            try:
                return self.store.update_request(record.model_copy(update={**update, "updated_at": now}))
            except StaleWriteError:
                fresh = self.store.get_request(record.id)
                if fresh is None or fresh.status.terminal or fresh.status == update.get("status"):
                    return None
                record = fresh
        return None

    # ----- recovery -------------------------------------------------------------------------

    def sweep(self) -> int:
        """Re-dispatch steps that a crash or a lost message left stuck; finish finished requests."""
        now = self.clock()
        before = now - timedelta(seconds=self.settings.sweep_grace_s)
        repaired = 0
        records: dict[str, RequestRecord | None] = {}
        for step in self.store.stalled_steps(before=before):
            record = records.setdefault(step.request_id, self.store.get_request(step.request_id))
            if record is None or record.status.terminal:
                continue
            try:
                self._advance(record, step, status=StepStatus.QUEUED, status_reason="re-dispatched by the sweeper")
            except StaleWriteError:
                continue
            log.warning("sweeper re-dispatched %s/%s (was %s)", step.request_id, step.step_id, step.status.value)
            repaired += 1
        for record in self.store.pending_notifications(before=before):
            # Resent with the same id: the bus drops it if the first one is still within its window.
            self._announce(record)
            repaired += 1
        for record in self.store.unfinished_requests(before=before):
            steps = self.store.get_steps(record.id)
            if self.finish_if_done(record, steps):
                repaired += 1
            else:
                # A crash between a step's success and its dependents' dispatch leaves them pending.
                repaired += self.dispatch_ready(record, steps)
        return repaired

    # ----- events ---------------------------------------------------------------------------

    def _duration(self, step: StepRecord) -> float | None:
        if step.started_at and step.finished_at:
            return (step.finished_at - step.started_at).total_seconds() * 1000
        return None

    def _request_ms(self, record: RequestRecord) -> float:
        return (record.updated_at - record.created_at).total_seconds() * 1000

    def _emit(
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
        self.events.emit(
            status_event(
                record,
                name,
                time=self.clock(),
                status=status,
                step=step,
                duration_ms=duration_ms,
                error_code=error_code,
                message=message,
            )
        )
