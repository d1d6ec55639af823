"""Queue handlers: the onboarding queue and the step queue, and how their messages are settled.

Settlement, in one place (`settle_for`):
- handled, or recorded as rejected: complete. Invalid onboarding input becomes a `rejected`
  request with every reason, so it is completed, never retried.
- a step message that does not parse: dead-letter with the reason (nothing to record it against).
- a transient failure (store or bus unavailable, lost lock): abandon, so the message is delivered
  again; after the queue's max deliveries it is dead-lettered by the bus.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from adapters.telemetry import TRACEPARENT, Telemetry
from composition import Container
from engine.intake import Intake
from engine.notify import deliver
from engine.steps import StepEngine, StepResult
from models.errors import InvalidInputError, Problem
from models.messages import StepMessage
from models.records import RequestRecord
from models.request import problems_from

log = logging.getLogger(__name__)


class Settlement(StrEnum):
    """What to do with a message after its handler ran."""

    COMPLETE = "complete"
    ABANDON = "abandon"
    DEAD_LETTER = "dead-letter"


def trace_context(properties: Mapping[str, Any] | None) -> str | None:
    """Return the W3C trace context a message carries: `traceparent`, or the Service Bus SDK's `Diagnostic-Id`."""
    for key in ("traceparent", "Diagnostic-Id"):
        value = (properties or {}).get(key)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        if isinstance(value, str) and TRACEPARENT.match(value):
            return value
    return None


def handle_onboarding(
    *,
    body: bytes,
    message_id: str,
    intake: Intake,
    telemetry: Telemetry | None = None,
    properties: Mapping[str, Any] | None = None,
) -> list[RequestRecord]:
    """Turn one onboarding message into requests (or rejected records), in a span of the message's trace."""
    with (telemetry or Telemetry()).span(
        "onboarding message", parent=trace_context(properties), kind="consumer", attributes={"message_id": message_id}
    ) as span:
        records = intake.onboard(body=body, message_id=message_id, traceparent=span.traceparent)
        for r in records:
            log.info("onboarding message %s -> request %s (%s)", message_id, r.id, r.status.value)
        span.set(requests=",".join(r.id for r in records))
    return records


def handle_notification(
    *, body: bytes, delivery_count: int, container: Container, properties: Mapping[str, Any] | None = None
) -> str:
    """Post a finished request's result to its callback URL, in a span of the request's trace."""
    try:
        request_id = str(json.loads(body)["request_id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError([Problem("(body)", f"not a notification message: {exc}")]) from exc
    with container.telemetry.span(
        "notify", parent=trace_context(properties), kind="consumer", request_id=request_id
    ) as span:
        result = deliver(
            request_id=request_id,
            store=container.store,
            notifier=container.notifier,
            chat=container.chat_poster,
            result=container.chat.result,
            last_delivery=delivery_count >= container.settings.bus_max_deliveries,
        )
        span.set(result=result)
    log.info("notification for %s: %s", request_id, result)
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


def settle_for(exc: BaseException | None) -> tuple[Settlement, str]:
    """Decide a message's settlement from how its handler ended, with the reason to record."""
    if exc is None:
        return Settlement.COMPLETE, ""
    if isinstance(exc, InvalidInputError):
        return Settlement.DEAD_LETTER, str(exc)[:1024]
    return Settlement.ABANDON, f"{type(exc).__name__}: {exc}"[:1024]
