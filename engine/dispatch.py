"""Dispatch: move a step to its next attempt and send that attempt's message."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from engine import graph, transitions
from engine.ports import OutgoingMessage
from engine.step_store import StepHost, StepWrites
from models.errors import StaleWriteError
from models.messages import StepMessage
from models.records import RequestRecord, RequestStatus, StepRecord, StepStatus


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


class Dispatcher:
    """Sends steps' attempts on the bus, each after the conditional write that starts it."""

    def __init__(self, host: StepHost, writes: StepWrites) -> None:
        self.host = host
        self.writes = writes

    def dispatch_ready(self, record: RequestRecord, steps: list[StepRecord]) -> int:
        """Claim and send every pending step whose prerequisites have all succeeded (none while cancelling)."""
        return self.dispatch_counting(record, steps)[0]

    def dispatch_counting(self, record: RequestRecord, steps: list[StepRecord]) -> tuple[int, int]:
        """Dispatch the ready steps; return how many were sent and how many another writer changed first."""
        if record.status == RequestStatus.CANCELLING:
            return 0, 0
        ready = graph.ready(steps)
        sent = sum(self.dispatch(record, step) for step in ready)
        return sent, len(ready) - sent

    def claimed_at_creation(self, steps: list[StepRecord]) -> list[StepRecord]:
        """Return a new request's steps with the ready ones at their first attempt, to be written with the request.

        The claims go in the write that creates the request: no second write starts the first steps, and
        nothing just written is read back. `send_claimed` sends their messages once that write is done; a
        crash between the two leaves queued steps that the sweeper sends again (as after any lost message).
        """
        now = self.host.clock()
        ready = {s.step_id for s in graph.ready(steps)}
        return [
            transitions.next_attempt(s, status=StepStatus.QUEUED, now=now, due=now) if s.step_id in ready else s
            for s in steps
        ]

    def send_claimed(self, record: RequestRecord, steps: list[StepRecord]) -> int:
        """Send the first attempt's message of each step `claimed_at_creation` claimed; return how many."""
        claimed = [s for s in steps if s.status == StepStatus.QUEUED]
        for step in claimed:
            self.send(record, step, at=None)
        return len(claimed)

    def dispatch(self, record: RequestRecord, step: StepRecord) -> int:
        """Queue one pending step; 0 when another finisher dispatched it first."""
        try:
            self.advance(record, step, status=StepStatus.QUEUED)
        except StaleWriteError:
            return 0
        return 1

    def advance(
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
        now = self.host.clock()
        due = now + timedelta(seconds=delay_s)
        step = self.writes.step(transitions.next_attempt(step, status=status, now=now, due=due, **update))
        if announce is not None:
            announce()
        self.send(record, step, at=due if delay_s > 0 else None)
        return step

    def send(self, record: RequestRecord, step: StepRecord, *, at: datetime | None) -> None:
        """Send the message of the step's current attempt."""
        msg = StepMessage(
            request_id=step.request_id, step_id=step.step_id, attempt=step.attempt, traceparent=record.traceparent
        )
        self.host.bus.send(self.host.settings.steps_queue, encode_step_message(msg, at=at))
