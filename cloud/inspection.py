"""Inspections, one per step kind: read a step's resource (GETs only) and say how it drifted from its spec.

Every read goes through `cloud.common.get_or_none`, so it is counted and throttled per subscription
like a reconcile's, and a failure is raised translated (`TransientError` when it may clear). What
differs is decided by the pure functions of `cloud.drift`. A resource the team brought is only
checked for being there: its settings are the team's.

Reads, at the api-versions the SDKs send: Compute_Get (machineLearningServices.json 2023-08-01-preview),
Datastores_Get (mfe.json 2024-10-01-preview), Workspaces_Get (workspaceRP.json 2024-10-01-preview),
RoleAssignments_Get / GetById (authorization-RoleAssignmentsCalls.json 2022-04-01), Vaults_Get (Vault.tsp
2026-05-15), StorageAccounts_GetProperties, BlobContainers_Get, FileShares_Get (storage 2026-09-01),
Components_Get (components_API.json 2020-02-02), Workspaces_Get (Log Analytics 2025-07-01),
Registries_Get (2025-11-01), ResourceGroups_Get (resources.json 2025-04-01).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from cloud import drift
from cloud.access import assignment_name
from cloud.clients import Clients
from cloud.common import get_or_none
from cloud.teardown import principal_of
from engine.ports import StepContext
from models.lifecycle import DriftFinding
from models.plan import (
    AccessSpec,
    ComputeStepSpec,
    DatastoreStepSpec,
    InsightsSpec,
    KeyVaultSpec,
    RegistrySpec,
    ResourceGroupSpec,
    Step,
    StorageSpec,
    WorkspaceSpec,
)
from models.request import ARM_ID


def _parts(resource_id: str) -> tuple[str, str, str]:
    m = ARM_ID.match(resource_id)
    if not m:
        raise ValueError(f"not an ARM id: {resource_id}")
    return m["sub"], m["rg"], m["name"]


def _own(step: Step, ctx: StepContext) -> dict[str, Any]:
    return ctx.dependency_outputs.get(step.id, {})


def _state(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def inspect_resource_group(step: Step, ctx: StepContext, clients: Clients) -> list[DriftFinding]:
    """Check the resource group is there, and, when the service made it, keeps the service's tags."""
    spec, n = step.spec_as(ResourceGroupSpec), ctx.names
    what = f"resource group '{n.resource_group}'"
    ops = clients.resources(n.subscription_id).resource_groups
    group = get_or_none(f"reading {what}", lambda: ops.get(n.resource_group))
    if group is None:
        return [drift.missing(step, step.resource_id, what)]
    if not spec.create:
        return []
    return drift.changed(step, step.resource_id, drift.tags_drift(spec.tags, group.tags, what))


def inspect_storage(step: Step, ctx: StepContext, clients: Clients) -> list[DriftFinding]:
    """Check the storage account: tags, SKU, hierarchical namespace, shared keys, its containers and shares."""
    spec = step.spec_as(StorageSpec)
    sub, rg, name = _parts(step.resource_id)
    ops = clients.storage(sub)
    what = f"storage account '{name}'"
    account = get_or_none(f"reading {what}", lambda: ops.storage_accounts.get_properties(rg, name))
    if account is None:
        return [drift.missing(step, step.resource_id, what)]
    if spec.existing:
        return []
    containers = frozenset(
        c
        for c in spec.containers
        if get_or_none(f"reading container '{c}' in {what}", partial(ops.blob_containers.get, rg, name, c))
    )
    shares = frozenset(
        s
        for s in spec.shares
        if get_or_none(f"reading file share '{s}' in {what}", partial(ops.file_shares.get, rg, name, s))
    )
    seen = drift.ObservedStorage(
        tags=account.tags,
        sku=_state(getattr(account.sku, "name", None)),
        hierarchical_namespace=account.is_hns_enabled,
        shared_key_access=account.allow_shared_key_access,
        containers=containers,
        shares=shares,
    )
    return drift.changed(step, step.resource_id, drift.storage_drift(spec, seen, what))


