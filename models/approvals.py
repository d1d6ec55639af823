"""Approval gates: which requests wait for a person, what they cost, and what a record keeps of the wait.

See docs/approvals.md.

A request that meets one of the policy's rules is stored, planned and pre-flighted, then waits in
`awaiting_approval` until enough eligible approvers say yes (it then runs), one says no (`denied`),
or the policy's timeout passes (`expired`). A revision that raises what a rule measures waits the
same way; its denial leaves the workspace as it was.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.lifecycle import PlanDiff
from models.plan import Plan
from models.request import Environment, WorkspaceRequest

RULE_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
MAX_REASON = 1000


class _PolicyModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----- prices -----------------------------------------------------------------------------------


class PriceTable(_PolicyModel):
    """What compute costs, shipped with the policy: the estimate never calls a price service at request time.

    Prices are per node-hour of the dedicated tier (pay-as-you-go, Linux), as the Azure pricing page or
    the Retail Prices API (https://learn.microsoft.com/rest/api/cost-management/retail-prices/azure-retail-prices)
    lists them on `as_of`; the low-priority tier costs `1 - low_priority_discount` of that.
    """

    currency: str = Field("USD", min_length=3, max_length=3)
    as_of: date = Field(description="When these prices were read; estimates say so.")
    source: str = Field(description="Where they were read (a URL, or the region and offer).")
    hours_per_month: float = Field(730.0, gt=0, le=744, description="Azure's pricing month: 730 hours.")
    vm_hourly: dict[str, float] = Field(description="Per VM size: the price of one node for one hour.")
    low_priority_discount: float = Field(
        0.8, ge=0, lt=1, description="The fraction the low-priority tier takes off the dedicated price."
    )
    registry_monthly: float = Field(0.0, ge=0, description="A container registry of the planner's SKU, per month.")

    @model_validator(mode="after")
    def _prices_not_negative(self) -> PriceTable:
        for size, price in self.vm_hourly.items():
            if price < 0:
                raise ValueError(f"vm_hourly.{size} is negative")
        return self

    def hourly(self, vm_size: str) -> float | None:
        """Return one dedicated node-hour of a VM size, ignoring case as Azure does; None when unpriced."""
        for key, value in self.vm_hourly.items():
            if key.lower() == vm_size.lower():
                return value
        return None


class CostLine(BaseModel):
    """The estimate of one compute: what a node costs, and a month of it idle and at max scale."""

    model_config = ConfigDict(frozen=True)

    compute: str
    vm_size: str
    tier: Literal["dedicated", "low_priority"]
    hourly: float = Field(description="One node for one hour, at its tier.")
    idle_nodes: int = Field(description="Nodes that run when no job does (min_nodes; 1 for an instance).")
    max_nodes: int
    monthly_idle: float
    monthly_max: float


class CostEstimate(BaseModel):
    """What a request's compute would cost in a month: idle, and at most (every node all month)."""

    model_config = ConfigDict(frozen=True)

    currency: str
    as_of: date
    source: str
    monthly_idle: float = Field(description="Clusters at min_nodes and instances running all month.")
    monthly_max: float = Field(description="Every cluster at max_nodes all month: the most it could cost.")
    lines: list[CostLine] = Field(default_factory=list)
    unpriced: list[str] = Field(default_factory=list, description="VM sizes with no price in the table.")
    notes: list[str] = Field(default_factory=list)

    def summary(self) -> str:
        """Say the estimate in one line."""
        return (
            f"{self.currency} {self.monthly_max:,.0f}/month at most ({self.monthly_idle:,.0f} idle), "
            f"prices of {self.as_of.isoformat()}"
        )


# ----- the policy --------------------------------------------------------------------------------


class ApproverChannels(_PolicyModel):
    """Where approvers are asked: a Slack channel and a Teams channel (the bot posts the approval card there)."""

    slack_channel: str | None = Field(None, pattern=r"^[CGD][A-Z0-9]{2,}$", description="A Slack channel id.")
    teams_conversation: str | None = Field(
        None, min_length=1, max_length=512, description="A Teams channel's conversation id (19:...@thread.tacv2)."
    )
    teams_service_url: str | None = Field(
        None, description="The Bot Framework service URL of that tenant's Teams (from an activity's serviceUrl)."
    )

    @model_validator(mode="after")
    def _teams_pair(self) -> ApproverChannels:
        if bool(self.teams_conversation) != bool(self.teams_service_url):
            raise ValueError("teams_conversation and teams_service_url go together")
        return self


class ApprovalRule(_PolicyModel):
    """One reason a request waits for approval: every condition it sets must hold (rules are alternatives)."""

    name: str = Field(pattern=RULE_NAME, description="Named in events, messages and GET /api/approvals.")
    description: str = Field("", max_length=500)
    environments: list[Environment] = Field(default_factory=list, description="Any of these environments.")
    gpu: bool = Field(False, description="True: a compute has a GPU.")
    vm_families: list[str] = Field(default_factory=list, description="A compute's VM size is of one of these families.")
    min_vcpus: int | None = Field(None, ge=1, description="The request's vCPUs at max scale reach this.")
    min_nodes: int | None = Field(None, ge=1, description="A cluster's max_nodes (or min_nodes) reaches this.")
    min_monthly_cost: float | None = Field(None, ge=0, description="The estimate's monthly maximum reaches this.")
    brings_resources: bool = Field(
        False, description="True: the request brings its own storage, vault, insights or registry."
    )
    approvers: Literal["team", "platform"] = Field(
        "team", description="team: the team's approvers or the platform's; platform: the platform's only."
    )
    approvals: int = Field(1, ge=1, le=5, description="How many different approvers must say yes.")

    @model_validator(mode="after")
    def _has_a_condition(self) -> ApprovalRule:
        if not (
            self.environments
            or self.gpu
            or self.vm_families
            or self.min_vcpus
            or self.min_nodes
            or self.min_monthly_cost is not None
            or self.brings_resources
        ):
            raise ValueError(f"approval rule '{self.name}' sets no condition; give at least one")
        return self


class ApprovalPolicy(_PolicyModel):
    """Which requests wait for approval, who approves them, where they are asked, and how long a request waits."""

    rules: list[ApprovalRule] = Field(default_factory=list)
    approvers: list[UUID] = Field(
        default_factory=list, description="Entra groups whose members approve for every team (with Workspaces.Approve)."
    )
    timeout_hours: float = Field(72.0, gt=0, le=24 * 90, description="A request waiting longer ends expired.")
    channels: ApproverChannels = Field(
        default_factory=ApproverChannels, description="Where the platform's approvers are asked."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> ApprovalPolicy:
        names = [r.name for r in self.rules]
        if len(names) != len(set(names)):
            raise ValueError(f"approval rule names repeat: {sorted(n for n in set(names) if names.count(n) > 1)}")
        return self


# ----- what a request keeps ----------------------------------------------------------------------


class Triggered(BaseModel):
    """A rule a request met, why, and who may approve for it (the groups, as policy said when it was asked)."""

    model_config = ConfigDict(frozen=True)

    rule: str
    description: str = ""
    reasons: list[str] = Field(description="What about the request met the rule, in plain words.")
    approvers: Literal["team", "platform"]
    approvals: int = Field(ge=1)
    groups: list[str] = Field(description="Object ids of the groups whose members may approve for this rule.")


class ApprovalDecision(BaseModel):
    """One approver's yes or no: who (object id), when, from which door, why, and which rules it counted for."""

    model_config = ConfigDict(frozen=True)

    by: str
    name: str | None = Field(None, description="Display only.")
    decision: Literal["approve", "deny"]
    reason: str | None = Field(None, max_length=MAX_REASON)
    at: datetime
    door: str
    rules: list[str] = Field(default_factory=list, description="The triggered rules this approver may approve for.")


class PendingRevision(BaseModel):
    """A revision waiting for approval: applied as it stands once approved; dropped on denial or expiry."""

    model_config = ConfigDict(frozen=True)

    number: int = Field(ge=2)
    request: WorkspaceRequest
    plan: Plan = Field(description="The run the revision would start.")
    base: Plan = Field(description="What exists now (the applied plan the revision changes).")
    changes: PlanDiff
    expires_at: datetime | None = None
    sets_expiry: bool = Field(
        False, description="The patch changed the expiry (else the request's stands at approval)."
    )
    vcpus: int = 0
    summary: str = ""
    resume: Literal["succeeded", "failed", "cancelled"] = Field(description="The request's status before it waited.")


Outcome = Literal["pending", "approved", "denied", "expired", "withdrawn"]


class ApprovalMessage(BaseModel):
    """An approval message posted to approvers (a Slack message, a Teams card), to update once decided."""

    model_config = ConfigDict(frozen=True)

    platform: Literal["slack", "teams"]
    channel: str
    message_id: str = Field(description="Slack: the message ts; Teams: the activity id.")
    service_url: str | None = None


class ApprovalState(BaseModel):
    """Where one request's approval stands: why it waits, for whom, until when, and each decision."""

    model_config = ConfigDict(frozen=True)

    round: int = Field(1, ge=1, description="One per wait: a request's create, then each revision that needs one.")
    operation: Literal["create", "update"]
    requested_by: str = Field(description="Who asked (object id): never an approver of this request.")
    requested_at: datetime
    due_at: datetime = Field(description="When the request ends expired if not decided.")
    rules: list[Triggered]
    estimate: CostEstimate | None = None
    decisions: list[ApprovalDecision] = Field(default_factory=list)
    outcome: Outcome = "pending"
    decided_at: datetime | None = None
    change: PendingRevision | None = Field(None, description="The revision waiting, for an update.")
    messages: list[ApprovalMessage] = Field(default_factory=list, description="What approvers were sent.")
    announced: bool = Field(False, description="The approvers' channels were told (or there were none).")
    announce_error: str | None = Field(
        None,
        description="Why the approvers' message could not be posted (it was dead-lettered); listed at /api/approvals.",
    )

    def approvers_of(self, rule: str) -> set[str]:
        """Return who approved for one rule."""
        return {d.by for d in self.decisions if d.decision == "approve" and rule in d.rules}

    def missing(self) -> list[tuple[Triggered, int]]:
        """Return each rule still short of approvals, with how many more it needs."""
        return [
            (t, t.approvals - len(self.approvers_of(t.rule)))
            for t in self.rules
            if len(self.approvers_of(t.rule)) < t.approvals
        ]

    @property
    def satisfied(self) -> bool:
        """Say whether every rule has its approvals."""
        return not self.missing()

    @property
    def denial(self) -> ApprovalDecision | None:
        """Return the decision that denied it, if one did."""
        return next((d for d in self.decisions if d.decision == "deny"), None)
