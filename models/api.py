"""What the REST API answers: views of records, and RFC 9457 problem details."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from models.approvals import MAX_REASON, ApprovalDecision, ApprovalState, CostEstimate, Triggered
from models.events import StatusEvent
from models.lifecycle import DriftReport, PlanDiff, Revision, TeardownReport
from models.plan import ResourceNames, StepAction, StepKind
from models.records import ErrorInfo, Operation, RequestRecord, RequestStatus, StepRecord, StepStatus
from models.request import ComputeSpec, DatastoreSpec


class Links(BaseModel):
    """Where to look next."""

    self: str
    events: str


class Accepted(BaseModel):
    """The answer to a submission."""

    id: str
    status: RequestStatus
    links: Links
    warnings: list[dict[str, str]] = Field(default_factory=list, description="What pre-flight noticed but let pass.")


class StepView(BaseModel):
    """One step as the requester sees it."""

    id: str
    kind: StepKind
    status: StepStatus
    depends_on: list[str]
    attempts: int
    retries: int
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    status_reason: str | None = None
    error: ErrorInfo | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    action: StepAction = Field(StepAction.APPLY, description="What the run does with it: apply, delete or keep.")
    run: int = 1

    @classmethod
    def of(cls, s: StepRecord) -> StepView:
        """Build the view of a step record."""
        return cls(
            id=s.step_id,
            kind=s.kind,
            status=s.status,
            depends_on=s.depends_on,
            attempts=s.attempt,
            retries=s.retries,
            started_at=s.started_at,
            finished_at=s.finished_at,
            updated_at=s.updated_at,
            status_reason=s.status_reason,
            error=s.error,
            outputs=s.outputs,
            action=s.action,
            run=s.run,
        )


class RequestSummary(BaseModel):
    """A request in a listing."""

    id: str
    status: RequestStatus
    team: str
    environment: str
    workspace_name: str | None
    requester: str = Field(description="The Entra object id (oid) of who asked.")
    requester_name: str | None = Field(None, description="Who asked, by display name (display only).")
    source: str
    created_at: datetime
    updated_at: datetime
    links: Links

    @classmethod
    def of(cls, r: RequestRecord, base: str) -> RequestSummary:
        """Build the summary of a request record."""
        return cls(
            id=r.id,
            status=r.status,
            team=r.team,
            environment=r.environment,
            workspace_name=r.workspace_name,
            requester=r.requester,
            requester_name=r.requester_name,
            source=r.source,
            created_at=r.created_at,
            updated_at=r.updated_at,
            links=links(r.id, base),
        )


def masked_request(request: dict[str, Any]) -> dict[str, Any]:
    """Return the request with its callback URL cut to where it goes (the rest is often the secret)."""
    # A callback URL is a credential (its path or query often is the secret): show only where it goes.
    url = request.get("callback_url")
    if not isinstance(url, str) or "://" not in url:
        return request
    scheme, rest = url.split("://", 1)
    return {**request, "callback_url": f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}/***"}


class RequestView(RequestSummary):
    """A request in full: what was asked, every step, and the outputs."""

    request: dict[str, Any]
    names: ResourceNames | None = None
    problems: list[dict[str, str]] = Field(default_factory=list)
    warnings: list[dict[str, str]] = Field(default_factory=list)
    error: ErrorInfo | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    steps: list[StepView] = Field(default_factory=list, description="The steps of the current run, in plan order.")
    operation: Operation = Field("create", description="What the current run does: create, update or delete.")
    run: int = 1
    revision: int = 1
    expires_at: datetime | None = None
    drift: DriftReport | None = None
    teardown: TeardownReport | None = None
    estimate: CostEstimate | None = Field(None, description="The estimated monthly cost, from the policy's prices.")
    approval: ApprovalView | None = Field(
        None, description="The latest approval: why it waits or waited, and the decisions."
    )

    @classmethod
    def full(cls, r: RequestRecord, steps: list[StepRecord], base: str) -> RequestView:
        """Build the full view of a request and the steps of its current run."""
        ids = {s.id for s in r.plan.steps} if r.plan else set()
        steps = [s for s in steps if s.run == r.run and s.step_id in ids] if r.plan else steps
        return cls(
            **RequestSummary.of(r, base).model_dump(),
            request=masked_request(r.request.model_dump(mode="json")) if r.request else {"raw": r.raw or ""},
            names=r.plan.names if r.plan else None,
            problems=r.problems,
            warnings=r.warnings,
            error=r.error,
            outputs=r.outputs,
            steps=[StepView.of(s) for s in steps],
            operation=r.operation,
            run=r.run,
            revision=r.revision,
            expires_at=r.expires_at,
            drift=r.drift,
            teardown=r.teardown,
            estimate=r.estimate,
            approval=ApprovalView.of(r.approval) if r.approval else None,
        )


class ApprovalView(BaseModel):
    """An approval as the API shows it: the rules met, what each still needs, the decisions, the due time."""

    round: int
    operation: Literal["create", "update"]
    outcome: Literal["pending", "approved", "denied", "expired", "withdrawn"]
    requested_by: str
    requested_at: datetime
    due_at: datetime
    decided_at: datetime | None = None
    rules: list[Triggered]
    still_needed: dict[str, int] = Field(description="Per rule, how many more approvals it needs.")
    decisions: list[ApprovalDecision]
    estimate: CostEstimate | None = None
    change: str | None = Field(None, description="An update: what the waiting revision changes, in one line.")

    @classmethod
    def of(cls, a: ApprovalState) -> ApprovalView:
        """Build the view of a request's approval."""
        return cls(
            round=a.round,
            operation=a.operation,
            outcome=a.outcome,
            requested_by=a.requested_by,
            requested_at=a.requested_at,
            due_at=a.due_at,
            decided_at=a.decided_at,
            rules=a.rules,
            still_needed={t.rule: n for t, n in a.missing()} if a.outcome == "pending" else {},
            decisions=a.decisions,
            estimate=a.estimate,
            change=a.change.summary if a.change else None,
        )


