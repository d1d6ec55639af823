"""Azure's naming rules, in one place, each with a sentence that says what to change.

Each pattern is the one the REST API specification gives the name (azure-rest-api-specs), unless a
comment says Microsoft documents (or the service enforces) a stricter rule; emulator/validation.py
holds its own copy of the same rules, so that a regression here is caught by the emulator.
"""

from __future__ import annotations

import re

# Storage accounts (Microsoft.Storage 2023-05-01, the api-version cloud/ and azure-mgmt-storage use): 3 to 24
# lowercase letters and digits (https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules#microsoftstorage).
STORAGE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
# Key vaults (Microsoft.KeyVault 2023-07-01): 3 to 24 letters, digits and hyphens, a letter first, a letter or
# digit last, no "--" (resource-name-rules#microsoftkeyvault, and Key Vault's VaultNameNotValid message).
KEY_VAULT = re.compile(r"^[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$")
# specification/machinelearningservices/resource-manager/Microsoft.MachineLearningServices/stable/2024-04-01/
# machineLearningServices.json, parameter WorkspaceNameParameter (the same in 2025-09-01).
WORKSPACE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$")
# The Azure ML compute name (ComputeResource's computeName in the Azure ML TypeSpec,
# specification/machinelearningservices, NamePattern): 3 to 24 characters, a letter first, and not
# ending in "-<digits>". The Swagger files azure-ai-ml is generated from (2023-08-01-preview, 2024-04-01)
# carry no pattern for it, but the service says the same when it refuses one: "A name for an Azure ML
# Compute Instance must be between 3 and 24 characters in length and must use only numbers, letters and
# minus symbol (-), must start with letters. Numbers cannot be the ending of the name if the previous
# character is a minus symbol (-)." (https://github.com/microsoftdocs/pipelines-azureml/issues/19).
COMPUTE = re.compile(r"^[a-zA-Z](?![a-zA-Z0-9-]*-\d+$)[a-zA-Z0-9\-]{2,23}$")
# Clusters, stricter: "If - character is used, then it needs to be followed by at least one letter later
# in the name" (Create an Azure Machine Learning compute cluster, Advanced settings, Compute name:
# https://learn.microsoft.com/azure/machine-learning/how-to-create-attach-compute-cluster). The part after
# the last hyphen is then never digits only, nor empty.
COMPUTE_CLUSTER = re.compile(r"^(?!.*-[0-9]*$)[a-zA-Z](?![a-zA-Z0-9-]*-\d+$)[a-zA-Z0-9\-]{2,23}$")
# Azure ML datastore names: letters, digits and underscores, as before this audit (no spec pattern found for
# the datastore name in machineLearningServices.json / mfe.json 2024-04-01).
DATASTORE = re.compile(r"^[a-zA-Z0-9_]{1,255}$")
# Blob containers and file shares: 3 to 63 characters, lowercase letters, digits and single hyphens, a
# letter or digit first and last (Storage's naming rule:
# https://learn.microsoft.com/rest/api/storageservices/naming-and-referencing-containers--blobs--and-metadata).
CONTAINER = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
# Resource groups: 1 to 90 characters of letters, digits, "-", "_", ".", "(" and ")", not ending with a period
# (common-types ResourceGroupNameParameter; resource-name-rules#microsoftresources).
RESOURCE_GROUP = re.compile(r"^[-\w._()]{0,89}[-\w_()]$")
# Container registries (Microsoft.ContainerRegistry 2025-11-01, azure-mgmt-containerregistry 15): 5 to 50
# letters and digits (resource-name-rules#microsoftcontainerregistry).
REGISTRY = re.compile(r"^[a-zA-Z0-9]{5,50}$")
# Application Insights components (Microsoft.Insights 2020-02-02): 1 to 260 characters, none of % & \ ? /,
# not ending in a space or a period (resource-name-rules#microsoftinsights).
INSIGHTS = re.compile(r"^[^%&\\?/]{0,259}[^%&\\?/. ]$")
# Ours, not Azure's: short enough that every derived name above stays within its limits.
TEAM = re.compile(r"^[a-z][a-z0-9-]{0,18}[a-z0-9]$")
TAG_NAME_FORBIDDEN = set("<>%&\\?/")

RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "storage_account": (
        STORAGE_ACCOUNT,
        "a storage account name must be 3 to 24 characters, lowercase letters and digits only",
    ),
    "key_vault": (
        KEY_VAULT,
        "a key vault name must be 3 to 24 characters of letters, digits and hyphens, start with a letter, "
        "end with a letter or digit, and have no two hyphens in a row",
    ),
    "workspace": (
        WORKSPACE,
        "a workspace name must be 3 to 33 characters, start with a letter or digit, "
        "and use only letters, digits, hyphens and underscores",
    ),
    "compute": (
        COMPUTE,
        "a compute name must be 3 to 24 characters of letters, digits and hyphens, start with a letter, and "
        "not end in a hyphen followed by digits only (write 'cpu1' or 'cpu-a', not 'cpu-1')",
    ),
    "compute_cluster": (
        COMPUTE_CLUSTER,
        "a compute cluster name must be 3 to 24 characters of letters, digits and hyphens, start with a letter, "
        "and have a letter somewhere after its last hyphen (write 'cpu1' or 'cpu-a', not 'cpu-1' or 'cpu-')",
    ),
    "datastore": (DATASTORE, "a datastore name may use only letters, digits and underscores (1 to 255 characters)"),
    "container": (
        CONTAINER,
        "a container or share name must be 3 to 63 characters of lowercase letters, digits and hyphens, "
        "start and end with a letter or digit, and have no two hyphens in a row",
    ),
    "resource_group": (
        RESOURCE_GROUP,
        "a resource group name must be 1 to 90 characters of letters, digits, '.', '_', '-', '(' and ')' "
        "and must not end with a period",
    ),
    "registry": (REGISTRY, "a container registry name must be 5 to 50 letters and digits"),
    "insights": (
        INSIGHTS,
        "an Application Insights name must be 1 to 260 characters without % & \\ ? /, "
        "and must not end with a space or a period",
    ),
    "team": (
        TEAM,
        "a team name must be 2 to 20 characters of lowercase letters, digits and hyphens, "
        "start with a letter and end with a letter or digit",
    ),
}


def name_problem(kind: str, value: str) -> str | None:
    """Return what is wrong with `value` as a name of `kind`, or None when it is valid."""
    pattern, sentence = RULES[kind]
    if pattern.match(value):
        return None
    return f"'{value}' is not valid: {sentence}."


def tag_problem(name: str, value: str) -> str | None:
    """Return what is wrong with one tag, or None when Azure accepts it."""
    if not name:
        return "tag names must not be empty."
    if len(name) > 512:
        return f"tag name '{name[:40]}...' is {len(name)} characters; Azure allows at most 512."
    if forbidden := sorted(TAG_NAME_FORBIDDEN.intersection(name)):
        return f"tag name '{name}' contains {' '.join(forbidden)}; Azure does not allow < > % & \\ ? / in tag names."
    if len(value) > 256:
        return f"the value of tag '{name}' is {len(value)} characters; Azure allows at most 256."
    return None
