"""What every store agrees on: which records count as live or stalled, and the conflicts it raises.

Both stores (SQLite and Azure Tables) import these, so the contract suite checks one set of rules.
"""

from __future__ import annotations

__all__ = [
    "FINISHED",
    "FINISHED_SQL",
    "IN_FLIGHT_STEPS",
    "LIVE",
    "LIVE_SQL",
    "UNFINISHED",
    "UNFINISHED_SQL",
    "due_of",
    "key_reused",
    "notification_pending",
    "workspace_taken",
]

from datetime import datetime

from models.errors import ConflictError
from models.errors import idempotency_key_reused as key_reused
from models.records import IN_FLIGHT, SETTLED, RequestRecord, RequestStatus, StepRecord, StepStatus, sql_in

LIVE = tuple(s for s in RequestStatus if s.live)
UNFINISHED = tuple(sorted(IN_FLIGHT, key=lambda s: s.value))
# Where a notification may be pending: a run's end, and a request waiting for approval (its requester is told).
FINISHED = tuple(
    sorted((SETTLED - {RequestStatus.REJECTED}) | {RequestStatus.AWAITING_APPROVAL}, key=lambda s: s.value)
)
LIVE_SQL = sql_in(frozenset(LIVE))
UNFINISHED_SQL = sql_in(IN_FLIGHT)
FINISHED_SQL = sql_in(frozenset(FINISHED))
IN_FLIGHT_STEPS = (StepStatus.QUEUED, StepStatus.RUNNING, StepStatus.WAITING)


def due_of(step: StepRecord) -> datetime:
    """Return the time after which a stuck step is the sweeper's business: its lease while running, else its due time."""
    moment = step.lease_until if step.status == StepStatus.RUNNING else step.due_at
    return moment or step.updated_at


def notification_pending(record: RequestRecord) -> bool:
    """Return True when a finished (or waiting) request's notification has not been delivered yet."""
    note = record.notification
    if note is None or note.status != "pending":
        return False
    # An approval notice (waiting, approved, denied…) is the requester's whatever the request's status now.
    return record.status in FINISHED or (note.about == "approval" and record.status != RequestStatus.REJECTED)


def workspace_taken(record: RequestRecord, holder_id: str) -> ConflictError:
    """Build the conflict for a workspace name that a live request holds."""
    return ConflictError(
        f"workspace '{record.workspace_name}' is already held by request {holder_id}; "
        "choose another workspace_name or environment.",
        code="WorkspaceNameTaken",
        existing_id=holder_id,
    )
