"""The notification message: one per finished request that asked for a callback."""

from __future__ import annotations

import json

from engine.ports import OutgoingMessage
from models.records import RequestRecord


def notice_key(record: RequestRecord) -> str:
    """Name what the record's pending notification tells: one run's end, or one expiry reminder.

    The first run's keeps the names it always had (`<request>/notify`, delivery id `<request>:<status>`).
    """
    if record.notification is not None and record.notification.about == "expiry" and record.expires_at:
        return f"remind/{int(record.expires_at.timestamp())}"
    if record.notification is not None and record.notification.about == "approval" and record.approval:
        return f"approval/{record.approval.round}/{record.approval.outcome}"
    return "notify" if record.run == 1 else f"notify/{record.run}"


def delivery_id(record: RequestRecord) -> str:
    """Return the id every attempt at the record's pending notification carries (receivers drop repeats)."""
    key = notice_key(record)
    if key == "notify":
        return f"{record.id}:{record.status.value}"
    if key.startswith("remind/"):
        return f"{record.id}:expiry:{key.removeprefix('remind/')}"
    if key.startswith("approval/"):
        return f"{record.id}:{key.replace('/', ':')}"
    return f"{record.id}:{record.run}:{record.status.value}"


def notification_message(record: RequestRecord) -> OutgoingMessage:
    """Build the notification message for a finished run (or an expiry reminder)."""
    return OutgoingMessage(
        message_id=f"{record.id}/{notice_key(record)}",
        body=json.dumps({"request_id": record.id}).encode(),
        correlation_id=record.id,
        application_properties={
            "request_id": record.id,
            **({"traceparent": record.traceparent} if record.traceparent else {}),
        },
    )
