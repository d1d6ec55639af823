"""Key vault updates and purges as the Microsoft.KeyVault spec has them.

Tag drift is a tags-only Vaults_Update PATCH (synchronous); a vault's soft-delete retention cannot change
once it exists (Microsoft Learn, "Azure Key Vault soft-delete overview"); DeletedVaults_PurgeDeleted is a
long-running POST, 202 with Location (specification/keyvault/resource-manager/Microsoft.KeyVault/KeyVault,
api-version 2026-05-15 as azure-mgmt-keyvault 14.1 sends).
"""

from __future__ import annotations

from typing import Any

import pytest

from cloud.provider import AzureProvider
from emulator.arm_errors import ArmError
from emulator.server import EmulatorServer
from emulator.state import parse_path
from models.outcomes import Done
from tests.conftest import example, poll
from tests.contract.conftest import SUB, VAULT_BODY, _plan, drive

GROUP = f"/subscriptions/{SUB}/resourceGroups/rg-kv-fidelity"


def _vault(emulator: EmulatorServer, name: str, retention: int) -> Any:
    emulator.state.put(parse_path(GROUP), {"location": "westeurope"})
    p = parse_path(f"{GROUP}/providers/Microsoft.KeyVault/vaults/{name}")
    body = {
        "location": "westeurope",
        "properties": {**VAULT_BODY["properties"], "softDeleteRetentionInDays": retention},
    }
    emulator.state.put(p, body)
    poll(lambda: emulator.state.get(p)["properties"]["provisioningState"] == "Succeeded", what="the vault")
    return p


def test_tag_drift_is_a_tags_only_patch(provider: AzureProvider, emulator: EmulatorServer) -> None:
    p = _plan(example("cpu-small.json") | {"team": "kv-tags"})
    outputs: dict[str, dict[str, Any]] = {}
    for step in ("resource-group", "key-vault"):
        assert isinstance(drive(provider, p, step, outputs), Done)
    kv = p.step("key-vault")
    drifted = kv.spec.model_copy(update={"tags": {**kv.spec.tags, "cost-center": "CC-2001"}})
    p.steps[p.steps.index(kv)] = kv.model_copy(update={"spec": drifted})
    emulator.state.requests.clear()
    assert isinstance(drive(provider, p, "key-vault", outputs), Done)
    writes = [r for r in emulator.state.requests if "/microsoft.keyvault/vaults/" in r["path"].lower()]
    assert [w["method"] for w in writes] == ["PATCH"]
    assert set(writes[0]["body"]) == {"tags"} and writes[0]["body"]["tags"]["cost-center"] == "CC-2001"
    vault = emulator.state.get(parse_path(p.step("key-vault").resource_id))
    assert vault["tags"]["cost-center"] == "CC-2001" and vault["properties"]["provisioningState"] == "Succeeded"


def test_a_put_cannot_change_the_retention_of_an_existing_vault(emulator: EmulatorServer) -> None:
    p = _vault(emulator, "kv-retention-fixed", retention=7)
    body = {"location": "westeurope", "properties": {**VAULT_BODY["properties"], "softDeleteRetentionInDays": 30}}
    with pytest.raises(ArmError) as refused:
        emulator.state.put(p, body)
    assert refused.value.status == 400 and "softDeleteRetentionInDays" in refused.value.message
    status, view, op = emulator.state.patch(p, {"tags": {"owner": "platform"}})
    assert status == 200 and op is None  # Vaults_Update answers when it is done
    assert view["tags"] == {"owner": "platform"} and view["properties"]["softDeleteRetentionInDays"] == 7


def test_purge_is_a_long_running_post(provider: AzureProvider, emulator: EmulatorServer) -> None:
    from azure.core.rest import HttpRequest

    name = "kv-purge-lro"
    p = _vault(emulator, name, retention=7)
    emulator.state.delete(p)
    arm = provider.clients.resources(SUB)
    base = provider.clients.endpoint.arm_url.rstrip("/")
    url = f"{base}/subscriptions/{SUB}/providers/Microsoft.KeyVault/locations/westeurope/deletedVaults/{name}/purge"
    emulator.state.config.latency_by_type = {"microsoft.keyvault/vaults": 1.0}
    try:
        started = arm.send_request(HttpRequest("POST", f"{url}?api-version=2026-05-15"))
    finally:
        emulator.state.config.latency_by_type = {}
    assert started.status_code == 202 and started.headers.get("Retry-After")
    monitor = started.headers["Location"]
    assert emulator.state.deleted_vaults(SUB, name)  # still held while the purge runs
    polled = poll(
        lambda: (r := arm.send_request(HttpRequest("GET", monitor))).status_code != 202 and r,
        every=0.1,
        what="the purge to finish",
    )
    assert polled.status_code == 200
    assert not emulator.state.deleted_vaults(SUB, name)
