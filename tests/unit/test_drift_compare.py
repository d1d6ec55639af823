"""The pure parts of drift and teardown: comparisons, defaults Azure leaves out, lock messages, what keeps a group."""

from __future__ import annotations

from typing import Any

import pytest

from cloud import drift
from cloud.teardown import Listed, Lock, foreign_resources, kept_message, lock_message, locked_scopes
from models.plan import ComputeStepSpec, DatastoreStepSpec, KeyVaultSpec, RegistrySpec, StorageSpec
from models.request import DatastoreKind

WHAT = "the thing"
RG = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-ml-team-dev"


def _compute(**update: Any) -> ComputeStepSpec:
    base: dict[str, Any] = {
        "workspace": "mlw",
        "location": "westeurope",
        "tenant_id": "t",
        "name": "cpu",
        "vm_size": "Standard_DS3_v2",
        "min_nodes": 0,
        "max_nodes": 4,
        "tier": "dedicated",
        "idle_seconds": 1800,
    }
    return ComputeStepSpec(**(base | update))


def _cluster(**update: Any) -> drift.ObservedCompute:
    base: dict[str, Any] = {
        "type": "amlcompute",
        "size": "standard_ds3_v2",
        "min_nodes": 0,
        "max_nodes": 4,
        "idle_seconds": 1800,
        "tier": "dedicated",
    }
    return drift.ObservedCompute(**(base | update))


def _fields(found: list[drift.FieldDrift]) -> dict[str, tuple[str, str | None]]:
    return {d.field: (d.expected, d.actual) for d in found}


def test_tags_the_service_set_must_be_there_with_its_values_and_others_may_be_added() -> None:
    expected = {"team": "a", "cost-center": "CC-1"}
    assert drift.tags_drift(expected, {"team": "a", "cost-center": "CC-1", "extra": "x"}, WHAT) == []
    found = drift.tags_drift(expected, {"team": "b"}, WHAT)
    assert _fields(found) == {"tags.team": ("a", "b"), "tags.cost-center": ("CC-1", None)}
    assert "'cost-center'" in found[1].message and "missing" in found[1].message
    assert _fields(drift.tags_drift(expected, None, WHAT)) == {
        "tags.team": ("a", None),
        "tags.cost-center": ("CC-1", None),
    }


def test_a_cluster_as_asked_has_no_drift_its_size_compared_without_case() -> None:
    assert drift.compute_drift(_compute(), _cluster(), WHAT) == []


def test_a_cluster_s_scale_settings_and_tier_are_compared() -> None:
    found = drift.compute_drift(
        _compute(), _cluster(max_nodes=8, min_nodes=1, idle_seconds=300, tier="low_priority"), WHAT
    )
    assert _fields(found) == {
        "max_nodes": ("4", "8"),
        "min_nodes": ("0", "1"),
        "idle_seconds": ("1800", "300"),
        "tier": ("dedicated", "low_priority"),
    }
    assert found[0].message.startswith(WHAT)


def test_a_compute_of_another_kind_is_one_finding() -> None:
    found = drift.compute_drift(_compute(), drift.ObservedCompute(type="computeinstance", size="x"), WHAT)
    assert _fields(found) == {"kind": ("amlcompute", "computeinstance")}


def test_an_instance_is_compared_by_size_user_and_idle_shutdown() -> None:
    spec = _compute(kind="instance", assigned_user="U-1", idle_seconds=600)
    seen = drift.ObservedCompute(
        type="computeinstance", size="Standard_DS3_v2", assigned_user="u-1", idle_shutdown_minutes=15
    )
    assert drift.compute_drift(spec, seen, WHAT) == []  # 600 s is below Azure ML's 15-minute floor
    moved = drift.ObservedCompute(
        type="computeinstance", size="Standard_E8s_v5", assigned_user="u-2", idle_shutdown_minutes=60
    )
    assert set(_fields(drift.compute_drift(spec, moved, WHAT))) == {"vm_size", "assigned_user", "idle_shutdown_minutes"}


