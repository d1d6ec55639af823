"""Queue handlers: the onboarding, step and notification queues, and how their messages are settled.

Settlement, in one place (`settle_for`, applied by the devhost's workers and the Functions triggers):
- handled, or recorded as rejected: complete. Invalid onboarding input becomes a `rejected`
  request with every reason, so it is completed, never retried.
- a step or notification message that does not parse: dead-letter with the reason (nothing to record
  it against).
- any other failure (a `TransientError` such as the store or the bus being unavailable or a lost
  lock, a `PermanentError` an operator may fix, or an unexpected exception): retry later. The
  message is completed and a copy is scheduled with backoff (`engine.redelivery`); after the
  configured tries or total wait it is dead-lettered with `RetriesExhausted`. An unexpected
  exception is retried the same way, so it is never lost and never loops: if it is a bug, the
  budget runs out and the dead letter is recorded where operators look.
- a crash (the process dies mid-message): nothing is settled; the lock runs out and the bus
  delivers the message again (and dead-letters it after its max deliveries).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from adapters.auth import Authenticator
from adapters.telemetry import TRACEPARENT, Telemetry
from composition import Container
from engine.intake import Intake
from engine.notify import deliver
from engine.ports import DeadLetter, OutgoingMessage, ReceivedMessage
from engine.redelivery import RetryPolicy, redeliver
from engine.steps import StepEngine, StepResult
from models.errors import InvalidInputError, Problem, VendingError
from models.identity import AuthenticationError, Caller
from models.messages import DeliveryAttempt, StepMessage, original_message_id
from models.records import RequestRecord
from models.request import problems_from

log = logging.getLogger(__name__)


class Action(StrEnum):
    """What to do with a message after its handler ran."""

    COMPLETE = "complete"
    RETRY_LATER = "retry-later"
    DEAD_LETTER = "dead-letter"


INVALID_MESSAGE = "InvalidMessage"
RETRIES_EXHAUSTED = "RetriesExhausted"


@dataclass(frozen=True)
class Settlement:
    """How to settle one message: the action, the dead-letter reason, what went wrong, the copy to schedule."""

    action: Action
    reason: str = ""
    description: str = ""
    copy: OutgoingMessage | None = None


def settle_for(
    message: ReceivedMessage, error: BaseException | None, policy: RetryPolicy, *, now: datetime
) -> Settlement:
    """Decide a message's settlement from how its handler ended."""
    if error is None:
        return Settlement(Action.COMPLETE)
    if isinstance(error, InvalidInputError):
        return Settlement(Action.DEAD_LETTER, INVALID_MESSAGE, str(error)[:1024])
    decision = redeliver(message, error, policy, now=now)
    what = f"{type(error).__name__}: {str(error)[:900]} ({decision.describe()})"
    if decision.copy is None:
        return Settlement(Action.DEAD_LETTER, RETRIES_EXHAUSTED, what)
    return Settlement(Action.RETRY_LATER, description=what, copy=decision.copy)


def log_failure(queue: str, message: ReceivedMessage, settlement: Settlement, error: BaseException, then: str) -> None:
    """Log one failed message once: what went wrong and what was done; an unexpected error with its traceback."""
    expected = isinstance(error, VendingError)
    logger = log.warning if expected and settlement.action == Action.RETRY_LATER else log.error
    logger(
        "%s message %s failed: %s; %s",
        queue,
        message.message_id,
        settlement.description,
        then,
        exc_info=None if expected else error,
        extra={"message_id": message.message_id, "queue": queue, "settlement": settlement.reason or settlement.action},
    )


def trace_context(properties: Mapping[str, Any] | None) -> str | None:
    """Return the W3C trace context a message carries: `traceparent`, or the Service Bus SDK's `Diagnostic-Id`."""
    for key in ("traceparent", "Diagnostic-Id"):
        value = (properties or {}).get(key)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        if isinstance(value, str) and TRACEPARENT.match(value):
            return value
    return None


SENDER_PROPERTY = "Authorization"
"""The application property an onboarding message carries its sender's access token in ('Bearer <token>')."""


def message_sender(authenticator: Authenticator, properties: Mapping[str, Any] | None) -> Caller | AuthenticationError:
    """Say who sent a message, as the token in its `Authorization` property proves, or why it proves nobody.

    The token is checked by the code that checks the REST door's bearer tokens; nothing else the
    message says (its body's `requested_by`, any other property) is believed. An issuer whose keys
    cannot be fetched raises `AuthUnavailableError`: the message is tried again later.
    """
    value = (properties or {}).get(SENDER_PROPERTY)
    try:
        return authenticator.authenticate({"authorization": value if isinstance(value, str) else ""})
    except AuthenticationError as exc:
        return exc


def dead_letter_sender(
    authenticator: Authenticator, letter: DeadLetter, *, max_age_s: float, now: datetime
) -> Caller | AuthenticationError:
    """Say who sent a dead-lettered message, as its token proved when the bus took the message in.

    An operator replays a dead letter after its cause is fixed, usually after its sender's token
    (an hour's life) has expired; the message still proves who sent it if the token was valid when
    it was enqueued, no longer ago than `max_age_s`. A bus that does not say when (no `enqueued_at`)
    is held to now. The token proves who; it does not say which groups the sender is in today: the
    caller returned has none listed (as on group overage), so the membership port is asked now, and
    a sender who left the team since is refused. Its app roles are the token's, which `max_age_s`
    bounds.
    """
    value = letter.application_properties.get(SENDER_PROPERTY)
    authorization = value if isinstance(value, str) else ""
    try:
        if letter.enqueued_at is None:
            caller = authenticator.authenticate({"authorization": authorization})
        elif (now - letter.enqueued_at).total_seconds() > max_age_s:
            raise AuthenticationError(
                f"the message was sent more than {max_age_s / 86400:g} days ago, longer than its sender's rights "
                "can be taken as they were (VENDING_DEAD_LETTER_REPLAY_MAX_AGE_S)"
            )
        else:
            caller = authenticator.authenticate_as_of(authorization, letter.enqueued_at)
    except AuthenticationError as exc:
        return exc
    return caller.model_copy(update={"groups": frozenset(), "groups_overage": True})


