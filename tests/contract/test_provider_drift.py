"""Drift: the Azure provider reads each kind of resource (GETs only) and says how it was changed behind its back."""

from __future__ import annotations

from typing import Any

from azure.mgmt.keyvault.models import VaultPatchParameters
from azure.mgmt.storage.models import StorageAccountUpdateParameters

from cloud.access import assignment_name
from cloud.provider import AzureProvider
from emulator.server import EmulatorServer
from emulator.state import parse_path
from models.lifecycle import DriftFinding
from models.plan import Plan
from tests.conftest import example, poll
from tests.contract.conftest import STORAGE_BODY, SUB, _plan
from tests.contract.lifecycle import applied, arm, context, deleting, inspect_all

ML_API = "2024-04-01"


def _by_step(findings: list[DriftFinding]) -> dict[str, list[DriftFinding]]:
    out: dict[str, list[DriftFinding]] = {}
    for f in findings:
        out.setdefault(f.step_id, []).append(f)
    return out


def _inspect(provider: AzureProvider, p: Plan, step_id: str, outputs: dict[str, dict[str, Any]]) -> list[DriftFinding]:
    step = p.step(step_id)
    return provider.inspect(step, context(p, step, outputs))


def test_a_workspace_as_the_service_made_it_has_no_drift_and_inspecting_writes_nothing(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("gpu-research.json") | {"team": "dr-clean"})
    outputs = applied(provider, p)
    emulator.state.requests.clear()
    calls = dict(emulator.state.calls)
    assert inspect_all(provider, p, outputs) == []
    assert emulator.state.requests == []  # every write is logged: there were none
    assert emulator.state.calls["GET"] > calls.get("GET", 0)
    assert all(emulator.state.calls[m] == calls.get(m, 0) for m in ("PUT", "PATCH", "DELETE", "POST"))


def test_a_resized_compute_cluster_is_reported_field_by_field(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "dr-resize"})
    outputs = applied(provider, p)
    compute = p.step("compute:cpu-cluster")
    with arm(emulator) as client:
        body = client.get(compute.resource_id, params={"api-version": ML_API}).json()
        scale = body["properties"]["properties"]["scaleSettings"]
        assert scale["maxNodeCount"] == compute.spec.max_nodes  # type: ignore[attr-defined]
        scale["maxNodeCount"] = 8
        scale["nodeIdleTimeBeforeScaleDown"] = "PT5M"
        answer = client.put(compute.resource_id, params={"api-version": ML_API}, json=body)
        assert answer.status_code < 300, answer.text
    poll(
        lambda: emulator.state.get(parse_path(compute.resource_id))["properties"]["provisioningState"] == "Succeeded",
        what="the compute to settle",
    )
    found = {f.field: f for f in _inspect(provider, p, compute.id, outputs)}
    assert set(found) == {"max_nodes", "idle_seconds"}
    assert (found["max_nodes"].expected, found["max_nodes"].actual) == (str(compute.spec.max_nodes), "8")  # type: ignore[attr-defined]
    assert (found["idle_seconds"].expected, found["idle_seconds"].actual) == (str(compute.spec.idle_seconds), "300")  # type: ignore[attr-defined]
    assert all(f.drift == "changed" and f.resource_id == compute.resource_id for f in found.values())
    assert "maximum node count is 8" in found["max_nodes"].message


def test_removed_and_changed_tags_are_reported_and_added_ones_are_not(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "dr-tags"})
    outputs = applied(provider, p)
    n = p.names
    vaults = provider.clients.key_vault(SUB).vaults
    tags = dict(vaults.get(n.resource_group, n.key_vault).tags)
    tags.pop("cost-center")
    vaults.update(n.resource_group, n.key_vault, VaultPatchParameters(tags={**tags, "owner": "someone"}))
    accounts = provider.clients.storage(SUB).storage_accounts
    account_tags = {**accounts.get_properties(n.resource_group, n.storage_account).tags, "environment": "prod"}
    accounts.update(n.resource_group, n.storage_account, StorageAccountUpdateParameters(tags=account_tags))
    found = _by_step(inspect_all(provider, p, outputs))
    assert set(found) == {"key-vault", "storage"}
    [vault] = found["key-vault"]
    assert (vault.field, vault.expected, vault.actual) == ("tags.cost-center", "CC-1042", None)
    assert "missing" in vault.message
    [storage] = found["storage"]
    assert (storage.field, storage.expected, storage.actual) == ("tags.environment", "dev", "prod")


