"""A plan: the DAG of steps that provisions one workspace."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from models.request import DatastoreKind


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


class StepAction(StrEnum):
    """What a run does with a step's resource: bring it to its spec, delete it, or leave it as it is."""

    APPLY = "apply"
    DELETE = "delete"
    KEEP = "keep"


class StepSpec(BaseModel):
    """A step's desired state, as its reconcile needs it: frozen, so a reconcile derives a new one, never edits."""

    # Stored plans written before a key was dropped still load; the keys read are all declared.
    model_config = ConfigDict(frozen=True, extra="ignore")

    step_kind: ClassVar[StepKind]


class ResourceGroupSpec(StepSpec):
    """The resource group: created only when policy lets the service create groups."""

    step_kind: ClassVar[StepKind] = StepKind.RESOURCE_GROUP
    location: str
    tags: dict[str, str]
    create: bool = True


class StorageSpec(StepSpec):
    """The storage account and the blob containers and file shares the datastores use."""

    step_kind: ClassVar[StepKind] = StepKind.STORAGE
    location: str
    tags: dict[str, str]
    existing: bool = False
    sku: str
    hierarchical_namespace: bool
    shared_key_access: bool = False
    containers: list[str]
    shares: list[str]


class KeyVaultSpec(StepSpec):
    """The key vault, with policy's soft-delete settings and what to do with a soft-deleted namesake."""

    step_kind: ClassVar[StepKind] = StepKind.KEY_VAULT
    location: str
    tags: dict[str, str]
    existing: bool = False
    tenant_id: str
    soft_delete_retention_days: int
    purge_protection: bool
    on_soft_deleted: Literal["recover", "purge", "rename", "fail"]
    purge_on_delete: bool = Field(False, description="Teardown purges the vault after deleting it (policy or ?purge).")


class InsightsSpec(StepSpec):
    """Application Insights and the Log Analytics workspace behind it."""

    step_kind: ClassVar[StepKind] = StepKind.INSIGHTS
    location: str
    tags: dict[str, str]
    existing: bool = False
    log_analytics: str
    log_analytics_id: str


class RegistrySpec(StepSpec):
    """The container registry."""

    step_kind: ClassVar[StepKind] = StepKind.REGISTRY
    location: str
    tags: dict[str, str]
    existing: bool = False
    sku: str


class WorkspaceSpec(StepSpec):
    """The Azure ML workspace and the ids of the resources it links."""

    step_kind: ClassVar[StepKind] = StepKind.WORKSPACE
    location: str
    tags: dict[str, str]
    display_name: str
    on_soft_deleted: Literal["purge", "fail"] | None = None
    storage_account_id: str
    key_vault_id: str
    application_insights_id: str
    container_registry_id: str | None = None
    system_datastores_auth_mode: Literal["identity"] | None = None
    purge_on_delete: bool = Field(False, description="Teardown deletes the workspace for good (forceToPurge).")


class ComputeStepSpec(StepSpec):
    """A compute cluster or instance: the request's compute, with where it goes."""

    step_kind: ClassVar[StepKind] = StepKind.COMPUTE
    workspace: str
    location: str
    tenant_id: str
    name: str
    kind: Literal["cluster", "instance"] = "cluster"
    vm_size: str
    min_nodes: int
    max_nodes: int
    tier: Literal["dedicated", "low_priority"]
    idle_seconds: int
    assigned_user: str | None = None


class DatastoreStepSpec(StepSpec):
    """A datastore: the request's datastore, with its workspace, account and credentials."""

    step_kind: ClassVar[StepKind] = StepKind.DATASTORE
    workspace: str
    storage_account: str
    credentials: Literal["identity", "account_key"] | None = None
    name: str
    kind: DatastoreKind
    container: str


class RoleGrant(BaseModel):
    """One role assignment an access step makes."""

    model_config = ConfigDict(frozen=True)

    role_definition: str = Field(description="The built-in role definition's id.")
    role: str = Field(description="The role's name, for people to read.")
    scope: str


