"""The notification message: one per finished request that asked for a callback."""

from __future__ import annotations

import json

from engine.ports import OutgoingMessage
from models.records import RequestRecord


def notification_message(record: RequestRecord) -> OutgoingMessage:
    """Build the notification message for a finished request."""
    return OutgoingMessage(
        message_id=f"{record.id}/notify",
        body=json.dumps({"request_id": record.id}).encode(),
        correlation_id=record.id,
        application_properties={
            "request_id": record.id,
            **({"traceparent": record.traceparent} if record.traceparent else {}),
        },
    )
