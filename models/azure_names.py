"""Azure's naming rules, in one place, each with a sentence that says what to change."""

from __future__ import annotations

import re

STORAGE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
KEY_VAULT = re.compile(r"^[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$")
WORKSPACE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$")
COMPUTE = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{2,15}$")
DATASTORE = re.compile(r"^[a-zA-Z0-9_]{1,255}$")
CONTAINER = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
RESOURCE_GROUP = re.compile(r"^[-\w._()]{0,89}[-\w_()]$")
REGISTRY = re.compile(r"^[a-zA-Z0-9]{5,50}$")
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
        "a compute name must be 3 to 16 characters, start with a letter, and use only letters, digits and hyphens",
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
