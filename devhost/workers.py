"""Queue workers for the embedded bus: threads that receive, handle and settle messages.

Settlement is `handlers.queues.settle_for`'s, the same as the Functions triggers': complete, retry
later (send the scheduled copy first, then complete the message, so it is never lost between the
two), or dead-letter with the reason. A thread survives whatever a handler raises, BaseException
included: only `stop()` ends it. Each failure is logged once: a failed message in one line (with
its traceback when the error was unexpected), a bus that cannot be read when it starts failing and
again when it works.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from engine.ports import Bus, ReceivedMessage
from engine.redelivery import RetryPolicy
from engine.steps import utcnow
from handlers.queues import Action, Settlement, log_failure, settle_for

log = logging.getLogger(__name__)


class QueueWorkers:
    """N threads that pull one queue and settle each message as `handlers.queues.settle_for` says."""

    def __init__(
        self,
        *,
        bus: Bus,
        queue: str,
        handle: Callable[[ReceivedMessage], object],
        threads: int,
        name: str,
        retry: RetryPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.bus = bus
        self.queue = queue
        self.handle = handle
        self.count = threads
        self.name = name
        self.retry = retry or RetryPolicy.defaults()
        self.clock = clock
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
        failing = False  # the bus cannot be read: said once, not once a second
        while not self._stop.is_set():
            try:
                messages = self.bus.receive(self.queue, max_messages=1, wait_s=0.5)  # type: ignore[call-arg]
            except BaseException:  # the thread outlives a broken bus
                if not failing:
                    log.exception("receive from %s failed; trying again every second", self.queue)
                failing = True
                self._stop.wait(1.0)
                continue
            if failing:
                log.warning("receive from %s works again", self.queue)
                failing = False
            for message in messages:
                self.process(message)

    def process(self, message: ReceivedMessage) -> Settlement:
        """Handle one message and settle it; never raise."""
        error: BaseException | None = None
        try:
            self.handle(message)
        except BaseException as exc:  # noqa: BLE001 - settlement decides what an error means
            error = exc
        return self.settle(message, error)

    def settle(self, message: ReceivedMessage, error: BaseException | None) -> Settlement:
        """Settle a locked message after its handler ended (with `error`, or None); log a failure once."""
        settlement = Settlement(Action.COMPLETE)
        try:
            settlement = settle_for(message, error, self.retry, now=self.clock())
            then = self._apply(message, settlement)
        except BaseException as exc:  # noqa: BLE001 - a lost lock or a broken bus: the lock runs out, it comes back
            then = f"settling it failed ({type(exc).__name__}: {exc}); the bus delivers it again after its lock"
            if error is None:
                log.warning("%s message %s handled, but %s", self.queue, message.message_id, then)
        if error is not None:
            log_failure(self.queue, message, settlement, error, then)
        with self._lock:
            self.handled += 1
        return settlement

    def _apply(self, message: ReceivedMessage, settlement: Settlement) -> str:
        if settlement.action == Action.COMPLETE:
            self.bus.complete(message)
            return "completed"
        if settlement.action == Action.DEAD_LETTER:
            self.bus.dead_letter(message, reason=settlement.reason, description=settlement.description)
            return f"dead-lettered ({settlement.reason})"
        assert settlement.copy is not None
        # The copy first: if sending it fails, the message stays locked and comes back after its lock.
        self.bus.send(self.queue, settlement.copy)
        self.bus.complete(message)
        return "completed, the copy is scheduled"
