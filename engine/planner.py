"""Plan a request into a DAG of steps: a pure function, same input, same plan, same names."""

from __future__ import annotations

import hashlib
import re

from models.plan import (
    AccessSpec,
    AccessStep,
    ComputeStep,
    ComputeStepSpec,
    DatastoreStep,
    DatastoreStepSpec,
    InsightsSpec,
    InsightsStep,
    KeyVaultSpec,
    KeyVaultStep,
    Plan,
    RegistrySpec,
    RegistryStep,
    ResourceGroupSpec,
    ResourceGroupStep,
    ResourceNames,
    RoleGrant,
    Step,
    StorageSpec,
    StorageStep,
    WorkspaceSpec,
    WorkspaceStep,
)
from models.policy import Policy
from models.request import ARM_ID, DatastoreKind, Principal, WorkspaceRequest

# Built-in role definitions the access steps grant (ids are the same in every tenant), from Microsoft's
# built-in roles lists: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/ai-machine-learning
# and https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/storage. Who gets which, and
# why, is docs/access.md.
AZUREML_DATA_SCIENTIST = "f6c7c914-8db3-469d-8ca1-694a8f32e121"  # AzureML Data Scientist
AZUREML_COMPUTE_OPERATOR = "e503ece1-11d0-4e8e-8e2c-7a6c3bf38815"  # AzureML Compute Operator
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"  # Storage Blob Data Contributor
STORAGE_FILE_DATA_PRIVILEGED_CONTRIBUTOR = (
    "69566ab7-960f-475b-8e7c-b3118f30c6bd"  # Storage File Data Privileged Contributor
)

ROLE_NAMES = {
    AZUREML_DATA_SCIENTIST: "AzureML Data Scientist",
    AZUREML_COMPUTE_OPERATOR: "AzureML Compute Operator",
    STORAGE_BLOB_DATA_CONTRIBUTOR: "Storage Blob Data Contributor",
    STORAGE_FILE_DATA_PRIVILEGED_CONTRIBUTOR: "Storage File Data Privileged Contributor",
}


def _hash(*parts: str, length: int) -> str:
    return hashlib.sha256("|".join(parts).lower().encode()).hexdigest()[:length]


