"""Reconciles for the resource group and the workspace's dependent resources (azure-mgmt-*).

Each reads the resource, starts a create or update only when it is missing or differs, and
returns at once: long-running operations are started with `polling=False` and looked at again
on the next attempt.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from cloud.clients import Clients
from cloud.common import Timing, call, get_or_none, progress, start, state_of, tags_differ
from engine.ports import StepContext
from models.outcomes import Done, Fail, Outcome, Retry, Wait
from models.plan import InsightsSpec, KeyVaultSpec, RegistrySpec, ResourceGroupSpec, Step, StorageSpec
from models.request import ARM_ID

FAILED = {"failed", "canceled"}
CREATED_BY = "vending-created-by"
"""The tag the service writes on a resource group it creates, naming the request: written by the create only."""


def _failed(resource: Any) -> bool:
    """Tell whether a resource ended Failed (or Canceled): it stays so until it is applied again."""
    return resource is not None and state_of(resource).lower() in FAILED


def _applied_again(what: str, resource: Any, timing: Timing) -> Retry:
    # Each re-apply of a Failed resource is a retry: the engine's retry budget bounds how often it happens.
    return Retry(timing.poll_s, f"{what} was in state {state_of(resource)}; applied it again", "ResourceFailed")


def _ensure_child(what: str, get: Callable[[], Any], create: Callable[[], Any]) -> None:
    if get_or_none(f"reading {what}", get) is None:
        call(f"creating {what}", create)


def _parse_existing(step: Step) -> tuple[str, str, str]:
    m = ARM_ID.match(step.resource_id)
    if not m:
        raise ValueError(f"not an ARM id: {step.resource_id}")
    return m["sub"], m["rg"], m["name"]


def reconcile_resource_group(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Ensure the resource group exists (or, when policy says so, only check that it does)."""
    from azure.mgmt.resource.resources.models import ResourceGroup

    n, spec = ctx.names, step.spec_as(ResourceGroupSpec)
    ops = clients.resources(n.subscription_id).resource_groups
    what = f"resource group '{n.resource_group}'"
    group = get_or_none(f"reading {what}", lambda: ops.get(n.resource_group))
    # Whether the service made the group: only such a group may be deleted at teardown. Kept across
    # re-applies from the step's own earlier outputs, and across a crash between the create and this
    # answer by the tag only the create writes (naming this request).
    created = (
        group is None
        or ctx.dependency_outputs.get(step.id, {}).get("created") is True
        or (group.tags or {}).get(CREATED_BY) == ctx.request_id
    )
    if group is None:
        if not spec.create:
            return Fail(
                f"{what} does not exist in subscription {n.subscription_id}, and policy does not let the service "
                "create resource groups. Ask the platform team to create it, then submit again.",
                "ResourceGroupNotFound",
            )
        group = call(
            f"creating {what}",
            lambda: ops.create_or_update(
                n.resource_group,
                ResourceGroup(location=spec.location, tags={**spec.tags, CREATED_BY: ctx.request_id}),
            ),
        )
    elif spec.create and tags_differ(group.tags, spec.tags):
        merged = {**(group.tags or {}), **spec.tags}
        group = call(
            f"tagging {what}",
            lambda: ops.create_or_update(n.resource_group, ResourceGroup(location=group.location, tags=merged)),
        )
    if waiting := progress(group, what, timing):
        return waiting
    return Done({"id": group.id, "name": group.name, "location": group.location, "created": created})


