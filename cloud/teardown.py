"""Deletes, one per step kind: bring a step's resource towards gone, in the reverse order of its creation.

Each delete reads the resource first, starts the delete only when it is still there, reads once more,
and returns at once: `Wait` while Azure deletes (the next attempt reads again), `Done` with a
`models.lifecycle.DeleteResult` once it is gone, soft-deleted or kept on purpose. Nothing is kept
between attempts, so a delete is safe to run twice, concurrently, or after a crash: a resource
already gone is `Done(deleted=False)`.

Whether this teardown deleted a resource it finds gone is read from the attempt: gone on a step's
first attempt is gone before the teardown came; gone on a later one is the delete an earlier
attempt started (a Wait or a Retry moves a step to its next attempt, `engine.transitions`). A first
attempt that was claimed before and never recorded its outcome (`StepContext.resumed`: its worker
died, or its lease ran out, after the delete was sent) counts as a later one: the workspace it
soft-deleted holds its name, and the record must say so.

Azure's delete operations called here, at the api-versions the SDKs send (each cited below):
- Compute_Delete, machinelearningservices/.../preview/2023-08-01-preview/machineLearningServices.json
- Datastores_Delete, machinelearningservices/.../preview/2024-10-01-preview/mfe.json (examples/Datastore/delete.json)
- Workspaces_Delete, machinelearningservices/.../preview/2024-10-01-preview/workspaceRP.json
- RoleAssignments_Delete, authorization/.../Microsoft.Authorization/stable/2022-04-01/authorization-RoleAssignmentsCalls.json
- Vaults_Delete, DeletedVaults_GetDeleted, DeletedVaults_PurgeDeleted, keyvault/.../Microsoft.KeyVault/KeyVault/
  Vault.tsp and DeletedVault.tsp (api-version 2026-05-15)
- StorageAccounts_Delete, storage/.../Microsoft.Storage/stable/2026-09-01 (examples/StorageAccountDelete.json)
- Components_Delete, applicationinsights/.../Microsoft.Insights/stable/2020-02-02/components_API.json
- Workspaces_Delete (Log Analytics), operationalinsights/.../OperationalInsights/stable/2025-07-01
  (examples/WorkspacesDelete.json)
- Registries_Delete, containerregistry/.../Microsoft.ContainerRegistry/Registry (examples/2025-11-01/RegistryDelete.json)
- ResourceGroups_Delete, Resources_ListByResourceGroup, resources/.../Microsoft.Resources/stable/2025-04-01/resources.json
(all paths under specification/ in Azure/azure-rest-api-specs).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from cloud.access import assignment_name
from cloud.clients import Clients
from cloud.common import Timing, get_or_none, state_of
from cloud.ml import purge_workspace
from engine.ports import StepContext
from models.errors import PermanentError, VendingError
from models.lifecycle import DeleteResult
from models.outcomes import Done, Outcome, Wait
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

BROUGHT = "brought by the team"

# Azure ML keeps a soft-deleted workspace 14 days, then purges it; its name is held until then (Microsoft
# Learn, "Workspace soft deletion", https://learn.microsoft.com/azure/machine-learning/concept-soft-delete:
# "The default retention period for deleted workspaces is 14 days").
WORKSPACE_SOFT_DELETE_DAYS = 14

# The api-version of the generic reads (Workspaces_Get, Compute_Get) done through azure-mgmt-resource.
ML_API_VERSION = "2024-04-01"
# ManagementLocks_ListByScope, resources/.../Microsoft.Authorization/locks/stable/2020-05-01/locks.json.
LOCKS_API_VERSION = "2020-05-01"


class LockedError(PermanentError):
    """A management lock forbids a delete; the message names the lock and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="ScopeLocked")


def done(result: DeleteResult) -> Done:
    """Return the Done outcome of a delete: its DeleteResult as JSON."""
    return Done(result.model_dump(mode="json"))


def _acted(ctx: StepContext) -> bool:
    """Tell whether an earlier attempt of this step may have started the delete (see the module's docstring)."""
    return ctx.attempt > 1 or ctx.resumed


def _parts(resource_id: str) -> tuple[str, str, str]:
    m = ARM_ID.match(resource_id)
    if not m:
        raise ValueError(f"not an ARM id: {resource_id}")
    return m["sub"], m["rg"], m["name"]


def _own_id(step: Step, ctx: StepContext) -> str:
    """Return the id the step's own record reports (a key vault may have been renamed), else the planned one."""
    reported = ctx.dependency_outputs.get(step.id, {}).get("id")
    return str(reported) if reported and ARM_ID.match(str(reported)) else step.resource_id


