"""A plan: the DAG of steps that provisions one workspace."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class StepKind(StrEnum):
    """What a step provisions; each kind has one reconcile function."""

    RESOURCE_GROUP = "resource-group"
    STORAGE = "storage"
    KEY_VAULT = "key-vault"
    INSIGHTS = "insights"
    REGISTRY = "registry"
    WORKSPACE = "workspace"
    COMPUTE = "compute"
    DATASTORE = "datastore"
    ACCESS = "access"


class Step(BaseModel):
    """One node of the plan: a resource to bring to its desired state."""

    id: str
    kind: StepKind
    depends_on: list[str] = Field(default_factory=list)
    resource_name: str
    resource_id: str = Field(description="The ARM id the step's resource has (or will have).")
    spec: dict[str, Any] = Field(default_factory=dict, description="Desired state, as the reconcile needs it.")


class ResourceNames(BaseModel):
    """Every name the plan derives, so a re-plan gives the same names."""

    subscription_id: str
    resource_group: str
    location: str
    workspace: str
    storage_account: str
    key_vault: str
    application_insights: str
    log_analytics: str
    container_registry: str | None = None


class Plan(BaseModel):
    """The full plan for one request."""

    names: ResourceNames
    steps: list[Step]
    tags: dict[str, str] = Field(default_factory=dict)

    def step(self, step_id: str) -> Step:
        """Return the step with this id."""
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def dependents(self, step_id: str) -> list[Step]:
        """Return the steps that depend directly on `step_id`."""
        return [s for s in self.steps if step_id in s.depends_on]

    def critical_path(self, durations: dict[StepKind, float]) -> float:
        """Return the longest chain of step durations: the lower bound of end-to-end time."""
        memo: dict[str, float] = {}

        def finish(s: Step) -> float:
            if s.id not in memo:
                start = max((finish(self.step(d)) for d in s.depends_on), default=0.0)
                memo[s.id] = start + durations.get(s.kind, 0.0)
            return memo[s.id]

        return max((finish(s) for s in self.steps), default=0.0)
