"""Azure Functions triggers: thin wrappers that hand each message to its handler and settle it.

The Python worker (azure-functions 1.x) completes a Service Bus message when the function returns
and abandons it when the function raises (host.json: autoCompleteMessages true); it cannot
dead-letter. So settlement (`handlers.queues.settle_for`) maps onto that:
- complete: return;
- retry later: send the scheduled copy through the service's own bus and return (the original is
  completed); if the copy cannot be sent, raise, so the message is abandoned and not lost;
- dead-letter after the tries ran out: raise; Service Bus delivers it again at once and, after
  the queue's max delivery count, dead-letters it itself (`MaxDeliveryCountExceeded`);
- dead-letter a message that is not one of ours: return, with the reason logged at error level
  (an onboarding message is already recorded as a rejected request).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import azure.functions as func

from composition import Container
from engine.ports import ReceivedMessage
from engine.redelivery import RetryPolicy
from handlers.queues import (
    RETRIES_EXHAUSTED,
    Action,
    log_failure,
    notification_received,
    onboarding_received,
    settle_for,
    step_received,
)
from models.messages import text_properties

log = logging.getLogger(__name__)


def _received(msg: func.ServiceBusMessage, queue: str, container: Container) -> ReceivedMessage:
    now = container.clock()
    return ReceivedMessage(
        queue=queue,
        message_id=msg.message_id or "",
        body=msg.get_body(),
        correlation_id=msg.correlation_id,
        application_properties=text_properties(msg.application_properties),
        delivery_count=msg.delivery_count or 1,
        lock_token=msg.lock_token or "",
        locked_until=msg.locked_until or now,
        enqueued_at=msg.enqueued_time_utc or now,
    )


def _settle(
    msg: func.ServiceBusMessage,
    queue: str,
    container: Container,
    work: Callable[[ReceivedMessage, Container], object],
) -> None:
    message = _received(msg, queue, container)
    try:
        work(message, container)
    except Exception as exc:
        settlement = settle_for(message, exc, RetryPolicy.from_settings(container.settings), now=container.clock())
        if settlement.action == Action.RETRY_LATER:
            assert settlement.copy is not None
            try:
                container.bus.send(queue, settlement.copy)
            except Exception as send_error:
                log_failure(queue, message, settlement, exc, f"the copy could not be sent ({send_error}); abandoning")
                raise
            log_failure(queue, message, settlement, exc, "completing it, the copy is scheduled")
            return
        if settlement.reason == RETRIES_EXHAUSTED:
            log_failure(
                queue, message, settlement, exc, "abandoning: Service Bus dead-letters it at its max deliveries"
            )
            raise
        log_failure(queue, message, settlement, exc, "it cannot be processed and is dropped")


def onboarding_message(msg: func.ServiceBusMessage, container: Container) -> None:
    """Handle one onboarding queue message."""
    _settle(msg, container.settings.onboarding_queue, container, onboarding_received)


def step_message(msg: func.ServiceBusMessage, container: Container) -> None:
    """Handle one step queue message."""
    _settle(msg, container.settings.steps_queue, container, step_received)


def notification_message(msg: func.ServiceBusMessage, container: Container) -> None:
    """Handle one notification queue message (a callback to post)."""
    _settle(msg, container.settings.notifications_queue, container, notification_received)


def dead_letters(timer: func.TimerRequest, container: Container) -> None:
    """Record what each dead-lettered message means (failed step, rejected onboarding, failed callback)."""
    recorded = container.deadletters.process()
    if recorded:
        log.warning("recorded %d dead-lettered messages", recorded)


def sweep(timer: func.TimerRequest, container: Container) -> None:
    """Re-dispatch stuck steps and finish finished requests."""
    repaired = container.engine.sweep()
    if repaired:
        log.warning("sweeper repaired %d steps or requests", repaired)


def lifecycle(timer: func.TimerRequest, container: Container) -> None:
    """End approvals left waiting too long, remind of and carry out expiries, then compare due workspaces with the cloud."""
    timed_out = expired = checked = 0
    try:
        timed_out = container.approvals.expire_due()
    finally:
        try:
            expired = container.lifecycle.expire_due()
        finally:
            checked = container.lifecycle.check_drift()  # drift is looked at even when expiry could not be
    if timed_out or expired or checked:
        log.info(
            "lifecycle: %d approvals expired, %d expiries acted on, %d workspaces checked for drift",
            timed_out,
            expired,
            checked,
        )
