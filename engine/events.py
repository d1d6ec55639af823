"""Status events: built in one place and fanned out to every sink; a sink never fails a step."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from engine.ports import EventSink
from models.events import EventName, StatusEvent
from models.records import RequestRecord, StepRecord
from models.redact import redact_optional

log = logging.getLogger(__name__)


class EventFanout:
    """Send each event to every sink; log a failing sink once per kind of failure and go on."""

    def __init__(self, sinks: Sequence[EventSink]) -> None:
        self.sinks = list(sinks)
        self._reported: set[tuple[int, str]] = set()

    def emit(self, event: StatusEvent) -> None:
        """Deliver one event to every sink."""
        for i, sink in enumerate(self.sinks):
            try:
                sink.emit(event)
            except Exception as exc:  # noqa: BLE001 - telemetry must never break provisioning
                key = (i, type(exc).__name__)
                if key not in self._reported:
                    self._reported.add(key)
                    log.warning("event sink %s failed (%s); events to it may be lost", type(sink).__name__, exc)


def status_event(
    record: RequestRecord,
    name: EventName,
    *,
    time: datetime,
    status: str,
    step: StepRecord | None = None,
    duration_ms: float | None = None,
    error_code: str | None = None,
    message: str | None = None,
) -> StatusEvent:
    """Build a status event with the request's (and the step's) dimensions."""
    return StatusEvent(
        name=name,
        time=time,
        request_id=record.id,
        team=record.team,
        environment=record.environment,
        workspace=record.workspace_name or "",
        step=step.step_id if step else None,
        kind=step.kind.value if step else None,
        status=status,
        attempt=step.attempt if step else None,
        duration_ms=duration_ms,
        error_code=error_code,
        message=redact_optional(message),
    )
