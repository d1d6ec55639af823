"""Status events: one per transition, the same objects for every sink."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class EventName(StrEnum):
    """The events of DESIGN section 8."""

    ACCEPTED = "WorkspaceRequestAccepted"
    REJECTED = "WorkspaceRequestRejected"
    STEP_STARTED = "WorkspaceStepStarted"
    STEP_WAITING = "WorkspaceStepWaiting"
    STEP_RETRYING = "WorkspaceStepRetrying"
    STEP_SUCCEEDED = "WorkspaceStepSucceeded"
    STEP_FAILED = "WorkspaceStepFailed"
    PROVISIONED = "WorkspaceProvisioned"
    PROVISIONING_FAILED = "WorkspaceProvisioningFailed"
    # Lifecycle (DESIGN section 10): revisions, cancel, retry, teardown, expiry, drift.
    UPDATE_REQUESTED = "WorkspaceUpdateRequested"
    UPDATED = "WorkspaceUpdated"
    UPDATE_FAILED = "WorkspaceUpdateFailed"
    CANCEL_REQUESTED = "WorkspaceCancelRequested"
    CANCELLED = "WorkspaceRequestCancelled"
    RETRY_REQUESTED = "WorkspaceRetryRequested"
    DELETE_REQUESTED = "WorkspaceDeleteRequested"
    DELETED = "WorkspaceDeleted"
    DELETE_FAILED = "WorkspaceDeleteFailed"
    EXPIRY_EXTENDED = "WorkspaceExpiryExtended"
    EXPIRY_REMINDED = "WorkspaceExpiryReminded"
    EXPIRED = "WorkspaceExpired"
    DRIFT_DETECTED = "WorkspaceDriftDetected"
    DRIFT_CLEARED = "WorkspaceDriftCleared"
    # Approval (docs/approvals.md): every decision carries the approver's object id (caller) and reason (message).
    APPROVAL_REQUESTED = "WorkspaceApprovalRequested"
    APPROVAL_GIVEN = "WorkspaceApprovalGiven"  # one approver said yes; more may be needed
    APPROVED = "WorkspaceApproved"  # every rule has its approvals: the run starts
    DENIED = "WorkspaceApprovalDenied"
    APPROVAL_EXPIRED = "WorkspaceApprovalExpired"
    APPROVAL_WITHDRAWN = "WorkspaceApprovalWithdrawn"
    # Audit (DESIGN section 9): every authorisation decision and every operator action, with the caller.
    ACCESS_ALLOWED = "VendingAccessAllowed"
    ACCESS_REFUSED = "VendingAccessRefused"
    OPERATOR_ACTION = "VendingOperatorAction"


AUDIT_EVENTS = frozenset({EventName.ACCESS_ALLOWED, EventName.ACCESS_REFUSED, EventName.OPERATOR_ACTION})
"""Events about who did what, rather than about a request's progress."""


class StatusEvent(BaseModel):
    """One status transition, with the dimensions Azure Monitor gets."""

    name: EventName
    time: datetime
    request_id: str
    team: str = ""
    environment: str = ""
    workspace: str = ""
    step: str | None = None
    kind: str | None = None
    status: str = ""
    attempt: int | None = None
    duration_ms: float | None = Field(
        None,
        description="Step started: how long its message waited after being due (queue latency). Step succeeded "
        "or failed: from its first start to its end. Provisioned or failed: from accepted to the end.",
    )
    error_code: str | None = None
    message: str | None = Field(None, description="A plain sentence for people; never a secret.")
    caller: str | None = Field(None, description="Audit: the object id (oid) of who asked, or the door's name.")
    act: str | None = Field(None, description="Audit: what was asked (request, read, operate, or the operator action).")
    rule: str | None = Field(None, description="Audit: the rule that allowed or refused it.")
    door: str | None = Field(None, description="Audit: where the caller came in (rest, queue, slack, teams, cli).")
