"""Azure Functions triggers: thin wrappers that hand each message to its handler and settle it.

The Python worker (azure-functions 1.x) completes a Service Bus message when the function returns
and abandons it when the function raises (host.json: autoCompleteMessages true). So settlement
(`handlers.queues.settle_for`) maps onto that: complete = return, abandon = raise; a message that
should be dead-lettered but cannot be from this worker is completed with its reason logged at error
level (and, for onboarding, already recorded as a rejected request).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import azure.functions as func

from composition import Container
from handlers.queues import Settlement, handle_notification, handle_onboarding, handle_step, settle_for

log = logging.getLogger(__name__)


def _settle(msg: func.ServiceBusMessage, queue: str, work: Callable[[], object]) -> None:
    try:
        work()
    except Exception as exc:
        settlement, reason = settle_for(exc)
        if settlement == Settlement.ABANDON:
            log.warning(
                "%s message %s failed (delivery %s), abandoning: %s", queue, msg.message_id, msg.delivery_count, reason
            )
            raise
        log.error("%s message %s cannot be processed and is dropped: %s", queue, msg.message_id, reason)


def onboarding_message(msg: func.ServiceBusMessage, container: Container) -> None:
    """Handle one onboarding queue message."""
    _settle(
        msg,
        "onboarding",
        lambda: handle_onboarding(
            body=msg.get_body(),
            message_id=msg.message_id or "",
            intake=container.intake,
            telemetry=container.telemetry,
            properties=msg.application_properties,
        ),
    )


def step_message(msg: func.ServiceBusMessage, container: Container) -> None:
    """Handle one step queue message."""
    _settle(
        msg,
        "steps",
        lambda: handle_step(body=msg.get_body(), engine=container.engine, telemetry=container.telemetry),
    )


def notification_message(msg: func.ServiceBusMessage, container: Container) -> None:
    """Handle one notification queue message (a callback to post)."""
    _settle(
        msg,
        "notifications",
        lambda: handle_notification(
            body=msg.get_body(),
            delivery_count=msg.delivery_count or 1,
            container=container,
            properties=msg.application_properties,
        ),
    )


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
