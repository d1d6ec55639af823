"""A workspace's life after its create (DESIGN section 10): revisions, teardown, drift, what a delete left.

The step engine runs every one of these as a plan; these models are what the runs report and what
the request record keeps of them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models.request import WorkspaceRequest


class Change(StrEnum):
    """What a revision does to one resource."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    UNCHANGED = "unchanged"


class FieldChange(BaseModel):
    """One field of a resource's spec that a revision changes."""

    model_config = ConfigDict(frozen=True)

    field: str
    before: str | None = None
    after: str | None = None


class ResourceChange(BaseModel):
    """What a revision does to one step's resource, and which fields of it change."""

    model_config = ConfigDict(frozen=True)

    step_id: str
    kind: str
    resource_name: str
    change: Change
    fields: list[FieldChange] = Field(default_factory=list)


class PlanDiff(BaseModel):
    """What applying a revision would do, by resource: the answer of `POST /api/workspaces/{id}/plan`."""

    model_config = ConfigDict(frozen=True)

    revision: int = Field(description="The revision this diff would make.")
    changes: list[ResourceChange]
    approval: list[str] = Field(
        default_factory=list,
        description="The approval rules the change would wait for, each with why (docs/approvals.md); empty: none.",
    )

    def of(self, change: Change) -> list[ResourceChange]:
        """Return the resources with this change."""
        return [c for c in self.changes if c.change == change]

    @property
    def empty(self) -> bool:
        """Say whether the revision changes nothing."""
        return all(c.change == Change.UNCHANGED for c in self.changes)

    def summary(self) -> str:
        """Say in one line how many resources are created, updated and deleted."""
        counts = {c: len(self.of(c)) for c in (Change.CREATE, Change.UPDATE, Change.DELETE)}
        return ", ".join(f"{n} to {c.value}" for c, n in counts.items() if n) or "no change"


class Revision(BaseModel):
    """One revision of a request: what was asked, by whom, when, and what became of it."""

    model_config = ConfigDict(frozen=True)

    number: int = Field(ge=1)
    request: WorkspaceRequest = Field(description="The resolved request of this revision.")
    by: str = Field(description="The Entra object id of who asked for it.")
    at: datetime
    run: int = Field(ge=1, description="The run that applied it.")
    summary: str = Field("", description="What it changed, in one line.")
    status: Literal[
        "applying",
        "applied",
        "failed",
        "cancelled",
        "superseded",
        "awaiting_approval",
        "denied",
        "expired",
        "withdrawn",
    ] = "applying"


class SoftDeleted(BaseModel):
    """A name teardown left held by soft-delete: nobody can create it again until it is purged or the time passes."""

    model_config = ConfigDict(frozen=True)

    step_id: str
    kind: str
    name: str
    resource_id: str
    until: datetime | None = Field(None, description="When Azure purges it (the retention's end), if it says.")
    purge: str = Field(description="What to do to free the name now.")


class Remaining(BaseModel):
    """Something teardown could not remove, or left on purpose, and what to do about it."""

    model_config = ConfigDict(frozen=True)

    step_id: str
    kind: str
    resource_id: str
    reason: str
    code: str | None = None


class TeardownReport(BaseModel):
    """What a teardown removed, what it left and why, and which names soft-delete still holds."""

    model_config = ConfigDict(frozen=True)

    purge: bool = Field(description="Whether the teardown purges what Azure soft-deletes.")
    deleted: list[str] = Field(default_factory=list, description="The resource ids teardown deleted.")
    kept: list[Remaining] = Field(default_factory=list, description="What was left on purpose (brought, shared).")
    remaining: list[Remaining] = Field(default_factory=list, description="What still exists because a delete failed.")
    soft_deleted: list[SoftDeleted] = Field(default_factory=list)


class DeleteResult(BaseModel):
    """What a delete step's reconcile reports (its outputs): gone, kept with a reason, or soft-deleted until when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deleted: bool = Field(description="True when this teardown deleted it; False when it was already gone or kept.")
    kept: str | None = Field(None, description="Why the resource was left in place (a group holding other things).")
    soft_deleted_until: datetime | None = Field(None, description="Until when Azure holds the name (soft-delete).")
    purged: bool = False


class DriftFinding(BaseModel):
    """One way a resource differs from what the service made: missing, or a field changed outside the service."""

    model_config = ConfigDict(frozen=True)

    step_id: str
    kind: str
    resource_id: str
    drift: Literal["missing", "changed"]
    field: str | None = None
    expected: str | None = None
    actual: str | None = None
    message: str = Field(description="What changed, in plain words.")


class DriftReport(BaseModel):
    """What the last drift check of a request found, and what was done about it."""

    model_config = ConfigDict(frozen=True)

    checked_at: datetime
    findings: list[DriftFinding] = Field(default_factory=list)
    repaired_run: int | None = Field(None, description="The run that repaired it, when policy says to repair.")
    error: str | None = Field(None, description="Why the check could not finish.")
    requested: bool = Field(False, description="Someone asked for a check: the drift timer does it at its next tick.")