def _alnum(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def derive_names(request: WorkspaceRequest) -> ResourceNames:
    """Derive every resource name from the (resolved) request."""
    sub = str(request.subscription_id)
    rg = request.resource_group or f"rg-ml-{request.team}-{request.environment.value}"
    team, env = request.team, request.environment.value
    h6 = _hash(sub, rg, team, env, length=6)
    h4 = h6[:4]
    storage = "st" + _alnum(team)[: 24 - 2 - len(env) - 6] + env + h6
    kv_team = team[: 24 - len("kv---") - len(env) - 4].strip("-")
    key_vault = re.sub(r"-{2,}", "-", f"kv-{kv_team}-{env}-{h4}")
    registry = None
    if request.existing.container_registry_id:
        m = ARM_ID.match(request.existing.container_registry_id)
        registry = m["name"] if m else None
    elif request.container_registry:
        registry = "cr" + _alnum(team)[:32] + env + h6
    return ResourceNames(
        subscription_id=sub,
        resource_group=rg,
        location=request.region,
        workspace=request.workspace_name or f"mlw-{team}-{env}",
        storage_account=_existing_name(request.existing.storage_account_id) or storage,
        key_vault=_existing_name(request.existing.key_vault_id) or key_vault,
        application_insights=_existing_name(request.existing.application_insights_id) or f"appi-{team}-{env}",
        log_analytics=f"log-{team}-{env}",
        container_registry=registry,
    )


def _existing_name(arm_id: str | None) -> str | None:
    m = ARM_ID.match(arm_id) if arm_id else None
    return m["name"] if m else None


def _rid(names: ResourceNames, provider_type: str, name: str) -> str:
    return (
        f"/subscriptions/{names.subscription_id}/resourceGroups/{names.resource_group}/providers/{provider_type}/{name}"
    )


def plan(request: WorkspaceRequest, policy: Policy) -> Plan:
    """Return the plan for a resolved request (see `engine.policy.admit`)."""
    n = derive_names(request)
    base = {**request.tags, "managed-by": "workspace-vending", "team": request.team, "environment": request.environment}
    # The team tag (policy.team_tag) says whose a resource is: confinement reads it on brought
    # resources. ARM tag names ignore case, so one spelling only.
    tags = {k: v for k, v in base.items() if k.lower() != policy.team_tag.lower()}
    tags[policy.team_tag] = request.team
    rg_id = f"/subscriptions/{n.subscription_id}/resourceGroups/{n.resource_group}"
    storage_id = request.existing.storage_account_id or _rid(n, "Microsoft.Storage/storageAccounts", n.storage_account)
    kv_id = request.existing.key_vault_id or _rid(n, "Microsoft.KeyVault/vaults", n.key_vault)
    ai_id = request.existing.application_insights_id or _rid(n, "Microsoft.Insights/components", n.application_insights)
    ws_id = _rid(n, "Microsoft.MachineLearningServices/workspaces", n.workspace)
    location = n.location
    shared_key_access = policy.datastore_credentials == "account_key"

    steps: list[Step] = [
        ResourceGroupStep(
            id="resource-group",
            resource_name=n.resource_group,
            resource_id=rg_id,
            spec=ResourceGroupSpec(location=location, tags=tags, create=policy.create_resource_groups),
        ),
        StorageStep(
            id="storage",
            depends_on=["resource-group"],
            resource_name=n.storage_account,
            resource_id=storage_id,
            spec=StorageSpec(
                location=location,
                tags=tags,
                existing=request.existing.storage_account_id is not None,
                sku="Standard_LRS",
                hierarchical_namespace=any(d.kind == DatastoreKind.ADLS_GEN2 for d in request.datastores),
                shared_key_access=shared_key_access,
                containers=sorted({d.container for d in request.datastores if d.kind != DatastoreKind.FILE}),
                shares=sorted({d.container for d in request.datastores if d.kind == DatastoreKind.FILE}),
            ),
        ),
        KeyVaultStep(
            id="key-vault",
            depends_on=["resource-group"],
            resource_name=n.key_vault,
            resource_id=kv_id,
            spec=KeyVaultSpec(
                location=location,
                tags=tags,
                existing=request.existing.key_vault_id is not None,
                tenant_id=str(policy.tenant_id),
                soft_delete_retention_days=policy.key_vault.soft_delete_retention_days,
                purge_protection=policy.key_vault.purge_protection,
                on_soft_deleted=policy.key_vault.on_soft_deleted,
            ),
        ),
        InsightsStep(
            id="insights",
            depends_on=["resource-group"],
            resource_name=n.application_insights,
            resource_id=ai_id,
            spec=InsightsSpec(
                location=location,
                tags=tags,
                existing=request.existing.application_insights_id is not None,
                log_analytics=n.log_analytics,
                log_analytics_id=_rid(n, "Microsoft.OperationalInsights/workspaces", n.log_analytics),
            ),
        ),
    ]
    ws_deps = ["storage", "key-vault", "insights"]
    registry_id = None
    if n.container_registry:
        registry_id = request.existing.container_registry_id or _rid(
            n, "Microsoft.ContainerRegistry/registries", n.container_registry
        )
        steps.append(
            RegistryStep(
                id="registry",
                depends_on=["resource-group"],
                resource_name=n.container_registry,
                resource_id=registry_id,
                spec=RegistrySpec(
                    location=location,
                    tags=tags,
                    existing=request.existing.container_registry_id is not None,
                    sku="Basic",
                ),
            )
        )
        ws_deps.append("registry")
    steps.append(
        WorkspaceStep(
            id="workspace",
            depends_on=ws_deps,
            resource_name=n.workspace,
            resource_id=ws_id,
            spec=WorkspaceSpec(
                location=location,
                tags=tags,
                display_name=f"{request.team} ({request.environment.value})",
                on_soft_deleted=policy.workspace.on_soft_deleted,
                storage_account_id=storage_id,
                key_vault_id=kv_id,
                application_insights_id=ai_id,
                container_registry_id=registry_id,
                # A storage account without shared keys needs system datastores that use the workspace's
                # identity: https://learn.microsoft.com/azure/machine-learning/how-to-disable-local-auth-storage
                # (Microsoft.MachineLearningServices workspaces 2024-10-01-preview, systemDatastoresAuthMode).
                system_datastores_auth_mode=None if shared_key_access else "identity",
            ),
        )
    )
    for c in request.compute:
        steps.append(
            ComputeStep(
                id=f"compute:{c.name}",
                depends_on=["workspace"],
                resource_name=c.name,
                resource_id=f"{ws_id}/computes/{c.name}",
                spec=ComputeStepSpec(
                    workspace=n.workspace,
                    location=n.location,
                    tenant_id=str(policy.tenant_id),
                    **c.model_dump(mode="json"),
                ),
            )
        )
    for d in request.datastores:
        steps.append(
            DatastoreStep(
                id=f"datastore:{d.name}",
                depends_on=["workspace", "storage"],
                resource_name=d.name,
                resource_id=f"{ws_id}/datastores/{d.name}",
                spec=DatastoreStepSpec(
                    workspace=n.workspace,
                    storage_account=n.storage_account,
                    credentials=policy.datastore_credentials,
                    **d.model_dump(mode="json"),
                ),
            )
        )
    owners = {str(p.object_id) for p in request.owners}
    for p in _principals(request):
        people = _PEOPLE_AT_WORKSPACE + (_OWNERS_AT_WORKSPACE if str(p.object_id) in owners else ())
        steps.append(
            _access_step(
                f"access:{p.object_id}",
                ["workspace"],
                str(p.object_id),
                ws_id,
                {"principal_id": str(p.object_id), "principal_type": p.type.value},
                [*((r, ws_id) for r in people), *((r, storage_id) for r in _PEOPLE_ON_STORAGE)],
            )
        )
    # Managed identities are service principals; their principal id is known only once the workspace or
    # the cluster exists, so the step reads it from the output of the step that made the identity.
    if not shared_key_access:
        steps.append(
            _access_step(
                "access:workspace",
                ["workspace"],
                f"{n.workspace} identity",
                ws_id,
                {"principal_from": "workspace", "principal_type": "ServicePrincipal"},
                [(r, storage_id) for r in _WORKSPACE_IDENTITY_ON_STORAGE],
            )
        )
    for c in request.compute:
        if c.kind != "cluster":
            continue  # an instance works as its assigned user, who holds the people's roles
        steps.append(
            _access_step(
                f"access:compute:{c.name}",
                [f"compute:{c.name}"],
                f"{c.name} identity",
                f"{ws_id}/computes/{c.name}",
                {"principal_from": f"compute:{c.name}", "principal_type": "ServicePrincipal"},
                [(r, storage_id) for r in _CLUSTER_IDENTITY_ON_STORAGE],
            )
        )
    return Plan(names=n, steps=steps, tags=tags)


# The role set per principal kind (docs/access.md has the sources).
_PEOPLE_AT_WORKSPACE = (AZUREML_DATA_SCIENTIST,)
_OWNERS_AT_WORKSPACE = (AZUREML_COMPUTE_OPERATOR,)
_PEOPLE_ON_STORAGE = (STORAGE_BLOB_DATA_CONTRIBUTOR, STORAGE_FILE_DATA_PRIVILEGED_CONTRIBUTOR)
_WORKSPACE_IDENTITY_ON_STORAGE = (STORAGE_BLOB_DATA_CONTRIBUTOR,)
_CLUSTER_IDENTITY_ON_STORAGE = (STORAGE_BLOB_DATA_CONTRIBUTOR,)


def _access_step(
    step_id: str,
    depends_on: list[str],
    resource_name: str,
    resource_id: str,
    principal: dict[str, str],
    grants: list[tuple[str, str]],
) -> AccessStep:
    return AccessStep(
        id=step_id,
        depends_on=depends_on,
        resource_name=resource_name,
        resource_id=resource_id,
        spec=AccessSpec(
            **principal,
            assignments=[RoleGrant(role_definition=r, role=ROLE_NAMES[r], scope=scope) for r, scope in grants],
        ),
    )


def _principals(request: WorkspaceRequest) -> list[Principal]:
    return [*request.owners, *request.members]
