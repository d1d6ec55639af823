"""Run control: start a request's run, cancel it in flight, retry what did not succeed.

Each act is a conditional write of the request's record first, then of its steps; every one can be
repeated after a crash (the sweeper opens a run whose record was written but whose steps were not,
and a retry or cancel asked again finds its work done).
"""

from __future__ import annotations

import logging
from datetime import datetime

from engine import runs, transitions
from engine.dispatch import Dispatcher
from engine.finish import Finisher
from engine.step_store import StepHost, StepWrites
from models.errors import StaleWriteError
from models.records import RequestRecord, RequestStatus, StepRecord, StepStatus

log = logging.getLogger("engine.steps")

RUN_STATUS = {"create": RequestStatus.PROVISIONING, "update": RequestStatus.UPDATING, "delete": RequestStatus.DELETING}
"""The status of a request while a run of each operation is under way."""

CANCELLABLE = (StepStatus.PENDING, StepStatus.QUEUED, StepStatus.WAITING)
RETRIED = (StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED)
RESUMED = ("failed", "cancelled")
"""The statuses of a revision whose run a retry resumes."""


class RunControl:
    """Starts, cancels and retries runs over the step engine's parts."""

    def __init__(self, host: StepHost, writes: StepWrites, dispatcher: Dispatcher, finisher: Finisher) -> None:
        self.host = host
        self.writes = writes
        self.dispatcher = dispatcher
        self.finisher = finisher
        self.opener = runs.RunOpener(host.store)

    def steps_of(self, record: RequestRecord) -> list[StepRecord]:
        """Return the current run's steps, opening the run first when its record was written but its steps were not."""
        store = self.host.store
        for _ in range(5):
            steps = store.get_steps(record.id)
            found = runs.current(record, steps)
            if found is not None:
                return found
            opened = self.opener.open(record, steps, now=self.host.clock())
            if opened is not None:
                return opened
        raise StaleWriteError(f"the steps of request {record.id} kept changing while its run {record.run} was opened")

    def start(self, record: RequestRecord) -> RequestRecord:
        """Open the record's run and dispatch its ready steps; a run with nothing to do finishes at once."""
        steps = self.steps_of(record)
        if record.status != RequestStatus.CANCELLING:
            self.dispatcher.dispatch_ready(record, steps)
        self.finisher.finish_if_done(record, steps)
        return self.host.store.get_request(record.id) or record

    def cancel(self, record: RequestRecord) -> RequestRecord:
        """Mark the run cancelling, cancel every step not yet running, and finish once the running ones stop.

        A step that is running finishes its current call to the cloud; its next message (or its
        outcome, for a success) finds the request cancelling and starts nothing new.
        """
        for _ in range(5):
            if not record.status.in_flight or record.status == RequestStatus.CANCELLING:
                break
            written = self.writes.request(record, status=RequestStatus.CANCELLING)
            fresh = written or self.host.store.get_request(record.id)
            if fresh is None:
                return record
            record = fresh
        if record.status != RequestStatus.CANCELLING:
            return record
        steps = self.steps_of(record)
        now = self.host.clock()
        for s in steps:
            self._cancel_one(record, s, now=now)
        self.finisher.finish_if_done(record)
        return self.host.store.get_request(record.id) or record

    def _cancel_one(self, record: RequestRecord, step: StepRecord | None, *, now: datetime) -> None:
        """Cancel a step that has not started, re-reading it when another writer changed it first."""
        for _ in range(5):
            if step is None or step.status not in CANCELLABLE:
                return
            try:
                self.writes.step(transitions.cancelled(step, reason="cancelled before it started", now=now))
                return
            except StaleWriteError:
                step = self.host.store.get_step(record.id, step.step_id)

    def cancel_step(self, record: RequestRecord, step: StepRecord) -> str:
        """Cancel one step whose message came while its request is cancelling; finish the run if it was the last."""
        reason = "cancelled before it started"
        try:
            self.writes.step(transitions.cancelled(step, reason=reason, now=self.host.clock()))
        except StaleWriteError:
            return "dropped: the step changed while it was being cancelled"
        # Read again: the cancel may have cancelled the others after this message's steps were read,
        # and finished nothing then because this step was still waiting.
        self.finisher.finish_if_done(record)
        return "cancelled: the request is being cancelled"

    def retry(self, record: RequestRecord) -> RequestRecord:
        """Reopen the run's failed, skipped and cancelled steps, then put the request back in flight.

        Steps first: a crash before the request's write leaves a settled request whose steps wait,
        and asking again finishes the job. Succeeded steps are not run again.
        """
        if record.status not in (RequestStatus.FAILED, RequestStatus.CANCELLED):
            return record
        steps = self.steps_of(record)
        now = self.host.clock()
        for s in steps:
            if s.status in RETRIED:
                try:
                    self.writes.step(transitions.retried(s, now=now))
                except StaleWriteError:
                    continue  # another retry reopened it
        # The run's revision is being applied again: the run's end says whether it was (finish.py).
        revisions = [
            r.model_copy(update={"status": "applying"}) if r.run == record.run and r.status in RESUMED else r
            for r in record.revisions
        ]
        written = self.writes.request(record, status=RUN_STATUS[record.operation], error=None, revisions=revisions)
        if written is None:
            return self.host.store.get_request(record.id) or record
        return self.start(written)
