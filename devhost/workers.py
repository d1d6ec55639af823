"""Queue workers for the embedded bus: threads that receive, handle and settle messages."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from engine.ports import Bus, ReceivedMessage
from handlers.queues import Settlement, settle_for

log = logging.getLogger(__name__)


class QueueWorkers:
    """N threads that pull one queue and settle each message as `handlers.queues.settle_for` says."""

    def __init__(
        self, *, bus: Bus, queue: str, handle: Callable[[ReceivedMessage], object], threads: int, name: str
    ) -> None:
        self.bus = bus
        self.queue = queue
        self.handle = handle
        self.count = threads
        self.name = name
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.handled = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the threads."""
        for i in range(self.count):
            t = threading.Thread(target=self._run, name=f"{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the threads to stop and wait for them."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self.bus.receive(self.queue, max_messages=1, wait_s=0.5)  # type: ignore[call-arg]
            except Exception:
                log.exception("receive from %s failed", self.queue)
                self._stop.wait(1.0)
                continue
            for message in messages:
                self.process(message)

    def process(self, message: ReceivedMessage) -> Settlement:
        """Handle one message and settle it."""
        error: BaseException | None = None
        try:
            self.handle(message)
        except Exception as exc:  # noqa: BLE001 - settlement decides what an error means
            error = exc
        settlement, reason = settle_for(error)
        if error is not None and settlement == Settlement.ABANDON:
            log.warning("message %s on %s abandoned: %s", message.message_id, self.queue, reason)
        try:
            if settlement == Settlement.COMPLETE:
                self.bus.complete(message)
            elif settlement == Settlement.ABANDON:
                self.bus.abandon(message)
            else:
                log.error("message %s on %s dead-lettered: %s", message.message_id, self.queue, reason)
                self.bus.dead_letter(message, reason="InvalidMessage", description=reason)
        except Exception as exc:  # noqa: BLE001 - a lost lock means the bus redelivers it
            log.warning("settling message %s failed: %s", message.message_id, exc)
        with self._lock:
            self.handled += 1
        return settlement
