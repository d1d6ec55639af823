"""The emulator's resource types: how each behaves and what Azure adds to it on read."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class ResourceType:
    """How one ARM resource type behaves in the emulator."""

    name: str  # e.g. Microsoft.Storage/storageAccounts
    lro: bool = True  # PUT is a long-running operation
    location_lro: bool = False  # answers 202 + Location (storage accounts) rather than 201 + Azure-AsyncOperation
    global_name: str | None = None  # error code when the name is taken anywhere (globally unique names)
    needs_location: bool = True
    provisioning_in_properties: bool = True
    create_status: int = 201  # what a synchronous create answers (Application Insights answers 200)
    # How DELETE answers, as the type's spec says: "" synchronous (200, or 204 when there is nothing to
    # delete); "location" 202 with Location and Retry-After; "async" 202 with Azure-AsyncOperation, Location
    # and Retry-After. Polling then answers 202 until the delete is done.
    delete_lro: Literal["", "location", "async"] = ""
    delete_missing: int = 204  # what a DELETE of a resource that does not exist answers (ARM's 404 otherwise)


# Delete behaviour per type, from the spec of the api-version the emulator serves (paths under
# specification/ in Azure/azure-rest-api-specs; the status codes are also those the installed SDK accepts):
#   resourceGroups    ResourceGroups_Delete 200/202, long-running, 202 + Location (examples/ForceDeleteVMsInResourceGroup.json),
#                     resources/resource-manager/Microsoft.Resources/resources/stable/2025-04-01/resources.json;
#                     a group that does not exist is ARM's 404 ResourceGroupNotFound
#   storageAccounts   StorageAccounts_Delete 200/204, synchronous, storage/resource-manager/Microsoft.Storage/stable/
#                     2025-06-01/openapi.json (azure-mgmt-storage 25.3 sends 2026-09-01 and accepts the same 200/204)
#   containers/shares BlobContainers_Delete, FileShares_Delete 200/204, synchronous (same folder)
#   vaults            Vaults_Delete 200/204, synchronous (then soft-deleted),
#                     keyvault/resource-manager/Microsoft.KeyVault/KeyVault/stable/2026-05-15 (Vault.tsp)
#   LA workspaces     Workspaces_Delete 200/202/204, long-running, 202 + Azure-AsyncOperation + Location,
#                     operationalinsights/resource-manager/Microsoft.OperationalInsights/OperationalInsights/stable/
#                     2025-07-01/examples/WorkspacesDelete.json
#   components        Components_Delete 200/204, synchronous,
#                     applicationinsights/resource-manager/Microsoft.Insights/stable/2020-02-02/components_API.json
#   registries        Registries_Delete 200/202/204, long-running, 202 + Location,
#                     containerregistry/resource-manager/Microsoft.ContainerRegistry/Registry/examples/2025-11-01/RegistryDelete.json
#   ML workspaces     Workspaces_Delete 200/202/204, long-running (final-state-via location), 202 + Location and
#                     Retry-After, machinelearningservices/resource-manager/Microsoft.MachineLearningServices/preview/
#                     2024-10-01-preview/workspaceRP.json (what azure-ai-ml sends); Azure-AsyncOperation is sent too,
#                     as Azure ML does and as Compute_Delete's example shows
#   ML computes       Compute_Delete 200/202/204, long-running, 202 + Azure-AsyncOperation + Location, query
#                     underlyingResourceAction (Delete | Detach) required, preview/2023-08-01-preview/
#                     machineLearningServices.json and examples/Compute/delete.json (what azure-ai-ml sends)
#   datastores        Datastores_Delete 200/204, synchronous, preview/2024-10-01-preview/mfe.json
#   connections       WorkspaceConnections_Delete 200/204, synchronous, preview/2024-10-01-preview/workspaceRP.json
#   roleAssignments   RoleAssignments_Delete 200 (the deleted assignment) / 204, synchronous,
#                     authorization/resource-manager/Microsoft.Authorization/stable/2022-04-01/authorization-RoleAssignmentsCalls.json
#   locks             ManagementLocks_Delete* 200/204, synchronous,
#                     resources/resource-manager/Microsoft.Authorization/locks/stable/2020-05-01/locks.json
#   deployments       Deployments_Delete 202/204, long-running, 202 + Location,
#                     resources/resource-manager/Microsoft.Resources/deployments/stable/2026-06-01/deployments.json
TYPES = {
    t.name.lower(): t
    for t in [
        ResourceType("Microsoft.Resources/resourceGroups", lro=False, delete_lro="location", delete_missing=404),
        ResourceType("Microsoft.Storage/storageAccounts", location_lro=True, global_name="StorageAccountAlreadyTaken"),
        ResourceType("Microsoft.Storage/storageAccounts/blobServices/containers", lro=False, needs_location=False),
        ResourceType("Microsoft.Storage/storageAccounts/fileServices/shares", lro=False, needs_location=False),
        ResourceType("Microsoft.KeyVault/vaults", global_name="VaultAlreadyExists"),
        ResourceType("Microsoft.OperationalInsights/workspaces", delete_lro="async"),
        ResourceType("Microsoft.Insights/components", lro=False, create_status=200),
        ResourceType("Microsoft.ContainerRegistry/registries", global_name="AlreadyInUse", delete_lro="location"),
        ResourceType("Microsoft.MachineLearningServices/workspaces", delete_lro="async"),
        ResourceType("Microsoft.MachineLearningServices/workspaces/computes", delete_lro="async"),
        ResourceType("Microsoft.MachineLearningServices/workspaces/datastores", lro=False, needs_location=False),
        ResourceType("Microsoft.MachineLearningServices/workspaces/connections", lro=False, needs_location=False),
        ResourceType("Microsoft.Authorization/roleAssignments", lro=False, needs_location=False),
        ResourceType("Microsoft.Authorization/locks", lro=False, needs_location=False),
        ResourceType("Microsoft.Resources/deployments", needs_location=False, delete_lro="location"),
    ]
}
NO_PROVISIONING_STATE = (
    "microsoft.machinelearningservices/workspaces/datastores",
    "microsoft.authorization/roleassignments",
    "microsoft.authorization/locks",
)


def stable_uuid(*parts: str) -> str:
    """Derive a UUID from its inputs, so that reads are repeatable."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(p.lower() for p in parts)))