def inspect_key_vault(step: Step, ctx: StepContext, clients: Clients) -> list[DriftFinding]:
    """Check the key vault (the one the step reported, if it was renamed): tags, purge protection, retention, RBAC."""
    spec = step.spec_as(KeyVaultSpec)
    reported = str(_own(step, ctx).get("id") or "")
    vault_id = reported if ARM_ID.match(reported) else step.resource_id
    sub, rg, name = _parts(vault_id)
    what = f"key vault '{name}'"
    vault = get_or_none(f"reading {what}", lambda: clients.key_vault(sub).vaults.get(rg, name))
    if vault is None:
        return [drift.missing(step, vault_id, what)]
    if spec.existing:
        return []
    props = vault.properties
    seen = drift.ObservedVault(
        tags=vault.tags,
        purge_protection=props.enable_purge_protection,
        retention_days=props.soft_delete_retention_in_days,
        rbac_authorization=props.enable_rbac_authorization,
    )
    # The service's own marker of what it did with a soft-deleted namesake is not part of the spec's tags.
    return drift.changed(step, vault_id, drift.vault_drift(spec, seen, what))


def inspect_insights(step: Step, ctx: StepContext, clients: Clients) -> list[DriftFinding]:
    """Check Application Insights and the Log Analytics workspace behind it, and their tags."""
    spec = step.spec_as(InsightsSpec)
    sub, rg, name = _parts(step.resource_id)
    what = f"Application Insights '{name}'"
    component = get_or_none(f"reading {what}", lambda: clients.insights(sub).components.get(rg, name))
    if spec.existing:
        return [] if component is not None else [drift.missing(step, step.resource_id, what)]
    out = (
        [drift.missing(step, step.resource_id, what)]
        if component is None
        else drift.changed(step, step.resource_id, drift.tags_drift(spec.tags, component.tags, what))
    )
    la_sub, la_rg, la_name = _parts(spec.log_analytics_id)
    la_what = f"Log Analytics workspace '{la_name}'"
    la = get_or_none(f"reading {la_what}", lambda: clients.log_analytics(la_sub).workspaces.get(la_rg, la_name))
    if la is None:
        return [*out, drift.missing(step, spec.log_analytics_id, la_what)]
    return out + drift.changed(step, spec.log_analytics_id, drift.tags_drift(spec.tags, la.tags, la_what))


def inspect_registry(step: Step, ctx: StepContext, clients: Clients) -> list[DriftFinding]:
    """Check the container registry: tags, SKU, admin user off."""
    spec = step.spec_as(RegistrySpec)
    sub, rg, name = _parts(step.resource_id)
    what = f"container registry '{name}'"
    registry = get_or_none(f"reading {what}", lambda: clients.registry(sub).registries.get(rg, name))
    if registry is None:
        return [drift.missing(step, step.resource_id, what)]
    if spec.existing:
        return []
    seen = drift.ObservedRegistry(
        tags=registry.tags, sku=_state(getattr(registry.sku, "name", None)), admin_user=registry.admin_user_enabled
    )
    return drift.changed(step, step.resource_id, drift.registry_drift(spec, seen, what))


def inspect_workspace(step: Step, ctx: StepContext, clients: Clients) -> list[DriftFinding]:
    """Check the workspace: there, with the service's tags and linked to the plan's resources."""
    n, spec = ctx.names, step.spec_as(WorkspaceSpec)
    what = f"workspace '{step.resource_name}'"
    ml = clients.ml(n.subscription_id, n.resource_group)
    workspace = get_or_none(f"reading {what}", lambda: ml.workspaces.get(step.resource_name))
    if workspace is None:
        return [drift.missing(step, step.resource_id, what)]
    # What the prerequisites reported wins over the plan, as in the reconcile (a key vault may have been renamed).
    planned = {
        "storage_account": ("storage", spec.storage_account_id),
        "key_vault": ("key-vault", spec.key_vault_id),
        "application_insights": ("insights", spec.application_insights_id),
        "container_registry": ("registry", spec.container_registry_id),
    }
    linked = {
        f: ctx.dependency_outputs.get(sid, {}).get("id") or planned_id for f, (sid, planned_id) in planned.items()
    }
    seen = drift.ObservedWorkspace(
        tags=workspace.tags,
        storage_account=workspace.storage_account,
        key_vault=workspace.key_vault,
        application_insights=workspace.application_insights,
        container_registry=workspace.container_registry,
    )
    return drift.changed(step, step.resource_id, drift.workspace_drift(spec.tags, linked, seen, what))


