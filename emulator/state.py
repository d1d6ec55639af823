"""The emulator's state: resources, long-running operations and deployments, with provisioning over time."""

from __future__ import annotations

import base64
import hashlib
import http
import json
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from adapters.sqlite_base import SqliteDatabase
from emulator import templates
from emulator.arm_errors import ArmError
from emulator.catalogue import DEFAULT_FAMILY_LIMIT, DEFAULT_LOW_PRIORITY_LIMIT, FAMILY_NAMES, VM_SIZES
from emulator.faults import FaultPlan
from emulator.resources import TYPES, decorate, stable_uuid
from emulator.validation import NAME_RULES, validate

SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    key TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    parent TEXT NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL,
    ready REAL NOT NULL,
    state TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS resources_parent ON resources (parent, type);
CREATE INDEX IF NOT EXISTS resources_name ON resources (type, name);
CREATE TABLE IF NOT EXISTS deleted_vaults (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    location TEXT NOT NULL,
    body TEXT NOT NULL,
    deleted REAL NOT NULL,
    purge_protection INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deleted_workspaces (
    key TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    deleted REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS operations (
    id TEXT PRIMARY KEY,
    resource_key TEXT NOT NULL,
    ready REAL NOT NULL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS purges (
    key TEXT PRIMARY KEY,
    op TEXT NOT NULL,
    ready REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deletes (
    op TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    started REAL NOT NULL,
    ready REAL NOT NULL,
    purge INTEGER NOT NULL,
    error TEXT,
    status INTEGER,
    done INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deletes_pending ON deletes (done, ready);
"""

# ARM's words for a resource that failed after its PUT was accepted, and for a failed deployment.
# Source: Microsoft Learn, "Troubleshoot common Azure deployment errors" (DeploymentFailed,
# ResourceDeploymentFailure) and the Microsoft.Resources deployments spec, api-version 2020-06-01 (what
# azure-ai-ml sends): DeploymentPropertiesExtended.error is an ErrorResponse with nested `details`.
DEPLOYMENT_FAILED = (
    "At least one resource deployment operation failed. Please list deployment operations for details. "
    "Please see https://aka.ms/arm-deployment-operations for usage details."
)
TERMINAL_FAILED = "The resource operation completed with terminal provisioning state 'Failed'."


def _iso(t: float) -> str:
    """Format an emulator time as ARM writes dates (UTC, seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _status_name(status: int) -> str:
    """Return the HTTP status as ARM names it in a deployment's error details ('Conflict', 'BadRequest')."""
    try:
        return http.HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return str(status)


def _wrapped_sync_error(exc: ArmError) -> dict[str, Any]:
    """Wrap a resource provider's refusal the way ARM puts it in a deployment: status name, RP body as text."""
    return {"code": _status_name(exc.status), "message": json.dumps(exc.body(), indent=2)}


def _wrapped_async_error(rp_error: dict[str, Any]) -> dict[str, Any]:
    """Wrap a create that ended Failed: ResourceDeploymentFailure, the operation's status document as text."""
    status = {
        "status": "Failed",
        "error": {"code": "ResourceDeploymentFailure", "message": TERMINAL_FAILED, "details": [rp_error]},
    }
    return {"code": "Conflict", "message": json.dumps(status, indent=2)}


# Azure AI Administrator, the role Azure gives a new workspace's identity on its resource group:
# https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/ai-machine-learning#azure-ai-administrator
AZURE_AI_ADMINISTRATOR = "b78c5d69-af96-48a3-bf8d-a8b4d589de94"  # Azure AI Administrator


def _keep_default_flag(stored: dict[str, Any], row: Any) -> dict[str, Any]:
    """Keep a datastore's `isDefault` as Azure set it, whatever a PUT says.

    The property is read-only (machinelearningservices 2024-10-01-preview, DatastoreProperties.isDefault).
    """
    old = (json.loads(row["body"]).get("properties") or {}).get("isDefault", False) if row is not None else False
    return {**stored, "properties": {**(stored.get("properties") or {}), "isDefault": bool(old)}}


@dataclass
class ArmPath:
    """A parsed ARM resource path."""

    subscription: str
    resource_group: str | None
    type: str  # full type, e.g. Microsoft.Storage/storageAccounts/blobServices/containers
    name: str | None  # None for a collection
    parent_id: str  # the id of the scope or parent resource
    id: str

    @property
    def key(self) -> str:
        return self.id.lower()


# Deployment operations are also served without the providers segment (azure-ai-ml uses that form).
_LEGACY_DEPLOYMENTS = re.compile(r"^(/subscriptions/[^/]+/resourcegroups/[^/]+)/deployments", re.IGNORECASE)
RESOURCES_LIST = "Microsoft.Resources/resources"  # the generic resource list of a group or subscription
GENERIC_RESOURCE_FIELDS: tuple[str, ...] = ("id", "name", "type", "location", "tags", "kind", "sku", "identity")
_SUB = re.compile(r"^/subscriptions/(?P<sub>[^/]+)(?P<rest>/.*)?$", re.IGNORECASE)


def parse_path(path: str) -> ArmPath:
    """Parse an ARM URL path into scope, type and name."""
    # An empty parentResourcePath gives `Microsoft.Storage//storageAccounts` (ManagementLocks_*AtResourceLevel,
    # Resources_DeleteById); ARM reads it as one separator.
    path = re.sub(r"/{2,}", "/", path)
    path = _LEGACY_DEPLOYMENTS.sub(r"\1/providers/Microsoft.Resources/deployments", path.rstrip("/"))
    m = _SUB.match(path)
    if not m:
        raise ArmError(404, "InvalidResourceId", f"'{path}' is not an ARM resource path.")
    sub, rest = m["sub"], m["rest"] or ""
    parts = rest.strip("/").split("/") if rest else []
    rg = None
    if len(parts) >= 2 and parts[0].lower() == "resourcegroups":
        rg = parts[1]
        if len(parts) == 2:
            return ArmPath(
                sub,
                rg,
                "Microsoft.Resources/resourceGroups",
                rg,
                f"/subscriptions/{sub}",
                f"/subscriptions/{sub}/resourceGroups/{rg}",
            )
    # Resources_ListByResourceGroup and Resources_List (resources.json, Microsoft.Resources 2025-04-01).
    if len(parts) == 3 and parts[0].lower() == "resourcegroups" and parts[2].lower() == "resources":
        group = f"/subscriptions/{sub}/resourceGroups/{parts[1]}"
        return ArmPath(sub, parts[1], RESOURCES_LIST, None, group, f"{group}/resources")
    if len(parts) == 1 and parts[0].lower() == "resources":
        return ArmPath(sub, None, RESOURCES_LIST, None, f"/subscriptions/{sub}", f"/subscriptions/{sub}/resources")
    if len(parts) == 1 and parts[0].lower() == "resourcegroups":
        return ArmPath(sub, None, "Microsoft.Resources/resourceGroups", None, f"/subscriptions/{sub}", path)
    lower = [p.lower() for p in parts]
    if "providers" not in lower:
        raise ArmError(404, "InvalidResourceId", f"'{path}' is not an ARM resource path.")
    pi = len(lower) - 1 - lower[::-1].index("providers")
    scope = "/subscriptions/" + sub + ("/" + "/".join(parts[:pi]) if pi else "")
    namespace = parts[pi + 1] if pi + 1 < len(parts) else ""
    segs = parts[pi + 2 :]
    types = segs[0::2]
    names = segs[1::2]
    rtype = "/".join([namespace, *types])
    name = names[-1] if len(names) == len(types) and names else None
    parent_segs = []
    for t, n in zip(types[:-1], names, strict=False):
        parent_segs += [t, n]
    parent = scope + (f"/providers/{namespace}/" + "/".join(parent_segs) if parent_segs else "")
    rid = scope + f"/providers/{namespace}/" + "/".join(segs)
    return ArmPath(sub, rg, rtype, name, parent, rid)


def _vault_immutables(old: dict[str, Any], new: dict[str, Any], name: str | None) -> None:
    """Refuse a PUT or PATCH that changes what a key vault keeps for good once created.

    "Once set, the retention policy interval cannot be changed", and purge protection cannot be turned
    off once on (Microsoft Learn, "Azure Key Vault soft-delete overview"); softDeleteRetentionInDays
    defaults to 90 (VaultProperties, specification/keyvault/resource-manager/Microsoft.KeyVault/KeyVault/
    models.tsp, api-version 2026-05-15 as azure-mgmt-keyvault 14.1 sends). The wording is the emulator's.
    """
    before, after = old.get("properties") or {}, new.get("properties") or {}
    retention = before.get("softDeleteRetentionInDays", 90)
    if "softDeleteRetentionInDays" in after and after["softDeleteRetentionInDays"] != retention:
        raise ArmError(
            400,
            "BadRequest",
            f"The property 'softDeleteRetentionInDays' of vault '{name}' is {retention} and cannot be changed "
            "once the vault exists.",
        )
    if before.get("enablePurgeProtection") and after.get("enablePurgeProtection") is False:
        raise ArmError(400, "BadRequest", f"Purge protection is enabled on vault '{name}' and cannot be turned off.")


@dataclass
class Config:
    """How the emulated cloud behaves; tests and the devhost change it at run time."""

    latency_s: float = 1.0
    latency_by_type: dict[str, float] = field(default_factory=dict)
    retry_after_s: int = 1
    tenant_id: str = "72f988bf-0000-4000-8000-000000000000"
    # quota[region][family] = dedicated vCPU limit; "lowPriority" is the low-priority limit of a region.
    quota: dict[str, dict[str, int]] = field(default_factory=dict)
    # Resource provider namespaces the subscriptions are not registered for (lowercase).
    unregistered: list[str] = field(default_factory=list)
    # Namespaces still registering (lowercase): reported as Registering; writes are not refused.
    registering: list[str] = field(default_factory=list)
    # Entries per page of the ML usages list (Usages_List is pageable: nextLink).
    usages_page_size: int = 50
    # A vault's retention when it does not say (VaultProperties.softDeleteRetentionInDays defaults to 90).
    soft_delete_retention_days: int = 90
    # A soft-deleted workspace is held this long unless it says otherwise (WorkspaceProperties.
    # softDeleteRetentionInDays, workspaceRP.json 2024-10-01-preview); Azure ML's default is 14 days
    # (https://learn.microsoft.com/azure/machine-learning/concept-soft-delete, "Soft delete retention period").
    workspace_soft_delete_retention_days: int = 14
    # How long a long-running DELETE runs: per type, else `delete_latency_s`, else as long as a create.
    delete_latency_s: float | None = None
    delete_latency_by_type: dict[str, float] = field(default_factory=dict)
    # How many items a list answers before it gives a nextLink (ARM's paging: `value` + `nextLink`).
    page_size: int = 100

    def quota_limit(self, region: str, family: str) -> int:
        default = DEFAULT_LOW_PRIORITY_LIMIT if family == "lowPriority" else DEFAULT_FAMILY_LIMIT
        return self.quota.get(region.lower(), {}).get(family, default)

    def latency(self, rtype: str) -> float:
        return self.latency_by_type.get(rtype.lower(), self.latency_s)

    def delete_latency(self, rtype: str) -> float:
        default = self.latency(rtype) if self.delete_latency_s is None else self.delete_latency_s
        return self.delete_latency_by_type.get(rtype.lower(), default)


class EmulatorState:
    """Everything the emulated cloud holds."""

    def __init__(
        self, path: Path | str = ":memory:", config: Config | None = None, faults: FaultPlan | None = None
    ) -> None:
        self.db = SqliteDatabase(path, SCHEMA)
        self.config = config or Config()
        self.faults = faults or FaultPlan()
        self.creates: Counter[str] = Counter()
        self.deletes: Counter[str] = Counter()  # resources removed (a cascade counts each), per resource id
        # The emulator's clock runs `clock_offset_s` ahead of the machine's: `/_emulator/clock` moves it so
        # that retention periods (days) pass in a test. Every time the emulator keeps is on this clock.
        self.clock_offset_s = 0.0
        self.calls: Counter[str] = Counter()
        # Calls per (reads|writes|deletes, resource type, whether it polled an async operation, throttled): what a
        # client costs ARM, per kind of resource (the benchmarks' "ARM calls per workspace").
        self.tally: Counter[tuple[str, str, bool, bool]] = Counter()
        self.op_types: dict[str, str] = {}  # the resource type each async operation works on, for the tally
        # Calls ARM let through per (subscription, reads|writes|deletes): what each subscription's buckets admitted.
        self.by_subscription: Counter[tuple[str, str]] = Counter()
        self.requests: list[dict[str, Any]] = []  # every write call, for tests that check what the SDKs send
        self._key_secret = secrets.token_hex(16)
        self._lock = threading.Lock()

    def now(self) -> float:
        """Return the emulator's time (the machine's, moved on by `advance_clock`)."""
        return time.time() + self.clock_offset_s

    def advance_clock(self, seconds: float) -> float:
        """Move the emulator's clock forward (never back); return the new offset."""
        if seconds < 0:
            raise ValueError("the emulator's clock only moves forward")
        with self._lock:
            self.clock_offset_s += seconds
        return self.clock_offset_s

    # ----- reads ----------------------------------------------------------------------------

    def _row(self, key: str) -> Any:
        return self.db.conn().execute("SELECT * FROM resources WHERE key = ?", (key.lower(),)).fetchone()

    def _state(self, row: Any, now: float) -> str:
        # A create that is to fail (fault rule `provisioning_state: Failed`) runs like any other, then ends Failed.
        if now >= row["ready"]:
            return "Failed" if row["error"] else "Succeeded"
        return str(row["state"])

    def _view(self, row: Any, now: float) -> dict[str, Any]:
        body = json.loads(row["body"])
        if row["type"].lower() == "microsoft.resources/deployments":
            return self._deployment_view(row, body, now)
        # While a DELETE runs, the resource (and all in a group being deleted) reads `Deleting`, as Azure shows it.
        state = "Deleting" if self._deleting(self.db.conn(), row["key"]) else self._state(row, now)
        return decorate(row["type"], row["id"], row["name"], body, state, self.config.tenant_id)

    def _deleting(self, conn: Any, key: str) -> Any:
        """Return the running delete of this resource or of one above it (its group, its parent), or None."""
        for d in conn.execute("SELECT * FROM deletes WHERE done = 0 ORDER BY started").fetchall():
            if key == d["key"] or key.startswith(d["key"] + "/"):
                return d
        return None

    def get(self, p: ArmPath) -> dict[str, Any]:
        """Return a resource, or raise a 404 the way ARM words it."""
        self._settle()
        row = self._row(p.key)
        if row is None:
            self._require_group(p)
            if p.type.lower() == "microsoft.authorization/locks":
                # ManagementLocks_Get* (locks.json 2020-05-01) answer ARM's default error for a missing lock.
                raise ArmError(404, "LockNotFound", f"The lock '{p.name}' could not be found.")
            short = p.type.split("/", 1)[-1]
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource '{p.type.split('/')[0]}/{short}/{p.name}' under resource group "
                f"'{p.resource_group}' was not found.",
            )
        return self._view(row, self.now())

    def list_children(self, p: ArmPath, query: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Return every item a list operation holds, before paging: what exists, as ARM lists it."""
        query = query or {}
        self._settle()
        t = p.type.lower()
        if t != "microsoft.resources/resourcegroups":
            self._require_group(p)
        if t == RESOURCES_LIST.lower():
            return self._list_resources(p)
        if t == "microsoft.authorization/roleassignments":
            return self._list_role_assignments(p, query.get("$filter", ""))
        if t == "microsoft.authorization/locks":
            return self._list_locks(p)
        conn = self.db.conn()
        if t == "microsoft.resources/resourcegroups":
            rows = conn.execute(
                "SELECT * FROM resources WHERE parent = ? AND lower(type) = ? ORDER BY created",
                (f"/subscriptions/{p.subscription}".lower(), t),
            ).fetchall()
        elif p.resource_group is None and "/" not in t.split("/", 1)[1]:
            # A top-level type listed at a subscription (Workspaces_ListBySubscription, machinelearningservices
            # 2024-10-01-preview; StorageAccounts_List, ...): every one in the subscription, whatever its group.
            rows = conn.execute(
                "SELECT * FROM resources WHERE lower(type) = ? AND key LIKE ? ORDER BY created",
                (t, f"/subscriptions/{p.subscription.lower()}/%"),
            ).fetchall()
        else:
            rows = conn.execute(
                "SELECT * FROM resources WHERE parent = ? AND lower(type) = ? ORDER BY created",
                (p.parent_id.lower(), t),
            ).fetchall()
        now = self.now()
        items = [self._view(r, now) for r in rows]
        if t == "microsoft.machinelearningservices/workspaces/datastores" and "isDefault" in query:
            # Datastores_List's isDefault filter (machinelearningservices 2024-10-01-preview, Datastore/list.json).
            wanted = query["isDefault"].lower() == "true"
            items = [d for d in items if bool(d["properties"].get("isDefault")) == wanted]
        return items

    def list_page(self, p: ArmPath, query: Mapping[str, str], url: str) -> dict[str, Any]:
        """Answer a list operation one page at a time: `value`, and `nextLink` while more remain.

        Every ARM list result is `{"value": [...], "nextLink": ...}` (x-ms-pageable, nextLinkName nextLink, in each
        spec's list operations, e.g. authorization-RoleAssignmentsCalls.json 2022-04-01, RoleAssignmentListResult).
        """
        items = self.list_children(p, query)
        token = query.get("$skipToken", "0")
        if not token.isdigit():
            raise ArmError(400, "InvalidSkipToken", f"The skip token '{token}' is not valid.")
        start, size = int(token), max(1, self.config.page_size)
        page: dict[str, Any] = {"value": items[start : start + size]}
        if start + size < len(items):
            parts = urlsplit(url)
            kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "$skipToken"]
            page["nextLink"] = urlunsplit(parts._replace(query=urlencode([*kept, ("$skipToken", start + size)])))
        return page

    def _list_resources(self, p: ArmPath) -> list[dict[str, Any]]:
        """Resources_ListByResourceGroup / Resources_List (resources.json, Microsoft.Resources 2025-04-01).

        The list holds the group's tracked top-level resources as GenericResourceExpanded (id, name, type,
        location, tags, kind, sku, identity), without their properties; deployments are not resources, and
        child and extension resources (containers, computes, datastores, role assignments) are listed by
        their own parents.
        """
        scope = p.parent_id.lower()
        rows = (
            self.db.conn()
            .execute("SELECT * FROM resources WHERE key LIKE ? ORDER BY created", (scope + "/%",))
            .fetchall()
        )
        out: list[dict[str, Any]] = []
        now = self.now()
        for r in rows:
            t = r["type"].lower()
            if t in ("microsoft.resources/deployments", "microsoft.resources/resourcegroups"):
                continue
            if "/" in t.split("/", 1)[1] or r["key"].count("/providers/") != 1:
                continue
            view = self._view(r, now)
            out.append({k: view[k] for k in GENERIC_RESOURCE_FIELDS if k in view})
        return out

    def _list_role_assignments(self, p: ArmPath, filter_: str) -> list[dict[str, Any]]:
        """Return the role assignments that apply to a scope, as ARM lists them.

        RoleAssignments_ListForScope / ForSubscription / ForResourceGroup (authorization-RoleAssignmentsCalls.json
        2022-04-01): the assignments at, above and below the scope; `atScope()` keeps those at or above it;
        `principalId eq '{id}'` (and `assignedTo('{id}')`, without group expansion) keeps one principal's.
        The filters' meaning: https://learn.microsoft.com/azure/role-based-access-control/role-assignments-list-rest
        """
        scope = p.parent_id.lower().rstrip("/")
        at_scope = "atscope()" in filter_.lower()
        m = re.search(r"(?:principalId\s+eq\s+|assignedTo\()'?([0-9a-fA-F-]{36})'?", filter_)
        principal = m.group(1).lower() if m else None
        rows = (
            self.db.conn()
            .execute(
                "SELECT * FROM resources WHERE lower(type) = ? AND key LIKE ? ORDER BY created",
                ("microsoft.authorization/roleassignments", f"/subscriptions/{p.subscription.lower()}/%"),
            )
            .fetchall()
        )
        now = self.now()
        out = []
        for r in rows:
            held = r["parent"].rstrip("/")
            above_or_at = scope == held or scope.startswith(held + "/")
            below = held.startswith(scope + "/")
            if not (above_or_at or (below and not at_scope)):
                continue
            view = self._view(r, now)
            if principal and str(view["properties"].get("principalId", "")).lower() != principal:
                continue
            out.append(view)
        return out

    # ----- management locks -----------------------------------------------------------------
    #
    # Microsoft.Authorization/locks at a subscription, a resource group or a resource (and below), as
    # resources/resource-manager/Microsoft.Authorization/locks/stable/2020-05-01/locks.json has them (what
    # azure-mgmt-resource-locks 1.0 sends). "When you apply a lock at a parent scope, all child resources
    # inherit the same lock" (ManagementLocks_CreateOrUpdateAtResourceGroupLevel): CanNotDelete refuses a
    # DELETE of the scope and of anything under it, ReadOnly refuses writes too (ManagementLockProperties.level),
    # and a DELETE of a scope with a locked resource under it (a group) is refused whole. ARM refuses with
    # 409 ScopeLocked before the resource provider sees the call, in these words (as ARM answers them in
    # Azure/azure-cli#20232, Azure/apiops#606, Azure-Player/azure.datafactory.devops#183).

    def _list_locks(self, p: ArmPath) -> list[dict[str, Any]]:
        """ManagementLocks_List*: the locks at the scope and below it (a group's list holds its resources' locks)."""
        scope = p.parent_id.lower().rstrip("/")
        now = self.now()
        return [
            self._view(r, now)
            for r in self._lock_rows(self.db.conn(), p.subscription)
            if r["parent"] == scope or r["parent"].startswith(scope + "/")
        ]

    def _lock_rows(self, conn: Any, subscription: str) -> list[Any]:
        return list(
            conn.execute(
                "SELECT * FROM resources WHERE lower(type) = ? AND key LIKE ? ORDER BY created",
                ("microsoft.authorization/locks", f"/subscriptions/{subscription.lower()}/%"),
            ).fetchall()
        )

    def _locked_scopes(self, conn: Any, p: ArmPath, operation: str) -> list[str]:
        """Return the scopes whose locks refuse `operation` ("delete" or "write") on `p`, as their ids read."""
        out: list[str] = []
        for r in self._lock_rows(conn, p.subscription):
            level = str((json.loads(r["body"]).get("properties") or {}).get("level", "")).lower()
            if level not in ("cannotdelete", "readonly") or (operation == "write" and level != "readonly"):
                continue
            scope = r["parent"]
            above = p.key == scope or p.key.startswith(scope + "/")
            below = operation == "delete" and scope.startswith(p.key + "/")
            scope_id = r["id"][: len(scope)]
            if (above or below) and scope_id not in out:
                out.append(scope_id)
        return out

    def _check_locks(self, conn: Any, p: ArmPath, operation: str) -> None:
        """Refuse, with ARM's 409 ScopeLocked, what a lock at, above (or, for a delete, below) `p` forbids."""
        if p.type.lower() == "microsoft.authorization/locks":
            return  # locks are managed through locks: removing one is how a locked scope is freed
        locked = self._locked_scopes(conn, p, operation)
        if locked:
            scopes = ",".join(f"'{s}'" for s in locked)
            raise ArmError(
                409,
                "ScopeLocked",
                f"The scope '{p.id}' cannot perform {operation} operation because following scope(s) are locked: "
                f"{scopes}. Please remove the lock and try again.",
            )

    def check_write_locks(self, p: ArmPath) -> None:
        """Refuse a write action (a POST such as listKeys) on a scope under a ReadOnly lock."""
        self._check_locks(self.db.conn(), p, "write")

    def _require_group(self, p: ArmPath) -> None:
        group = f"/subscriptions/{p.subscription}/resourceGroups/{p.resource_group}"
        if p.resource_group and p.type.lower() != "microsoft.resources/resourcegroups" and self._row(group) is None:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{p.resource_group}' could not be found.")

    # ----- writes ---------------------------------------------------------------------------

    def patch(self, p: ArmPath, body: dict[str, Any]) -> tuple[int, dict[str, Any], str | None]:
        """Update a resource in place: given top-level fields replace, `properties` merge (one level)."""
        self.get(p)  # 404 when there is no such resource
        row = self._row(p.key)
        stored = json.loads(row["body"])
        merged = {
            **stored,
            **{k: v for k, v in body.items() if k != "properties"},
            "properties": {**(stored.get("properties") or {}), **(body.get("properties") or {})},
        }
        # Vaults_Update is synchronous (ArmCustomPatchSync: 200 or 201), specification/keyvault/resource-manager/
        # Microsoft.KeyVault/KeyVault/Vault.tsp, api-version 2026-05-15: the vault is updated when it answers.
        sync = p.type.lower() == "microsoft.keyvault/vaults"
        return self.put(p, merged, synchronous=sync)

    def put(
        self, p: ArmPath, body: dict[str, Any], *, synchronous: bool = False
    ) -> tuple[int, dict[str, Any], str | None]:
        """Create or update a resource; return (status, resource view, async operation id or None)."""
        rtype = TYPES.get(p.type.lower())
        if rtype is None or p.name is None:
            raise ArmError(400, "NoRegisteredProviderFound", f"The emulator does not serve resource type '{p.type}'.")
        self._settle()
        if p.type.lower() == "microsoft.resources/deployments":
            return self._put_deployment(p, body)
        self._require_registered(p)
        self._require_group(p)
        self._refuse_while_deleting(self.db.conn(), p)
        self._check_locks(self.db.conn(), p, "write")
        if rtype.needs_location and not body.get("location"):
            raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
        validate(rtype.name, p.name, body)
        now = self.now()
        slow = self.faults.check(rtype=rtype.name, method="PUT", name=p.name, kind="slow")
        failing = self.faults.check(rtype=rtype.name, method="PUT", name=p.name, kind="failed") if rtype.lro else None
        error = json.dumps({"code": failing.code, "message": failing.message}) if failing else None
        with self._lock, self.db.transaction() as conn:
            self._settle_all(conn, now)
            self._refuse_while_deleting(conn, p)
            if rtype.name == "Microsoft.KeyVault/vaults":
                recovered = self._vault_soft_delete(conn, p, body)
                if recovered is not None:
                    body = recovered
            if rtype.name == "Microsoft.MachineLearningServices/workspaces":
                self._check_links(conn, body)
                self._check_system_datastores_auth(conn, body)
                self._workspace_soft_delete(conn, p, body)
            if rtype.name == "Microsoft.MachineLearningServices/workspaces/computes":
                self._check_quota(conn, p, body)
            parent = p.parent_id.lower()
            if (
                p.parent_id.lower()
                != f"/subscriptions/{p.subscription}/resourcegroups/{(p.resource_group or '').lower()}"
                and "/providers/" in p.parent_id.lower()
                and rtype.name != "Microsoft.Authorization/roleAssignments"
            ):
                parent_row = conn.execute("SELECT key FROM resources WHERE key = ?", (parent,)).fetchone()
                if parent_row is None and not self._implicit_parent(parent, conn):
                    raise ArmError(404, "ParentResourceNotFound", f"Parent resource '{p.parent_id}' was not found.")
            if rtype.global_name:
                clash = conn.execute(
                    "SELECT id FROM resources WHERE lower(type) = ? AND lower(name) = ? AND key != ?",
                    (rtype.name.lower(), p.name.lower(), p.key),
                ).fetchone()
                if clash:
                    raise ArmError(
                        409,
                        rtype.global_name,
                        f"The name '{p.name}' is already in use by another {rtype.name.split('/')[-1][:-1]}; "
                        "names of this type are unique across Azure.",
                    )
            row = conn.execute("SELECT * FROM resources WHERE key = ?", (p.key,)).fetchone()
            if rtype.name == "Microsoft.KeyVault/vaults" and row is not None:
                _vault_immutables(json.loads(row["body"]), body, p.name)
            if rtype.name == "Microsoft.Authorization/roleAssignments" and row is None:
                self._role_assignment_exists(conn, p, body)
            latency = self.config.latency(rtype.name) if rtype.lro and not synchronous else 0.0
            if slow is not None and rtype.lro:
                latency = slow.latency_s or latency
            stored = {
                k: v for k, v in body.items() if k in ("location", "tags", "properties", "sku", "kind", "identity")
            }
            if rtype.name == "Microsoft.MachineLearningServices/workspaces/datastores":
                stored = _keep_default_flag(stored, row)
            if row is None:
                conn.execute(
                    "INSERT INTO resources (key, id, type, name, parent, body, created, ready, state, error)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        p.key,
                        p.id,
                        rtype.name,
                        p.name,
                        parent,
                        json.dumps(stored),
                        now,
                        now + latency,
                        "Creating",
                        error,
                    ),
                )
                self.creates[p.key] += 1
                status = rtype.create_status
                if rtype.name == "Microsoft.MachineLearningServices/workspaces":
                    self._workspace_made(conn, p, stored, now)
            else:
                old = json.loads(row["body"])
                # Sending a Failed resource again applies it again; an unchanged healthy one is left alone.
                if old == stored and (not row["error"] or now < row["ready"]):
                    return 200, self._view(row, now), None
                if row["error"] and now >= row["ready"]:
                    self._freeze_deployments(conn, row, now)
                if rtype.lro and now < row["ready"]:
                    raise ArmError(
                        409,
                        "AnotherOperationInProgress",
                        f"Another operation on '{p.name}' is in progress; retry when it has finished.",
                    )
                ready = max(row["ready"], now + latency) if rtype.lro and not synchronous else now
                conn.execute(
                    "UPDATE resources SET body = ?, ready = ?, state = ?, error = ? WHERE key = ?",
                    (json.dumps(stored), ready, "Updating", error, p.key),
                )
                status = 200
            op = None
            if rtype.lro and latency > 0:
                op = str(uuid.uuid4())
                conn.execute(
                    "INSERT INTO operations (id, resource_key, ready) VALUES (?, ?, ?)", (op, p.key, now + latency)
                )
                self.op_types[op] = rtype.name
            row = conn.execute("SELECT * FROM resources WHERE key = ?", (p.key,)).fetchone()
        return status, self._view(row, now), op

    def _refuse_while_deleting(self, conn: Any, p: ArmPath) -> None:
        """Refuse a write into a resource group, or to a resource, whose DELETE is running.

        ARM's 409 ResourceGroupBeingDeleted for a group in deprovisioning state (the provider retries it:
        cloud/errors.py); a resource being deleted refuses another operation as a running create does.
        """
        running = self._deleting(conn, p.key)
        if running is None:
            return
        if running["type"].lower() == "microsoft.resources/resourcegroups":
            raise ArmError(
                409,
                "ResourceGroupBeingDeleted",
                f"The resource group '{p.resource_group}' is in deprovisioning state and cannot perform this operation.",
            )
        raise ArmError(
            409,
            "AnotherOperationInProgress",
            f"Another operation on '{p.name}' is in progress (it is being deleted); retry when it has finished.",
        )

    def _implicit_parent(self, parent: str, conn: Any) -> bool:
        # blobServices/default and fileServices/default exist with their storage account.
        m = re.match(r"^(.*/microsoft\.storage/storageaccounts/[^/]+)/(blobservices|fileservices)/default$", parent)
        return bool(m and conn.execute("SELECT key FROM resources WHERE key = ?", (m.group(1),)).fetchone())

    # ----- deletes --------------------------------------------------------------------------
    #
    # A DELETE answers as its type's spec says (emulator/resources.py, `delete_lro` and `delete_missing`,
    # with the spec of each type cited there): synchronous types are gone when it answers (200, or 204 when
    # there was nothing); long-running ones answer 202 with their operation, read `Deleting` until the
    # operation ends (`Config.delete_latency`), then are gone (404). Removing a resource removes everything
    # under it; a resource group's delete removes each resource in it as that resource's own DELETE would
    # ("When you delete a resource group, all of its resources are also deleted", ResourceGroups_Delete,
    # resources.json 2025-04-01), so its key vaults and workspaces are soft-deleted.

    def start_delete(
        self, p: ArmPath, query: Mapping[str, str] | None = None
    ) -> tuple[int, str | None, dict[str, Any] | None]:
        """Answer a DELETE: (status, operation id of a long-running delete or None, body or None)."""
        query = query or {}
        rtype = TYPES.get(p.type.lower())
        if p.name is None:
            raise ArmError(405, "MethodNotAllowed", "DELETE needs a resource, not a collection.")
        t = p.type.lower()
        purge = t == "microsoft.machinelearningservices/workspaces" and query.get("forceToPurge", "").lower() == "true"
        if t == "microsoft.machinelearningservices/workspaces/computes":
            # Compute_Delete's underlyingResourceAction query parameter is required, Delete or Detach
            # (machineLearningServices.json 2023-08-01-preview, UnderlyingResourceActionParameter).
            action = query.get("underlyingResourceAction")
            if action is None or action.lower() not in ("delete", "detach"):
                raise ArmError(
                    400,
                    "BadRequest",
                    "The query parameter 'underlyingResourceAction' is required and must be 'Delete' or 'Detach'"
                    + (f"; it was '{action}'." if action is not None else "."),
                )
        self._settle()
        now = self.now()
        with self._lock, self.db.transaction() as conn:
            row = conn.execute("SELECT * FROM resources WHERE key = ?", (p.key,)).fetchone()
            if row is None:
                if t == "microsoft.resources/resourcegroups" or (
                    p.resource_group
                    and conn.execute(
                        "SELECT key FROM resources WHERE key = ?",
                        (f"/subscriptions/{p.subscription}/resourcegroups/{p.resource_group}".lower(),),
                    ).fetchone()
                    is None
                ):
                    raise ArmError(
                        404, "ResourceGroupNotFound", f"Resource group '{p.resource_group}' could not be found."
                    )
                if purge:
                    return (*self._purge_soft_deleted_workspace(conn, p, now), None)
                return (rtype.delete_missing if rtype else 204), None, None
            running = conn.execute("SELECT op FROM deletes WHERE key = ? AND done = 0", (p.key,)).fetchone()
            if running is not None:
                return 202, str(running["op"]), None  # asked again while it runs: the same operation
            self._check_locks(conn, p, "delete")
            if rtype is not None and rtype.delete_lro:
                slow = self.faults.check(rtype=rtype.name, method="DELETE", name=p.name, kind="slow")
                failing = self.faults.check(rtype=rtype.name, method="DELETE", name=p.name, kind="failed")
                latency = slow.latency_s if slow is not None and slow.latency_s is not None else None
                if latency is None:
                    latency = self.config.delete_latency(rtype.name)
                if latency > 0 or failing is not None:
                    op = str(uuid.uuid4())
                    self.op_types[op] = rtype.name
                    error = json.dumps({"code": failing.code, "message": failing.message}) if failing else None
                    conn.execute(
                        "INSERT INTO deletes (op, key, type, started, ready, purge, error, status)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            op,
                            p.key,
                            rtype.name,
                            now,
                            now + latency,
                            int(purge),
                            error,
                            failing.status if failing else None,
                        ),
                    )
                    return 202, op, None
            body = self._view(row, now) if t == "microsoft.authorization/roleassignments" else None
            self._remove(conn, p.key, purge=purge, now=now)
        # RoleAssignments_Delete answers 200 with the assignment it deleted (authorization-RoleAssignmentsCalls.json).
        return 200, None, body

    def delete(self, p: ArmPath, *, purge: bool = False) -> int:
        """Delete a resource and everything under it at once, as a finished DELETE leaves it; return 200 or 204.

        For tests and tools that act behind the service's back. Locks are honoured; key vaults and Azure ML
        workspaces are soft-deleted; `purge` (forceToPurge) deletes a workspace for good.
        """
        self._settle()
        now = self.now()
        with self._lock, self.db.transaction() as conn:
            purged = 0
            if purge:
                purged = conn.execute("DELETE FROM deleted_workspaces WHERE key = ?", (p.key,)).rowcount
            if conn.execute("SELECT key FROM resources WHERE key = ?", (p.key,)).fetchone() is not None:
                self._check_locks(conn, p, "delete")
            removed = self._remove(conn, p.key, purge=purge, now=now)
        return 200 if removed or purged else 204

    def _remove(self, conn: Any, key: str, *, purge: bool, now: float) -> int:
        """Remove a resource and everything under it, soft-deleting key vaults and workspaces; return how many."""
        doomed = conn.execute(
            "SELECT * FROM resources WHERE key = ? OR substr(key, 1, ?) = ?", (key, len(key) + 1, key + "/")
        ).fetchall()
        for row in doomed:
            if row["type"].lower() == "microsoft.keyvault/vaults":
                body = json.loads(row["body"])
                props = body.get("properties") or {}
                conn.execute(
                    "INSERT OR REPLACE INTO deleted_vaults (name, id, location, body, deleted, purge_protection)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        row["name"].lower(),
                        row["id"],
                        body.get("location", ""),
                        row["body"],
                        now,
                        1 if props.get("enablePurgeProtection") else 0,
                    ),
                )
            if row["type"].lower() == "microsoft.machinelearningservices/workspaces" and not purge:
                conn.execute(
                    "INSERT OR REPLACE INTO deleted_workspaces (key, id, body, deleted) VALUES (?, ?, ?, ?)",
                    (row["key"], row["id"], row["body"], now),
                )
            conn.execute("DELETE FROM resources WHERE key = ?", (row["key"],))
            self.deletes[row["key"]] += 1
        return len(doomed)

    def is_delete_operation(self, op_id: str) -> bool:
        """Tell whether an operation id is a long-running delete's."""
        return self.db.conn().execute("SELECT 1 FROM deletes WHERE op = ?", (op_id,)).fetchone() is not None

    def failed_delete_status(self, op_id: str) -> int | None:
        """Return the HTTP status a failed delete operation reports on its Location, or None."""
        row = self.db.conn().execute("SELECT status FROM deletes WHERE op = ? AND done = 1", (op_id,)).fetchone()
        return int(row["status"]) if row is not None and row["status"] is not None else None

    def purge_workspace(self, p: ArmPath) -> tuple[int, str | None]:
        """Answer `DELETE ...workspaces/{name}?forceToPurge=true`: (status, async operation id or None).

        Workspaces_Delete is a long-running operation answering 200, 202 or 204 (204: the workspace does not
        exist), specification/machinelearningservices/.../preview/2024-10-01-preview/workspaceRP.json.
        Purging a soft-deleted workspace answers 202 with an operation; the name stays held until it ends.
        A live workspace is deleted for good, as a long-running delete.
        """
        status, op, _ = self.start_delete(p, {"forceToPurge": "true"})
        return status, op

    def _purge_soft_deleted_workspace(self, conn: Any, p: ArmPath, now: float) -> tuple[int, str | None]:
        pending = conn.execute("SELECT op FROM purges WHERE key = ?", (p.key,)).fetchone()
        if pending is not None:
            return 202, str(pending["op"])  # asked again while it runs: the same operation
        held = conn.execute("SELECT key FROM deleted_workspaces WHERE key = ?", (p.key,)).fetchone()
        if held is None:
            return 204, None
        return 202, self._start_purge(conn, p.key, p.key, self.config.delete_latency(p.type), now, rtype=p.type)

    def _start_purge(self, conn: Any, key: str, resource_key: str, latency: float, now: float, *, rtype: str) -> str:
        op = str(uuid.uuid4())
        self.op_types[op] = rtype
        conn.execute("INSERT INTO purges (key, op, ready) VALUES (?, ?, ?)", (key, op, now + latency))
        conn.execute(
            "INSERT INTO operations (id, resource_key, ready) VALUES (?, ?, ?)", (op, resource_key, now + latency)
        )
        return op

    def _settle_all(self, conn: Any, now: float) -> None:
        """Finish what time has finished: purges, deletes, and soft-deleted items past their retention."""
        for r in conn.execute("SELECT key FROM purges WHERE ready <= ?", (now,)).fetchall():
            if r["key"].startswith("vault:"):
                conn.execute("DELETE FROM deleted_vaults WHERE name = ?", (r["key"][len("vault:") :],))
            else:
                conn.execute("DELETE FROM deleted_workspaces WHERE key = ?", (r["key"],))
        conn.execute("DELETE FROM purges WHERE ready <= ?", (now,))
        for d in conn.execute("SELECT * FROM deletes WHERE done = 0 AND ready <= ? ORDER BY ready", (now,)).fetchall():
            if d["error"] is None:  # a delete that ends Failed leaves the resource as it was
                self._remove(conn, d["key"], purge=bool(d["purge"]), now=d["ready"])
            conn.execute("UPDATE deletes SET done = 1 WHERE op = ?", (d["op"],))
        # Past its scheduled purge date a soft-deleted vault is purged and its name is free (Microsoft Learn,
        # "Azure Key Vault soft-delete overview": recoverable for the retention period, 7 to 90 days); a
        # soft-deleted workspace likewise after its retention (concept-soft-delete: "You can't reuse the name
        # of a workspace that has been soft deleted until the retention period has passed").
        for v in conn.execute("SELECT name, body, deleted FROM deleted_vaults").fetchall():
            if v["deleted"] + self._vault_retention_days(v["body"]) * 86400 <= now:
                conn.execute("DELETE FROM deleted_vaults WHERE name = ?", (v["name"],))
        for w in conn.execute("SELECT key, body, deleted FROM deleted_workspaces").fetchall():
            if w["deleted"] + self._workspace_retention_days(w["body"]) * 86400 <= now:
                conn.execute("DELETE FROM deleted_workspaces WHERE key = ?", (w["key"],))

    def _settle(self) -> None:
        now = self.now()
        if not self._due(self.db.conn(), now):
            return  # most calls: nothing has come due, so no write transaction
        with self._lock, self.db.transaction() as conn:
            self._settle_all(conn, now)

    def _due(self, conn: Any, now: float) -> bool:
        if conn.execute("SELECT 1 FROM purges WHERE ready <= ? LIMIT 1", (now,)).fetchone():
            return True
        if conn.execute("SELECT 1 FROM deletes WHERE done = 0 AND ready <= ? LIMIT 1", (now,)).fetchone():
            return True
        vaults = conn.execute("SELECT body, deleted FROM deleted_vaults").fetchall()
        if any(v["deleted"] + self._vault_retention_days(v["body"]) * 86400 <= now for v in vaults):
            return True
        workspaces = conn.execute("SELECT body, deleted FROM deleted_workspaces").fetchall()
        return any(w["deleted"] + self._workspace_retention_days(w["body"]) * 86400 <= now for w in workspaces)

    def _vault_retention_days(self, body: str) -> float:
        props = json.loads(body).get("properties") or {}
        return float(props.get("softDeleteRetentionInDays") or self.config.soft_delete_retention_days)

    def _workspace_retention_days(self, body: str) -> float:
        props = json.loads(body).get("properties") or {}
        return float(props.get("softDeleteRetentionInDays") or self.config.workspace_soft_delete_retention_days)

    # ----- role assignments -----------------------------------------------------------------

    def _role_assignment_exists(self, conn: Any, p: ArmPath, body: dict[str, Any]) -> None:
        """Refuse a second assignment of one role to one principal at one scope under another name.

        ARM answers 409 RoleAssignmentExists, "The role assignment already exists." (Microsoft Learn,
        "Troubleshoot Azure RBAC"; RoleAssignments_Create, specification/authorization/resource-manager/
        Microsoft.Authorization/stable/2022-04-01/authorization-RoleAssignmentsCalls.json, what
        azure-mgmt-authorization sends).
        """
        props = body.get("properties") or {}
        role = str(props.get("roleDefinitionId", "")).lower().rstrip("/").rsplit("/", 1)[-1]
        principal = str(props.get("principalId", "")).lower()
        rows = conn.execute(
            "SELECT body FROM resources WHERE parent = ? AND lower(type) = ?",
            (p.parent_id.lower(), "microsoft.authorization/roleassignments"),
        ).fetchall()
        for r in rows:
            other = json.loads(r["body"]).get("properties") or {}
            other_role = str(other.get("roleDefinitionId", "")).lower().rstrip("/").rsplit("/", 1)[-1]
            if other_role == role and str(other.get("principalId", "")).lower() == principal:
                raise ArmError(409, "RoleAssignmentExists", "The role assignment already exists.")

    # ----- soft-delete ----------------------------------------------------------------------

    def _workspace_soft_delete(self, conn: Any, p: ArmPath, body: dict[str, Any]) -> None:
        """Refuse to create a workspace over a soft-deleted one, unless the request asks to recover it."""
        held = conn.execute("SELECT * FROM deleted_workspaces WHERE key = ?", (p.key,)).fetchone()
        if held is None:
            return
        recover = str((body.get("properties") or {}).get("allowRecoverSoftDeletedWorkspace", "false")).lower()
        if recover != "true":
            raise ArmError(
                400,
                "BadRequest",
                "Soft-deleted workspace exists. Please purge or recover it. https://aka.ms/wsoftdelete",
            )
        conn.execute("DELETE FROM deleted_workspaces WHERE key = ?", (p.key,))

    def soft_deleted_workspaces(self) -> list[str]:
        """Return the ids of soft-deleted workspaces."""
        return [w["id"] for w in self.soft_deleted()["workspaces"]]

    def soft_deleted(self) -> dict[str, list[dict[str, Any]]]:
        """Return every soft-deleted vault and workspace, with when it was deleted and when its name is free.

        Workspaces have no deleted-workspaces list in the ARM spec (workspaceRP.json 2024-10-01-preview has
        only `softDeleteRetentionInDays`); the dates follow Azure ML's retention (concept-soft-delete).
        """
        self._settle()
        conn = self.db.conn()
        vaults = []
        for r in conn.execute("SELECT * FROM deleted_vaults ORDER BY deleted").fetchall():
            vaults.append(
                {
                    "id": r["id"],
                    "name": r["name"],
                    "deletionDate": _iso(r["deleted"]),
                    "scheduledPurgeDate": _iso(r["deleted"] + self._vault_retention_days(r["body"]) * 86400),
                    "purgeProtectionEnabled": bool(r["purge_protection"]),
                }
            )
        workspaces = []
        for r in conn.execute("SELECT * FROM deleted_workspaces ORDER BY deleted").fetchall():
            workspaces.append(
                {
                    "id": r["id"],
                    "deletionDate": _iso(r["deleted"]),
                    "scheduledPurgeDate": _iso(r["deleted"] + self._workspace_retention_days(r["body"]) * 86400),
                }
            )
        return {"vaults": vaults, "workspaces": workspaces}

    def _vault_soft_delete(self, conn: Any, p: ArmPath, body: dict[str, Any]) -> dict[str, Any] | None:
        """Refuse a new vault whose name a soft-deleted vault holds; recover it when asked to."""
        held = conn.execute(
            "SELECT * FROM deleted_vaults WHERE name = ?", (p.name.lower() if p.name else "",)
        ).fetchone()
        recover = (body.get("properties") or {}).get("createMode") == "recover"
        if held is None:
            if recover:
                raise ArmError(404, "DeletedVaultNotFound", f"There is no deleted vault named '{p.name}' to recover.")
            return None
        if not recover:
            raise ArmError(
                409,
                "ConflictError",
                "A vault with the same name already exists in deleted state. You need to either recover or purge "
                "existing key vault.",
            )
        if held["id"].lower() != p.key:
            raise ArmError(
                409, "ConflictError", f"The deleted vault '{p.name}' belonged to {held['id']}; recover it there."
            )
        conn.execute("DELETE FROM deleted_vaults WHERE name = ?", (held["name"],))
        restored = json.loads(held["body"])
        restored["tags"] = {**(restored.get("tags") or {}), **(body.get("tags") or {})}
        return dict(restored)

    def deleted_vaults(self, subscription: str, name: str | None = None) -> list[dict[str, Any]]:
        """Return soft-deleted vaults (all, or the one with this name), as ARM shows them."""
        self._settle()
        rows = self.db.conn().execute("SELECT * FROM deleted_vaults ORDER BY deleted").fetchall()
        out = []
        for r in rows:
            if name is not None and r["name"] != name.lower():
                continue
            if f"/subscriptions/{subscription}/".lower() not in r["id"].lower() + "/":
                continue
            # DeletedVaultProperties (keyvault 2026-05-15): deletionDate, and scheduledPurgeDate = deletion +
            # the vault's softDeleteRetentionInDays (default 90; Microsoft Learn, "Azure Key Vault soft-delete
            # overview": recoverable for a configurable 7 to 90 days).
            deleted = _iso(r["deleted"])
            purge = _iso(r["deleted"] + self._vault_retention_days(r["body"]) * 86400)
            out.append(
                {
                    "id": f"/subscriptions/{subscription}/providers/Microsoft.KeyVault/locations/{r['location']}"
                    f"/deletedVaults/{r['name']}",
                    "name": r["name"],
                    "type": "Microsoft.KeyVault/deletedVaults",
                    "properties": {
                        "vaultId": r["id"],
                        "location": r["location"],
                        "deletionDate": deleted,
                        "scheduledPurgeDate": purge,
                        "purgeProtectionEnabled": bool(r["purge_protection"]),
                        "tags": json.loads(r["body"]).get("tags") or {},
                    },
                }
            )
        return out

    def purge_vault(self, subscription: str, name: str) -> str:
        """Start purging a soft-deleted vault (refused while purge protection holds it); return the operation id.

        DeletedVaults_PurgeDeleted is a long-running POST answering 200, or 202 with Location and Retry-After
        (specification/keyvault/resource-manager/Microsoft.KeyVault/KeyVault/DeletedVault.tsp, api-version
        2026-05-15 as azure-mgmt-keyvault 14.1 sends): the vault stays listed as deleted until the purge ends.
        """
        found = self.deleted_vaults(subscription, name)
        if not found:
            raise ArmError(404, "ResourceNotFound", f"The deleted vault '{name}' was not found.")
        if found[0]["properties"]["purgeProtectionEnabled"]:
            raise ArmError(
                409,
                "ConflictError",
                f"Operation 'DeletedVaultPurge' is not allowed for '{name}': purge protection is enabled; the name is "
                "held until the scheduled purge date.",
            )
        now = self.now()
        with self._lock, self.db.transaction() as conn:
            pending = conn.execute("SELECT op FROM purges WHERE key = ?", (f"vault:{name.lower()}",)).fetchone()
            if pending is not None:
                return str(pending["op"])  # asked again while it runs: the same operation
            latency = self.config.latency("Microsoft.KeyVault/vaults")
            return self._start_purge(
                conn,
                f"vault:{name.lower()}",
                f"purge:vault:{name.lower()}",
                latency,
                now,
                rtype="Microsoft.KeyVault/vaults",
            )

    def name_available(self, rtype: str, name: str) -> dict[str, Any]:
        """Answer checkNameAvailability for storage accounts and key vaults."""
        self._settle()
        t = TYPES[rtype.lower()]
        rule = NAME_RULES.get(t.name.lower())
        if rule and not re.match(rule[0], name):
            return {"nameAvailable": False, "reason": "AccountNameInvalid", "message": f"'{name}' {rule[2]}"}
        taken = (
            self.db.conn()
            .execute(
                "SELECT id FROM resources WHERE lower(type) = ? AND lower(name) = ?", (t.name.lower(), name.lower())
            )
            .fetchone()
        )
        if taken is None and t.name == "Microsoft.KeyVault/vaults":
            taken = self.db.conn().execute("SELECT id FROM deleted_vaults WHERE name = ?", (name.lower(),)).fetchone()
        if taken is not None:
            return {
                "nameAvailable": False,
                "reason": "AlreadyExists",
                "message": f"The name '{name}' is already taken.",
            }
        return {"nameAvailable": True}

    # ----- provider registration, linked resources, quota ------------------------------------

    def _require_registered(self, p: ArmPath) -> None:
        namespace = p.type.split("/")[0].lower()
        if namespace in self.config.unregistered:
            raise ArmError(
                409,
                "MissingSubscriptionRegistration",
                f"The subscription is not registered to use namespace '{p.type.split('/')[0]}'. See "
                "https://aka.ms/rps-not-found for how to register subscriptions.",
            )

    def provider(self, namespace: str) -> dict[str, Any]:
        """Return a resource provider's registration state."""
        low = namespace.lower()
        registering = "Registering" if low in self.config.registering else "Registered"
        state = "NotRegistered" if low in self.config.unregistered else registering
        return {"namespace": namespace, "registrationState": state, "resourceTypes": []}

    def _check_links(self, conn: Any, body: dict[str, Any]) -> None:
        props = body.get("properties") or {}
        for prop in ("storageAccount", "keyVault", "applicationInsights", "containerRegistry"):
            rid = props.get(prop)
            if not rid:
                continue
            if conn.execute("SELECT key FROM resources WHERE key = ?", (str(rid).lower(),)).fetchone() is None:
                raise ArmError(
                    400,
                    "LinkedInvalidPropertyId",
                    f"Property id '{rid}' at path 'properties.{prop}' is invalid. Expect fully qualified resource "
                    "Id that start with '/subscriptions/{{subscriptionId}}' or '/providers/{{resourceProviderNamespace}}/'.",
                )

    def _check_system_datastores_auth(self, conn: Any, body: dict[str, Any]) -> None:
        """Refuse a workspace whose system datastores would use keys its storage account refuses.

        With `allowSharedKeyAccess: false` on the account, the workspace must say `systemDatastoresAuthMode:
        identity` (https://learn.microsoft.com/azure/machine-learning/how-to-disable-local-auth-storage;
        workspaces 2024-10-01-preview). The code and wording are the storage service's, as Azure ML reports them
        (microsoft/rag-experiment-accelerator#866).
        """
        props = body.get("properties") or {}
        rid = props.get("storageAccount")
        row = conn.execute("SELECT body FROM resources WHERE key = ?", (str(rid).lower(),)).fetchone() if rid else None
        if row is None:
            return
        if (json.loads(row["body"]).get("properties") or {}).get("allowSharedKeyAccess", True) is not False:
            return
        if str(props.get("systemDatastoresAuthMode") or "").lower() != "identity":
            raise ArmError(
                400,
                "KeyBasedAuthenticationNotPermitted",
                "Key based authentication is not permitted on this storage account. The workspace's system "
                "datastores would use the account key; set systemDatastoresAuthMode to 'identity'. See "
                "https://learn.microsoft.com/azure/machine-learning/how-to-disable-local-auth-storage",
            )

    def _workspace_made(self, conn: Any, p: ArmPath, body: dict[str, Any], now: float) -> None:
        """Create what Azure creates with a new workspace: its system datastores and its identity's role.

        The four system datastores, `workspaceblobstore` the default, shaped like Datastore/get.json and
        list.json (machinelearningservices 2024-10-01-preview), with `AccountKey` credentials unless
        `systemDatastoresAuthMode` is `identity` (then `None`: no secret kept). The system-assigned identity of a
        workspace made after 2024-11-19 holds Azure AI Administrator on the resource group, unless
        `allowRoleAssignmentOnRG` is false (https://learn.microsoft.com/azure/machine-learning/how-to-assign-roles
        #azure-ai-administrator-role).
        """
        props = body.get("properties") or {}
        storage = parse_path(str(props["storageAccount"])) if props.get("storageAccount") else None
        workspace_id = stable_uuid("workspace", p.id)  # what decorate() shows as properties.workspaceId
        identity = str(props.get("systemDatastoresAuthMode") or "").lower() == "identity"
        credentials: dict[str, Any] = (
            {"credentialsType": "None"}
            if identity
            else {"credentialsType": "AccountKey", "secrets": {"secretsType": "AccountKey"}}
        )
        if storage is not None:
            stores = [
                ("workspaceblobstore", "AzureBlob", "containerName", f"azureml-blobstore-{workspace_id}", True),
                ("workspaceartifactstore", "AzureBlob", "containerName", "azureml", False),
                ("workspacefilestore", "AzureFile", "fileShareName", f"azureml-filestore-{workspace_id}", False),
                ("workspaceworkingdirectory", "AzureFile", "fileShareName", f"code-{workspace_id}", False),
            ]
            for name, kind, target_key, target, default in stores:
                ds = {
                    "properties": {
                        "description": "",
                        "tags": {},
                        "isDefault": default,
                        "credentials": credentials,
                        "datastoreType": kind,
                        "accountName": storage.name,
                        target_key: target,
                        "endpoint": "core.windows.net",
                        "protocol": "https",
                        "subscriptionId": storage.subscription,
                        "resourceGroup": storage.resource_group,
                    }
                }
                rid = f"{p.id}/datastores/{name}"
                self._insert_system(
                    conn, rid, "Microsoft.MachineLearningServices/workspaces/datastores", p.key, ds, now
                )
        allow = str(props.get("allowRoleAssignmentOnRG", "true")).lower() != "false"
        if allow and "systemassigned" in str((body.get("identity") or {}).get("type", "")).lower():
            group = f"/subscriptions/{p.subscription}/resourceGroups/{p.resource_group}"
            name = stable_uuid("workspace-identity-on-group", p.id)
            assignment = {
                "properties": {
                    "roleDefinitionId": f"/subscriptions/{p.subscription}/providers/Microsoft.Authorization/"
                    f"roleDefinitions/{AZURE_AI_ADMINISTRATOR}",
                    "principalId": stable_uuid("principal", p.id),  # the identity decorate() shows
                    "principalType": "ServicePrincipal",
                }
            }
            rid = f"{group}/providers/Microsoft.Authorization/roleAssignments/{name}"
            self._insert_system(conn, rid, "Microsoft.Authorization/roleAssignments", group.lower(), assignment, now)

    def _insert_system(self, conn: Any, rid: str, rtype: str, parent: str, body: dict[str, Any], now: float) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO resources (key, id, type, name, parent, body, created, ready, state)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rid.lower(), rid, rtype, rid.rsplit("/", 1)[-1], parent, json.dumps(body), now, now, "Succeeded"),
        )

    def _compute_demand(self, body: dict[str, Any]) -> tuple[str, int, str] | None:
        props = body.get("properties") or {}
        inner = props.get("properties") or {}
        size = VM_SIZES.get(str(inner.get("vmSize", "")).lower())
        if size is None:
            return None
        if str(props.get("computeType", "")).lower() == "computeinstance":
            return size.family, size.vcpus, "dedicated"
        nodes = int((inner.get("scaleSettings") or {}).get("maxNodeCount") or 0)
        tier = "lowPriority" if str(inner.get("vmPriority", "")).lower() == "lowpriority" else "dedicated"
        return size.family, size.vcpus * nodes, tier

    def _check_quota(self, conn: Any, p: ArmPath, body: dict[str, Any]) -> None:
        props = body.get("properties") or {}
        size_name = (props.get("properties") or {}).get("vmSize", "")
        region = str(body.get("location") or props.get("computeLocation") or "").lower()
        demand = self._compute_demand(body)
        if demand is None:
            raise ArmError(400, "BadRequest", f"The VM size '{size_name}' is not available in region '{region}'.")
        family, vcpus, tier = demand
        pool = family if tier == "dedicated" else "lowPriority"
        used = self._usage(conn, p.subscription, region, exclude=p.key).get(pool, 0)
        limit = self.config.quota_limit(region, pool)
        if used + vcpus > limit:
            label = FAMILY_NAMES.get(family, family) if tier == "dedicated" else "Total Cluster LowPriority vCPUs"
            raise ArmError(
                400,
                "BadRequest",
                f"The specified subscription has a {label} quota of {limit}, {used} in use, and cannot accommodate "
                f"the {vcpus} vCPUs requested. Talk to your Subscription Admin to increase the quota.",
            )

    def _usage(self, conn: Any, subscription: str, region: str, exclude: str = "") -> dict[str, int]:
        used: dict[str, int] = {}
        for _, body in self._computes(conn, subscription, region):
            if _ == exclude:
                continue
            demand = self._compute_demand(body)
            if demand:
                family, vcpus, tier = demand
                pool = family if tier == "dedicated" else "lowPriority"
                used[pool] = used.get(pool, 0) + vcpus
        return used

    def _computes(self, conn: Any, subscription: str, region: str) -> list[tuple[str, dict[str, Any]]]:
        rows = conn.execute(
            "SELECT key, body FROM resources WHERE lower(type) = ? AND key LIKE ? ORDER BY key",
            ("microsoft.machinelearningservices/workspaces/computes", f"/subscriptions/{subscription.lower()}/%"),
        ).fetchall()
        out = []
        for r in rows:
            body = json.loads(r["body"])
            if str(body.get("location", "")).lower() == region:
                out.append((r["key"], body))
        return out

    def usages(self, subscription: str, region: str) -> list[dict[str, Any]]:
        """Return Azure ML's usages for a region, shaped as Usages_List answers them.

        As in specification/machinelearningservices/resource-manager/Microsoft.MachineLearningServices/
        stable/2024-04-01/examples/Usage/list.json: the cluster count, the regional dedicated and low-priority
        totals, then per VM family its dedicated and low-priority entries (low priority: limit -1, only the
        regional total limits it), each repeated per workspace and per compute that uses it. Limits come from
        `Config.quota` (family, "lowPriority", and "dedicated" for the regional dedicated total).
        """
        region = region.lower()
        conn = self.db.conn()
        sub_usages = f"/subscriptions/{subscription}/usages"
        quota = self.config.quota.get(region, {})
        # per (family, tier): subscription total, per workspace id, per compute id
        per: dict[tuple[str, str], dict[str, int]] = {}
        clusters = 0
        for key, body in self._computes(conn, subscription, region):
            demand = self._compute_demand(body)
            if str((body.get("properties") or {}).get("computeType", "")).lower() == "amlcompute":
                clusters += 1
            if demand is None:
                continue
            family, vcpus, tier = demand
            counts = per.setdefault((family, tier), {})
            rid = str(body.get("id") or key)
            workspace = rid.rsplit("/computes/", 1)[0]
            for scope in ("", workspace, rid):
                counts[scope] = counts.get(scope, 0) + vcpus

        def entry(rid: str, rtype: str, name: str, used: int, limit: int) -> dict[str, Any]:
            return {
                "id": rid,
                "type": f"Microsoft.MachineLearningServices/{rtype}/usages",
                "currentValue": used,
                "limit": limit,
                "name": {"value": name, "localizedValue": name},
                "unit": "Count",
            }

        def total(tier: str) -> int:
            return sum(c.get("", 0) for (_, t), c in per.items() if t == tier)

        out = [
            entry(sub_usages, "totalCores", "Clusters", clusters, quota.get("clusters", DEFAULT_FAMILY_LIMIT)),
            entry(
                sub_usages,
                "dedicatedCores",
                "Total Cluster Dedicated Regional vCPUs",
                total("dedicated"),
                quota.get("dedicated", DEFAULT_FAMILY_LIMIT),
            ),
        ]
        families = sorted({*FAMILY_NAMES, *(k for k in quota if k not in ("lowPriority", "dedicated", "clusters"))})
        for tier in ("dedicated", "lowPriority"):
            if tier == "lowPriority":
                out.append(
                    entry(
                        sub_usages,
                        "lowPriorityCores",
                        "Total Cluster LowPriority Regional vCPUs",
                        total("lowPriority"),
                        self.config.quota_limit(region, "lowPriority"),
                    )
                )
            for family in families:
                name = FAMILY_NAMES.get(family, f"{family} Cluster Dedicated vCPUs")
                if tier == "lowPriority":
                    name = name.replace(" Dedicated vCPUs", " LowPriority vCPUs")
                limit = self.config.quota_limit(region, family) if tier == "dedicated" else -1
                counts = per.get((family, tier), {})
                suffix = "/usages/" + name.replace(" ", "_")
                out.append(entry(sub_usages + "/" + name.replace(" ", "_"), "vmFamily", name, counts.get("", 0), limit))
                for scope in sorted(k for k in counts if k):
                    rtype = "workspaces/computes" if "/computes/" in scope else "workspaces"
                    out.append(entry(scope + suffix, rtype, name, counts[scope], limit))
        return out

    def operation(self, op_id: str) -> dict[str, Any]:
        """Return an async operation's status document."""
        self._settle()
        deleting = self.db.conn().execute("SELECT * FROM deletes WHERE op = ?", (op_id,)).fetchone()
        if deleting is not None:
            if not deleting["done"]:
                return {"id": op_id, "name": op_id, "status": "InProgress"}
            if deleting["error"]:
                return {"id": op_id, "name": op_id, "status": "Failed", "error": json.loads(deleting["error"])}
            return {"id": op_id, "name": op_id, "status": "Succeeded"}
        row = self.db.conn().execute("SELECT * FROM operations WHERE id = ?", (op_id,)).fetchone()
        if row is None:
            raise ArmError(404, "OperationNotFound", f"Operation '{op_id}' was not found.")
        now = self.now()
        res = self._row(row["resource_key"])
        if res is not None and res["type"].lower() == "microsoft.resources/deployments":
            view = self._view(res, now)
            state = view["properties"]["provisioningState"]
            doc: dict[str, Any] = {"id": op_id, "name": op_id, "status": "InProgress" if state == "Running" else state}
            if state == "Failed":
                doc["error"] = view["properties"].get("error")
            return doc
        self._settle()
        if now < row["ready"]:
            return {"id": op_id, "name": op_id, "status": "InProgress"}
        if row["error"] or (res is not None and res["error"]):
            err = json.loads(row["error"] or res["error"])
            return {"id": op_id, "name": op_id, "status": "Failed", "error": err}
        return {"id": op_id, "name": op_id, "status": "Succeeded"}

    # ----- deployments ----------------------------------------------------------------------

    def _put_deployment(self, p: ArmPath, body: dict[str, Any]) -> tuple[int, dict[str, Any], str | None]:
        self._require_group(p)
        self._refuse_while_deleting(self.db.conn(), p)
        self._check_locks(self.db.conn(), p, "write")
        props = body.get("properties") or {}
        template = props.get("template")
        if isinstance(template, str):
            template = json.loads(template)
        if not isinstance(template, dict):
            raise ArmError(
                400, "InvalidTemplate", "The deployment needs properties.template (template links are not emulated)."
            )
        parameters = props.get("parameters") or {}
        group = self._row(f"/subscriptions/{p.subscription}/resourceGroups/{p.resource_group}")
        location = json.loads(group["body"]).get("location", "") if group else ""
        try:
            planned = templates.expand(
                template,
                parameters,
                subscription_id=p.subscription,
                resource_group=p.resource_group or "",
                location=location,
                tenant_id=self.config.tenant_id,
                reference=self._reference,
            )
        except templates.TemplateError as exc:
            raise ArmError(400, "InvalidTemplate", f"Deployment template validation failed: {exc}") from exc
        now = self.now()
        results: list[dict[str, Any]] = []
        for res in planned:
            target = parse_path(res.id)
            try:
                # The resource provider answers the deployment as it would a direct PUT, fault rules included.
                fault = self.faults.check(rtype=res.type, method="PUT", name=target.name)
                if fault is not None:
                    raise ArmError(fault.status, fault.code, fault.message)
                status, _, _ = self.put(target, res.body)
                results.append({"id": res.id, "type": res.type, "statusCode": "Created" if status == 201 else "OK"})
            except ArmError as exc:
                # ARM keeps the RP's status name as the code and the RP's response body, as text, as the message.
                results.append(
                    {
                        "id": res.id,
                        "type": res.type,
                        "statusCode": _status_name(exc.status),
                        "error": _wrapped_sync_error(exc),
                        "statusMessage": exc.body(),
                    }
                )
        ready = now
        for r in results:
            row = self._row(r["id"])
            if row is not None:
                ready = max(ready, row["ready"])
        failed = [r for r in results if "error" in r]
        error = None
        if failed:
            error = {"code": "DeploymentFailed", "message": DEPLOYMENT_FAILED, "details": [r["error"] for r in failed]}
        stored = {
            "properties": {
                "mode": props.get("mode", "Incremental"),
                "parameters": parameters,
                "operations": results,
                "correlationId": str(uuid.uuid4()),
            }
        }
        op = str(uuid.uuid4())
        with self._lock, self.db.transaction() as conn:
            existed = conn.execute("SELECT key FROM resources WHERE key = ?", (p.key,)).fetchone()
            conn.execute(
                "INSERT OR REPLACE INTO resources (key, id, type, name, parent, body, created, ready, state, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    p.key,
                    p.id,
                    "Microsoft.Resources/deployments",
                    p.name,
                    p.parent_id.lower(),
                    json.dumps(stored),
                    now,
                    ready,
                    "Running",
                    json.dumps(error) if error else None,
                ),
            )
            conn.execute("INSERT INTO operations (id, resource_key, ready) VALUES (?, ?, ?)", (op, p.key, ready))
            self.op_types[op] = p.type
            if not existed:
                self.creates[p.key] += 1
            row = conn.execute("SELECT * FROM resources WHERE key = ?", (p.key,)).fetchone()
        return (200 if existed else 201), self._view(row, now), op

    def _freeze_deployments(self, conn: Any, failed: Any, now: float) -> None:
        """Keep the failure in the deployments that created a Failed resource, before it is applied again."""
        group = failed["key"].split("/providers/", 1)[0]
        rows = conn.execute(
            "SELECT * FROM resources WHERE parent = ? AND lower(type) = ? AND error IS NULL",
            (group, "microsoft.resources/deployments"),
        ).fetchall()
        for d in rows:
            operations = json.loads(d["body"])["properties"]["operations"]
            if now < d["ready"] or not any(str(o["id"]).lower() == failed["key"] for o in operations):
                continue
            rp_error = json.loads(failed["error"])
            for o in operations:
                if str(o["id"]).lower() == failed["key"]:
                    o.update({"statusCode": "Conflict", "asyncError": rp_error})
            body = json.loads(d["body"])
            body["properties"]["operations"] = operations
            error = {
                "code": "DeploymentFailed",
                "message": DEPLOYMENT_FAILED,
                "details": [_wrapped_async_error(rp_error)],
            }
            conn.execute(
                "UPDATE resources SET body = ?, error = ? WHERE key = ?",
                (json.dumps(body), json.dumps(error), d["key"]),
            )

    def _async_failures(self, operations: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        """Return, per resource whose create was accepted but ended Failed, its RP error (code and message)."""
        out = []
        for r in operations:
            if "asyncError" in r:  # kept when the resource was applied again
                out.append({"id": r["id"], "error": r["asyncError"]})
                continue
            res = self._row(r["id"]) if "error" not in r else None
            if res is not None and res["error"] and self._state(res, now) == "Failed":
                out.append({"id": r["id"], "error": json.loads(res["error"])})
        return out

    def _deployment_view(self, row: Any, body: dict[str, Any], now: float) -> dict[str, Any]:
        props = body["properties"]
        error = json.loads(row["error"]) if row["error"] else None
        if error is None and now >= row["ready"]:
            late = self._async_failures(props["operations"], now)
            if late:
                details = [_wrapped_async_error(f["error"]) for f in late]
                error = {"code": "DeploymentFailed", "message": DEPLOYMENT_FAILED, "details": details}
        if error is not None:
            state = "Failed"
        elif now >= row["ready"]:
            state = "Succeeded"
        else:
            state = "Running"
        seconds = max(min(now, row["ready"]) - row["created"], 0.0)
        view = {
            "id": row["id"],
            "name": row["name"],
            "type": "Microsoft.Resources/deployments",
            "properties": {
                "provisioningState": state,
                "mode": props["mode"],
                "correlationId": props["correlationId"],
                "parameters": props["parameters"],
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(row["created"])),
                "duration": f"PT{seconds:.3f}S",
                "outputResources": [{"id": r["id"]} for r in props["operations"] if "error" not in r],
            },
        }
        if error is not None:
            view["properties"]["error"] = error
        return view

    def deployment_operations(self, p: ArmPath) -> list[dict[str, Any]]:
        """Return the operations of a deployment, one per resource."""
        row = self._row(p.key)
        if row is None:
            raise ArmError(404, "DeploymentNotFound", f"Deployment '{p.name}' could not be found.")
        now = self.now()
        out = []
        operations = json.loads(row["body"])["properties"]["operations"]
        late = {f["id"]: f["error"] for f in self._async_failures(operations, now)}
        for r in operations:
            res = self._row(r["id"])
            state = (
                "Failed"
                if "error" in r or r["id"] in late
                else (self._state(res, now) if res is not None else "Failed")
            )
            op_id = stable_uuid("op", p.id, r["id"])[:16].upper()
            entry: dict[str, Any] = {
                "id": f"{p.id}/operations/{op_id}",
                "operationId": op_id,
                "properties": {
                    "provisioningOperation": "Create",
                    "provisioningState": "Running" if state in ("Creating", "Updating") else state,
                    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(now)),
                    "duration": "PT1S",
                    "serviceRequestId": stable_uuid("req", r["id"]),
                    "statusCode": r["statusCode"],
                    "targetResource": {
                        "id": r["id"],
                        "resourceType": r["type"],
                        "resourceName": r["id"].rsplit("/", 1)[-1],
                    },
                },
            }
            if "error" in r:
                entry["properties"]["statusMessage"] = r.get("statusMessage") or {"error": r["error"]}
            elif r["id"] in late:
                entry["properties"]["statusCode"] = "Conflict"
                entry["properties"]["statusMessage"] = {
                    "status": "Failed",
                    "error": {
                        "code": "ResourceDeploymentFailure",
                        "message": TERMINAL_FAILED,
                        "details": [late[r["id"]]],
                    },
                }
            out.append(entry)
        return out

    def _reference(self, rid: str) -> dict[str, Any]:
        row = self._row(rid)
        if row is None:
            raise templates.TemplateError(f"reference(): resource '{rid}' does not exist")
        return dict(self._view(row, self.now()).get("properties") or {})

    # ----- introspection for tests and benchmarks ------------------------------------------

    def account_key(self, account_id: str, key_name: str) -> str:
        """Return a storage account key: stable per account, unguessable without the emulator's secret."""
        digest = hashlib.sha256(f"{self._key_secret}|{account_id.lower()}|{key_name}".encode()).digest()
        return base64.b64encode(digest + digest).decode()

    def record(self, method: str, path: str, api_version: str | None, body: Any) -> None:
        """Keep one write call, as sent."""
        with self._lock:
            self.requests.append({"method": method, "path": path, "api-version": api_version, "body": body})

    def count_call(
        self, operation: str, rtype: str, *, poll: bool, throttled: bool, subscription: str | None = None
    ) -> None:
        """Count one ARM call by kind of operation and resource type (see `tally`), and by subscription."""
        with self._lock:
            self.tally[(operation, rtype, poll, throttled)] += 1
            if subscription is not None and not throttled:
                self.by_subscription[(subscription.lower(), operation)] += 1

    def operation_type(self, op_id: str) -> str:
        """Return the resource type an async operation works on (a create, a delete or a purge), as it began."""
        return self.op_types.get(op_id, "Microsoft.Emulator/operations")

    def stats(self) -> dict[str, Any]:
        """Return creates and deletes per resource id, calls per method and per resource type, for benchmarks."""
        self._settle()
        with self._lock:
            tally = [
                {"operation": op, "type": rtype, "poll": poll, "throttled": throttled, "count": n}
                for (op, rtype, poll, throttled), n in sorted(self.tally.items())
            ]
        return {
            "creates": dict(self.creates),
            "deletes": dict(self.deletes),
            "calls": dict(self.calls),
            "calls_by_type": tally,
            "calls_by_subscription": {
                sub: {op: n for (s2, op), n in sorted(self.by_subscription.items()) if s2 == sub}
                for sub in sorted({s2 for s2, _ in self.by_subscription})
            },
        }

    def resource_ids(self) -> list[str]:
        """Every resource id the emulator holds."""
        self._settle()
        return [r["id"] for r in self.db.conn().execute("SELECT id FROM resources ORDER BY created").fetchall()]

    def inventory(self) -> list[dict[str, Any]]:
        """Every resource the emulator holds: id, type and provisioning state (`Deleting` while a delete runs)."""
        self._settle()
        now = self.now()
        out = []
        for r in self.db.conn().execute("SELECT * FROM resources ORDER BY created").fetchall():
            view = self._view(r, now)
            state = (view.get("properties") or {}).get("provisioningState")
            out.append({"id": r["id"], "type": r["type"], "provisioningState": state})
        return out
