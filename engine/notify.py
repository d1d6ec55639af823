"""Tell the requester when a request has finished: a callback POST, sent through its own queue.

The finisher enqueues one notification message per finished request (id `<request>/notify`, so
duplicates are dropped); the notification handler posts the result. A transient failure is raised
so the message is tried again later (a scheduled copy, honouring the receiver's Retry-After:
`engine.redelivery`), unless it is the last try, when it is recorded as failed; a permanent one is
recorded at once. Either way the request's record says what happened.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from engine import notify_message
from engine.ports import ChatPoster, Notifier, Store
from engine.steps import utcnow
from models.errors import PermanentError, StaleWriteError, TransientError
from models.records import Notification, RequestRecord, StepRecord


def payload(record: RequestRecord, steps: list[StepRecord]) -> dict[str, Any]:
    """Build what the callback receives: the outcome, the outputs, and each step's end state."""
    about = record.notification.about if record.notification is not None else "result"
    approval = record.approval if about == "approval" else None
    return {
        "id": record.id,
        "event": {"expiry": "expiry_reminder", "approval": "approval"}.get(about, "result"),
        "status": record.status.value,
        "operation": record.operation,
        "run": record.run,
        "revision": record.revision,
        "expires_at": record.expires_at.isoformat() if record.expires_at else None,
        "teardown": record.teardown.model_dump(mode="json") if record.teardown else None,
        "team": record.team,
        "environment": record.environment,
        "workspace_name": record.workspace_name,
        "outputs": record.outputs,
        "approval": (
            {
                "round": approval.round,
                "outcome": approval.outcome,
                "operation": approval.operation,
                "rules": [{"rule": t.rule, "reasons": t.reasons} for t in approval.rules],
                "due_at": approval.due_at.isoformat(),
                "estimate": approval.estimate.model_dump(mode="json") if approval.estimate else None,
                "decisions": [
                    {"by": d.by, "decision": d.decision, "reason": d.reason, "at": d.at.isoformat()}
                    for d in approval.decisions
                ],
            }
            if approval
            else None
        ),
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
    chat: ChatPoster | None = None,
    result: Callable[[RequestRecord, list[StepRecord]], Any] | None = None,
    gives_up: Callable[[TransientError], bool] | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> str:
    """Tell a finished request's destinations (its callback_url, its chat conversation) and record how it went.

    Each destination is marked when it has been told, so a redelivered message never tells it
    twice; each attempt carries the same delivery id (`notify_message.delivery_id`), so a receiver can drop
    a repeat that a crash between posting and recording lets through. A transient failure is raised
    (the message is tried again later) unless `gives_up` says this was the last try, when it is
    recorded as failed instead of going unrecorded.
    """
    record = store.get_request(request_id)
    if record is None:
        return "nothing to notify"
    approval = record.notification is not None and record.notification.about == "approval"
    if not record.status.terminal and not approval:
        return "nothing to notify"
    state = record.notification or Notification()
    if state.done:
        return f"already {state.status}"
    delivery_id = notify_message.delivery_id(record)
    steps = store.get_steps(request_id)
    targets: list[tuple[Literal["callback", "chat"], Callable[[], None]]] = []
    url = record.callback_url or ""
    if url:
        targets.append(("callback", lambda: notifier.post(url, payload(record, steps), delivery_id)))
    if record.reply_to and chat is not None and result is not None:
        reply_to = record.reply_to
        targets.append(("chat", lambda: chat.post(reply_to, result(record, steps), delivery_id)))
    if not targets:
        return "nothing to notify"
    errors: list[str] = []
    for name, send in targets:
        if getattr(state, name) in ("delivered", "failed"):
            continue
        try:
            send()
            state = state.model_copy(update={name: "delivered"})
        except PermanentError as exc:
            state = state.model_copy(update={name: "failed"})
            errors.append(f"{name}: {exc}")
        except TransientError as exc:
            if gives_up is None or not gives_up(exc):
                _record(store, record, state, clock)  # keep what was delivered, so it is not sent again
                raise
            state = state.model_copy(update={name: "failed"})
            errors.append(f"{name}: {exc}; gave up after the last try")
    state = state.model_copy(
        update={"status": "failed" if errors else "delivered", "at": clock(), "error": "; ".join(errors) or None}
    )
    _record(store, record, state, clock)
    return state.status


def _record(store: Store, record: RequestRecord, outcome: Notification, clock: Callable[[], datetime]) -> None:
    for _ in range(5):
        try:
            # updated_at moves with every recorded try, so the sweeper (which resends notifications
            # left pending past its grace) does not start a second chain while retries go on.
            store.update_request(record.model_copy(update={"notification": outcome, "updated_at": clock()}))
            return
        except StaleWriteError:
            fresh = store.get_request(record.id)
            if fresh is None:
                return
            record = fresh