class AccessSpec(StepSpec):
    """The role assignments of one principal: a person or group by id, or a managed identity from a step."""

    step_kind: ClassVar[StepKind] = StepKind.ACCESS
    principal_id: str | None = None
    principal_from: str | None = Field(None, description="The step whose output names the managed identity.")
    principal_type: str
    assignments: list[RoleGrant]

    @model_serializer(mode="wrap")
    def _one_principal(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A step names its principal one way: the stored JSON carries that key only, as it did before specs were typed.
        data: dict[str, Any] = handler(self)
        for key in ("principal_id", "principal_from"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


SpecT = TypeVar("SpecT", bound=StepSpec)


class Step(BaseModel):
    """One node of the plan: a resource to bring to its desired state."""

    id: str
    kind: StepKind
    depends_on: list[str] = Field(default_factory=list)
    resource_name: str
    resource_id: str = Field(description="The ARM id the step's resource has (or will have).")
    spec: SerializeAsAny[StepSpec] = Field(description="Desired state, as the reconcile needs it.")
    action: StepAction = Field(
        StepAction.APPLY, description="apply: create or update to the spec; delete: remove; keep: unchanged."
    )

    @model_validator(mode="after")
    def _spec_of_kind(self) -> Step:
        # Steps are read through Plan (AnyStep picks the model by kind); this catches a spec of another kind.
        if not isinstance(self.spec, SPEC_MODELS[self.kind]):
            raise ValueError(f"a {self.kind} step needs a {SPEC_MODELS[self.kind].__name__} spec")
        return self

    def spec_as(self, model: type[SpecT]) -> SpecT:
        """Return the spec as its kind's model (each reconcile reads its own kind's)."""
        if not isinstance(self.spec, model):
            raise TypeError(f"step {self.id} ({self.kind}) has a {type(self.spec).__name__}, not a {model.__name__}")
        return self.spec


class ResourceGroupStep(Step):
    """The resource-group step."""

    kind: Literal[StepKind.RESOURCE_GROUP] = StepKind.RESOURCE_GROUP
    spec: ResourceGroupSpec


class StorageStep(Step):
    """The storage step."""

    kind: Literal[StepKind.STORAGE] = StepKind.STORAGE
    spec: StorageSpec


class KeyVaultStep(Step):
    """The key-vault step."""

    kind: Literal[StepKind.KEY_VAULT] = StepKind.KEY_VAULT
    spec: KeyVaultSpec


class InsightsStep(Step):
    """The insights step."""

    kind: Literal[StepKind.INSIGHTS] = StepKind.INSIGHTS
    spec: InsightsSpec


class RegistryStep(Step):
    """The registry step."""

    kind: Literal[StepKind.REGISTRY] = StepKind.REGISTRY
    spec: RegistrySpec


class WorkspaceStep(Step):
    """The workspace step."""

    kind: Literal[StepKind.WORKSPACE] = StepKind.WORKSPACE
    spec: WorkspaceSpec


class ComputeStep(Step):
    """A compute step."""

    kind: Literal[StepKind.COMPUTE] = StepKind.COMPUTE
    spec: ComputeStepSpec


class DatastoreStep(Step):
    """A datastore step."""

    kind: Literal[StepKind.DATASTORE] = StepKind.DATASTORE
    spec: DatastoreStepSpec


class AccessStep(Step):
    """An access step."""

    kind: Literal[StepKind.ACCESS] = StepKind.ACCESS
    spec: AccessSpec


SPEC_MODELS: dict[StepKind, type[StepSpec]] = {
    m.step_kind: m
    for m in (
        ResourceGroupSpec,
        StorageSpec,
        KeyVaultSpec,
        InsightsSpec,
        RegistrySpec,
        WorkspaceSpec,
        ComputeStepSpec,
        DatastoreStepSpec,
        AccessSpec,
    )
}

# Keyed by the step's own `kind`, which the stored JSON already carries: a stored plan reads back with each
# step's spec as its kind's model, and the JSON has the same shape it had when specs were dicts.
AnyStep = Annotated[
    ResourceGroupStep
    | StorageStep
    | KeyVaultStep
    | InsightsStep
    | RegistryStep
    | WorkspaceStep
    | ComputeStep
    | DatastoreStep
    | AccessStep,
    Field(discriminator="kind"),
]


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
    steps: list[AnyStep]
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
