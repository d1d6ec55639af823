"""Messages on the queues, and the attempt a message copy carries when its handling is tried again."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

# The longest message id Service Bus takes (its MessageId property is at most 128 characters).
MAX_MESSAGE_ID = 128


class StepMessage(BaseModel):
    """Work on one step of one request; one per dispatch."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    step_id: str
    attempt: int
    traceparent: str | None = None

    @property
    def message_id(self) -> str:
        """Deterministic id: the bus and the engine both drop duplicates by it."""
        return f"{self.request_id}/{self.step_id}/{self.attempt}"


# Application properties of a retry copy. Not `attempt`: step messages already use it for the step's dispatch.
ORIGINAL_ID = "original_message_id"
DELIVERY_ATTEMPT = "delivery_attempt"
FIRST_ATTEMPT_AT = "first_attempt_at"
ATTEMPT_PROPERTIES = (ORIGINAL_ID, DELIVERY_ATTEMPT, FIRST_ATTEMPT_AT)


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def text_properties(properties: Mapping[Any, Any] | None) -> dict[str, str]:
    """Return application properties as text (AMQP hands over bytes, numbers and text alike)."""
    return {_text(k) or "": _text(v) or "" for k, v in (properties or {}).items()}


def original_message_id(message_id: str, properties: Mapping[str, object] | None) -> str:
    """Return the id of the message a copy retries (the message's own id when it is no copy)."""
    return _text((properties or {}).get(ORIGINAL_ID)) or message_id


@dataclass(frozen=True)
class DeliveryAttempt:
    """Which try at a message this copy is: the original message's id, the try's number, when the first try was.

    A message the service or a sender put on a queue is try 1 of itself; each retry copy carries
    these in its application properties, so the count and the total wait survive the copy's new id.
    """

    original_id: str
    number: int
    first_at: datetime

    @classmethod
    def of(cls, *, message_id: str, properties: Mapping[str, object] | None, now: datetime) -> DeliveryAttempt:
        """Read the attempt a received message carries; without (or with unreadable) properties: the first, now."""
        props = properties or {}
        original = original_message_id(message_id, props)
        try:
            number = max(1, int(_text(props.get(DELIVERY_ATTEMPT)) or "1"))
        except ValueError:
            number = 1
        try:
            first_at = datetime.fromisoformat(_text(props.get(FIRST_ATTEMPT_AT)) or "")
        except ValueError:
            first_at = now
        if first_at.tzinfo is None or first_at > now:
            first_at = now
        return cls(original_id=original, number=number, first_at=first_at)

    def waited_s(self, now: datetime) -> float:
        """Return the seconds since the first try."""
        return max(0.0, (now - self.first_at).total_seconds())

    def next(self) -> DeliveryAttempt:
        """Return the attempt the next copy carries."""
        return DeliveryAttempt(original_id=self.original_id, number=self.number + 1, first_at=self.first_at)

    @property
    def copy_id(self) -> str:
        """Return this try's message id: the original's for try 1, `<original>/retry-<n>` for copies.

        Each copy has an id of its own, or Service Bus duplicate detection would drop it silently.
        """
        if self.number == 1:
            return self.original_id
        copy = f"{self.original_id}/retry-{self.number - 1}"
        if len(copy) <= MAX_MESSAGE_ID:
            return copy
        # Service Bus refuses longer ids; the original stays readable in the copy's properties.
        digest = hashlib.sha256(self.original_id.encode()).hexdigest()[:40]
        return f"{self.original_id[:60]}~{digest}/retry-{self.number - 1}"

    def properties(self) -> dict[str, str]:
        """Return the application properties that carry this attempt."""
        return {
            ORIGINAL_ID: self.original_id,
            DELIVERY_ATTEMPT: str(self.number),
            FIRST_ATTEMPT_AT: self.first_at.isoformat(),
        }


def without_attempt(properties: Mapping[str, str]) -> dict[str, str]:
    """Return application properties without a retry copy's attempt (a replay starts counting anew)."""
    return {k: v for k, v in properties.items() if k not in ATTEMPT_PROPERTIES}
