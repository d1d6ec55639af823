"""Deletes as Azure answers them, per the spec of the api-version each SDK sends.

Long-running: ResourceGroups_Delete (202 + Location, resources.json 2025-04-01), Workspaces_Delete
(machinelearningservices preview/2024-10-01-preview/workspaceRP.json), Compute_Delete (preview/2023-08-01-preview,
`underlyingResourceAction` required), Registries_Delete (2025-11-01), Log Analytics Workspaces_Delete (2025-07-01).
Synchronous (200, then 204): storage accounts, key vaults, Application Insights, datastores, role assignments.
A group's delete removes what is in it as each resource's own delete would: vaults and workspaces are soft-deleted
(Key Vault DeletedVaultProperties; Azure ML concept-soft-delete, 14 days). Rules and spec files: docs/emulator.md.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from cloud.clients import Clients, emulator_endpoint
from cloud.credentials import EmulatorCredential
from cloud.provider import AzureProvider
from emulator.faults import Fault
from emulator.server import EmulatorServer
from emulator.state import Config, parse_path
from tests.conftest import poll
from tests.contract.conftest import SUB, VAULT_BODY

LOCATION = "westeurope"
RG_API = "2025-04-01"  # azure-mgmt-resource 26
ML_API = "2024-10-01-preview"  # azure-ai-ml's workspaces
COMPUTE_API = "2023-08-01-preview"  # azure-ai-ml's computes
STORAGE_API = "2026-09-01"  # azure-mgmt-storage 25.3
KV_API = "2026-05-15"  # azure-mgmt-keyvault 14.1
PRINCIPAL = "5f0b7c1e-8a55-4a3e-9a9e-2d4b1f0c7a22"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"


def _group(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{name}"


def _http(emulator: EmulatorServer) -> httpx.Client:
    return httpx.Client(
        base_url=emulator.url.rstrip("/"),
        verify=ssl.create_default_context(cafile=str(emulator.ca_file)),
        headers={"Authorization": "Bearer tests"},
        timeout=30,
    )


def _put(emulator: EmulatorServer, rid: str, body: dict[str, Any]) -> None:
    """Create a resource in the emulator and wait until it has Succeeded."""
    p = parse_path(rid)
    emulator.state.put(p, body)
    poll(
        lambda: (emulator.state.get(p).get("properties") or {}).get("provisioningState", "Succeeded") == "Succeeded",
        what=f"{rid} to be created",
    )


def _estate(emulator: EmulatorServer, rg: str, suffix: str) -> dict[str, str]:
    """A group with what the service provisions: storage, key vault, insights, registry, workspace, compute."""
    group = _group(rg)
    ids = {
        "group": group,
        "storage": f"{group}/providers/Microsoft.Storage/storageAccounts/st{suffix}",
        "vault": f"{group}/providers/Microsoft.KeyVault/vaults/kv-{suffix}",
        "insights": f"{group}/providers/Microsoft.Insights/components/appi-{suffix}",
        "registry": f"{group}/providers/Microsoft.ContainerRegistry/registries/cr{suffix}",
        "logs": f"{group}/providers/Microsoft.OperationalInsights/workspaces/log-{suffix}",
        "workspace": f"{group}/providers/Microsoft.MachineLearningServices/workspaces/mlw-{suffix}",
    }
    ids["compute"] = f"{ids['workspace']}/computes/cpu{suffix}"
    ids["container"] = f"{ids['storage']}/blobServices/default/containers/data"
    _put(emulator, group, {"location": LOCATION})
    _put(emulator, ids["storage"], {"location": LOCATION, "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"})
    _put(emulator, ids["container"], {"properties": {}})
    vault = {**VAULT_BODY["properties"], "softDeleteRetentionInDays": 7}
    _put(emulator, ids["vault"], {"location": LOCATION, "properties": vault})
    _put(emulator, ids["insights"], {"location": LOCATION, "kind": "web", "properties": {"Application_Type": "web"}})
    _put(emulator, ids["registry"], {"location": LOCATION, "sku": {"name": "Basic"}})
    _put(emulator, ids["logs"], {"location": LOCATION, "properties": {}})
    workspace = {
        "location": LOCATION,
        "identity": {"type": "SystemAssigned"},
        "properties": {"storageAccount": ids["storage"], "keyVault": ids["vault"]},
    }
    _put(emulator, ids["workspace"], workspace)
    compute = {
        "location": LOCATION,
        "properties": {
            "computeType": "AmlCompute",
            "properties": {"vmSize": "Standard_DS3_v2", "scaleSettings": {"minNodeCount": 0, "maxNodeCount": 1}},
        },
    }
    _put(emulator, ids["compute"], compute)
    return ids


@pytest.fixture
def slow_deletes(emulator: EmulatorServer) -> Iterator[dict[str, float]]:
    """Per-type delete durations for one test (the session's default is as short as its creates)."""
    durations: dict[str, float] = {}
    emulator.state.config.delete_latency_by_type = durations
    yield durations
    emulator.state.config.delete_latency_by_type = {}


def _ml(provider: AzureProvider, group: str, workspace: str | None = None) -> Any:
    """An MLClient against the session's emulator, built as the hand-off in docs/emulator.md builds one.

    Not `provider.clients.ml`: that client shares one `RemainingBudgetPolicy` instance among the service
    clients MLClient builds, which skips their request-id policy, and azure-core's poller then cannot follow
    a 202 (see test_the_services_ml_client_follows_a_workspace_delete below).
    """
    from azure.ai.ml import MLClient

    endpoint = provider.clients.endpoint
    return MLClient(
        EmulatorCredential(),
        SUB,
        group,
        workspace_name=workspace,
        connection_verify=endpoint.ca_bundle,
        enable_telemetry=False,
        show_progress=False,
        retry_total=0,
        **endpoint.ml_cloud_kwargs(),
    )


def _wait_gone(http: httpx.Client, rid: str, api: str) -> None:
    poll(lambda: http.get(f"{rid}?api-version={api}").status_code == 404, every=0.05, what=f"{rid} to be deleted")


# ----- resource groups: long-running, cascading, soft-deleting -----------------------------------------


def test_a_group_delete_is_long_running_and_takes_everything_in_it(
    emulator: EmulatorServer, slow_deletes: dict[str, float]
) -> None:
    ids = _estate(emulator, "rg-del-cascade", "cascade1")
    slow_deletes["microsoft.resources/resourcegroups"] = 1.0
    emulator.state.requests.clear()
    with _http(emulator) as http:
        started = http.delete(f"{ids['group']}?api-version={RG_API}")
        # ResourceGroups_Delete: 202 with Location (examples/ForceDeleteVMsInResourceGroup.json), no async header.
        assert started.status_code == 202, started.text
        assert started.headers.get("Location") and started.headers.get("Retry-After")
        assert "Azure-AsyncOperation" not in started.headers
        group = http.get(f"{ids['group']}?api-version={RG_API}")
        assert group.status_code == 200 and group.json()["properties"]["provisioningState"] == "Deleting"
        inside = http.get(f"{ids['storage']}?api-version={STORAGE_API}").json()
        assert inside["properties"]["provisioningState"] == "Deleting"
        refused = http.put(
            f"{ids['group']}/providers/Microsoft.Storage/storageAccounts/stlate1?api-version={STORAGE_API}",
            json={"location": LOCATION, "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"},
        )
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "ResourceGroupBeingDeleted"
        again = http.delete(f"{ids['group']}?api-version={RG_API}")
        assert again.status_code == 202 and again.headers["Location"] == started.headers["Location"]
        polls: list[int] = []

        def finished() -> httpx.Response | None:
            polled = http.get(started.headers["Location"])
            polls.append(polled.status_code)
            return polled if polled.status_code != 202 else None

        polled = poll(finished, every=0.1, what="the group delete to finish")
        assert 202 in polls and polled.status_code == 200
        assert http.get(f"{ids['group']}?api-version={RG_API}").status_code == 404
        gone = http.get(f"{ids['compute']}?api-version={COMPUTE_API}")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "ResourceGroupNotFound"
        deleted = http.get("/_emulator/deleted").json()
        remaining = [r["id"] for r in http.get("/_emulator/resources").json()["resources"]]
    assert not [r for r in remaining if r.lower().startswith(ids["group"].lower())]
    # Each resource is removed once (children with their parents), and vault and workspace are held soft-deleted.
    removed = emulator.state.stats()["deletes"]
    for rid in ids.values():
        assert removed.get(rid.lower()) == 1, rid
    assert ids["vault"] in [v["id"] for v in deleted["vaults"]]
    assert ids["workspace"] in [w["id"] for w in deleted["workspaces"]]
    deletes = [r for r in emulator.state.requests if r["method"] == "DELETE"]
    assert [(r["path"], r["api-version"]) for r in deletes] == [(ids["group"], RG_API)] * 2


def test_the_resource_management_client_deletes_a_group_and_then_finds_none(provider: AzureProvider) -> None:
    arm = provider.clients.resources(SUB)
    arm.resource_groups.create_or_update("rg-del-sdk", {"location": LOCATION})
    arm.resource_groups.begin_delete("rg-del-sdk", polling_interval=0.05).result()
    assert not arm.resource_groups.check_existence("rg-del-sdk")
    # A group that does not exist: ARM's 404 ResourceGroupNotFound (the spec lists 200 and 202 only).
    with pytest.raises(ResourceNotFoundError) as missing:
        arm.resource_groups.begin_delete("rg-del-sdk", polling_interval=0.05).result()
    assert missing.value.error is not None and missing.value.error.code == "ResourceGroupNotFound"


def test_a_vault_deleted_with_its_group_is_soft_deleted_for_its_retention(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    ids = _estate(emulator, "rg-del-kvgroup", "kvgroup1")
    before = time.time()
    provider.clients.resources(SUB).resource_groups.begin_delete("rg-del-kvgroup", polling_interval=0.05).result()
    deleted = provider.clients.key_vault(SUB).vaults.get_deleted("kv-kvgroup1", LOCATION)
    props = deleted.properties
    assert props.vault_id == ids["vault"]
    assert props.deletion_date.timestamp() >= before - 1
    # DeletedVaultProperties.scheduledPurgeDate: the deletion date plus the vault's softDeleteRetentionInDays (7).
    assert (props.scheduled_purge_date - props.deletion_date).total_seconds() == pytest.approx(7 * 86400, abs=1)


# ----- Azure ML workspaces and computes -----------------------------------------------------------------


def test_a_workspace_delete_is_long_running_then_soft_deleted_for_14_days(
    emulator: EmulatorServer, slow_deletes: dict[str, float]
) -> None:
    ids = _estate(emulator, "rg-del-ws", "wsdel1")
    slow_deletes["microsoft.machinelearningservices/workspaces"] = 1.0
    with _http(emulator) as http:
        started = http.delete(f"{ids['workspace']}?api-version={ML_API}&forceToPurge=false")
        assert started.status_code == 202, started.text
        assert started.headers.get("Azure-AsyncOperation") and started.headers.get("Location")
        assert started.headers.get("Retry-After")
        during = http.get(f"{ids['workspace']}?api-version={ML_API}").json()
        assert during["properties"]["provisioningState"] == "Deleting"
        assert http.get(started.headers["Azure-AsyncOperation"]).json()["status"] == "InProgress"
        _wait_gone(http, ids["workspace"], ML_API)
        assert http.get(started.headers["Azure-AsyncOperation"]).json()["status"] == "Succeeded"
        # The computes went with it.
        assert http.get(f"{ids['compute']}?api-version={COMPUTE_API}").status_code == 404
        held = {w["id"]: w for w in http.get("/_emulator/deleted").json()["workspaces"]}
        again = http.put(f"{ids['workspace']}?api-version={ML_API}", json={"location": LOCATION, "properties": {}})
        nothing = http.delete(f"{ids['workspace']}?api-version={ML_API}")
    assert ids["workspace"] in held
    days = (
        time.mktime(time.strptime(held[ids["workspace"]]["scheduledPurgeDate"], "%Y-%m-%dT%H:%M:%SZ"))
        - time.mktime(time.strptime(held[ids["workspace"]]["deletionDate"], "%Y-%m-%dT%H:%M:%SZ"))
    ) / 86400
    assert days == pytest.approx(14)
    assert again.status_code == 400 and "Soft-deleted workspace exists" in again.json()["error"]["message"]
    assert nothing.status_code == 204  # Workspaces_Delete: 204 when there is no such workspace


def test_ml_client_permanently_deletes_a_workspace_and_frees_its_name(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    ids = _estate(emulator, "rg-del-wspurge", "wspurge1")
    ml = _ml(provider, "rg-del-wspurge")
    ml.workspaces.begin_delete("mlw-wspurge1", delete_dependent_resources=False, permanently_delete=True).result()
    assert ids["workspace"] not in emulator.state.soft_deleted_workspaces()
    with pytest.raises(ResourceNotFoundError):
        ml.workspaces.get("mlw-wspurge1")
    purges = [r for r in emulator.state.requests if r["method"] == "DELETE" and r["path"] == ids["workspace"]]
    assert purges and purges[-1]["api-version"] == ML_API
    _put(emulator, ids["workspace"], {"location": LOCATION, "properties": {}})  # the name is free again


def test_ml_client_soft_deletes_a_workspace(provider: AzureProvider, emulator: EmulatorServer) -> None:
    ids = _estate(emulator, "rg-del-wssoft", "wssoft1")
    ml = _ml(provider, "rg-del-wssoft")
    ml.workspaces.begin_delete("mlw-wssoft1", delete_dependent_resources=False).result()
    assert ids["workspace"] in emulator.state.soft_deleted_workspaces()
    with pytest.raises(ResourceNotFoundError):
        ml.workspaces.get("mlw-wssoft1")


def test_the_services_ml_client_follows_a_workspace_delete(provider: AzureProvider, emulator: EmulatorServer) -> None:
    # The service's own MLClient (its pacing policy shared by every client MLClient builds) follows the 202.
    ids = _estate(emulator, "rg-del-svcml", "svcml1")
    ml = provider.clients.ml(SUB, "rg-del-svcml")
    ml.workspaces.begin_delete("mlw-svcml1", delete_dependent_resources=False).result()
    assert ids["workspace"] in emulator.state.soft_deleted_workspaces()
    with pytest.raises(ResourceNotFoundError):
        ml.workspaces.get("mlw-svcml1")


def test_a_compute_delete_needs_its_underlying_resource_action(
    provider: AzureProvider, emulator: EmulatorServer, slow_deletes: dict[str, float]
) -> None:
    ids = _estate(emulator, "rg-del-compute", "cmp1")
    with _http(emulator) as http:
        bare = http.delete(f"{ids['compute']}?api-version={COMPUTE_API}")
        wrong = http.delete(f"{ids['compute']}?api-version={COMPUTE_API}&underlyingResourceAction=Stop")
        still = http.get(f"{ids['compute']}?api-version={COMPUTE_API}")
        slow_deletes["microsoft.machinelearningservices/workspaces/computes"] = 1.0
        started = http.delete(f"{ids['compute']}?api-version={COMPUTE_API}&underlyingResourceAction=Delete")
        during = http.get(f"{ids['compute']}?api-version={COMPUTE_API}").json()
        _wait_gone(http, ids["compute"], COMPUTE_API)
        missing = http.delete(f"{ids['compute']}?api-version={COMPUTE_API}&underlyingResourceAction=Delete")
    assert bare.status_code == 400 and "underlyingResourceAction" in bare.json()["error"]["message"]
    assert wrong.status_code == 400 and still.status_code == 200
    assert started.status_code == 202 and started.headers.get("Azure-AsyncOperation") and started.headers["Location"]
    assert during["properties"]["provisioningState"] == "Deleting"
    assert missing.status_code == 204  # Compute_Delete's example: 200, 202 or 204


def test_ml_client_deletes_a_compute(provider: AzureProvider, emulator: EmulatorServer) -> None:
    ids = _estate(emulator, "rg-del-mlcompute", "mlcmp1")
    ml = _ml(provider, "rg-del-mlcompute", "mlw-mlcmp1")
    emulator.state.requests.clear()
    ml.compute.begin_delete("cpumlcmp1").result()
    with pytest.raises(ResourceNotFoundError):
        ml.compute.get("cpumlcmp1")
    sent = [r for r in emulator.state.requests if r["method"] == "DELETE"]
    assert [(r["path"], r["api-version"]) for r in sent] == [(ids["compute"], COMPUTE_API)]


# ----- the other types ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("which", "api", "style"),
    [
        ("storage", STORAGE_API, None),
        ("container", STORAGE_API, None),
        ("vault", KV_API, None),
        ("insights", "2020-02-02", None),
        ("registry", "2025-11-01", "location"),
        ("logs", "2025-07-01", "async"),
    ],
)
def test_each_type_deletes_as_its_spec_says(
    emulator: EmulatorServer, slow_deletes: dict[str, float], which: str, api: str, style: str | None
) -> None:
    ids = _estate(emulator, f"rg-del-{which}", f"each{which[:3]}1")
    for rtype in ("microsoft.containerregistry/registries", "microsoft.operationalinsights/workspaces"):
        slow_deletes[rtype] = 0.5
    rid = ids[which]
    with _http(emulator) as http:
        first = http.delete(f"{rid}?api-version={api}")
        if style is None:
            assert first.status_code == 200, first.text
            assert "Location" not in first.headers and "Azure-AsyncOperation" not in first.headers
        else:
            assert first.status_code == 202, first.text
            assert first.headers.get("Location") and first.headers.get("Retry-After")
            assert ("Azure-AsyncOperation" in first.headers) == (style == "async")
            assert http.get(f"{rid}?api-version={api}").json()["properties"]["provisioningState"] == "Deleting"
        _wait_gone(http, rid, api)
        second = http.delete(f"{rid}?api-version={api}")
    assert second.status_code == 204


def test_role_assignments_and_datastores_are_deleted_at_once(emulator: EmulatorServer) -> None:
    ids = _estate(emulator, "rg-del-rbac", "rbac1")
    assignment = (
        f"{ids['storage']}/providers/Microsoft.Authorization/roleAssignments/0b7f4a4e-3f0e-4d67-9d43-5e0ad1a1c001"
    )
    role = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{READER}"
    _put(emulator, assignment, {"properties": {"roleDefinitionId": role, "principalId": PRINCIPAL}})
    datastore = f"{ids['workspace']}/datastores/workspaceartifactstore"
    with _http(emulator) as http:
        removed = http.delete(f"{assignment}?api-version=2022-04-01")
        again = http.delete(f"{assignment}?api-version=2022-04-01")
        store = http.delete(f"{datastore}?api-version=2024-10-01-preview")
        store_again = http.delete(f"{datastore}?api-version=2024-10-01-preview")
    # RoleAssignments_Delete answers 200 with the assignment it deleted, then 204.
    assert removed.status_code == 200 and removed.json()["properties"]["principalId"] == PRINCIPAL
    assert again.status_code == 204
    assert store.status_code == 200 and store_again.status_code == 204


def test_a_resource_in_a_group_that_does_not_exist_is_not_found(emulator: EmulatorServer) -> None:
    rid = f"{_group('rg-del-never')}/providers/Microsoft.Storage/storageAccounts/stnever1"
    with _http(emulator) as http:
        answer = http.delete(f"{rid}?api-version={STORAGE_API}")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "ResourceGroupNotFound"


def test_sdk_deletes_of_storage_and_key_vault_are_synchronous(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    ids = _estate(emulator, "rg-del-sync", "sync1")
    provider.clients.storage(SUB).storage_accounts.delete("rg-del-sync", "stsync1")
    assert emulator.state.stats()["deletes"].get(ids["storage"].lower()) == 1
    kv = provider.clients.key_vault(SUB)
    kv.vaults.delete("rg-del-sync", "kv-sync1")
    with pytest.raises(ResourceNotFoundError):
        kv.vaults.get("rg-del-sync", "kv-sync1")
    assert kv.vaults.get_deleted("kv-sync1", LOCATION).properties.vault_id == ids["vault"]


# ----- key vault soft-delete and purge ------------------------------------------------------------------


def test_a_soft_deleted_vault_holds_its_name_until_purged(provider: AzureProvider, emulator: EmulatorServer) -> None:
    ids = _estate(emulator, "rg-del-kvpurge", "kvpurge1")
    kv = provider.clients.key_vault(SUB)
    kv.vaults.delete("rg-del-kvpurge", "kv-kvpurge1")
    vault = {"location": LOCATION, "properties": VAULT_BODY["properties"]}
    with _http(emulator) as http:
        taken = http.put(f"{ids['vault']}?api-version={KV_API}", json=vault)
        assert taken.status_code == 409 and taken.json()["error"]["code"] == "ConflictError"
        kv.vaults.begin_purge_deleted("kv-kvpurge1", LOCATION, polling_interval=0.05).result()
        with pytest.raises(ResourceNotFoundError):
            kv.vaults.get_deleted("kv-kvpurge1", LOCATION)
        again = http.put(f"{ids['vault']}?api-version={KV_API}", json=vault)
    assert again.status_code in (200, 201), again.text


def test_a_purge_protected_vault_cannot_be_purged(provider: AzureProvider, emulator: EmulatorServer) -> None:
    group = _group("rg-del-kvprotect")
    _put(emulator, group, {"location": LOCATION})
    rid = f"{group}/providers/Microsoft.KeyVault/vaults/kv-protect1"
    props = {**VAULT_BODY["properties"], "enablePurgeProtection": True, "softDeleteRetentionInDays": 7}
    _put(emulator, rid, {"location": LOCATION, "properties": props})
    kv = provider.clients.key_vault(SUB)
    kv.vaults.delete("rg-del-kvprotect", "kv-protect1")
    with pytest.raises(HttpResponseError) as refused:
        kv.vaults.begin_purge_deleted("kv-protect1", LOCATION, polling_interval=0.05).result()
    assert refused.value.status_code == 409
    assert kv.vaults.get_deleted("kv-protect1", LOCATION).properties.purge_protection_enabled


# ----- faults on deletes --------------------------------------------------------------------------------


def test_fault_rules_answer_the_first_deletes_of_a_type(emulator: EmulatorServer) -> None:
    ids = _estate(emulator, "rg-del-fault", "fault1")
    emulator.state.faults.replace(
        [
            Fault(
                type="Microsoft.Storage/storageAccounts",
                method="DELETE",
                status=429,
                code="TooManyRequests",
                message="The request is being throttled.",
                retry_after_s=3,
                times=2,
            )
        ]
    )
    with _http(emulator) as http:
        answers = [http.delete(f"{ids['storage']}?api-version={STORAGE_API}") for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].headers["Retry-After"] == "3" and answers[0].json()["error"]["code"] == "TooManyRequests"
    assert emulator.state.stats()["deletes"].get(ids["storage"].lower()) == 1


def test_an_accepted_delete_can_end_failed(provider: AzureProvider, emulator: EmulatorServer) -> None:
    ids = _estate(emulator, "rg-del-failed", "failed1")
    emulator.state.faults.replace(
        [
            Fault(
                type="Microsoft.MachineLearningServices/workspaces",
                method="DELETE",
                provisioning_state="Failed",
                status=409,
                code="WorkspaceDeletionFailed",
                message="The workspace could not be deleted.",
            ),
            Fault(
                type="Microsoft.Resources/resourceGroups",
                method="DELETE",
                provisioning_state="Failed",
                status=500,
                code="InternalServerError",
                message="The group could not be deleted.",
            ),
        ]
    )
    ml = _ml(provider, "rg-del-failed")
    with pytest.raises(HttpResponseError) as failed:
        ml.workspaces.begin_delete("mlw-failed1", delete_dependent_resources=False).result()
    assert "WorkspaceDeletionFailed" in str(failed.value)
    with _http(emulator) as http:
        kept = http.get(f"{ids['workspace']}?api-version={ML_API}")
        started = http.delete(f"{ids['group']}?api-version={RG_API}")
        polled = poll(
            lambda: (r := http.get(started.headers["Location"])).status_code != 202 and r,
            every=0.05,
            what="the group delete to end",
        )
        group = http.get(f"{ids['group']}?api-version={RG_API}")
    assert kept.status_code == 200 and kept.json()["properties"]["provisioningState"] == "Succeeded"
    assert ids["workspace"] not in emulator.state.soft_deleted_workspaces()
    # A Location poll reports the failure with its status and error (the SDK raises it).
    assert polled.status_code == 500 and polled.json()["error"]["code"] == "InternalServerError"
    assert group.status_code == 200 and group.json()["properties"]["provisioningState"] == "Succeeded"


# ----- retention on the emulator's clock (an emulator of its own: the clock moves for everyone) ---------


@pytest.fixture
def own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    # `Clients` points process-wide variables at the emulator it is given: keep the session's afterwards.
    for name in ("REQUESTS_CA_BUNDLE", "ARM_CLOUD_METADATA_URL", "AZUREML_CURRENT_CLOUD"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)
    server = EmulatorServer(data_dir=tmp_path, config=Config(latency_s=0.05, retry_after_s=0)).start()
    yield server
    server.stop()


def test_retention_passes_on_the_emulators_clock(own: EmulatorServer) -> None:
    ids = _estate(own, "rg-del-clock", "clock1")
    kv = Clients(emulator_endpoint(own.url, str(own.ca_bundle)), EmulatorCredential()).key_vault(SUB)
    with _http(own) as http:
        http.delete(f"{ids['workspace']}?api-version={ML_API}")
        _wait_gone(http, ids["workspace"], ML_API)
        assert http.delete(f"{ids['vault']}?api-version={KV_API}").status_code == 200
        assert http.put("/_emulator/clock", json={"advance_s": -1}).status_code == 400
        # Six days on: the vault (7 days) and the workspace (14 days) still hold their names.
        assert http.put("/_emulator/clock", json={"advance_s": 6 * 86400}).json()["offset_s"] == 6 * 86400
        assert kv.vaults.get_deleted("kv-clock1", LOCATION).properties.vault_id == ids["vault"]
        held = http.put(f"{ids['workspace']}?api-version={ML_API}", json={"location": LOCATION, "properties": {}})
        assert held.status_code == 400
        http.put("/_emulator/clock", json={"advance_s": 86400 + 1})
        with pytest.raises(ResourceNotFoundError):
            kv.vaults.get_deleted("kv-clock1", LOCATION)
        deleted = http.get("/_emulator/deleted").json()
        assert [w["id"] for w in deleted["workspaces"]] == [ids["workspace"]] and not deleted["vaults"]
        vault = {"location": LOCATION, "properties": VAULT_BODY["properties"]}
        assert http.put(f"{ids['vault']}?api-version={KV_API}", json=vault).status_code in (200, 201)
        http.put("/_emulator/clock", json={"advance_s": 7 * 86400})
        assert not http.get("/_emulator/deleted").json()["workspaces"]
        free = http.put(f"{ids['workspace']}?api-version={ML_API}", json={"location": LOCATION, "properties": {}})
        assert free.status_code in (200, 201), free.text
