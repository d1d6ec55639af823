"""Request body and name validation per resource type, so that a wrong SDK call fails as Azure would."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from emulator.arm_errors import ArmError

# The same rules as models/azure_names.py, written out again on purpose: intake and the emulated cloud
# must agree because both follow Azure, not because one imports the other (a regression in one is then
# caught by the other). Sources are cited beside each rule there; in short:
NAME_RULES: dict[str, tuple[str, str, str]] = {
    # type: (pattern, error code, rule in Azure's words)
    "microsoft.storage/storageaccounts": (
        r"^[a-z0-9]{3,24}$",
        "AccountNameInvalid",
        "is not a valid storage account name. Storage account name must be between 3 and 24 characters in length "
        "and use numbers and lower-case letters only.",
    ),
    "microsoft.keyvault/vaults": (
        r"^[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$",
        "VaultNameNotValid",
        "is not valid. The vault name must be a 3-24 character string, containing only 0-9, a-z, A-Z, and not "
        "consecutive -, starting with a letter and ending with a letter or digit.",
    ),
    "microsoft.machinelearningservices/workspaces": (
        r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$",
        "InvalidResourceName",
        "is not valid. Workspace names must be 3-33 characters, start with a letter or digit, and contain only "
        "letters, digits, hyphens and underscores.",
    ),
    # Azure ML compute names: the Azure ML TypeSpec's computeName NamePattern, and Azure ML's own message when
    # it refuses one (https://github.com/microsoftdocs/pipelines-azureml/issues/19). AmlCompute clusters have
    # the stricter rule in CLUSTER_NAME_RULE below.
    "microsoft.machinelearningservices/workspaces/computes": (
        r"^[a-zA-Z](?![a-zA-Z0-9-]*-\d+$)[a-zA-Z0-9\-]{2,23}$",
        "InvalidResourceName",
        "is not valid. A name for an Azure ML Compute Instance must be between 3 and 24 characters in length and "
        "must use only numbers, letters and minus symbol (-), must start with letters. Numbers cannot be the "
        "ending of the name if the previous character is a minus symbol (-).",
    ),
    "microsoft.containerregistry/registries": (
        r"^[a-zA-Z0-9]{5,50}$",
        "InvalidResourceName",
        "is not valid. Registry names must be 5-50 alphanumeric characters.",
    ),
    "microsoft.storage/storageaccounts/blobservices/containers": (
        r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$",
        "ContainerOperationFailure",
        "is not a valid container name.",
    ),
    "microsoft.storage/storageaccounts/fileservices/shares": (
        r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$",
        "InvalidResourceName",
        "is not a valid share name.",
    ),
}

# "If - character is used, then it needs to be followed by at least one letter later in the name"
# (https://learn.microsoft.com/azure/machine-learning/how-to-create-attach-compute-cluster, Compute name).
CLUSTER_NAME_RULE = (
    r"^(?!.*-[0-9]*$)[a-zA-Z](?![a-zA-Z0-9-]*-\d+$)[a-zA-Z0-9\-]{2,23}$",
    "InvalidResourceName",
    "is not valid. A compute cluster name must be between 3 and 24 characters, use only letters, digits and "
    "the - character, start with a letter, and a - must be followed by at least one letter later in the name.",
)

STORAGE_SKUS = {
    "standard_lrs",
    "standard_grs",
    "standard_ragrs",
    "standard_zrs",
    "premium_lrs",
    "premium_zrs",
    "standard_gzrs",
    "standard_ragzrs",
}
STORAGE_KINDS = {"storage", "storagev2", "blobstorage", "filestorage", "blockblobstorage"}
PRINCIPAL_TYPES = {"user", "group", "serviceprincipal", "foreigngroup", "device"}
DATASTORE_TYPES = {"azureblob": "containerName", "azurefile": "fileShareName", "azuredatalakegen2": "filesystem"}
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _bad(message: str, code: str = "InvalidRequestContent") -> ArmError:
    return ArmError(400, code, message)


def _require(body: dict[str, Any], path: str) -> Any:
    node: Any = body
    for part in path.split("."):
        if not isinstance(node, dict) or node.get(part) in (None, ""):
            raise _bad(f"The request content was invalid: the required property '{path}' is missing.")
        node = node[part]
    return node


def _enum(value: Any, allowed: set[str], what: str) -> None:
    if str(value).lower() not in allowed:
        raise _bad(f"The value '{value}' is not valid for {what}; allowed: {', '.join(sorted(allowed))}.")


def _storage(body: dict[str, Any]) -> None:
    _enum(_require(body, "sku.name"), STORAGE_SKUS, "sku.name")
    _enum(_require(body, "kind"), STORAGE_KINDS, "kind")


def _vault(body: dict[str, Any]) -> None:
    if (body.get("properties") or {}).get("createMode") == "recover":
        return
    tenant = _require(body, "properties.tenantId")
    if not GUID.match(str(tenant)):
        raise _bad(f"The tenant id '{tenant}' is not a GUID.", "BadRequest")
    _enum(_require(body, "properties.sku.name"), {"standard", "premium"}, "properties.sku.name")
    _require(body, "properties.sku.family")


def _compute(body: dict[str, Any]) -> None:
    ctype = _require(body, "properties.computeType")
    _enum(ctype, {"amlcompute", "computeinstance"}, "properties.computeType")
    inner = _require(body, "properties.properties")
    if str(ctype).lower() == "amlcompute":
        _require(inner, "vmSize")
        scale = _require(inner, "scaleSettings")
        low, high = int(scale.get("minNodeCount") or 0), int(scale.get("maxNodeCount") or 0)
        if low > high:
            raise _bad(f"minNodeCount ({low}) must not exceed maxNodeCount ({high}).", "BadRequest")
        if str(inner.get("vmPriority", "Dedicated")).lower() not in ("dedicated", "lowpriority"):
            raise _bad(f"vmPriority '{inner.get('vmPriority')}' is not valid.", "BadRequest")
    else:
        _require(inner, "vmSize")


def _datastore(body: dict[str, Any]) -> None:
    dtype = str(_require(body, "properties.datastoreType"))
    if dtype.lower() not in DATASTORE_TYPES:
        raise _bad(f"datastoreType '{dtype}' is not valid.", "UserError")
    _require(body, "properties.accountName")
    _require(body, f"properties.{DATASTORE_TYPES[dtype.lower()]}")


def _role_assignment(body: dict[str, Any]) -> None:
    definition = str(_require(body, "properties.roleDefinitionId"))
    if "/providers/microsoft.authorization/roledefinitions/" not in definition.lower():
        raise _bad(f"The role definition id '{definition}' is not valid.", "InvalidRoleDefinitionId")
    principal = str(_require(body, "properties.principalId"))
    if not GUID.match(principal):
        raise _bad(f"The principal id '{principal}' is not a GUID.", "InvalidPrincipalId")
    if "principalType" in (body.get("properties") or {}):
        _enum(body["properties"]["principalType"], PRINCIPAL_TYPES, "properties.principalType")


def _registry(body: dict[str, Any]) -> None:
    _enum(_require(body, "sku.name"), {"basic", "standard", "premium"}, "sku.name")


def _insights(body: dict[str, Any]) -> None:
    _require(body, "kind")
    if (body.get("properties") or {}).get("IngestionMode") == "LogAnalytics" or "WorkspaceResourceId" in (
        body.get("properties") or {}
    ):
        _require(body, "properties.WorkspaceResourceId")


# ManagementLockProperties: `level` required, NotSpecified | CanNotDelete | ReadOnly; notes at most 512
# characters; a lock name at most 260 characters without <, >, %, &, :, \, ?, / or control characters
# (resources/resource-manager/Microsoft.Authorization/locks/stable/2020-05-01/locks.json).
LOCK_LEVELS = {"notspecified", "cannotdelete", "readonly"}
LOCK_NAME = re.compile(r"^[^<>%&:\\?/\x00-\x1f]{1,260}$")


def _lock(body: dict[str, Any]) -> None:
    _enum(_require(body, "properties.level"), LOCK_LEVELS, "properties.level")
    notes = (body.get("properties") or {}).get("notes")
    if notes is not None and len(str(notes)) > 512:
        raise _bad("The lock notes can be at most 512 characters.", "LockNotesTooLong")


BODY_RULES: dict[str, Callable[[dict[str, Any]], None]] = {
    "microsoft.storage/storageaccounts": _storage,
    "microsoft.keyvault/vaults": _vault,
    "microsoft.machinelearningservices/workspaces/computes": _compute,
    "microsoft.machinelearningservices/workspaces/datastores": _datastore,
    "microsoft.authorization/roleassignments": _role_assignment,
    "microsoft.containerregistry/registries": _registry,
    "microsoft.insights/components": _insights,
    "microsoft.authorization/locks": _lock,
}


def validate(rtype: str, name: str, body: dict[str, Any]) -> None:
    """Raise the ArmError Azure would answer for a bad name or body; return when both are fine."""
    t = rtype.lower()
    rule = NAME_RULES.get(t)
    if t == "microsoft.machinelearningservices/workspaces/computes" and _is_cluster(body):
        rule = CLUSTER_NAME_RULE
    if rule and not re.match(rule[0], name):
        raise ArmError(400, rule[1], f"'{name}' {rule[2]}")
    if t == "microsoft.authorization/locks" and not LOCK_NAME.match(name):
        raise ArmError(
            400,
            "InvalidLockName",
            f"The lock name '{name}' is not valid: at most 260 characters, without <, >, %, &, :, \\, ?, / or "
            "control characters.",
        )
    check = BODY_RULES.get(t)
    if check:
        check(body)


def _is_cluster(body: dict[str, Any]) -> bool:
    props = body.get("properties") if isinstance(body, dict) else None
    return isinstance(props, dict) and str(props.get("computeType", "")).lower() == "amlcompute"