class ApprovalItem(RequestSummary):
    """A request waiting for the caller's decision."""

    approval: ApprovalView
    names: ResourceNames | None = None

    @classmethod
    def of_record(cls, r: RequestRecord, base: str) -> ApprovalItem:
        """Build the item of a waiting request."""
        assert r.approval is not None
        return cls(
            **RequestSummary.of(r, base).model_dump(),
            approval=ApprovalView.of(r.approval),
            names=r.plan.names if r.plan else None,
        )


class ApprovalList(BaseModel):
    """The requests waiting for approval that the caller may decide, soonest due first."""

    items: list[ApprovalItem]


class DecisionBody(BaseModel):
    """An approver's decision: a reason is optional to approve and required to deny."""

    model_config = {"extra": "forbid"}

    reason: str | None = Field(None, max_length=MAX_REASON, description="Why; the requester is told it.")


class DecisionResult(BaseModel):
    """What a decision did, and where the request stands."""

    id: str
    status: RequestStatus
    recorded: bool = Field(description="False when this caller's same decision was recorded before.")
    outcome: Literal["pending", "approved", "denied", "expired", "withdrawn"]
    still_needed: dict[str, int]
    links: Links


class Changed(BaseModel):
    """The answer to a lifecycle act (update, cancel, retry, delete): where the request stands now."""

    id: str
    status: RequestStatus
    operation: Operation
    run: int
    revision: int
    started: bool = Field(description="True when this call started a run; False when nothing was left to do.")
    changes: PlanDiff | None = Field(None, description="An update: what it changes, by resource.")
    links: Links

    @classmethod
    def of(cls, r: RequestRecord, base: str, *, started: bool, changes: PlanDiff | None = None) -> Changed:
        """Build the answer from the request as it now is."""
        return cls(
            id=r.id,
            status=r.status,
            operation=r.operation,
            run=r.run,
            revision=r.revision,
            started=started,
            changes=changes,
            links=links(r.id, base),
        )


class RevisionView(BaseModel):
    """One revision as the requester sees it (its callback URL cut to where it goes)."""

    number: int
    request: dict[str, Any]
    by: str
    at: datetime
    run: int
    summary: str
    status: str

    @classmethod
    def of(cls, r: Revision) -> RevisionView:
        """Build the view of a revision."""
        return cls(
            **{**r.model_dump(exclude={"request"}), "request": masked_request(r.request.model_dump(mode="json"))}
        )


class RevisionList(BaseModel):
    """A request's revisions, oldest first."""

    items: list[RevisionView]


class Extension(BaseModel):
    """A new expiry: a time, or a number of days from now (policy bounds both)."""

    model_config = {"extra": "forbid"}

    expires_at: datetime | None = Field(None, description="When the workspace is torn down (with a time zone).")
    days: float | None = Field(None, gt=0, le=3650, description="Or: this many days from now.")


class RequestList(BaseModel):
    """One page of requests, newest first."""

    items: list[RequestSummary]
    next: str | None = Field(None, description="The URL of the next page, if there is one.")


class EventList(BaseModel):
    """A request's status events, oldest first."""

    items: list[StatusEvent]


class PlannedStep(BaseModel):
    """One step of a plan."""

    id: str
    kind: StepKind
    depends_on: list[str]
    resource_name: str
    resource_id: str


