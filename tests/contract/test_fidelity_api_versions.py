"""Only api-versions Azure publishes (azure-rest-api-specs) are served; the flows send only those."""

from __future__ import annotations

import ssl

import httpx

from cloud import preflight
from cloud.provider import AzureProvider
from emulator.catalogue import API_VERSIONS, published_versions
from emulator.server import EmulatorServer
from models.outcomes import Done
from tests.conftest import example
from tests.contract.conftest import SUB, _plan, run_plan


def _http(emulator: EmulatorServer) -> httpx.Client:
    return httpx.Client(
        base_url=emulator.url.rstrip("/"),
        verify=ssl.create_default_context(cafile=str(emulator.ca_file)),
        headers={"Authorization": "Bearer test"},
    )


def test_an_unpublished_api_version_is_refused_as_arm_refuses_it(emulator: EmulatorServer) -> None:
    rg = f"/subscriptions/{SUB}/resourceGroups/rg-versions"
    with _http(emulator) as http:
        assert http.put(f"{rg}?api-version=2025-04-01", json={"location": "westeurope"}).status_code in (200, 201)
        account = f"{rg}/providers/Microsoft.Storage/storageAccounts/stversions"
        body = {"location": "westeurope", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}
        refused = http.put(f"{account}?api-version=2099-01-01", json=body)
        group = http.get(f"{rg}?api-version=2099-01-01")
        keys = http.post(f"{account}/listKeys?api-version=2099-01-01")
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "NoRegisteredProviderFound"
    assert "location 'westeurope' and API version '2099-01-01' for type 'storageAccounts'" in error["message"]
    assert "2026-09-01" in error["message"]  # the supported versions are listed
    assert group.status_code == 400 and group.json()["error"]["code"] == "NoRegisteredProviderFound"
    assert keys.status_code == 400  # an action is checked against its resource type's versions


def test_every_api_version_the_provider_and_the_sdks_send_is_published(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    with _http(emulator) as http:
        refused_before = http.get("/_emulator/api-versions").json()["refused"]
        results = run_plan(provider, _plan(example("gpu-research.json") | {"team": "versions"}))
        report = http.get("/_emulator/api-versions").json()
    assert all(isinstance(o, Done) for o in results.values()), results
    assert report["refused"] == refused_before  # the flow sent no unpublished version
    pairs = {(s["type"], s["api_version"]) for s in report["seen"]}
    for rtype, version in pairs:
        assert version in API_VERSIONS[rtype.lower()].versions, (rtype, version)
    types = {t for t, _ in pairs}
    # Every resource type the flow provisions went through the check.
    assert {
        "Microsoft.Resources/resourceGroups",
        "Microsoft.Resources/deployments",
        "Microsoft.Storage/storageAccounts",
        "Microsoft.Storage/storageAccounts/blobServices/containers",
        "Microsoft.KeyVault/vaults",
        "Microsoft.OperationalInsights/workspaces",
        "Microsoft.Insights/components",
        "Microsoft.ContainerRegistry/registries",
        "Microsoft.MachineLearningServices/workspaces",
        "Microsoft.MachineLearningServices/workspaces/computes",
        "Microsoft.MachineLearningServices/workspaces/datastores",
        "Microsoft.Authorization/roleAssignments",
    } <= types


def test_the_versions_written_into_the_code_are_published() -> None:
    # cloud/preflight.py calls ARM with its own api-versions; cloud/ml.py purges workspaces with ML_API's.
    for rtype, version in preflight.RESOURCE_APIS.items():
        found = published_versions(rtype)
        assert found is not None and version in found.versions, (rtype, version)
    providers = published_versions("Microsoft.Storage")  # GET /subscriptions/{id}/providers/{namespace}
    assert providers is not None and preflight.PROVIDERS_API in providers.versions
    ml = published_versions("Microsoft.MachineLearningServices/workspaces")
    assert ml is not None and "2024-04-01" in ml.versions  # cloud/ml.py, the forceToPurge delete