def handle_onboarding(
    *,
    body: bytes,
    message_id: str,
    intake: Intake,
    authenticator: Authenticator,
    telemetry: Telemetry | None = None,
    properties: Mapping[str, Any] | None = None,
) -> list[RequestRecord]:
    """Turn one onboarding message into requests (or rejected records), in a span of the message's trace.

    A retry copy is handled under the id of the message it retries: intake builds its idempotency
    keys from it, so the copy finds the requests an earlier try made.
    """
    sender = message_sender(authenticator, properties)
    message_id = original_message_id(message_id, properties)
    with (telemetry or Telemetry()).span(
        "onboarding message", parent=trace_context(properties), kind="consumer", attributes={"message_id": message_id}
    ) as span:
        records = intake.onboard(body=body, message_id=message_id, sender=sender, traceparent=span.traceparent)
        for r in records:
            log.info("onboarding message %s -> request %s (%s)", message_id, r.id, r.status.value)
        span.set(requests=",".join(r.id for r in records))
    return records


def handle_notification(
    *,
    body: bytes,
    container: Container,
    properties: Mapping[str, Any] | None = None,
    message_id: str = "",
    delivery_count: int = 1,
) -> str:
    """Post a finished request's result to its callback URL, in a span of the request's trace.

    Whether a transient failure is the last try comes from the try count the message carries
    (`engine.redelivery`), not from the bus's delivery count: a retry copy is a new message.
    """
    try:
        data = json.loads(body)
        request_id = str(data["request_id"])
        kind = data.get("kind")
        round_ = int(data["approval"]) if kind is not None else 0
        if kind not in (None, "announce", "settle"):
            raise ValueError(f"unknown kind {kind!r}")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInputError([Problem("(body)", f"not a notification message: {exc}")]) from exc
    if kind is not None:
        # Approvers' messages (engine/approvals.py): asked in their channels, then told the outcome.
        with container.telemetry.span(
            f"approval-{kind}", parent=trace_context(properties), kind="consumer", request_id=request_id
        ) as span:
            act = container.approvals.announce if kind == "announce" else container.approvals.settle
            result = act(request_id, round_, announcer=container.approval_announcer)
            span.set(result=result, delivery_count=delivery_count)
        log.info("approval %s for %s: %s", kind, request_id, result)
        return result
    policy = RetryPolicy.from_settings(container.settings)
    attempt = DeliveryAttempt.of(
        message_id=message_id or f"{request_id}/notify", properties=properties, now=container.clock()
    )
    with container.telemetry.span(
        "notify", parent=trace_context(properties), kind="consumer", request_id=request_id
    ) as span:
        result = deliver(
            request_id=request_id,
            store=container.store,
            notifier=container.notifier,
            chat=container.chat_poster,
            result=container.chat.result,
            gives_up=lambda exc: policy.gives_up(attempt, exc, now=container.clock()),
        )
        span.set(result=result, attempt=attempt.number, delivery_count=delivery_count)
    log.info("notification for %s (try %d): %s", request_id, attempt.number, result)
    return result


def parse_step_message(body: bytes) -> StepMessage:
    """Parse a step message body; raise `InvalidInputError` when it is not one."""
    try:
        return StepMessage.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidInputError(problems_from(exc), title="Not a step message.") from exc
    except ValueError as exc:
        raise InvalidInputError([Problem("(body)", str(exc))], title="Not a step message.") from exc


def handle_step(*, body: bytes, engine: StepEngine, telemetry: Telemetry | None = None) -> StepResult:
    """Run the step a step message names, as a span under the request's trace."""
    message = parse_step_message(body)
    with (telemetry or Telemetry()).span(
        f"step {message.step_id}",
        parent=message.traceparent,
        kind="consumer",
        request_id=message.request_id,
        attributes={"step": message.step_id, "attempt": message.attempt, "message_id": message.message_id},
    ) as span:
        result = engine.run_step(message=message)
        span.set(
            disposition=result.disposition,
            outcome=type(result.outcome).__name__ if result.outcome is not None else None,
        )
    if result.disposition != "ran":
        log.info("step message %s %s", message.message_id, result.disposition)
    return result


def onboarding_received(message: ReceivedMessage, container: Container) -> list[RequestRecord]:
    """Handle a received onboarding message (on either host)."""
    return handle_onboarding(
        body=message.body,
        message_id=message.message_id,
        intake=container.intake,
        authenticator=container.authenticator,
        telemetry=container.telemetry,
        properties=message.application_properties,
    )


def step_received(message: ReceivedMessage, container: Container) -> StepResult:
    """Handle a received step message (on either host)."""
    return handle_step(body=message.body, engine=container.engine, telemetry=container.telemetry)


def notification_received(message: ReceivedMessage, container: Container) -> str:
    """Handle a received notification message (on either host)."""
    return handle_notification(
        body=message.body,
        container=container,
        properties=message.application_properties,
        message_id=message.message_id,
        delivery_count=message.delivery_count,
    )