def reconcile_storage(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Ensure the storage account (HNS when ADLS Gen2 is asked for, no shared keys) and its containers and shares."""
    from azure.mgmt.storage.models import (
        BlobContainer,
        ContainerProperties,
        FileShare,
        Sku,
        StorageAccountCreateParameters,
        StorageAccountPropertiesCreateParameters,
        StorageAccountUpdateParameters,
    )

    spec = step.spec_as(StorageSpec)
    sub, rg, name = _parse_existing(step)
    ops = clients.storage(sub)
    what = f"storage account '{name}'"
    account = get_or_none(f"reading {what}", lambda: ops.storage_accounts.get_properties(rg, name))
    if spec.existing:
        if account is None:
            return Fail(
                f"the existing {what} ({step.resource_id}) does not exist or the service cannot see it. "
                "Check storage_account_id.",
                "LinkedResourceNotFound",
            )
    elif account is None:
        params = StorageAccountCreateParameters(
            sku=Sku(name=spec.sku),
            kind="StorageV2",
            location=spec.location,
            tags=spec.tags,
            properties=StorageAccountPropertiesCreateParameters(
                is_hns_enabled=spec.hierarchical_namespace,
                allow_shared_key_access=spec.shared_key_access,
                allow_blob_public_access=False,
                minimum_tls_version="TLS1_2",
                enable_https_traffic_only=True,
            ),
        )
        after = start(
            f"creating {what}",
            lambda hook: ops.storage_accounts.begin_create(rg, name, params, polling=False, raw_response_hook=hook),
            timing,
        )
        return Wait(after, f"{what} is being created")
    elif tags_differ(account.tags, spec.tags):
        merged = {**(account.tags or {}), **spec.tags}
        account = call(
            f"tagging {what}",
            lambda: ops.storage_accounts.update(rg, name, StorageAccountUpdateParameters(tags=merged)),
        )
    if waiting := progress(account, what, timing):
        return waiting
    if spec.hierarchical_namespace and not account.is_hns_enabled:
        return Fail(
            f"{what} has no hierarchical namespace, which ADLS Gen2 datastores need, and it cannot be turned on "
            "in place. Use blob datastores, or bring a storage account with hierarchical namespace enabled.",
            "HierarchicalNamespaceRequired",
        )
    private = BlobContainer(container_properties=ContainerProperties(public_access="None"))
    for container in spec.containers:
        _ensure_child(
            f"container '{container}' in {what}",
            partial(ops.blob_containers.get, rg, name, container),
            partial(ops.blob_containers.create, rg, name, container, private),
        )
    for share in spec.shares:
        _ensure_child(
            f"file share '{share}' in {what}",
            partial(ops.file_shares.get, rg, name, share),
            partial(ops.file_shares.create, rg, name, share, FileShare()),
        )
    endpoints = account.primary_endpoints
    return Done(
        {
            "id": account.id,
            "name": account.name,
            "blob_endpoint": getattr(endpoints, "blob", None),
            "dfs_endpoint": getattr(endpoints, "dfs", None),
            "hierarchical_namespace": bool(account.is_hns_enabled),
            "containers": spec.containers,
            "shares": spec.shares,
        }
    )


def reconcile_key_vault(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Ensure the key vault: RBAC authorisation, soft-delete retention and purge protection from policy.

    A soft-deleted vault holding the name is recovered, purged, side-stepped with a fresh name
    suffix, or reported, as policy says; the step's outputs and status say which.
    """
    from azure.mgmt.keyvault.models import Sku, VaultCreateOrUpdateParameters, VaultPatchParameters, VaultProperties

    spec = step.spec_as(KeyVaultSpec)
    sub, rg, name = _parse_existing(step)
    ops = clients.key_vault(sub).vaults
    what = f"key vault '{name}'"
    vault = get_or_none(f"reading {what}", lambda: ops.get(rg, name))
    if spec.existing:
        if vault is None:
            return Fail(
                f"the existing {what} ({step.resource_id}) does not exist or the service cannot see it. "
                "Check key_vault_id.",
                "LinkedResourceNotFound",
            )
        return Done({"id": vault.id, "name": vault.name, "vault_uri": vault.properties.vault_uri})
    action = None
    if vault is None:
        deleted = get_or_none(f"reading deleted {what}", lambda: ops.get_deleted(name, spec.location))
        if deleted is not None:
            handled = _soft_deleted_vault(step, deleted, clients, timing)
            if not isinstance(handled, tuple):
                return handled
            (name, spec), action = handled, spec.on_soft_deleted
            what = f"key vault '{name}'"
            vault = get_or_none(f"reading {what}", lambda: ops.get(rg, name))
    if vault is not None and tags_differ(vault.tags, spec.tags):
        # Tags alone go in a Vaults_Update PATCH (VaultPatchParameters: tags, properties optional), synchronous
        # (specification/keyvault/resource-manager/Microsoft.KeyVault/KeyVault/Vault.tsp, api-version 2026-05-15
        # as azure-mgmt-keyvault 14.1 sends). A full PUT would resend properties, among them the soft-delete
        # retention, which cannot change once the vault exists.
        merged = {**(vault.tags or {}), **spec.tags}
        vault = call(f"tagging {what}", lambda: ops.update(rg, name, VaultPatchParameters(tags=merged)))
    if vault is None:
        recovering = action == "recover"
        props = VaultProperties(
            tenant_id=spec.tenant_id,
            sku=Sku(family="A", name="standard"),
            enable_rbac_authorization=True,
            enable_soft_delete=True,
            soft_delete_retention_in_days=spec.soft_delete_retention_days,
            enable_purge_protection=True if spec.purge_protection else None,
            access_policies=[],
            create_mode="recover" if recovering else None,
        )
        params = VaultCreateOrUpdateParameters(location=spec.location, tags=spec.tags, properties=props)
        after = start(
            f"{'recovering' if recovering else 'creating'} {what}",
            lambda hook: ops.begin_create_or_update(rg, name, params, polling=False, raw_response_hook=hook),
            timing,
        )
        verb = "recovered from soft-delete" if recovering else "created"
        return Wait(after, f"{what} is being {verb}")
    if waiting := progress(vault, what, timing):
        return waiting
    outputs = {"id": vault.id, "name": vault.name, "vault_uri": vault.properties.vault_uri}
    if name != step.resource_name:
        outputs["renamed_from"] = step.resource_name
    if (vault.tags or {}).get("vending-soft-delete"):
        outputs["soft_delete_action"] = vault.tags["vending-soft-delete"]
    return Done(outputs)


def _soft_deleted_vault(
    step: Step, deleted: Any, clients: Clients, timing: Timing
) -> Outcome | tuple[str, KeyVaultSpec]:
    """Apply the policy for a soft-deleted vault holding the name: return an outcome, or the name and spec to use.

    The spec returned carries the tag that says what was done with the soft-deleted vault.
    """
    from azure.mgmt.keyvault.models import VaultCheckNameAvailabilityParameters

    spec = step.spec_as(KeyVaultSpec)
    sub, rg, name = _parse_existing(step)
    ops = clients.key_vault(sub).vaults
    props = deleted.properties
    owner = str(getattr(props, "vault_id", "") or "")
    policy = spec.on_soft_deleted
    holder = f"a soft-deleted key vault ({owner or 'unknown owner'}, purge date {getattr(props, 'scheduled_purge_date', '?')})"
    if policy == "fail":
        return Fail(
            f"{holder} holds the name '{name}'. Recover it or purge it (az keyvault recover / purge), "
            "or ask the platform team to set key_vault.on_soft_deleted, then submit again.",
            "VaultSoftDeleted",
        )
    if policy == "recover":
        if owner.lower() != step.resource_id.lower():
            return Fail(
                f"{holder} holds the name '{name}' but belonged to another resource group, so it cannot be recovered "
                "here. Purge it, or ask the platform team to set key_vault.on_soft_deleted to rename.",
                "VaultSoftDeleted",
            )
        return name, _tagged(spec, "recovered")
    if policy == "purge":
        if getattr(props, "purge_protection_enabled", False):
            return Fail(
                f"{holder} holds the name '{name}' and has purge protection, so it cannot be purged before its purge "
                "date. Ask the platform team to set key_vault.on_soft_deleted to recover or rename.",
                "VaultPurgeProtected",
            )
        call(
            f"purging soft-deleted key vault '{name}'",
            lambda: ops.begin_purge_deleted(name, spec.location, polling=False),
        )
        return Wait(timing.poll_s, f"purging the soft-deleted key vault '{name}' before creating it again")
    # rename: the first free '<name>-N', the same one on every attempt.
    for n in range(2, 10):
        candidate = f"{name[:21].rstrip('-')}-{n}"
        if get_or_none(f"reading key vault '{candidate}'", partial(ops.get, rg, candidate)) is not None:
            return candidate, _tagged(spec, f"renamed from {name}")
        check = call(
            f"checking the name '{candidate}'",
            partial(ops.check_name_availability, VaultCheckNameAvailabilityParameters(name=candidate)),
        )
        if check.name_available:
            return candidate, _tagged(spec, f"renamed from {name}")
    return Fail(f"{holder} holds the name '{name}' and no fresh suffix is free; purge old vaults.", "VaultSoftDeleted")


def _tagged(spec: KeyVaultSpec, soft_delete_action: str) -> KeyVaultSpec:
    return spec.model_copy(update={"tags": {**spec.tags, "vending-soft-delete": soft_delete_action}})


def reconcile_insights(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Ensure the Log Analytics workspace, then Application Insights on it (workspace-based)."""
    from azure.mgmt.applicationinsights.models import ApplicationInsightsComponent
    from azure.mgmt.loganalytics.models import Workspace, WorkspaceProperties, WorkspaceSku

    spec = step.spec_as(InsightsSpec)
    sub, rg, name = _parse_existing(step)
    what = f"Application Insights '{name}'"
    components = clients.insights(sub).components
    if spec.existing:
        component = get_or_none(f"reading {what}", lambda: components.get(rg, name))
        if component is None:
            return Fail(
                f"the existing {what} ({step.resource_id}) does not exist or the service cannot see it. "
                "Check application_insights_id.",
                "LinkedResourceNotFound",
            )
        return Done({"id": component.id, "name": component.name, "app_id": component.app_id})
    la_name = spec.log_analytics
    la_what = f"Log Analytics workspace '{la_name}'"
    la_ops = clients.log_analytics(sub).workspaces
    la = get_or_none(f"reading {la_what}", lambda: la_ops.get(rg, la_name))
    kept_tags = dict(la.tags or {}) if la is not None and not _failed(la) else None
    retagged = kept_tags is not None and tags_differ(kept_tags, spec.tags)
    if la is None or _failed(la) or retagged:
        # A revision's tags go in the same PUT (Workspaces_CreateOrUpdate creates or updates, long-running:
        # operationalinsights/.../OperationalInsights/stable/2025-07-01), with the tags it has kept.
        params = Workspace(
            location=spec.location,
            tags={**(kept_tags or {}), **spec.tags},
            properties=WorkspaceProperties(sku=WorkspaceSku(name="PerGB2018"), retention_in_days=30),
        )
        after = start(
            f"creating {la_what}",
            lambda hook: la_ops.begin_create_or_update(rg, la_name, params, polling=False, raw_response_hook=hook),
            timing,
        )
        if retagged:
            return Wait(after, f"{la_what} tags are being updated")
        if la is not None:
            return _applied_again(la_what, la, timing)
        return Wait(after, f"{la_what} is being created")
    if waiting := progress(la, la_what, timing):
        return waiting
    component = get_or_none(f"reading {what}", lambda: components.get(rg, name))
    if component is None or tags_differ(component.tags, spec.tags):
        tags = {**((component.tags or {}) if component else {}), **spec.tags}
        body = ApplicationInsightsComponent(
            location=spec.location,
            tags=tags,
            kind="web",
            application_type="web",
            workspace_resource_id=la.id,
            ingestion_mode="LogAnalytics",
        )
        component = call(f"creating {what}", lambda: components.create_or_update(rg, name, body))
    if waiting := progress(component, what, timing):
        return waiting
    # The connection string and instrumentation key stay in Azure: outputs are ids only.
    return Done({"id": component.id, "name": component.name, "app_id": component.app_id, "log_analytics_id": la.id})


def reconcile_registry(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Ensure the container registry (admin user off)."""
    from azure.mgmt.containerregistry.models import Registry, RegistryProperties, Sku

    spec = step.spec_as(RegistrySpec)
    sub, rg, name = _parse_existing(step)
    ops = clients.registry(sub).registries
    what = f"container registry '{name}'"
    registry: Any = get_or_none(f"reading {what}", lambda: ops.get(rg, name))
    if spec.existing:
        if registry is None:
            return Fail(
                f"the existing {what} ({step.resource_id}) does not exist or the service cannot see it. "
                "Check container_registry_id.",
                "LinkedResourceNotFound",
            )
    elif registry is None or _failed(registry) or tags_differ(registry.tags, spec.tags):
        retagged = registry is not None and not _failed(registry)
        # A revision's tags go in the same PUT (Registries_Create creates or updates, long-running:
        # containerregistry/.../Registry, examples/2025-11-01/RegistryCreate.json), with the tags it has kept.
        params = Registry(
            location=spec.location,
            tags={**((registry.tags or {}) if retagged else {}), **spec.tags},
            sku=Sku(name=spec.sku),
            properties=RegistryProperties(admin_user_enabled=False),
        )
        after = start(
            f"creating {what}",
            lambda hook: ops.begin_create(rg, name, params, polling=False, raw_response_hook=hook),
            timing,
        )
        if retagged:
            return Wait(after, f"{what} tags are being updated")
        if registry is not None:
            return _applied_again(what, registry, timing)
        return Wait(after, f"{what} is being created")
    if waiting := progress(registry, what, timing):
        return waiting
    return Done({"id": registry.id, "name": registry.name, "login_server": registry.login_server})