def inspect_compute(step: Step, ctx: StepContext, clients: Clients) -> list[DriftFinding]:
    """Check a compute: VM size, and its scale settings (cluster) or its user and idle shutdown (instance)."""
    n, spec = ctx.names, step.spec_as(ComputeStepSpec)
    ml = clients.ml(n.subscription_id, n.resource_group, spec.workspace)
    what = f"compute {'instance' if spec.kind == 'instance' else 'cluster'} '{step.resource_name}'"
    current = get_or_none(f"reading {what}", lambda: ml.compute.get(step.resource_name))
    if current is None:
        return [drift.missing(step, step.resource_id, what)]
    idle = getattr(current, "idle_time_before_scale_down", None)
    user = getattr(getattr(current, "create_on_behalf_of", None), "user_object_id", None)
    seen = drift.ObservedCompute(
        type=str(getattr(current, "type", "") or ""),
        size=getattr(current, "size", None),
        min_nodes=getattr(current, "min_instances", None),
        max_nodes=getattr(current, "max_instances", None),
        idle_seconds=int(idle) if idle is not None else None,
        tier=getattr(current, "tier", None),
        assigned_user=user,
        idle_shutdown_minutes=getattr(current, "idle_time_before_shutdown_minutes", None),
    )
    return drift.changed(step, step.resource_id, drift.compute_drift(spec, seen, what))


def inspect_datastore(step: Step, ctx: StepContext, clients: Clients) -> list[DriftFinding]:
    """Check a datastore: there, pointing at the plan's account and container, with the plan's credentials."""
    n, spec = ctx.names, step.spec_as(DatastoreStepSpec)
    ml = clients.ml(n.subscription_id, n.resource_group, spec.workspace)
    what = f"datastore '{step.resource_name}'"
    current = get_or_none(f"reading {what}", lambda: ml.datastores.get(step.resource_name))
    if current is None:
        return [drift.missing(step, step.resource_id, what)]
    account = ctx.dependency_outputs.get("storage", {}).get("name") or spec.storage_account
    target = (
        getattr(current, "container_name", None)
        or getattr(current, "file_share_name", None)
        or getattr(current, "filesystem", None)
    )
    credentials = type(getattr(current, "credentials", None)).__name__
    seen = drift.ObservedDatastore(
        kind=drift.datastore_kind(str(_state(getattr(current, "type", "")) or "")),
        account=getattr(current, "account_name", None),
        container=target,
        credentials="account_key" if credentials == "AccountKeyConfiguration" else "identity",
    )
    return drift.changed(step, step.resource_id, drift.datastore_drift(spec, str(account), seen, what))


def inspect_access(step: Step, ctx: StepContext, clients: Clients) -> list[DriftFinding]:
    """Check each role assignment the step made is still there (the one it reported, else its derived name)."""
    spec = step.spec_as(AccessSpec)
    principal = principal_of(step, ctx, clients)
    if principal is None:
        return []  # the identity's resource is gone: its own step reports it missing
    reported = {
        (str(a.get("role")), str(a.get("scope", "")).lower()): a.get("id")
        for a in _own(step, ctx).get("assignments") or []
        if isinstance(a, dict)
    }
    ops = clients.authorization(ctx.names.subscription_id).role_assignments
    out = []
    for grant in spec.assignments:
        derived = (
            f"{grant.scope.rstrip('/')}/providers/Microsoft.Authorization/roleAssignments/"
            f"{assignment_name(grant.scope, grant.role_definition, principal)}"
        )
        assignment_id = str(reported.get((grant.role, grant.scope.lower())) or derived)
        what = f"role assignment '{grant.role}' for {principal} on {grant.scope}"
        if get_or_none(f"reading {what}", partial(ops.get_by_id, assignment_id)) is None:
            out.append(
                DriftFinding(
                    step_id=step.id,
                    kind=step.kind.value,
                    resource_id=assignment_id,
                    drift="missing",
                    field=f"role:{grant.role}",
                    expected=grant.role,
                    message=f"the {what} is missing: it was removed outside the service",
                )
            )
    return out