# ----- management locks -----------------------------------------------------------------------------------

_LOCKED = re.compile(r"following scope\(s\) are locked:(?P<scopes>.*)", re.IGNORECASE | re.DOTALL)


def locked_scopes(message: str) -> list[str]:
    """Return the scopes ARM's ScopeLocked message names as locked (where the locks are), in its order.

    ARM says: "The scope '<target>' cannot perform delete operation because following scope(s) are locked:
    '<scope>'. Please remove the lock and try again." (Microsoft Learn, "Lock your resources to protect your
    infrastructure"; the same words in azure-cli#20232 and terraform-provider-azurerm#17478).
    """
    m = _LOCKED.search(message)
    if not m:
        return []
    found = re.findall(r"(/subscriptions/[^',\s]+)", m["scopes"])
    return list(dict.fromkeys(s.rstrip("/.") for s in found))


@dataclass(frozen=True)
class Lock:
    """A management lock, as ManagementLocks_ListByScope lists it."""

    name: str
    level: str
    id: str


def lock_message(what: str, scopes: list[str], locks: list[Lock], request_id: str, azure_said: str) -> str:
    """Say which lock blocks a delete and what to do, in plain words."""
    retry = f"then retry the teardown: POST /api/workspaces/{request_id}/retry."
    if locks:
        named = "; ".join(f"the {lk.level} lock '{lk.name}' ({lk.id})" for lk in locks)
        where = f" on {', '.join(scopes)}" if scopes else ""
        return (
            f"{what} cannot be deleted: {named}{where} forbids it. Remove the lock (Azure portal: Locks on that "
            f"scope, or az lock delete --ids <lock id>), {retry}"
        )
    if scopes:
        return (
            f"{what} cannot be deleted: a CanNotDelete (or ReadOnly) management lock on {', '.join(scopes)} forbids "
            f"it. Remove the lock on that scope (Azure portal: Locks; or az lock list, az lock delete), {retry}"
        )
    return (
        f"{what} cannot be deleted: a management lock forbids it ({azure_said}). Remove the CanNotDelete lock "
        f"(Azure portal: Locks; or az lock list, az lock delete), {retry}"
    )


def _locks_at(scope: str, clients: Clients, subscription: str) -> list[Lock]:
    """List the delete-blocking locks set at `scope` (best effort: nothing when they cannot be read).

    ManagementLocks_ListByScope (GET {scope}/providers/Microsoft.Authorization/locks), resources/resource-manager/
    Microsoft.Authorization/locks/stable/2020-05-01/locks.json: the value holds each lock's id, name and
    properties.level (CanNotDelete or ReadOnly; both forbid a delete).
    """
    from azure.core.rest import HttpRequest

    arm = clients.resources(subscription)
    url = f"{clients.endpoint.arm_url.rstrip('/')}{scope}/providers/Microsoft.Authorization/locks"
    request = HttpRequest("GET", url, params={"api-version": LOCKS_API_VERSION})
    try:
        response = get_or_none(f"listing the locks on {scope}", lambda: arm.send_request(request))
        body = response.json() if response is not None and response.status_code == 200 and response.content else {}
    except (VendingError, ValueError):
        return []
    prefix = scope.lower().rstrip("/") + "/providers/microsoft.authorization/locks/"
    found = []
    for item in body.get("value") or [] if isinstance(body, dict) else []:
        if not isinstance(item, dict):
            continue
        lock_id = str(item.get("id") or "")
        level = str((item.get("properties") or {}).get("level") or "")
        if lock_id.lower().startswith(prefix) and level.lower() in ("cannotdelete", "readonly"):
            found.append(Lock(str(item.get("name") or lock_id.rsplit("/", 1)[-1]), level, lock_id))
    return found


def lock_failure(what: str, error: VendingError, ctx: StepContext, clients: Clients) -> LockedError:
    """Turn ARM's ScopeLocked into an error naming the lock and what to do."""
    azure_said = str(error)
    scopes = locked_scopes(azure_said)
    locks = [lk for scope in scopes for lk in _locks_at(scope, clients, ctx.names.subscription_id)]
    return LockedError(lock_message(what, scopes, locks, ctx.request_id, azure_said))