def decorate(rtype: str, rid: str, name: str, body: dict[str, Any], state: str, tenant_id: str) -> dict[str, Any]:
    """Return the resource as ARM shows it: the stored body plus what Azure fills in."""
    out = {k: v for k, v in body.items() if k != "properties"}
    props = dict(body.get("properties") or {})
    t = rtype.lower()
    out.update({"id": rid, "name": name, "type": rtype})
    identity = out.get("identity")
    if isinstance(identity, dict) and "systemassigned" in str(identity.get("type", "")).lower():
        identity = {**identity, "principalId": stable_uuid("principal", rid), "tenantId": tenant_id}
        out["identity"] = identity
    if t == "microsoft.storage/storageaccounts":
        props.setdefault("isHnsEnabled", False)
        props.setdefault("allowSharedKeyAccess", True)
        props["primaryEndpoints"] = {
            s: f"https://{name}.{s}.core.windows.net/" for s in ("blob", "dfs", "file", "queue", "table", "web")
        }
        props["primaryLocation"] = body.get("location")
        props["statusOfPrimary"] = "available"
    elif t == "microsoft.keyvault/vaults":
        props["vaultUri"] = f"https://{name}.vault.azure.net/"
        props.setdefault("tenantId", tenant_id)
    elif t == "microsoft.insights/components":
        key = stable_uuid("ikey", rid)
        props["AppId"] = stable_uuid("appid", rid)
        props["InstrumentationKey"] = key
        props["ConnectionString"] = (
            f"InstrumentationKey={key};IngestionEndpoint=https://{body.get('location')}.in.applicationinsights.azure.com/"
        )
        props.setdefault("Application_Type", "web")
    elif t == "microsoft.operationalinsights/workspaces":
        props["customerId"] = stable_uuid("customer", rid)
    elif t == "microsoft.containerregistry/registries":
        props["loginServer"] = f"{name.lower()}.azurecr.io"
    elif t == "microsoft.machinelearningservices/workspaces":
        loc = body.get("location", "")
        props["workspaceId"] = stable_uuid("workspace", rid)
        props["discoveryUrl"] = f"https://{loc}.api.azureml.ms/discovery"
        props["mlFlowTrackingUri"] = f"azureml://{loc}.api.azureml.ms/mlflow/v1.0{rid}"
        props.setdefault("friendlyName", name)
    elif t == "microsoft.machinelearningservices/workspaces/computes":
        props.setdefault("computeLocation", body.get("location"))
        inner = props.get("properties")
        if isinstance(inner, dict) and props.get("computeType") == "AmlCompute":
            props["properties"] = {
                **inner,
                "allocationState": "Steady",
                "currentNodeCount": 0,
                "targetNodeCount": 0,
                "nodeStateCounts": {
                    "idleNodeCount": 0,
                    "runningNodeCount": 0,
                    "preparingNodeCount": 0,
                    "unusableNodeCount": 0,
                    "leavingNodeCount": 0,
                    "preemptedNodeCount": 0,
                },
            }
    if t not in NO_PROVISIONING_STATE:
        props["provisioningState"] = state
    if t == "microsoft.authorization/roleassignments":
        props.setdefault("scope", rid.split("/providers/Microsoft.Authorization/", maxsplit=1)[0])
    out["properties"] = props
    return out
