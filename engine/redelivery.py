"""Retry later, not again: what becomes of a queue message whose handling failed.

One decision for every queue (onboarding, steps, notifications) and both hosts (the devhost's
workers on the SQLite bus, the Functions triggers on Service Bus). The failed message is completed
and a copy is scheduled: exponential backoff with jitter, never sooner than the error's
Retry-After. The copy has an id of its own (`<original>/retry-<n>`: Service Bus duplicate
detection would drop a copy under the original id) and carries the original id, its try number
and the time of the first try in its application properties (`models.messages.DeliveryAttempt`).
After `message_max_attempts` tries, or when the next try would start more than
`message_max_wait_s` after the first, no copy is made: the message is dead-lettered instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from engine.ports import OutgoingMessage, ReceivedMessage
from models.errors import TransientError
from models.messages import DeliveryAttempt
from models.settings import Settings


def backoff_s(retry: int, *, base_s: float, cap_s: float, jitter: float) -> float:
    """Return the delay before the `retry`-th retry (1-based): doubling from `base_s` up to `cap_s`, half of it jittered."""
    return min(cap_s, base_s * 2.0 ** min(retry - 1, 62)) * (0.5 + jitter / 2)


def stable_jitter(key: str) -> float:
    """Return a number in [0, 1) fixed by `key`, so every host that decides about one try decides alike."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and for how long, a message whose handling failed is tried again."""

    max_attempts: int
    base_s: float
    cap_s: float
    max_wait_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """Return the policy the settings describe."""
        return cls(
            max_attempts=settings.message_max_attempts,
            base_s=settings.message_retry_base_s,
            cap_s=settings.message_retry_cap_s,
            max_wait_s=settings.message_max_wait_s,
        )

    @classmethod
    def defaults(cls) -> RetryPolicy:
        """Return the policy of the default settings (for workers built without settings)."""
        return cls.from_settings(Settings.model_construct())

    def delay_s(self, attempt: DeliveryAttempt, error: BaseException) -> float:
        """Return how long to wait before the try after `attempt`: the backoff, or the error's Retry-After if longer."""
        backoff = backoff_s(
            attempt.number,
            base_s=self.base_s,
            cap_s=self.cap_s,
            jitter=stable_jitter(f"{attempt.original_id}#{attempt.number}"),
        )
        retry_after = error.retry_after_s if isinstance(error, TransientError) else None
        return max(backoff, retry_after or 0.0)

    def gives_up(self, attempt: DeliveryAttempt, error: BaseException, *, now: datetime) -> bool:
        """Return True when `attempt` failing with `error` is the last try: the count or the total wait is spent."""
        if attempt.number >= self.max_attempts:
            return True
        return attempt.waited_s(now) + self.delay_s(attempt, error) > self.max_wait_s


@dataclass(frozen=True)
class Redelivery:
    """The decision about one failed try: the copy to schedule, or none when the message is to be dead-lettered."""

    attempt: DeliveryAttempt
    max_attempts: int
    waited_s: float
    delay_s: float
    copy: OutgoingMessage | None

    @property
    def exhausted(self) -> bool:
        """Return True when no try is left: the message goes to the dead-letter queue."""
        return self.copy is None

    def describe(self) -> str:
        """Say which try failed and what happens next, for a log line or a dead letter's description."""
        tried = f"try {self.attempt.number} of {self.max_attempts}"
        if self.copy is None:
            return f"{tried}, {self.waited_s:.0f} s after the first; no try left"
        return f"{tried}; again in {self.delay_s:.1f} s as {self.copy.message_id}"


def redeliver(message: ReceivedMessage, error: BaseException, policy: RetryPolicy, *, now: datetime) -> Redelivery:
    """Decide what becomes of a message whose handling failed: a scheduled copy, or the dead-letter queue."""
    attempt = DeliveryAttempt.of(message_id=message.message_id, properties=message.application_properties, now=now)
    delay = policy.delay_s(attempt, error)
    copy = None
    if not policy.gives_up(attempt, error, now=now):
        after = attempt.next()
        copy = OutgoingMessage(
            message_id=after.copy_id,
            body=message.body,
            correlation_id=message.correlation_id,
            application_properties={**message.application_properties, **after.properties()},
            scheduled_at=now + timedelta(seconds=delay),
        )
    return Redelivery(
        attempt=attempt, max_attempts=policy.max_attempts, waited_s=attempt.waited_s(now), delay_s=delay, copy=copy
    )