class PlanView(BaseModel):
    """What a request would create; nothing is created."""

    names: ResourceNames
    steps: list[PlannedStep]
    tags: dict[str, str]
    estimate: CostEstimate | None = Field(None, description="The estimated monthly cost, from the policy's prices.")
    approval: list[Triggered] = Field(
        default_factory=list, description="The approval rules it meets: it would wait for their approvers."
    )
    preflight: list[FieldProblem] = Field(
        default_factory=list,
        description="What the pre-flight checks against Azure found (names taken, quota, providers), or could not check.",
    )


class FieldProblem(BaseModel):
    """One problem with the input."""

    field: str
    message: str
    code: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldProblem] | None = None
    existing_id: str | None = None
    rule: str | None = Field(None, description="403: the authorisation or confinement rule that refused the request.")
    code: str | None = Field(None, description="409: which conflict, e.g. WorkspaceNameTaken, AwaitingApproval.")


class HealthCheck(BaseModel):
    """One part the service needs, as the health check found it."""

    part: Literal["store", "bus"]
    ok: bool
    code: str | None = Field(None, description="What kind of fault, when it is not ok (e.g. StoreReadOnly).")
    reason: str | None = Field(None, description="What is wrong and what to do, when it is not ok.")


class Health(BaseModel):
    """Liveness, what the service runs on, and the parts that were read and written to check it."""

    status: Literal["ok"] = "ok"
    store: str
    bus: str
    cloud: str
    checks: list[HealthCheck] = Field(default_factory=list)


class HealthProblem(ProblemDetails):
    """A failing health check (503): problem details naming each part that is wrong, and why."""

    checks: list[HealthCheck]


def links(request_id: str, base: str) -> Links:
    """Build the links of a request."""
    return Links(self=f"{base}/api/workspaces/{request_id}", events=f"{base}/api/workspaces/{request_id}/events")


class WorkspaceConfig(BaseModel):
    """A workspace's config.json: what `MLClient.from_config()` and the `az ml` CLI read to find it."""

    subscription_id: str
    resource_group: str
    workspace_name: str


class VmSizeChoice(BaseModel):
    """A VM size teams may use, as the portal's form offers it."""

    name: str
    vcpus: int
    gpus: int
    family: str
    hourly: float | None = Field(None, description="One dedicated node-hour, from the policy's prices.")


class ProfileChoice(BaseModel):
    """A preset a request may name, and what it fills in."""

    name: str
    description: str
    compute: list[ComputeSpec]
    datastores: list[DatastoreSpec]
    container_registry: bool


class Choices(BaseModel):
    """What a request of the caller may choose, from policy (`GET /api/choices`): the portal's form is built from it."""

    teams: list[str] = Field(description="The teams the caller may ask for.")
    environments: list[str]
    regions: list[str]
    profiles: list[ProfileChoice]
    vm_sizes: list[VmSizeChoice]
    datastore_kinds: list[str]
    compute_kinds: list[str]
    tiers: list[str]
    required_tags: list[str]
    max_nodes_per_cluster: int
    max_min_nodes: int
    currency: str | None = None
    prices_as_of: str | None = None


class Validation(BaseModel):
    """What is wrong with a request as it stands (every problem, by field), checked as `POST /api/workspaces` would.

    Only the checks that need no cloud call: the model, the policy and the caller's right to ask for
    the team. `POST /api/plan` adds the confinement and pre-flight checks that read Azure.
    """

    valid: bool
    problems: list[FieldProblem] = Field(default_factory=list)
    estimate: CostEstimate | None = None
    approval: list[Triggered] = Field(default_factory=list)


class CallerView(BaseModel):
    """Who the service sees calling (`GET /api/me`), and the teams it acts for."""

    oid: str
    tid: str
    name: str
    username: str | None = None
    roles: list[str]
    teams: list[str] = Field(description="The policy's teams the caller acts for (through its Entra groups).")
    reads_every_team: bool


class DeadLetterItem(BaseModel):
    """One dead-lettered message, as operators see it (its sender's token is never shown)."""

    message_id: str
    sequence: int | None = Field(None, description="The bus's number for the letter: says which, when ids repeat.")
    queue: str
    kind: str = Field(description="step, onboarding or notification.")
    reason: str
    description: str
    delivery_count: int
    dead_lettered_at: datetime
    request_id: str | None = None
    step_id: str | None = None
    application_properties: dict[str, str]
    body: str


class DeadLetterList(BaseModel):
    """Every queue's dead letters."""

    items: list[DeadLetterItem]


class OperatorResult(BaseModel):
    """What an operator action did."""

    action: str
    outcome: str
    count: int | None = None