def _storage(**update: Any) -> StorageSpec:
    base: dict[str, Any] = {
        "location": "westeurope",
        "tags": {"team": "a"},
        "sku": "Standard_LRS",
        "hierarchical_namespace": True,
        "shared_key_access": False,
        "containers": ["lake"],
        "shares": ["shared"],
    }
    return StorageSpec(**(base | update))


def test_storage_is_compared_by_sku_namespace_shared_keys_and_children() -> None:
    seen = drift.ObservedStorage(
        tags={"team": "a"},
        sku="STANDARD_LRS",
        hierarchical_namespace=True,
        shared_key_access=False,
        containers=frozenset({"LAKE"}),
        shares=frozenset({"shared"}),
    )
    assert drift.storage_drift(_storage(), seen, WHAT) == []
    worse = drift.ObservedStorage(
        tags={"team": "a"}, sku="Standard_GRS", hierarchical_namespace=False, shared_key_access=True
    )
    assert _fields(drift.storage_drift(_storage(), worse, WHAT)) == {
        "sku": ("Standard_LRS", "Standard_GRS"),
        "hierarchical_namespace": ("true", "false"),
        "shared_key_access": ("false", "true"),
        "container:lake": ("exists", "missing"),
        "share:shared": ("exists", "missing"),
    }


def test_shared_key_access_left_out_is_azure_s_default_true() -> None:
    seen = drift.ObservedStorage(
        tags={"team": "a"}, sku="Standard_LRS", hierarchical_namespace=True, shared_key_access=None,
        containers=frozenset({"lake"}), shares=frozenset({"shared"}),
    )  # fmt: skip
    assert _fields(drift.storage_drift(_storage(), seen, WHAT)) == {"shared_key_access": ("false", "true")}
    assert drift.storage_drift(_storage(shared_key_access=True), seen, WHAT) == []


def _vault(**update: Any) -> KeyVaultSpec:
    base: dict[str, Any] = {
        "location": "westeurope",
        "tags": {},
        "tenant_id": "t",
        "soft_delete_retention_days": 90,
        "purge_protection": True,
        "on_soft_deleted": "recover",
    }
    return KeyVaultSpec(**(base | update))


def test_a_vault_s_purge_protection_retention_and_rbac_are_compared_with_azure_s_defaults() -> None:
    seen = drift.ObservedVault(tags={}, purge_protection=True, retention_days=90, rbac_authorization=True)
    assert drift.vault_drift(_vault(), seen, WHAT) == []
    defaults = drift.ObservedVault(tags={}, purge_protection=None, retention_days=None, rbac_authorization=None)
    assert _fields(drift.vault_drift(_vault(soft_delete_retention_days=7), defaults, WHAT)) == {
        "purge_protection": ("true", "false"),
        "soft_delete_retention_days": ("7", "90"),
        "rbac_authorization": ("true", "false"),
    }


def test_a_registry_keeps_its_sku_and_no_admin_user() -> None:
    spec = RegistrySpec(location="westeurope", tags={}, sku="Basic")
    assert drift.registry_drift(spec, drift.ObservedRegistry(tags={}, sku="basic", admin_user=None), WHAT) == []
    found = drift.registry_drift(spec, drift.ObservedRegistry(tags={}, sku="Premium", admin_user=True), WHAT)
    assert _fields(found) == {"sku": ("Basic", "Premium"), "admin_user": ("false", "true")}


def test_a_workspace_s_links_are_compared_as_ids_without_case() -> None:
    linked = {"storage_account": f"{RG}/providers/Microsoft.Storage/storageAccounts/st1", "container_registry": None}
    same = drift.ObservedWorkspace(
        tags={}, storage_account=linked["storage_account"].lower() + "/",  # type: ignore[union-attr]
        key_vault=None, application_insights=None, container_registry="/anything",
    )  # fmt: skip
    assert drift.workspace_drift({}, linked, same, WHAT) == []
    moved = drift.ObservedWorkspace(
        tags={}, storage_account=f"{RG}/providers/Microsoft.Storage/storageAccounts/st2",
        key_vault=None, application_insights=None, container_registry=None,
    )  # fmt: skip
    assert set(_fields(drift.workspace_drift({}, linked, moved, WHAT))) == {"storage_account"}


