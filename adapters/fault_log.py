"""One log line per kind of fault, not one per request: for outages that every caller meets at once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Seen:
    logged_at: float
    since_logged: int = 0


class FaultLog:
    """Log a fault the first time its kind is seen, then again only after `quiet_s` or once faults cleared.

    A store that cannot be written fails every request until someone fixes it; a line (and a
    traceback) per request would bury the one line that says what to fix. A kind seen again later
    is logged with how many times it was met in between; a new kind is logged at once.
    """

    def __init__(
        self, logger: logging.Logger, *, quiet_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.quiet_s = quiet_s
        self.clock = clock
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def fault(self, kind: str, message: str) -> bool:
        """Count one fault of `kind`; log `message` unless that kind was logged within the quiet interval."""
        now = self.clock()
        with self._lock:
            seen = self._seen.get(kind)
            if seen is not None and now - seen.logged_at < self.quiet_s:
                seen.since_logged += 1
                return False
            again = seen.since_logged if seen is not None else 0
            self._seen[kind] = _Seen(logged_at=now)
        more = f"; met {again} more times since it was last logged" if again else ""
        self.logger.warning("%s: %s (logged at most every %g s%s)", kind, message, self.quiet_s, more)
        return True

    def cleared(self, what: str) -> bool:
        """Forget the faults seen so far; log one line saying `what` works again if there were any."""
        with self._lock:
            kinds = sorted(self._seen)
            self._seen.clear()
        if kinds:
            self.logger.info("%s works again (faults seen before: %s)", what, ", ".join(kinds))
        return bool(kinds)

    def active(self) -> list[str]:
        """Return the kinds seen since faults last cleared."""
        with self._lock:
            return sorted(self._seen)
