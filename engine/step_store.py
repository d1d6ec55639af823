"""The step engine's store writes: every one conditional on the record's version."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from engine.events import EventFanout
from engine.ports import Sender, Store
from models.errors import StaleWriteError
from models.records import RequestRecord, RequestStatus, StepRecord
from models.settings import Settings


class StepHost(Protocol):
    """What the parts of the step engine share: the store, the bus, events, settings and the clock."""

    store: Store
    bus: Sender
    events: EventFanout
    settings: Settings
    clock: Callable[[], datetime]
    rng: Callable[[], float]
    lease: timedelta


class StepWrites:
    """Conditional writes of a request's step and request records."""

    def __init__(self, host: StepHost) -> None:
        self.host = host

    def step(self, step: StepRecord) -> StepRecord:
        """Write `step` if its version is still current (else `StaleWriteError`); return it as stored."""
        return self.host.store.update_step(step)

    def request(self, record: RequestRecord, **update: Any) -> RequestRecord | None:
        """Conditionally update the request; None when another writer changed its run or status first."""
        store = self.host.store
        now = self.host.clock()
        for _ in range(5):
            try:
                return store.update_request(record.model_copy(update={**update, "updated_at": now}))
            except StaleWriteError:
                fresh = store.get_request(record.id)
                # Written again only over a change that decided nothing (accepted became provisioning, a
                # notification's outcome): a cancel, a new run or an end is never overwritten.
                if (
                    fresh is None
                    or fresh.status.terminal
                    or fresh.status == update.get("status")
                    or fresh.run != record.run
                    or (fresh.status == RequestStatus.CANCELLING and record.status != RequestStatus.CANCELLING)
                ):
                    return None
                record = fresh
        return None
