"""Drift: how a resource as Azure has it differs from what the service made. Pure comparisons, no I/O.

`cloud.inspection` reads each resource and hands what it read to these functions as small `Observed*`
records; each function returns the fields that differ (`FieldDrift`), in the words a person reads.
Values are compared as Azure compares them (names of sizes and SKUs case-insensitively, ids without
case), and a property Azure leaves out is read as its documented default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from models.lifecycle import DriftFinding
from models.plan import ComputeStepSpec, DatastoreStepSpec, KeyVaultSpec, RegistrySpec, Step, StorageSpec


@dataclass(frozen=True)
class FieldDrift:
    """One field whose value in Azure is not the one the service set."""

    field: str
    expected: str
    actual: str | None
    message: str


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(getattr(value, "value", value))  # SDK enums carry the wire value in .value


def differs(
    field: str, label: str, expected: object, actual: object, what: str, *, fold: bool = False
) -> list[FieldDrift]:
    """Return one drift when `actual` is not `expected` (case-insensitively with `fold`), else none."""
    want, have = _text(expected), _text(actual)
    same = (want or "").lower() == (have or "").lower() if fold else want == have
    if same or want is None:
        return []
    return [FieldDrift(field, want, have, f"{what}: {label} is {have or 'not set'}, the service set {want}")]


def same_id(a: str | None, b: str | None) -> bool:
    """Tell whether two ARM ids name the same resource (ARM ids are case-insensitive)."""
    return (a or "").lower().rstrip("/") == (b or "").lower().rstrip("/")


def tags_drift(expected: Mapping[str, str], actual: Mapping[str, str] | None, what: str) -> list[FieldDrift]:
    """Return the tags the service set that are missing or changed; tags others added are fine."""
    actual = actual or {}
    out = []
    for key, value in expected.items():
        if key not in actual:
            out.append(
                FieldDrift(f"tags.{key}", value, None, f"{what}: the tag '{key}' the service set ({value}) is missing")
            )
        elif actual[key] != value:
            out.append(
                FieldDrift(
                    f"tags.{key}",
                    value,
                    actual[key],
                    f"{what}: the tag '{key}' is '{actual[key]}', the service set '{value}'",
                )
            )
    return out


def children_drift(kind: str, expected: Iterable[str], present: Iterable[str], what: str) -> list[FieldDrift]:
    """Return the children (containers, shares) the service made that are gone."""
    have = {p.lower() for p in present}
    return [
        FieldDrift(f"{kind}:{name}", "exists", "missing", f"{what}: the {kind} '{name}' the service made is missing")
        for name in expected
        if name.lower() not in have
    ]


@dataclass(frozen=True)
class ObservedCompute:
    """A compute as Compute_Get shows it (azure-ai-ml's AmlCompute or ComputeInstance)."""

    type: str  # amlcompute | computeinstance
    size: str | None
    min_nodes: int | None = None
    max_nodes: int | None = None
    idle_seconds: int | None = None
    tier: str | None = None
    assigned_user: str | None = None
    idle_shutdown_minutes: int | None = None


def instance_idle_minutes(idle_seconds: int) -> int:
    """Return the idle shutdown of an instance, as the service sets it (at least 15 minutes: Azure ML's floor)."""
    return max(15, idle_seconds // 60)


def compute_drift(spec: ComputeStepSpec, seen: ObservedCompute, what: str) -> list[FieldDrift]:
    """Compare a compute with its spec: kind, VM size, and scale settings (cluster) or user and shutdown (instance)."""
    expected_type = "computeinstance" if spec.kind == "instance" else "amlcompute"
    if seen.type.lower() != expected_type:
        return differs("kind", "its kind", expected_type, seen.type, what, fold=True)
    out = differs("vm_size", "its VM size", spec.vm_size, seen.size, what, fold=True)
    if spec.kind == "instance":
        out += differs("assigned_user", "its user", spec.assigned_user, seen.assigned_user, what, fold=True)
        out += differs(
            "idle_shutdown_minutes",
            "its idle shutdown (minutes)",
            instance_idle_minutes(spec.idle_seconds),
            seen.idle_shutdown_minutes,
            what,
        )
        return out
    out += differs("min_nodes", "its minimum node count", spec.min_nodes, seen.min_nodes, what)
    out += differs("max_nodes", "its maximum node count", spec.max_nodes, seen.max_nodes, what)
    out += differs(
        "idle_seconds", "its idle time before scale-down (seconds)", spec.idle_seconds, seen.idle_seconds, what
    )
    out += differs("tier", "its tier", spec.tier, seen.tier, what, fold=True)
    return out


@dataclass(frozen=True)
class ObservedStorage:
    """A storage account as StorageAccounts_GetProperties shows it, and which children exist."""

    tags: Mapping[str, str] | None
    sku: str | None
    hierarchical_namespace: bool | None
    shared_key_access: bool | None
    containers: frozenset[str] = frozenset()
    shares: frozenset[str] = frozenset()


def storage_drift(spec: StorageSpec, seen: ObservedStorage, what: str) -> list[FieldDrift]:
    """Compare a storage account with its spec: tags, SKU, hierarchical namespace, shared keys, children.

    allowSharedKeyAccess left out means true ("The default value is null, which is equivalent to true",
    storage/.../Microsoft.Storage/stable/2026-09-01, StorageAccountPropertiesCreateParameters).
    """
    out = tags_drift(spec.tags, seen.tags, what)
    out += differs("sku", "its SKU", spec.sku, seen.sku, what, fold=True)
    out += differs(
        "hierarchical_namespace",
        "hierarchical namespace",
        spec.hierarchical_namespace,
        bool(seen.hierarchical_namespace),
        what,
    )
    shared = True if seen.shared_key_access is None else seen.shared_key_access
    out += differs("shared_key_access", "shared key access", spec.shared_key_access, shared, what)
    out += children_drift("container", spec.containers, seen.containers, what)
    out += children_drift("share", spec.shares, seen.shares, what)
    return out


@dataclass(frozen=True)
class ObservedVault:
    """A key vault as Vaults_Get shows it."""

    tags: Mapping[str, str] | None
    purge_protection: bool | None
    retention_days: int | None
    rbac_authorization: bool | None


def vault_drift(spec: KeyVaultSpec, seen: ObservedVault, what: str) -> list[FieldDrift]:
    """Compare a key vault with its spec: tags, purge protection, soft-delete retention, RBAC authorisation.

    Left out, enablePurgeProtection and enableRbacAuthorization are false and softDeleteRetentionInDays is 90
    (VaultProperties, keyvault/.../Microsoft.KeyVault/KeyVault, api-version 2026-05-15).
    """
    out = tags_drift(spec.tags, seen.tags, what)
    out += differs("purge_protection", "purge protection", spec.purge_protection, bool(seen.purge_protection), what)
    retention = 90 if seen.retention_days is None else seen.retention_days
    out += differs(
        "soft_delete_retention_days",
        "its soft-delete retention (days)",
        spec.soft_delete_retention_days,
        retention,
        what,
    )
    # The service always turns RBAC authorisation on (cloud.core_resources.reconcile_key_vault).
    out += differs("rbac_authorization", "RBAC authorisation", True, bool(seen.rbac_authorization), what)
    return out


@dataclass(frozen=True)
class ObservedRegistry:
    """A container registry as Registries_Get shows it."""

    tags: Mapping[str, str] | None
    sku: str | None
    admin_user: bool | None


def registry_drift(spec: RegistrySpec, seen: ObservedRegistry, what: str) -> list[FieldDrift]:
    """Compare a container registry with its spec: tags, SKU, and the admin user the service keeps off."""
    out = tags_drift(spec.tags, seen.tags, what)
    out += differs("sku", "its SKU", spec.sku, seen.sku, what, fold=True)
    out += differs("admin_user", "the admin user", False, bool(seen.admin_user), what)
    return out


@dataclass(frozen=True)
class ObservedWorkspace:
    """A workspace as Workspaces_Get shows it (azure-ai-ml's Workspace)."""

    tags: Mapping[str, str] | None
    storage_account: str | None
    key_vault: str | None
    application_insights: str | None
    container_registry: str | None


def workspace_drift(
    tags: Mapping[str, str], linked: Mapping[str, str | None], seen: ObservedWorkspace, what: str
) -> list[FieldDrift]:
    """Compare a workspace with its spec: tags, and the resources it is linked to (by id, case-insensitively)."""
    out = tags_drift(tags, seen.tags, what)
    for field, label, actual in (
        ("storage_account", "its storage account", seen.storage_account),
        ("key_vault", "its key vault", seen.key_vault),
        ("application_insights", "its Application Insights", seen.application_insights),
        ("container_registry", "its container registry", seen.container_registry),
    ):
        expected = linked.get(field)
        if expected and not same_id(expected, actual):
            out.append(
                FieldDrift(
                    field, expected, actual, f"{what}: {label} is {actual or 'not set'}, the service set {expected}"
                )
            )
    return out


@dataclass(frozen=True)
class ObservedDatastore:
    """A datastore as Datastores_Get shows it."""

    kind: str  # blob | file | adls_gen2
    account: str | None
    container: str | None
    credentials: str  # identity | account_key


DATASTORE_KINDS = {"azureblob": "blob", "azurefile": "file", "azuredatalakegen2": "adls_gen2"}


def datastore_kind(datastore_type: str) -> str:
    """Return the request's word for Azure ML's datastoreType (AzureBlob, AzureFile, AzureDataLakeGen2)."""
    return DATASTORE_KINDS.get(datastore_type.lower().replace("_", ""), datastore_type)


def expected_credentials(spec: DatastoreStepSpec) -> str:
    """Return the credentials a datastore gets: an account key only for blob and file when policy asks."""
    return "account_key" if spec.credentials == "account_key" and spec.kind.value in ("blob", "file") else "identity"


def datastore_drift(spec: DatastoreStepSpec, account: str, seen: ObservedDatastore, what: str) -> list[FieldDrift]:
    """Compare a datastore with its spec: kind, storage account, container or share, credentials."""
    out = differs("kind", "its kind", spec.kind.value, seen.kind, what)
    out += differs("account", "its storage account", account, seen.account, what, fold=True)
    out += differs("container", "its container", spec.container, seen.container, what)
    out += differs("credentials", "its credentials", expected_credentials(spec), seen.credentials, what)
    return out


def missing(step: Step, resource_id: str, what: str) -> DriftFinding:
    """Return the finding for a resource that is gone."""
    return DriftFinding(
        step_id=step.id,
        kind=step.kind.value,
        resource_id=resource_id,
        drift="missing",
        message=f"{what} is missing: it was deleted outside the service",
    )


def changed(step: Step, resource_id: str, drifts: Iterable[FieldDrift]) -> list[DriftFinding]:
    """Return one finding per field that differs."""
    return [
        DriftFinding(
            step_id=step.id,
            kind=step.kind.value,
            resource_id=resource_id,
            drift="changed",
            field=d.field,
            expected=d.expected,
            actual=d.actual,
            message=d.message,
        )
        for d in drifts
    ]