@pytest.mark.parametrize(
    ("azure", "ours"), [("AzureBlob", "blob"), ("AzureFile", "file"), ("AzureDataLakeGen2", "adls_gen2")]
)
def test_datastore_types_read_as_the_request_s_words(azure: str, ours: str) -> None:
    assert drift.datastore_kind(azure) == ours


def test_a_datastore_is_compared_by_kind_account_container_and_credentials() -> None:
    spec = DatastoreStepSpec(
        workspace="mlw", storage_account="st1", name="raw", kind=DatastoreKind.BLOB, container="raw", credentials=None
    )
    seen = drift.ObservedDatastore(kind="blob", account="ST1", container="raw", credentials="identity")
    assert drift.datastore_drift(spec, "st1", seen, WHAT) == []
    other = drift.ObservedDatastore(kind="file", account="st9", container="other", credentials="account_key")
    assert set(_fields(drift.datastore_drift(spec, "st1", other, WHAT))) == {
        "kind",
        "account",
        "container",
        "credentials",
    }
    # Account keys are for blob and file only: an ADLS Gen2 datastore uses its identity whatever policy says.
    lake = spec.model_copy(update={"kind": DatastoreKind.ADLS_GEN2, "credentials": "account_key"})
    assert drift.expected_credentials(lake) == "identity"


def test_the_locked_scopes_are_read_from_arm_s_message() -> None:
    message = (
        "The scope '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st1' cannot "
        "perform delete operation because following scope(s) are locked: '/subscriptions/s/resourcegroups/rg'. "
        "Please remove the lock and try again."
    )
    assert locked_scopes(message) == ["/subscriptions/s/resourcegroups/rg"]
    two = "... following scope(s) are locked: '/subscriptions/s/resourceGroups/a,/subscriptions/s/resourceGroups/b'."
    assert locked_scopes(two) == ["/subscriptions/s/resourceGroups/a", "/subscriptions/s/resourceGroups/b"]
    assert locked_scopes("Conflict.") == []


def test_a_lock_message_names_the_lock_or_at_least_its_scope_and_says_how_to_retry() -> None:
    lock = Lock("do-not-delete", "CanNotDelete", f"{RG}/providers/Microsoft.Authorization/locks/do-not-delete")
    named = lock_message("storage account 'st1'", [RG], [lock], "01REQ", "azure said")
    assert "the CanNotDelete lock 'do-not-delete'" in named and RG in named
    assert named.endswith("then retry the teardown: POST /api/workspaces/01REQ/retry.")
    scoped = lock_message("storage account 'st1'", [RG], [], "01REQ", "azure said")
    assert f"lock on {RG}" in scoped and "POST /api/workspaces/01REQ/retry" in scoped
    bare = lock_message("storage account 'st1'", [], [], "01REQ", "azure said")
    assert "azure said" in bare and "CanNotDelete" in bare


def test_what_azure_makes_for_the_service_does_not_keep_a_group() -> None:
    listed = [
        Listed(
            "Microsoft.Authorization/roleAssignments",
            "1ba6",
            f"{RG}/providers/Microsoft.Authorization/roleAssignments/1ba6",
        ),
        Listed("microsoft.alertsmanagement/smartDetectorAlertRules", "Failure Anomalies - appi-team-dev", "x"),
        Listed("microsoft.insights/actiongroups", "Application Insights Smart Detection", "y"),
    ]
    assert foreign_resources(listed, "appi-team-dev") == []
    theirs = Listed("Microsoft.Storage/storageAccounts", "stelse", "z")
    others_rule = Listed("microsoft.alertsmanagement/smartDetectorAlertRules", "Failure Anomalies - appi-else", "w")
    assert foreign_resources([*listed, theirs, others_rule], "appi-team-dev") == [theirs, others_rule]
    assert kept_message([theirs]) == "holds 1 other resource: stelse (Microsoft.Storage/storageAccounts)"
    many = [Listed("t", f"r{i}", str(i)) for i in range(12)]
    assert kept_message(many).startswith("holds 12 other resources: r0 (t)") and "and 2 more" in kept_message(many)
