"""The emulator's resource types: how each behaves and what Azure adds to it on read."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any


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


TYPES = {
    t.name.lower(): t
    for t in [
        ResourceType("Microsoft.Resources/resourceGroups", lro=False),
        ResourceType("Microsoft.Storage/storageAccounts", location_lro=True, global_name="StorageAccountAlreadyTaken"),
        ResourceType("Microsoft.Storage/storageAccounts/blobServices/containers", lro=False, needs_location=False),
        ResourceType("Microsoft.Storage/storageAccounts/fileServices/shares", lro=False, needs_location=False),
        ResourceType("Microsoft.KeyVault/vaults", global_name="VaultAlreadyExists"),
        ResourceType("Microsoft.OperationalInsights/workspaces"),
        ResourceType("Microsoft.Insights/components", lro=False, create_status=200),
        ResourceType("Microsoft.ContainerRegistry/registries", global_name="AlreadyInUse"),
        ResourceType("Microsoft.MachineLearningServices/workspaces"),
        ResourceType("Microsoft.MachineLearningServices/workspaces/computes"),
        ResourceType("Microsoft.MachineLearningServices/workspaces/datastores", lro=False, needs_location=False),
        ResourceType("Microsoft.MachineLearningServices/workspaces/connections", lro=False, needs_location=False),
        ResourceType("Microsoft.Authorization/roleAssignments", lro=False, needs_location=False),
        ResourceType("Microsoft.Resources/deployments", needs_location=False),
    ]
}


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
    if t in ("microsoft.machinelearningservices/workspaces/datastores", "microsoft.authorization/roleassignments"):
        pass
    else:
        props["provisioningState"] = state
    if t == "microsoft.authorization/roleassignments":
        props.setdefault("scope", rid.split("/providers/Microsoft.Authorization/", maxsplit=1)[0])
    out["properties"] = props
    return out
