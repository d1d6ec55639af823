"""Local event sinks: a JSON-lines file, the store's timeline, and the console log."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from engine.ports import Store
from models.events import AUDIT_EVENTS, EventName, StatusEvent

log = logging.getLogger("vending.events")


class JsonLinesEventLog:
    """Append each event as one JSON line to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def emit(self, event: StatusEvent) -> None:
        """Append one event."""
        line = event.model_dump_json(exclude_none=True) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line)


class StoreEventLog:
    """Keep events in the store for `GET /api/workspaces/{id}/events`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def emit(self, event: StatusEvent) -> None:
        """Keep one event: a request's progress, and the refusals and operator actions about a request.

        Audit events about no request, and allowed decisions (reading a timeline must not lengthen
        it), stay in the other sinks.
        """
        if event.name in AUDIT_EVENTS and (not event.request_id or event.name == EventName.ACCESS_ALLOWED):
            return
        self.store.append_event(event)


class ConsoleEventLog:
    """Log each event as one readable line."""

    def emit(self, event: StatusEvent) -> None:
        """Log one event (allowed decisions at debug level: every read makes one)."""
        if event.name in AUDIT_EVENTS:
            level = logging.DEBUG if event.name == EventName.ACCESS_ALLOWED else logging.INFO
            log.log(
                level,
                "%s %s by %s via %s: %s (%s)%s",
                event.name.value,
                event.act,
                event.caller,
                event.door,
                event.status,
                event.rule,
                f" {event.message}" if event.message else "",
            )
            return
        where = f" {event.step}" if event.step else ""
        extra = f" ({event.error_code}: {event.message})" if event.error_code else ""
        log.info("%s %s%s %s%s", event.request_id, event.name.value, where, event.status, extra)