def _removed(what: str, fn: Callable[[], Any], ctx: StepContext, clients: Clients) -> Any:
    """Send a delete; return its answer (None when Azure says it is not there); a lock becomes a `LockedError`.

    Transient errors are raised as translated by `cloud.common` (the engine retries them).
    """
    try:
        return get_or_none(what, fn)
    except PermanentError as exc:
        if exc.code.lower() == "scopelocked":
            raise lock_failure(what, exc, ctx, clients) from exc
        raise


def _deleting(resource: Any) -> bool:
    return state_of(resource).lower() == "deleting"


def _kept_brought() -> Done:
    # The engine does not send delete steps for brought resources; this is the defence in depth.
    return done(DeleteResult(deleted=False, kept=BROUGHT))


def _gone_after(what: str, read: Callable[[], Any], timing: Timing) -> Wait | None:
    """Read once more after starting a delete: None when it is gone, Wait while Azure still deletes it."""
    if get_or_none(f"reading {what}", read) is None:
        return None
    return Wait(timing.poll_s, f"{what} is being deleted")


def _delete_simple(
    what: str,
    read: Callable[[], Any],
    delete: Callable[[], Any],
    ctx: StepContext,
    clients: Clients,
    timing: Timing,
) -> Outcome:
    """Delete a resource whose delete may be long-running: Wait while it is Deleting, Done once it is gone."""
    current = get_or_none(f"reading {what}", read)
    if current is None:
        return done(DeleteResult(deleted=_acted(ctx)))
    if _deleting(current):
        return Wait(timing.poll_s, f"{what} is being deleted")
    _removed(f"deleting {what}", delete, ctx, clients)
    if waiting := _gone_after(what, read, timing):
        return waiting
    return done(DeleteResult(deleted=True))


# ----- Azure ML: compute, datastores, workspace -------------------------------------------------------------