def test_shared_keys_turned_on_behind_the_service_s_back_is_reported(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "dr-keys"})
    outputs = applied(provider, p)
    n = p.names
    provider.clients.storage(SUB).storage_accounts.update(
        n.resource_group, n.storage_account, StorageAccountUpdateParameters(allow_shared_key_access=True)
    )
    [finding] = _inspect(provider, p, "storage", outputs)
    assert (finding.field, finding.expected, finding.actual) == ("shared_key_access", "false", "true")


def test_a_deleted_role_assignment_datastore_and_container_are_reported_missing(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "dr-gone"})
    outputs = applied(provider, p)
    n = p.names
    owner = next(s for s in p.steps if s.kind == "access" and s.spec.principal_id)  # type: ignore[attr-defined]
    grant = owner.spec.assignments[0]  # type: ignore[attr-defined]
    name = assignment_name(grant.scope, grant.role_definition, owner.spec.principal_id)  # type: ignore[attr-defined]
    provider.clients.authorization(SUB).role_assignments.delete(grant.scope, name)
    provider.clients.ml(SUB, n.resource_group, n.workspace).datastores.delete("training_data")
    provider.clients.storage(SUB).blob_containers.delete(n.resource_group, n.storage_account, "training-data")
    found = _by_step(inspect_all(provider, p, outputs))
    assert set(found) == {owner.id, "datastore:training_data", "storage"}
    [role] = found[owner.id]
    assert role.drift == "missing" and role.field == f"role:{grant.role}" and role.resource_id.endswith(name)
    [datastore] = found["datastore:training_data"]
    assert datastore.drift == "missing" and datastore.resource_id == p.step("datastore:training_data").resource_id
    [container] = found["storage"]
    assert (container.field, container.actual) == ("container:training-data", "missing")


def test_a_deleted_workspace_and_group_are_each_one_missing_finding(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "dr-nows"})
    outputs = applied(provider, p)
    n = p.names
    provider.clients.ml(SUB, n.resource_group).workspaces.begin_delete(
        n.workspace, delete_dependent_resources=False, permanently_delete=True
    ).result()
    [workspace] = _inspect(provider, p, "workspace", outputs)
    assert workspace.drift == "missing" and workspace.field is None
    assert "workspace 'mlw-dr-nows-dev' is missing" in workspace.message
    provider.clients.resources(SUB).resource_groups.begin_delete(n.resource_group).result()
    [group] = _inspect(provider, p, "resource-group", outputs)
    assert group.drift == "missing" and group.resource_id == p.step("resource-group").resource_id


def test_a_brought_resource_is_only_checked_for_being_there(provider: AzureProvider, emulator: EmulatorServer) -> None:
    group = f"/subscriptions/{SUB}/resourceGroups/rg-ml-dr-byo-dev"
    account = f"{group}/providers/Microsoft.Storage/storageAccounts/stdrbyo0001"
    emulator.state.put(parse_path(group), {"location": "westeurope"})
    emulator.state.put(parse_path(account), {"location": "westeurope", "tags": {"team": "other"}, **STORAGE_BODY})
    p = _plan(example("cpu-small.json") | {"team": "dr-byo", "existing": {"storage_account_id": account}})
    assert _inspect(provider, p, "storage", {}) == []  # its tags and settings are the team's
    emulator.state.delete(parse_path(account))
    [finding] = _inspect(provider, p, "storage", {})
    assert finding.drift == "missing" and finding.resource_id == account


def test_a_step_being_deleted_is_not_inspected(provider: AzureProvider, emulator: EmulatorServer) -> None:
    p = _plan(example("cpu-small.json") | {"team": "dr-delete"})
    step = deleting(p.step("storage"))
    assert provider.inspect(step, context(p, step, {})) == []
    # The same step to apply, never made, is missing.
    [finding] = _inspect(provider, p, "resource-group", {})
    assert finding.drift == "missing"
