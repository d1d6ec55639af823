"""Management locks as ARM enforces them (resources/resource-manager/Microsoft.Authorization/locks/stable/2020-05-01/
locks.json, what azure-mgmt-resource-locks 1.0 sends).

A lock applies to its scope and everything under it: CanNotDelete refuses deletes, ReadOnly writes too; a
group whose resource is locked cannot be deleted, and nothing in it is. ARM refuses with 409 ScopeLocked,
"The scope '…' cannot perform delete operation because following scope(s) are locked: '…'. Please remove the
lock and try again." (Azure/azure-cli#20232, Azure/apiops#606).
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import pytest

from cloud.provider import AzureProvider
from emulator.server import EmulatorServer
from emulator.state import parse_path
from tests.conftest import poll
from tests.contract.conftest import SUB, VAULT_BODY

LOCATION = "westeurope"
LOCKS_API = "2020-05-01"
RG_API = "2025-04-01"
STORAGE_API = "2026-09-01"
KV_API = "2026-05-15"


def _http(emulator: EmulatorServer) -> httpx.Client:
    return httpx.Client(
        base_url=emulator.url.rstrip("/"),
        verify=ssl.create_default_context(cafile=str(emulator.ca_file)),
        headers={"Authorization": "Bearer tests"},
        timeout=30,
    )


def _setup(emulator: EmulatorServer, rg: str, suffix: str) -> dict[str, str]:
    group = f"/subscriptions/{SUB}/resourceGroups/{rg}"
    ids = {
        "group": group,
        "storage": f"{group}/providers/Microsoft.Storage/storageAccounts/st{suffix}",
        "vault": f"{group}/providers/Microsoft.KeyVault/vaults/kv-{suffix}",
    }
    bodies: dict[str, dict[str, Any]] = {
        "group": {"location": LOCATION},
        "storage": {"location": LOCATION, "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"},
        "vault": {"location": LOCATION, "properties": VAULT_BODY["properties"]},
    }
    for which, rid in ids.items():
        emulator.state.put(parse_path(rid), bodies[which])
    for rid in ids.values():
        poll(
            lambda r=rid: emulator.state.get(parse_path(r))["properties"]["provisioningState"] == "Succeeded", what=rid
        )
    return ids


def _lock(http: httpx.Client, scope: str, name: str, level: str) -> httpx.Response:
    return http.put(
        f"{scope}/providers/Microsoft.Authorization/locks/{name}?api-version={LOCKS_API}",
        json={"properties": {"level": level, "notes": "kept by the platform team"}},
    )


def _scope_locked(answer: httpx.Response, scope: str, operation: str, locked: str) -> None:
    assert answer.status_code == 409, answer.text
    error = answer.json()["error"]
    assert error["code"] == "ScopeLocked"
    assert error["message"] == (
        f"The scope '{scope}' cannot perform {operation} operation because following scope(s) are locked: "
        f"'{locked}'. Please remove the lock and try again."
    )


def test_a_lock_reads_as_the_spec_example_shows(emulator: EmulatorServer) -> None:
    ids = _setup(emulator, "rg-lock-shape", "lockshape1")
    lock_id = f"{ids['group']}/providers/Microsoft.Authorization/locks/keep"
    with _http(emulator) as http:
        created = _lock(http, ids["group"], "keep", "CanNotDelete")
        again = _lock(http, ids["group"], "keep", "CanNotDelete")
        got = http.get(f"{lock_id}?api-version={LOCKS_API}")
        missing = http.get(f"{ids['group']}/providers/Microsoft.Authorization/locks/nope?api-version={LOCKS_API}")
        bad_level = _lock(http, ids["group"], "odd", "Sometimes")
        bad_version = http.get(f"{lock_id}?api-version=2016-09-01")
        http.delete(f"{lock_id}?api-version={LOCKS_API}")
    assert created.status_code == 201 and again.status_code == 200
    # ManagementLocks_GetAtResourceGroupLevel (examples): id, name, type, properties.level.
    body = got.json()
    assert body["id"] == lock_id and body["name"] == "keep" and body["type"] == "Microsoft.Authorization/locks"
    assert body["properties"] == {"level": "CanNotDelete", "notes": "kept by the platform team"}
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "LockNotFound"
    assert bad_level.status_code == 400
    assert bad_version.status_code == 400 and bad_version.json()["error"]["code"] == "NoRegisteredProviderFound"


def test_a_locked_resource_stops_its_own_delete_and_its_groups(emulator: EmulatorServer) -> None:
    ids = _setup(emulator, "rg-lock-res", "lockres1")
    with _http(emulator) as http:
        assert _lock(http, ids["storage"], "keep", "CanNotDelete").status_code == 201
        own = http.delete(f"{ids['storage']}?api-version={STORAGE_API}")
        group = http.delete(f"{ids['group']}?api-version={RG_API}")
        # CanNotDelete lets writes through.
        tagged = http.patch(f"{ids['storage']}?api-version={STORAGE_API}", json={"tags": {"owner": "platform"}})
        survivors = [
            http.get(f"{rid}?api-version={api}").status_code
            for rid, api in ((ids["group"], RG_API), (ids["storage"], STORAGE_API), (ids["vault"], KV_API))
        ]
        http.delete(f"{ids['storage']}/providers/Microsoft.Authorization/locks/keep?api-version={LOCKS_API}")
        freed = http.delete(f"{ids['group']}?api-version={RG_API}")
    _scope_locked(own, ids["storage"], "delete", ids["storage"])
    _scope_locked(group, ids["group"], "delete", ids["storage"])
    assert tagged.status_code == 200
    assert survivors == [200, 200, 200]  # the refused group delete deleted nothing, not even the unlocked vault
    assert not emulator.state.deleted_vaults(SUB, "kv-lockres1")
    assert freed.status_code == 202


def test_a_read_only_group_refuses_writes_and_deletes_under_it(emulator: EmulatorServer) -> None:
    ids = _setup(emulator, "rg-lock-ro", "lockro1")
    storage_body = {"location": LOCATION, "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}
    with _http(emulator) as http:
        assert _lock(http, ids["group"], "frozen", "ReadOnly").status_code == 201
        put = http.put(f"{ids['storage']}?api-version={STORAGE_API}", json={**storage_body, "tags": {"a": "b"}})
        new = f"{ids['group']}/providers/Microsoft.Storage/storageAccounts/stlockro2"
        create = http.put(f"{new}?api-version={STORAGE_API}", json=storage_body)
        patch = http.patch(f"{ids['vault']}?api-version={KV_API}", json={"tags": {"a": "b"}})
        keys = http.post(f"{ids['storage']}/listKeys?api-version={STORAGE_API}")
        delete = http.delete(f"{ids['vault']}?api-version={KV_API}")
        read = http.get(f"{ids['storage']}?api-version={STORAGE_API}")
        http.delete(f"{ids['group']}/providers/Microsoft.Authorization/locks/frozen?api-version={LOCKS_API}")
        after = http.patch(f"{ids['vault']}?api-version={KV_API}", json={"tags": {"a": "b"}})
    _scope_locked(put, ids["storage"], "write", ids["group"])
    _scope_locked(create, new, "write", ids["group"])
    _scope_locked(patch, ids["vault"], "write", ids["group"])
    _scope_locked(keys, ids["storage"], "write", ids["group"])
    _scope_locked(delete, ids["vault"], "delete", ids["group"])
    assert read.status_code == 200 and after.status_code == 200


def test_locks_are_listed_at_their_scope_and_below(emulator: EmulatorServer) -> None:
    ids = _setup(emulator, "rg-lock-list", "locklist1")
    with _http(emulator) as http:
        _lock(http, ids["group"], "group-lock", "CanNotDelete")
        _lock(http, ids["storage"], "storage-lock", "ReadOnly")
        at_group = http.get(f"{ids['group']}/providers/Microsoft.Authorization/locks?api-version={LOCKS_API}")
        at_storage = http.get(f"{ids['storage']}/providers/Microsoft.Authorization/locks?api-version={LOCKS_API}")
        at_vault = http.get(f"{ids['vault']}/providers/Microsoft.Authorization/locks?api-version={LOCKS_API}")
        for scope, name in ((ids["group"], "group-lock"), (ids["storage"], "storage-lock")):
            http.delete(f"{scope}/providers/Microsoft.Authorization/locks/{name}?api-version={LOCKS_API}")
    assert sorted(lock["name"] for lock in at_group.json()["value"]) == ["group-lock", "storage-lock"]
    assert [lock["name"] for lock in at_storage.json()["value"]] == ["storage-lock"]
    assert at_vault.json()["value"] == []


def test_a_lock_on_a_resource_that_does_not_exist_is_refused(emulator: EmulatorServer) -> None:
    ids = _setup(emulator, "rg-lock-none", "locknone1")
    with _http(emulator) as http:
        ghost = _lock(http, f"{ids['group']}/providers/Microsoft.Storage/storageAccounts/stghost1", "x", "ReadOnly")
        no_group = _lock(http, f"/subscriptions/{SUB}/resourceGroups/rg-lock-ghost", "x", "ReadOnly")
    assert ghost.status_code == 404
    assert no_group.status_code == 404 and no_group.json()["error"]["code"] == "ResourceGroupNotFound"


# ----- through ManagementLockClient (azure-mgmt-resource-locks), when installed ---------------------------


def _lock_client(provider: AzureProvider) -> Any:
    locks = pytest.importorskip("azure.mgmt.resource.locks", reason="azure-mgmt-resource-locks is not installed")
    clients = provider.clients
    return locks.ManagementLockClient(clients.credential, SUB, **clients._mgmt_kwargs())


def test_the_lock_client_locks_a_group_and_a_resource(provider: AzureProvider, emulator: EmulatorServer) -> None:
    client = _lock_client(provider)
    ids = _setup(emulator, "rg-lock-sdk", "locksdk1")
    ops = client.management_locks
    group_lock = ops.create_or_update_at_resource_group_level(
        "rg-lock-sdk", "keep", {"level": "CanNotDelete", "notes": "platform"}
    )
    resource_lock = ops.create_or_update_at_resource_level(
        "rg-lock-sdk", "Microsoft.Storage", "", "storageAccounts", "stlocksdk1", "frozen", {"level": "ReadOnly"}
    )
    assert group_lock.level == "CanNotDelete" and resource_lock.id.lower().startswith(ids["storage"].lower())
    listed = sorted(lock.name for lock in ops.list_at_resource_group_level("rg-lock-sdk"))
    at_resource = [
        lock.name
        for lock in ops.list_at_resource_level("rg-lock-sdk", "Microsoft.Storage", "", "storageAccounts", "stlocksdk1")
    ]
    assert listed == ["frozen", "keep"] and at_resource == ["frozen"]
    assert ops.get_at_resource_group_level("rg-lock-sdk", "keep").notes == "platform"
    from azure.core.exceptions import HttpResponseError

    with pytest.raises(HttpResponseError) as refused:
        provider.clients.resources(SUB).resource_groups.begin_delete("rg-lock-sdk", polling_interval=0.05).result()
    assert refused.value.status_code == 409 and refused.value.error.code == "ScopeLocked"
    ops.delete_at_resource_level("rg-lock-sdk", "Microsoft.Storage", "", "storageAccounts", "stlocksdk1", "frozen")
    ops.delete_at_resource_group_level("rg-lock-sdk", "keep")
    assert list(ops.list_at_resource_group_level("rg-lock-sdk")) == []
    provider.clients.resources(SUB).resource_groups.begin_delete("rg-lock-sdk", polling_interval=0.05).result()
    assert not provider.clients.resources(SUB).resource_groups.check_existence("rg-lock-sdk")
