"""What the emulated regions offer: VM sizes (family, vCPUs) and default quotas."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VmSize:
    """A VM size as quota sees it."""

    family: str
    vcpus: int


VM_SIZES = {
    k.lower(): v
    for k, v in {
        "Standard_DS2_v2": VmSize("standardDSv2Family", 2),
        "Standard_DS3_v2": VmSize("standardDSv2Family", 4),
        "Standard_DS4_v2": VmSize("standardDSv2Family", 8),
        "Standard_DS5_v2": VmSize("standardDSv2Family", 16),
        "Standard_D4s_v5": VmSize("standardDSv5Family", 4),
        "Standard_D16s_v5": VmSize("standardDSv5Family", 16),
        "Standard_E8s_v5": VmSize("standardESv5Family", 8),
        "Standard_NC6s_v3": VmSize("standardNCSv3Family", 6),
        "Standard_NC12s_v3": VmSize("standardNCSv3Family", 12),
        "Standard_NC24ads_A100_v4": VmSize("standardNCADSA100v4Family", 24),
    }.items()
}

FAMILY_NAMES = {
    "standardDSv2Family": "Standard DSv2 Family Cluster Dedicated vCPUs",
    "standardDSv5Family": "Standard DSv5 Family Cluster Dedicated vCPUs",
    "standardESv5Family": "Standard ESv5 Family Cluster Dedicated vCPUs",
    "standardNCSv3Family": "Standard NCSv3 Family Cluster Dedicated vCPUs",
    "standardNCADSA100v4Family": "Standard NCADS_A100_v4 Family Cluster Dedicated vCPUs",
}

DEFAULT_FAMILY_LIMIT = 1000  # generous, so a devhost serves many teams; tests and scenarios set real limits
DEFAULT_LOW_PRIORITY_LIMIT = 1000


# ----- published api-versions ---------------------------------------------------------------------
#
# Only api-versions with a spec folder in Azure/azure-rest-api-specs are accepted, per resource type,
# so that an SDK bump to a version Azure has not published fails here rather than in Azure. Each
# entry cites the spec files that define the type at those versions (paths under specification/).
# The lists hold the versions checked against the specs, not necessarily every published version:
# add one by citing its spec file. Types not listed here (the emulator's own operation URLs) are
# not checked.


@dataclass(frozen=True)
class PublishedVersions:
    """The api-versions Azure publishes for one resource type, and the spec files that say so."""

    type: str
    versions: frozenset[str]
    spec: str


def _published(rtype: str, spec: str, *versions: str) -> PublishedVersions:
    return PublishedVersions(rtype, frozenset(versions), spec)


# storage/resource-manager/readme.md (tags package-2021-02 .. package-2026-09):
# Microsoft.Storage/stable/{version}/storage.json, blob.json, file.json (openapi.json from 2025-06-01).
_STORAGE = (
    "2021-02-01", "2021-04-01", "2021-06-01", "2021-08-01", "2021-09-01", "2022-05-01", "2022-09-01",
    "2023-01-01", "2023-04-01", "2023-05-01", "2024-01-01", "2025-01-01", "2025-06-01", "2025-08-01",
    "2026-04-01", "2026-06-01", "2026-09-01",
)  # fmt: skip
_STORAGE_SPEC = "storage/resource-manager/Microsoft.Storage/stable/{v}/ (readme.md tags package-2021-02..2026-09)"
# keyvault/resource-manager/Microsoft.KeyVault/KeyVault/stable/{2016-10-01..2022-11-01}/keyvault.json,
# Microsoft.KeyVault/stable/2023-07-01/keyvault.json, Microsoft.KeyVault/KeyVault/stable/2026-05-15/openapi.json
_KEYVAULT = (
    "2016-10-01",
    "2018-02-14",
    "2019-09-01",
    "2021-10-01",
    "2022-07-01",
    "2022-11-01",
    "2023-07-01",
    "2026-05-15",
)
_KEYVAULT_SPEC = "keyvault/resource-manager/Microsoft.KeyVault/{KeyVault/}stable/{v}/"
# machinelearningservices/resource-manager/Microsoft.MachineLearningServices/preview/2023-08-01-preview/,
# stable/2024-04-01/, preview/2024-10-01-preview/ machineLearningServices.json (workspaces, computes, usages)
_ML = ("2023-08-01-preview", "2024-04-01", "2024-10-01-preview")
_ML_SPEC = "machinelearningservices/resource-manager/Microsoft.MachineLearningServices/{stable|preview}/{v}/machineLearningServices.json"
# resources/resource-manager/Microsoft.Resources/stable/{2020-06-01,2021-04-01,2025-04-01}/resources.json
_RESOURCES = ("2020-06-01", "2021-04-01", "2025-04-01")
_RESOURCES_SPEC = "resources/resource-manager/Microsoft.Resources/stable/{v}/resources.json"

API_VERSIONS = {
    p.type.lower(): p
    for p in [
        _published("Microsoft.Resources/resourceGroups", _RESOURCES_SPEC, *_RESOURCES),
        _published("Microsoft.Resources/providers", _RESOURCES_SPEC, *_RESOURCES),
        # deployments: resources.json up to 2021-04-01, then Microsoft.Resources/deployments/stable/2026-06-01/deployments.json
        _published(
            "Microsoft.Resources/deployments",
            _RESOURCES_SPEC
            + "; resources/resource-manager/Microsoft.Resources/deployments/stable/2026-06-01/deployments.json",
            "2020-06-01",
            "2021-04-01",
            "2026-06-01",
        ),
        _published(
            "Microsoft.Resources/deployments/operations",
            _RESOURCES_SPEC
            + "; resources/resource-manager/Microsoft.Resources/deployments/stable/2026-06-01/deployments.json",
            "2020-06-01",
            "2021-04-01",
            "2026-06-01",
        ),
        _published("Microsoft.Storage/storageAccounts", _STORAGE_SPEC, *_STORAGE),
        _published("Microsoft.Storage/checkNameAvailability", _STORAGE_SPEC, *_STORAGE),
        _published("Microsoft.Storage/storageAccounts/blobServices/containers", _STORAGE_SPEC, *_STORAGE),
        _published("Microsoft.Storage/storageAccounts/fileServices/shares", _STORAGE_SPEC, *_STORAGE),
        _published("Microsoft.KeyVault/vaults", _KEYVAULT_SPEC, *_KEYVAULT),
        _published("Microsoft.KeyVault/checkNameAvailability", _KEYVAULT_SPEC, *_KEYVAULT),
        _published("Microsoft.KeyVault/deletedVaults", _KEYVAULT_SPEC, *_KEYVAULT),
        _published("Microsoft.KeyVault/locations/deletedVaults", _KEYVAULT_SPEC, *_KEYVAULT),
        # operationalinsights/resource-manager/Microsoft.OperationalInsights/LogAnalyticsRP/{preview/2020-03-01-preview,
        # stable/2020-08-01, preview/2021-12-01-preview}/Workspaces.json; .../OperationalInsights/stable/2025-07-01/Workspaces.json
        _published(
            "Microsoft.OperationalInsights/workspaces",
            "operationalinsights/resource-manager/Microsoft.OperationalInsights/{LogAnalyticsRP|OperationalInsights}/{stable|preview}/{v}/Workspaces.json",
            "2020-03-01-preview",
            "2020-08-01",
            "2021-12-01-preview",
            "2025-07-01",
        ),
        # applicationinsights/resource-manager/Microsoft.Insights/stable/2020-02-02/components_API.json
        _published(
            "Microsoft.Insights/components",
            "applicationinsights/resource-manager/Microsoft.Insights/stable/2020-02-02/components_API.json",
            "2020-02-02",
        ),
        # containerregistry/resource-manager/Microsoft.ContainerRegistry/Registry/examples/2025-11-01/RegistryGet.json
        _published(
            "Microsoft.ContainerRegistry/registries",
            "containerregistry/resource-manager/Microsoft.ContainerRegistry/Registry/ (version 2025-11-01)",
            "2025-11-01",
        ),
        _published("Microsoft.MachineLearningServices/workspaces", _ML_SPEC, *_ML),
        _published("Microsoft.MachineLearningServices/workspaces/computes", _ML_SPEC, *_ML),
        _published("Microsoft.MachineLearningServices/workspaces/connections", _ML_SPEC, *_ML),
        _published("Microsoft.MachineLearningServices/locations/usages", _ML_SPEC, *_ML),
        # machinelearningservices/.../Microsoft.MachineLearningServices/preview/2024-10-01-preview/mfe.json
        _published(
            "Microsoft.MachineLearningServices/workspaces/datastores",
            "machinelearningservices/resource-manager/Microsoft.MachineLearningServices/preview/2024-10-01-preview/mfe.json",
            "2024-10-01-preview",
        ),
        # resources/resource-manager/Microsoft.Authorization/locks/stable/2020-05-01/locks.json (ManagementLockClient,
        # what azure-mgmt-resource-locks 1.0 sends)
        _published(
            "Microsoft.Authorization/locks",
            "resources/resource-manager/Microsoft.Authorization/locks/stable/2020-05-01/locks.json",
            "2020-05-01",
        ),
        # authorization/resource-manager/Microsoft.Authorization/stable/2022-04-01/authorization-RoleAssignmentsCalls.json
        _published(
            "Microsoft.Authorization/roleAssignments",
            "authorization/resource-manager/Microsoft.Authorization/stable/2022-04-01/authorization-RoleAssignmentsCalls.json",
            "2022-04-01",
        ),
    ]
}


def published_versions(rtype: str) -> PublishedVersions | None:
    """Return the published api-versions of a type, or of the nearest listed parent (actions such as listKeys)."""
    parts = rtype.split("/")
    if len(parts) == 1:  # GET /subscriptions/{id}/providers/{namespace}: a provider registration
        return API_VERSIONS["microsoft.resources/providers"]
    while len(parts) >= 2:
        found = API_VERSIONS.get("/".join(parts).lower())
        if found is not None:
            return found
        parts = parts[:-1]
    return None
