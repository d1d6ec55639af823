"""Self-throttling: cap concurrent ARM calls per subscription, and hold a kind of call there after its 429.

ARM's limits are per subscription, per principal and per kind of operation (reads, writes and deletes
each have a bucket), so one step's 429 on a read means every step in that subscription should hold its
reads back, and only its reads. A reconcile runs inside `subscription_scope`; every SDK call made
through `cloud.common.call` takes a slot, and a 429 sets a cool-down for its kind of operation that
makes the next such requests in that subscription stop before they are sent (`hold`, called by the
clients' pipeline policy for each request) and answer Retry with the time left, instead of calling ARM.

Before it is throttled, a client paces itself by ARM's remaining-budget headers
(`x-ms-ratelimit-remaining-subscription-{reads,writes,deletes}`): `observe` records what a response
said, and `pace_s` says how long to wait before the next call of that kind so that the budget does
not run dry. Tokens come back at the rates Microsoft publishes ("Understand how Azure Resource
Manager throttles requests": subscription reads refill 25 per second, writes and deletes 10).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from cloud.errors import MAX_RETRY_AFTER_S
from models.arm_limits import Operation
from models.errors import BackPressure

OPERATIONS: tuple[Operation, ...] = ("reads", "writes", "deletes")

# Refill per second of ARM's subscription buckets (Microsoft Learn, "Understand how Azure Resource
# Manager throttles requests", regional throttling and token bucket algorithm).
ARM_REFILL_PER_S: dict[str, float] = {"reads": 25.0, "writes": 10.0, "deletes": 10.0}


class SubscriptionThrottle:
    """Per-subscription concurrency caps and cool-downs, shared by every worker thread."""

    def __init__(
        self,
        *,
        max_concurrent: int,
        default_cooldown_s: float = 5.0,
        wait_for_slot_s: float = 30.0,
        reserve: int = 5,
        max_pace_s: float = 2.0,
        refill_per_s: dict[str, float] | None = None,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.default_cooldown_s = default_cooldown_s
        self.wait_for_slot_s = wait_for_slot_s
        self.reserve = reserve  # tokens to keep in hand: calls slow down before the bucket is empty
        self.max_pace_s = max_pace_s
        self.refill_per_s = refill_per_s or ARM_REFILL_PER_S
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._cool_until: dict[tuple[str, str], float] = {}  # (subscription, operation) -> monotonic time
        self._budget: dict[tuple[str, str], tuple[int, float]] = {}  # (subscription, op) -> (remaining, seen at)
        self._lock = threading.Lock()

    def cooldown_left(self, subscription: str, operation: Operation | None = None) -> float:
        """Return how long calls of this kind (of any kind, when None) must still wait, in seconds (0: they may go)."""
        now = time.monotonic()
        ops = (operation,) if operation is not None else OPERATIONS
        with self._lock:
            until = max(self._cool_until.get((subscription.lower(), op), 0.0) for op in ops)
        return max(until - now, 0.0)

    def hold(self, subscription: str, operation: Operation) -> None:
        """Refuse a request at once (BackPressure) while ARM throttles its kind of operation in the subscription."""
        left = self.cooldown_left(subscription, operation)
        if left > 0:
            raise BackPressure(
                f"ARM is throttling {operation} in subscription {subscription}; holding them for {left:.1f} s more",
                retry_after_s=left,
                code="SubscriptionThrottled",
            )

    @contextmanager
    def slot(self, subscription: str) -> Iterator[None]:
        """Hold one of the subscription's call slots (the cool-downs are checked per request, by `hold`)."""
        with self._lock:
            sem = self._slots.setdefault(subscription.lower(), threading.BoundedSemaphore(self.max_concurrent))
        if not sem.acquire(timeout=self.wait_for_slot_s):
            raise BackPressure(
                f"{self.max_concurrent} ARM calls to subscription {subscription} are already running; trying later",
                retry_after_s=1.0,
                code="LocalConcurrencyLimit",
            )
        try:
            yield
        finally:
            sem.release()

    def observe(self, subscription: str, operation: Operation, remaining: int) -> None:
        """Record the remaining budget ARM reported for one kind of call in a subscription."""
        with self._lock:
            self._budget[(subscription.lower(), operation)] = (remaining, time.monotonic())

    def pace_s(self, subscription: str, operation: Operation) -> float:
        """Return how long to wait before the next call of this kind, so that `reserve` tokens stay in the bucket."""
        with self._lock:
            seen = self._budget.get((subscription.lower(), operation))
            if seen is None:
                return 0.0
            remaining, at = seen
            refill = self.refill_per_s.get(operation, 0.0)
            expected = remaining + (time.monotonic() - at) * refill
            if expected >= self.reserve:
                return 0.0
            if refill <= 0:
                return self.max_pace_s
            # Spend the reserve slowly: one token's worth of refill per call below it, until it is back.
            wait = (self.reserve - expected) / refill
            # Count the call about to be made, so concurrent callers do not all wait the same short time.
            self._budget[(subscription.lower(), operation)] = (remaining - 1, at)
            return min(wait, self.max_pace_s)

    def throttled(self, subscription: str, retry_after_s: float | None, operation: Operation | None = None) -> None:
        """Note a 429: calls of its kind (of every kind, when it is not known) wait for Retry-After (or the default)."""
        wait = retry_after_s if retry_after_s is not None and math.isfinite(retry_after_s) else self.default_cooldown_s
        until = time.monotonic() + min(max(wait, 0.0), MAX_RETRY_AFTER_S)
        ops = (operation,) if operation is not None else OPERATIONS
        with self._lock:
            for op in ops:
                key = (subscription.lower(), op)
                self._cool_until[key] = max(self._cool_until.get(key, 0.0), until)


@dataclass(frozen=True)
class Scope:
    """The throttle and subscription the current reconcile calls ARM with."""

    throttle: SubscriptionThrottle
    subscription: str


CURRENT: ContextVar[Scope | None] = ContextVar("arm_scope", default=None)


@contextmanager
def subscription_scope(throttle: SubscriptionThrottle, subscription: str) -> Iterator[None]:
    """Make SDK calls in this block count against `subscription`."""
    token = CURRENT.set(Scope(throttle, subscription))
    try:
        yield
    finally:
        CURRENT.reset(token)
