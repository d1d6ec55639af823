"""What the store keeps: one `RequestRecord` per request and one `StepRecord` per step."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.approvals import ApprovalState, CostEstimate
from models.lifecycle import DriftReport, Revision, TeardownReport
from models.plan import Plan, StepAction, StepKind
from models.request import WorkspaceRequest


class RequestStatus(StrEnum):
    """Life of a request (DESIGN section 10): create, then a revision at a time, then teardown."""

    ACCEPTED = "accepted"
    PROVISIONING = "provisioning"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    UPDATING = "updating"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    DELETING = "deleting"
    DELETED = "deleted"
    AWAITING_APPROVAL = "awaiting_approval"
    DENIED = "denied"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        """True when no run is in flight: the request changes only when someone asks for a new run."""
        return self in SETTLED

    @property
    def live(self) -> bool:
        """True while the request holds its workspace name (and its team's vCPUs)."""
        return self in LIVE

    @property
    def in_flight(self) -> bool:
        """True while a run is under way: its steps are worked on, and the sweeper watches it."""
        return self in IN_FLIGHT


SETTLED = frozenset(
    {
        RequestStatus.SUCCEEDED,
        RequestStatus.FAILED,
        RequestStatus.REJECTED,
        RequestStatus.CANCELLED,
        RequestStatus.DELETED,
        RequestStatus.DENIED,
        RequestStatus.EXPIRED,
    }
)
IN_FLIGHT = frozenset(
    {
        RequestStatus.ACCEPTED,
        RequestStatus.PROVISIONING,
        RequestStatus.UPDATING,
        RequestStatus.CANCELLING,
        RequestStatus.DELETING,
    }
)
LIVE = frozenset(
    {
        RequestStatus.ACCEPTED,
        RequestStatus.PROVISIONING,
        RequestStatus.SUCCEEDED,
        RequestStatus.UPDATING,
        RequestStatus.CANCELLING,
        RequestStatus.DELETING,
        RequestStatus.AWAITING_APPROVAL,  # holds its name and vCPUs while approvers decide
    }
)
"""A request waiting for approval is neither settled nor in flight: no step runs, and no run has ended."""


def sql_in(statuses: frozenset[RequestStatus]) -> str:
    """Return `statuses` as an SQL list of literals, in a stable order (the stores' queries use it)."""
    return "(" + ",".join(f"'{s.value}'" for s in sorted(statuses, key=lambda s: s.value)) + ")"


Operation = Literal["create", "update", "delete"]
"""What a request's current run does: create it, apply a revision, or tear it down."""


class StepStatus(StrEnum):
    """Life of a step within its run."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True when the step will not change any more in this run."""
        return self in (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED)


class SlackConversation(BaseModel):
    """Where a Slack command came from: what the notifier needs to answer there when the request ends."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["slack"] = "slack"
    user: str = Field("", description="The Slack user id who asked.")
    channel: str | None = Field(None, description="The channel, for chat.postMessage once response_url expires.")
    response_url: str | None = Field(None, description="The command's response URL (valid 30 minutes); a secret.")
    message_id: str | None = Field(None, description="The trigger id: one command, however often Slack retries it.")
    at: float = Field(0.0, description="When it arrived (epoch seconds): how old response_url is.")


class TeamsConversation(BaseModel):
    """Where a Teams message came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["teams"] = "teams"
    user: str = Field("", description="The sender's Entra object id (or Teams id).")
    conversation: str | None = Field(None, description="The Teams conversation id.")
    message_id: str | None = Field(None, description="The activity id: one message, however often it is delivered.")
    at: float = Field(0.0, description="When it arrived (epoch seconds).")


ChatConversation = Annotated[SlackConversation | TeamsConversation, Field(discriminator="kind")]
"""The chat conversation a request answers to when it ends, by chat platform."""

Delivery = Literal["pending", "delivered", "failed"]


class Notification(BaseModel):
    """How telling the requester went: overall, per destination (callback, chat), when, and why it failed.

    Frozen: each change is a new value (`model_copy(update=...)`) written with the request.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Delivery = "pending"
    about: Literal["result", "expiry", "approval"] = Field(
        "result",
        description="result: how the current run ended; expiry: the workspace expires soon; approval: it waits "
        "for approval, or was approved, denied, expired or withdrawn.",
    )
    callback: Literal["delivered", "failed"] | None = Field(None, description="The callback URL, once told.")
    chat: Literal["delivered", "failed"] | None = Field(None, description="The chat conversation, once told.")
    at: datetime | None = Field(None, description="When the outcome was recorded.")
    error: str | None = Field(None, description="Why a destination was not told.")

    @property
    def done(self) -> bool:
        """Say whether nothing is left to send."""
        return self.status != "pending"


class ErrorInfo(BaseModel):
    """A failure as the requester sees it: a code and a sentence saying what to do."""

    code: str
    message: str


class RequestRecord(BaseModel):
    """One workspace request and where it stands."""

    id: str
    status: RequestStatus
    team: str
    environment: str
    workspace_name: str | None = None
    workspace_key: str | None = Field(None, description="subscription/resource group/workspace, lowercase.")
    requester: str = Field("anonymous", description="Who asked: the caller's Entra object id (oid).")
    requester_name: str | None = Field(None, description="The caller's display name when it asked; display only.")
    source: str = Field("rest", description="Which door it came through: rest, queue, slack, teams.")
    request: WorkspaceRequest | None = Field(None, description="The validated, resolved request (none when rejected).")
    raw: str | None = Field(None, description="Rejected input as it came (secrets masked), when it did not validate.")
    plan: Plan | None = None
    problems: list[dict[str, str]] = Field(default_factory=list, description="Why it was rejected.")
    warnings: list[dict[str, str]] = Field(default_factory=list, description="What pre-flight noticed but let pass.")
    vcpus: int = Field(
        0, ge=0, description="vCPUs its compute uses at max scale; counted against the team while the request is live."
    )
    outputs: dict[str, Any] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    idempotency_key: str | None = None
    body_hash: str | None = None
    traceparent: str | None = None
    notification: Notification | None = Field(None, description="How telling the requester went.")
    reply_to: ChatConversation | None = Field(
        None, description="The chat conversation to tell when the request ends (Slack or Teams); holds secrets."
    )
    operation: Operation = Field("create", description="What the current run does: create, update or delete.")
    run: int = Field(1, ge=1, description="The current run's number: each create, update or teardown is one run.")
    revision: int = Field(1, ge=1, description="The revision of `request` now applied or being applied.")
    revisions: list[Revision] = Field(default_factory=list, description="Every revision of the request, oldest first.")
    applied: Plan | None = Field(
        None, description="The plan of the last revision applied: what exists (`plan` is the current run's)."
    )
    expires_at: datetime | None = Field(None, description="When the workspace is torn down unless extended.")
    reminded_at: datetime | None = Field(None, description="When the requester was told of the coming expiry.")
    drift: DriftReport | None = Field(None, description="What the last drift check found.")
    teardown: TeardownReport | None = Field(None, description="What teardown left: names still held, what remains.")
    estimate: CostEstimate | None = Field(None, description="The estimated monthly cost of the request as it stands.")
    approval: ApprovalState | None = Field(
        None, description="The latest approval: why it waits or waited, and the decisions."
    )
    created_at: datetime
    updated_at: datetime
    version: int = 0

    @model_validator(mode="before")
    @classmethod
    def _stored_request(cls, data: Any) -> Any:
        # Records stored before the request was typed kept rejected input as {"raw": ...} (and {} for none).
        if isinstance(data, dict) and isinstance(req := data.get("request"), dict) and set(req) <= {"raw"}:
            return {**data, "request": None, "raw": data.get("raw") or req.get("raw")}
        return data

    @property
    def callback_url(self) -> str | None:
        """The URL the requester asked to be told at, if any."""
        return str(self.request.callback_url) if self.request and self.request.callback_url else None


class StepRecord(BaseModel):
    """One step of one request and where it stands."""

    request_id: str
    step_id: str
    kind: StepKind
    status: StepStatus = StepStatus.PENDING
    depends_on: list[str] = Field(default_factory=list)
    attempt: int = Field(0, description="Dispatch number; the step message id ends with it.")
    retries: int = 0
    waited_s: float = 0.0
    handling_failures: int = Field(
        0,
        description="Handlings in a row that failed after the step was claimed (its status write, say); "
        "the step fails at step_max_handling_failures. The sweeper never resets it; a written outcome does.",
    )
    due_at: datetime | None = Field(None, description="When its current message is due to be worked on.")
    lease_until: datetime | None = Field(None, description="While running: when another worker may take over.")
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime
    error: ErrorInfo | None = None
    status_reason: str | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    run: int = Field(1, ge=1, description="The request's run this record last took part in.")
    opened_attempt: int = Field(0, ge=0, description="Its attempt number when that run opened it.")
    action: StepAction = Field(StepAction.APPLY, description="What that run does with the step's resource.")
    version: int = 0
