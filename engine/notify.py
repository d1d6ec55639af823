"""Tell the requester when a request has finished: a callback POST, sent through its own queue.

The finisher enqueues one notification message per finished request (id `<request>/notify`, so
duplicates are dropped); the notification handler posts the result. A transient failure is raised
so the bus redelivers the message (and dead-letters it, with the reason, after max deliveries); a
permanent one is recorded on the request. Either way the request's record says what happened.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from engine.ports import Notifier, Store
from engine.steps import utcnow
from models.errors import PermanentError, StaleWriteError, TransientError
from models.records import RequestRecord, StepRecord


def payload(record: RequestRecord, steps: list[StepRecord]) -> dict[str, Any]:
    """Build what the callback receives: the outcome, the outputs, and each step's end state."""
    return {
        "id": record.id,
        "status": record.status.value,
        "team": record.team,
        "environment": record.environment,
        "workspace_name": record.workspace_name,
        "outputs": record.outputs,
        "error": record.error.model_dump() if record.error else None,
        "steps": [
            {"id": s.step_id, "status": s.status.value, "error": s.error.model_dump() if s.error else None}
            for s in steps
        ],
    }


def deliver(
    *,
    request_id: str,
    store: Store,
    notifier: Notifier,
    last_delivery: bool = False,
    clock: Callable[[], datetime] = utcnow,
) -> str:
    """Post a finished request's result to its callback_url and record how it went.

    A transient failure is raised (the bus delivers the message again) unless this is the
    message's last delivery, when it is recorded as failed instead of going unrecorded.
    """
    record = store.get_request(request_id)
    if record is None or not record.status.terminal:
        return "nothing to notify"
    if record.notification and record.notification.get("status") == "delivered":
        return "already delivered"
    url = str(record.request.get("callback_url") or "")
    if not url:
        return "no callback_url"
    try:
        notifier.post(url, payload(record, store.get_steps(request_id)))
        outcome = {"status": "delivered", "at": clock().isoformat()}
    except PermanentError as exc:
        outcome = {"status": "failed", "at": clock().isoformat(), "error": str(exc)}
    except TransientError as exc:
        if not last_delivery:
            raise
        outcome = {"status": "failed", "at": clock().isoformat(), "error": f"{exc}; gave up after the last delivery"}
    _record(store, record, outcome)
    return str(outcome["status"])


def _record(store: Store, record: RequestRecord, outcome: dict[str, Any]) -> None:
    for _ in range(5):
        try:
            store.update_request(record.model_copy(update={"notification": outcome}))
            return
        except StaleWriteError:
            fresh = store.get_request(record.id)
            if fresh is None:
                return
            record = fresh