def delete_compute(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Delete a compute cluster or instance and the VMs under it; Wait while Azure ML deletes it.

    Compute_Delete is long-running (200, 202 with Azure-AsyncOperation, 204 "the target compute does not
    exist") and takes underlyingResourceAction=Delete, which azure-ai-ml's `begin_delete` sends by default
    (machinelearningservices/.../preview/2023-08-01-preview/machineLearningServices.json). Its poller finishes
    on its own daemon thread; nothing waits on it: the next attempt reads the compute again.
    """
    n, spec = ctx.names, step.spec_as(ComputeStepSpec)
    ml = clients.ml(n.subscription_id, n.resource_group, spec.workspace)
    kind = "compute instance" if spec.kind == "instance" else "compute cluster"
    return _delete_simple(
        f"{kind} '{step.resource_name}'",
        lambda: ml.compute.get(step.resource_name),
        lambda: ml.compute.begin_delete(step.resource_name),
        ctx,
        clients,
        timing,
    )


def delete_datastore(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Delete a datastore: the workspace's link to a container or share, never the data in it.

    Datastores_Delete answers 200 or 204 (machinelearningservices/.../preview/2024-10-01-preview/mfe.json,
    examples/Datastore/delete.json); the blob container or file share stays, with its data, in the storage account.
    """
    n, spec = ctx.names, step.spec_as(DatastoreStepSpec)
    ml = clients.ml(n.subscription_id, n.resource_group, spec.workspace)
    what = f"datastore '{step.resource_name}'"
    if get_or_none(f"reading {what}", lambda: ml.datastores.get(step.resource_name)) is None:
        return done(DeleteResult(deleted=_acted(ctx)))
    _removed(f"deleting {what}", lambda: ml.datastores.delete(step.resource_name), ctx, clients)
    return done(DeleteResult(deleted=True))


def _read_workspace(step: Step, ctx: StepContext, clients: Clients, what: str) -> Any:
    """Read the workspace as ARM has it, with its provisioningState (azure-ai-ml's Workspace does not carry it).

    Workspaces_Get, machinelearningservices/.../stable/2024-04-01/workspaceRP.json.
    """
    ops = clients.resources(ctx.names.subscription_id).resources
    return get_or_none(f"reading {what}", lambda: ops.get_by_id(step.resource_id, api_version=ML_API_VERSION))


def delete_workspace(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Delete the workspace alone (its storage, key vault, insights and registry are steps of their own).

    Without `purge_on_delete` Azure ML soft-deletes it and holds its name 14 days (WORKSPACE_SOFT_DELETE_DAYS);
    with it the delete is permanent (forceToPurge=true, azure-ai-ml's `permanently_delete`), and a workspace an
    earlier teardown soft-deleted is purged too. Workspaces_Delete is long-running (200, 202 with Location and
    Retry-After, 204; final-state-via location), machinelearningservices/.../preview/2024-10-01-preview/
    workspaceRP.json, the api-version azure-ai-ml sends.
    """
    n, spec = ctx.names, step.spec_as(WorkspaceSpec)
    what = f"workspace '{step.resource_name}'"
    current = _read_workspace(step, ctx, clients, what)
    issued = False
    if current is not None:
        if _deleting(current):
            return Wait(timing.poll_s, f"{what} is being deleted")
        ml = clients.ml(n.subscription_id, n.resource_group)
        _removed(
            f"deleting {what}",
            # delete_dependent_resources=False: the teardown deletes the linked resources as steps of their own,
            # and never the ones the team brought.
            lambda: ml.workspaces.begin_delete(
                step.resource_name, delete_dependent_resources=False, permanently_delete=spec.purge_on_delete
            ),
            ctx,
            clients,
        )
        if _read_workspace(step, ctx, clients, what) is not None:
            return Wait(timing.poll_s, f"{what} is being deleted")
        issued = True
    acted = issued or _acted(ctx)
    if spec.purge_on_delete:
        # Also purges what an earlier teardown only soft-deleted; answers 204 when nothing is held.
        try:
            purging = purge_workspace(step, ctx, clients, timing)
        except PermanentError as exc:
            if exc.code.lower() == "scopelocked":
                raise lock_failure(f"purging {what}", exc, ctx, clients) from exc
            raise
        if isinstance(purging, Wait):
            return purging
        return done(DeleteResult(deleted=acted or purging, purged=acted or purging))
    until = datetime.now(UTC) + timedelta(days=WORKSPACE_SOFT_DELETE_DAYS) if acted else None
    return done(DeleteResult(deleted=acted, soft_deleted_until=until))


# ----- access -----------------------------------------------------------------------------------------------


def principal_of(step: Step, ctx: StepContext, clients: Clients) -> str | None:
    """Return the principal an access step granted roles to, or None when nobody can tell any more.

    A person or group is in the spec; a managed identity is in the step's own outputs, else in its
    prerequisite's, else on the resource that has it (the workspace or compute the step's id names).
    """
    spec = step.spec_as(AccessSpec)
    if spec.principal_id:
        return spec.principal_id
    for source in (step.id, spec.principal_from or ""):
        principal = ctx.dependency_outputs.get(source, {}).get("principal_id")
        if principal:
            return str(principal)
    ops = clients.resources(ctx.names.subscription_id).resources
    found = get_or_none(
        f"reading the identity of {step.resource_id}",
        lambda: ops.get_by_id(step.resource_id, api_version=ML_API_VERSION),
    )
    identity = getattr(found, "identity", None) if found is not None else None
    principal = getattr(identity, "principal_id", None) if identity is not None else None
    return str(principal) if principal else None


def delete_access(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Delete the role assignments the step made (their names are derived, `cloud.access.assignment_name`).

    RoleAssignments_Get, then RoleAssignments_Delete, which answers 200 or 204 when there was none
    (authorization/.../stable/2022-04-01/authorization-RoleAssignmentsCalls.json): safe to send again. Each is
    read first, so that what this teardown deleted is known whether or not the 200 carries the assignment.
    An assignment someone made by hand under another name is not the step's and stays.
    """
    spec = step.spec_as(AccessSpec)
    principal = principal_of(step, ctx, clients)
    if principal is None:
        # No identity is known any more (its step never reported one and its resource is gone): there is no
        # assignment of it this step can find.
        return done(DeleteResult(deleted=False))
    ops = clients.authorization(ctx.names.subscription_id).role_assignments
    deleted = False
    for grant in spec.assignments:
        name = assignment_name(grant.scope, grant.role_definition, principal)
        what = f"role assignment '{grant.role}' for {principal} on {grant.scope}"
        if get_or_none(f"reading {what}", partial(ops.get, grant.scope, name)) is None:
            continue
        _removed(f"deleting {what}", partial(ops.delete, grant.scope, name), ctx, clients)
        deleted = True
    return done(DeleteResult(deleted=deleted))


# ----- the dependent resources ------------------------------------------------------------------------------


def delete_storage(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Delete the storage account the service made (never a brought one).

    StorageAccounts_Delete is synchronous, 200 or 204 (storage/.../stable/2026-09-01, examples/StorageAccountDelete.json).
    """
    if step.spec_as(StorageSpec).existing:
        return _kept_brought()
    sub, rg, name = _parts(step.resource_id)
    ops = clients.storage(sub).storage_accounts
    what = f"storage account '{name}'"
    if get_or_none(f"reading {what}", lambda: ops.get_properties(rg, name)) is None:
        return done(DeleteResult(deleted=_acted(ctx)))
    _removed(f"deleting {what}", lambda: ops.delete(rg, name), ctx, clients)
    return done(DeleteResult(deleted=True))


def delete_key_vault(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Delete the key vault (Azure soft-deletes it); purge it when asked and purge protection allows.

    Vaults_Delete is synchronous, 200 or 204 (ArmResourceDeleteSync, Vault.tsp); the vault then stays as a
    DeletedVault whose properties say scheduledPurgeDate and purgeProtectionEnabled (DeletedVaults_GetDeleted);
    DeletedVaults_PurgeDeleted is a long-running POST, 200 or 202 with Location and Retry-After
    (DeletedVault.tsp), keyvault/resource-manager/Microsoft.KeyVault/KeyVault, api-version 2026-05-15 as
    azure-mgmt-keyvault 14.1 sends. A vault with purge protection cannot be purged before its purge date.
    """
    spec = step.spec_as(KeyVaultSpec)
    if spec.existing:
        return _kept_brought()
    vault_id = _own_id(step, ctx)
    sub, rg, name = _parts(vault_id)
    ops = clients.key_vault(sub).vaults
    what = f"key vault '{name}'"
    location = spec.location
    vault = get_or_none(f"reading {what}", lambda: ops.get(rg, name))
    issued = False
    if vault is not None:
        location = vault.location or location
        _removed(f"deleting {what}", lambda: ops.delete(rg, name), ctx, clients)
        issued = True
    acted = issued or _acted(ctx)
    deleted = get_or_none(f"reading the deleted {what}", lambda: ops.get_deleted(name, location))
    props = getattr(deleted, "properties", None)
    owner = str(getattr(props, "vault_id", "") or "")
    if props is None or owner.lower().rstrip("/") != vault_id.lower():
        # Gone for good (purged, or never soft-deleted), or the soft-deleted namesake is another vault's.
        return done(DeleteResult(deleted=acted, purged=acted and spec.purge_on_delete))
    until = getattr(props, "scheduled_purge_date", None)
    if not spec.purge_on_delete:
        return done(DeleteResult(deleted=acted, soft_deleted_until=until))
    if getattr(props, "purge_protection_enabled", False):
        return done(
            DeleteResult(
                deleted=acted,
                soft_deleted_until=until,
                kept=f"{what} has purge protection, so it cannot be purged: Azure purges it on its scheduled "
                f"purge date ({until or 'unknown'}), and its name is held until then",
            )
        )
    _removed(
        f"purging the deleted {what}", lambda: ops.begin_purge_deleted(name, location, polling=False), ctx, clients
    )
    return Wait(timing.poll_s, f"the deleted {what} is being purged")


def delete_insights(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Delete Application Insights, then the Log Analytics workspace behind it (never brought ones).

    Components_Delete is synchronous, 200 or 204 (applicationinsights/.../stable/2020-02-02/components_API.json,
    examples/ComponentsDelete.json). The Log Analytics Workspaces_Delete is long-running, 200, 202 or 204
    (operationalinsights/.../OperationalInsights/stable/2025-07-01, examples/WorkspacesDelete.json); sent without
    `force`, Azure keeps the workspace recoverable for 14 days and creating it again with the same name in the
    same group recovers it (Microsoft Learn, Log Analytics "Workspaces - Delete"), which is what a later
    create of this plan does, so the name is not reported as held.
    """
    spec = step.spec_as(InsightsSpec)
    if spec.existing:
        return _kept_brought()
    sub, rg, name = _parts(step.resource_id)
    components = clients.insights(sub).components
    what = f"Application Insights '{name}'"
    issued = False
    if get_or_none(f"reading {what}", lambda: components.get(rg, name)) is not None:
        _removed(f"deleting {what}", lambda: components.delete(rg, name), ctx, clients)
        issued = True
    la_sub, la_rg, la_name = _parts(spec.log_analytics_id)
    la_ops = clients.log_analytics(la_sub).workspaces
    la_what = f"Log Analytics workspace '{la_name}'"
    la = get_or_none(f"reading {la_what}", lambda: la_ops.get(la_rg, la_name))
    if la is not None:
        if _deleting(la):
            return Wait(timing.poll_s, f"{la_what} is being deleted")
        _removed(f"deleting {la_what}", lambda: la_ops.begin_delete(la_rg, la_name, polling=False), ctx, clients)
        if waiting := _gone_after(la_what, lambda: la_ops.get(la_rg, la_name), timing):
            return waiting
        issued = True
    return done(DeleteResult(deleted=issued or _acted(ctx)))


def delete_registry(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Delete the container registry the service made (never a brought one).

    Registries_Delete is long-running, 200, 202 with Location, or 204 (containerregistry/.../Registry,
    examples/2025-11-01/RegistryDelete.json).
    """
    if step.spec_as(RegistrySpec).existing:
        return _kept_brought()
    sub, rg, name = _parts(step.resource_id)
    ops = clients.registry(sub).registries
    return _delete_simple(
        f"container registry '{name}'",
        lambda: ops.get(rg, name),
        lambda: ops.begin_delete(rg, name, polling=False),
        ctx,
        clients,
        timing,
    )


# ----- the resource group -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    """One resource a resource group holds, as Resources_ListByResourceGroup lists it."""

    type: str
    name: str
    id: str


def foreign_resources(listed: Iterable[Listed], application_insights: str) -> list[Listed]:
    """Return what a group holds besides what Azure made on its own for the service's resources.

    Not counted:
    - extension resources (Microsoft.Authorization: role assignments, locks): Resources_ListByResourceGroup
      lists the group's tracked resources only (resources.json 2025-04-01), and a group's own role
      assignments go with it;
    - what Azure makes with a new Application Insights component: the "Failure Anomalies - <component>" smart
      detector alert rule and the "Application Insights Smart Detection" action group (Microsoft Learn, "Smart
      detection - failure anomalies"; they are what keeps such groups from looking empty,
      hashicorp/terraform-provider-azurerm#18026 and #18357).
    """
    anomalies = f"failure anomalies - {application_insights}".lower()
    out = []
    for r in listed:
        t, n = r.type.lower(), r.name.lower()
        if t.startswith("microsoft.authorization/"):
            continue
        if t == "microsoft.alertsmanagement/smartdetectoralertrules" and n == anomalies:
            continue
        if t == "microsoft.insights/actiongroups" and n == "application insights smart detection":
            continue
        out.append(r)
    return out


def kept_message(others: list[Listed]) -> str:
    """Say which other resources keep a group, in one line."""
    shown = ", ".join(f"{r.name} ({r.type})" for r in others[:10])
    more = f" and {len(others) - 10} more" if len(others) > 10 else ""
    noun = "resource" if len(others) == 1 else "resources"
    return f"holds {len(others)} other {noun}: {shown}{more}"


def delete_resource_group(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Delete the resource group when the service created it and it holds nothing else; else keep it.

    ResourceGroups_Delete is long-running, 200 or 202; the group reads Deleting until it is gone
    (resources/.../Microsoft.Resources/stable/2025-04-01/resources.json). What the group holds is read first
    with Resources_ListByResourceGroup (same file): deleting a group deletes everything in it.
    """
    spec = step.spec_as(ResourceGroupSpec)
    n = ctx.names
    what = f"resource group '{n.resource_group}'"
    if not spec.create:
        return done(DeleteResult(deleted=False, kept="the service did not create it (policy)"))
    if ctx.dependency_outputs.get(step.id, {}).get("created") is not True:
        return done(DeleteResult(deleted=False, kept="it was there before the service made this workspace"))
    arm = clients.resources(n.subscription_id)
    group = get_or_none(f"reading {what}", lambda: arm.resource_groups.get(n.resource_group))
    if group is None:
        return done(DeleteResult(deleted=_acted(ctx)))
    if _deleting(group):
        return Wait(timing.poll_s, f"{what} is being deleted")
    listed = get_or_none(
        f"listing the resources in {what}", lambda: list(arm.resources.list_by_resource_group(n.resource_group))
    )
    held = [Listed(str(r.type or ""), str(r.name or ""), str(r.id or "")) for r in listed or []]
    others = foreign_resources(held, n.application_insights)
    if others:
        return done(DeleteResult(deleted=False, kept=kept_message(others)))
    _removed(
        f"deleting {what}", lambda: arm.resource_groups.begin_delete(n.resource_group, polling=False), ctx, clients
    )
    if waiting := _gone_after(what, lambda: arm.resource_groups.get(n.resource_group), timing):
        return waiting
    return done(DeleteResult(deleted=True))
