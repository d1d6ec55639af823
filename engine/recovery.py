"""Recovery: count failed handlings, sweep stuck steps and unfinished requests, operators' fail and resume."""

from __future__ import annotations

import logging
from datetime import timedelta

from engine import graph, runs, transitions
from engine.control import RUN_STATUS
from engine.dispatch import Dispatcher
from engine.finish import Finisher
from engine.step_store import StepHost, StepWrites
from models.errors import StaleWriteError
from models.records import ErrorInfo, RequestRecord, StepRecord, StepStatus

log = logging.getLogger("engine.steps")


class Recovery:
    """Brings steps that a crash, a lost message or a failing store left behind to their end."""

    def __init__(self, host: StepHost, writes: StepWrites, dispatcher: Dispatcher, finisher: Finisher) -> None:
        self.host = host
        self.writes = writes
        self.dispatcher = dispatcher
        self.finisher = finisher

    def handling_failed(self, record: RequestRecord, claimed: StepRecord, exc: Exception) -> bool:
        """Count a failed handling of a claimed step, releasing its lease in the same write; fail it at the limit.

        Return True when the step was failed (its message is done with). Return False when the
        failure was counted, or could not be (the store is down), or came after the outcome was
        written: the message is then tried again later, and its copy may take the step at once.
        """
        limit = self.host.settings.step_max_handling_failures
        what = f"{type(exc).__name__}: {str(exc)[:300]}"
        try:
            current = self.host.store.get_step(claimed.request_id, claimed.step_id)
            if current is None or current.version != claimed.version:
                return False  # its outcome was written before the failure, or another worker took it over
            failures = current.handling_failures + 1
            if failures < limit:
                reason = f"handling failed ({failures} of {limit} allowed): {what}"
                self.writes.step(
                    transitions.handling_failure_counted(
                        current, failures=failures, reason=reason, now=self.host.clock()
                    )
                )
                return False
            error = ErrorInfo(
                code="StepHandlingFailed",
                message=f"its handling failed {failures} times in a row after the cloud was asked ({what}). "
                f"Look for '{claimed.request_id}/{claimed.step_id}' in the service's log, fix the cause "
                "(often the state store), then submit the request again: what exists in Azure is reused.",
            )
            return self.finisher.fail(record, current, error, handling_failures=failures)
        except Exception as count_error:  # noqa: BLE001 - the message's retry later still applies
            log.warning(
                "could not count the failed handling of %s/%s: %s", claimed.request_id, claimed.step_id, count_error
            )
            return False

    def sweep(self) -> int:
        """Re-dispatch steps that a crash or a lost message left stuck; finish finished requests."""
        store = self.host.store
        now = self.host.clock()
        before = now - timedelta(seconds=self.host.settings.sweep_grace_s)
        repaired = 0
        records: dict[str, RequestRecord | None] = {}
        for step in store.stalled_steps(before=before):
            record = records.setdefault(step.request_id, store.get_request(step.request_id))
            if record is None or record.status.terminal:
                continue
            try:
                self.dispatcher.advance(
                    record, step, status=StepStatus.QUEUED, status_reason="re-dispatched by the sweeper"
                )
            except StaleWriteError:
                continue
            log.warning("sweeper re-dispatched %s/%s (was %s)", step.request_id, step.step_id, step.status.value)
            repaired += 1
        for record in store.pending_notifications(before=before):
            # Resent with the same id: the bus drops it if the first one is still within its window.
            self.finisher.announce(record)
            repaired += 1
        for record in store.unfinished_requests(before=before):
            # A run whose record was written before a crash kept its steps from being opened: open it now.
            steps = runs.current(record, store.get_steps(record.id))
            if steps is None:
                try:
                    steps = runs.RunOpener(store).open(record, store.get_steps(record.id), now=now)
                except StaleWriteError:
                    steps = None
                if steps is None:
                    continue
                repaired += 1
            for failed in [s for s in steps if s.status == StepStatus.FAILED]:
                if graph.blocked_by(steps, failed.step_id):
                    # A failure whose blocked steps were never skipped (its handler died in between).
                    steps = self.finisher.skip_dependents(record, failed)
                    repaired += 1
            if self.finisher.finish_if_done(record, steps):
                repaired += 1
            else:
                # A crash between a step's success and its dependents' dispatch leaves them pending.
                repaired += self.dispatcher.dispatch_ready(record, steps)
        return repaired

    def fail_step(self, *, request_id: str, step_id: str, error: ErrorInfo, attempt: int | None = None) -> bool:
        """Fail an unfinished step from outside (its message was dead-lettered); skip dependents, finish.

        With `attempt` (the dead letter's), only that attempt of the step is failed: a letter of an
        earlier attempt, or of an earlier run, leaves the step as it is.
        """
        store = self.host.store
        for _ in range(5):
            record = store.get_request(request_id)
            step = store.get_step(request_id, step_id)
            if record is None or step is None or step.status.terminal:
                return False
            if attempt is not None and (step.attempt != attempt or step.run != record.run):
                return False
            try:
                return self.finisher.fail(record, step, error)
            except StaleWriteError:
                continue
        return False

    def resume_step(self, *, request_id: str, step_id: str) -> bool:
        """Run a failed step again (an operator fixed the cause); the dependents it skipped wait again."""
        store = self.host.store
        record = store.get_request(request_id)
        step = store.get_step(request_id, step_id)
        if record is None or record.plan is None or step is None or step.status != StepStatus.FAILED:
            return False
        now = self.host.clock()
        steps = runs.current(record, store.get_steps(request_id)) or []
        downstream = graph.downstream(steps, step_id)
        for s in steps:
            if s.step_id in downstream and s.status == StepStatus.SKIPPED:
                self.writes.step(transitions.reopened(s, now=now))
        if record.status.terminal:
            status = RUN_STATUS[record.operation]
            record = self.writes.request(record, status=status, error=None) or record
        self.dispatcher.advance(
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
