"""Local event sinks: a JSON-lines file, the store's timeline, and the console log."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from engine.ports import Store
from models.events import StatusEvent

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
        """Keep one event."""
        self.store.append_event(event)


class ConsoleEventLog:
    """Log each event as one readable line."""

    def emit(self, event: StatusEvent) -> None:
        """Log one event."""
        where = f" {event.step}" if event.step else ""
        extra = f" ({event.error_code}: {event.message})" if event.error_code else ""
        log.info("%s %s%s %s%s", event.request_id, event.name.value, where, event.status, extra)
