"""Status events: built in one place and fanned out to every sink; a sink never fails a step."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from engine.ports import EventSink
from models.events import StatusEvent

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
