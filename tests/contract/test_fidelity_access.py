"""Issue 15 items 2, 11, 12, 13: what Azure does that the emulator and the plan must do too.

System datastores and the workspace identity's role on its group come with a workspace; a storage
account without shared keys needs `systemDatastoresAuthMode: identity`; every principal kind gets the
roles docs/access.md gives it; lists answer what exists, page by page.
"""

from __future__ import annotations

from typing import Any

import pytest

from cloud.provider import AzureProvider
from emulator.server import EmulatorServer
from emulator.state import parse_path
from engine.planner import (
    AZUREML_COMPUTE_OPERATOR,
    AZUREML_DATA_SCIENTIST,
    STORAGE_BLOB_DATA_CONTRIBUTOR,
    STORAGE_FILE_DATA_PRIVILEGED_CONTRIBUTOR,
)
from models.outcomes import Done
from tests.conftest import example
from tests.contract.conftest import SUB, VAULT_BODY, _plan, run_plan

AZURE_AI_ADMINISTRATOR = "b78c5d69-af96-48a3-bf8d-a8b4d589de94"  # Azure AI Administrator


@pytest.fixture(scope="module")
def made(provider: AzureProvider, emulator: EmulatorServer) -> dict[str, Any]:
    p = _plan(example("gpu-research.json") | {"team": "fidelity"})
    results = run_plan(provider, p)
    assert all(isinstance(o, Done) for o in results.values()), results
    return {"plan": p, "results": results}


def _roles(emulator: EmulatorServer, scope: str, principal: str) -> set[str]:
    items = emulator.state.list_children(parse_path(f"{scope}/providers/Microsoft.Authorization/roleAssignments"))
    return {
        a["properties"]["roleDefinitionId"].rsplit("/", 1)[-1]
        for a in items
        if a["properties"]["principalId"] == principal and a["properties"]["scope"].lower() == scope.lower()
    }


def test_the_workspace_uses_identity_for_its_system_datastores_when_shared_keys_are_off(
    made: dict[str, Any], provider: AzureProvider
) -> None:
    ws = made["plan"].step("workspace").resource_id
    ml = provider.clients.ml(SUB, made["plan"].names.resource_group)
    workspace = ml.workspaces.get(ws.rsplit("/", 1)[-1])
    assert (workspace.system_datastores_auth_mode or "").lower() == "identity"


def test_the_emulator_refuses_a_workspace_whose_datastores_would_use_refused_keys(emulator: EmulatorServer) -> None:
    group = f"/subscriptions/{SUB}/resourceGroups/rg-keyless"
    emulator.state.put(parse_path(group), {"location": "westeurope"})
    account = f"{group}/providers/Microsoft.Storage/storageAccounts/stkeylessfidelity"
    body = {"sku": {"name": "Standard_LRS"}, "kind": "StorageV2", "properties": {"allowSharedKeyAccess": False}}
    emulator.state.put(parse_path(account), {"location": "westeurope", **body})
    vault = f"{group}/providers/Microsoft.KeyVault/vaults/kv-keyless-fid"
    emulator.state.put(parse_path(vault), {"location": "westeurope", **VAULT_BODY})
    ws = {"location": "westeurope", "properties": {"storageAccount": account, "keyVault": vault}}
    path = parse_path(f"{group}/providers/Microsoft.MachineLearningServices/workspaces/mlw-keyless")
    with pytest.raises(Exception, match="Key based authentication is not permitted") as caught:
        emulator.state.put(path, ws)
    assert getattr(caught.value, "code", None) == "KeyBasedAuthenticationNotPermitted"
    ws["properties"]["systemDatastoresAuthMode"] = "identity"
    status, _, _ = emulator.state.put(path, ws)
    assert status == 201


def test_azure_makes_the_system_datastores_and_the_default_is_workspaceblobstore(
    made: dict[str, Any], provider: AzureProvider
) -> None:
    n = made["plan"].names
    ml = provider.clients.ml(SUB, n.resource_group, n.workspace)
    names = {d.name for d in ml.datastores.list()}
    assert {"workspaceblobstore", "workspacefilestore", "workspaceartifactstore", "workspaceworkingdirectory"} <= names
    default = ml.datastores.get_default()
    assert default.name == "workspaceblobstore"
    assert default.account_name == n.storage_account
    assert type(default.credentials).__name__ != "AccountKeyConfiguration"  # identity: no key kept


def test_azure_gives_the_workspace_identity_azure_ai_administrator_on_its_group(
    made: dict[str, Any], emulator: EmulatorServer
) -> None:
    n = made["plan"].names
    principal = made["results"]["workspace"].outputs["principal_id"]
    group = f"/subscriptions/{SUB}/resourceGroups/{n.resource_group}"
    assert AZURE_AI_ADMINISTRATOR in _roles(emulator, group, principal)


def test_every_principal_kind_gets_its_roles(made: dict[str, Any], emulator: EmulatorServer) -> None:
    p, results = made["plan"], made["results"]
    ws, storage = p.step("workspace").resource_id, p.step("storage").resource_id
    owner, member = "0c9a3f5e-2b1d-4e6f-8a7b-9c0d1e2f3a4b", "7d8e9f0a-1b2c-4d3e-8f4a-5b6c7d8e9f0a"
    data = {STORAGE_BLOB_DATA_CONTRIBUTOR, STORAGE_FILE_DATA_PRIVILEGED_CONTRIBUTOR}
    assert _roles(emulator, ws, owner) == {AZUREML_DATA_SCIENTIST, AZUREML_COMPUTE_OPERATOR}
    assert _roles(emulator, ws, member) == {AZUREML_DATA_SCIENTIST}
    assert _roles(emulator, storage, owner) == data == _roles(emulator, storage, member)
    cluster = results["compute:gpu-cluster"].outputs["principal_id"]
    assert cluster and _roles(emulator, storage, cluster) == {STORAGE_BLOB_DATA_CONTRIBUTOR}
    workspace = results["workspace"].outputs["principal_id"]
    assert _roles(emulator, storage, workspace) == {STORAGE_BLOB_DATA_CONTRIBUTOR}


def test_lists_answer_what_exists(made: dict[str, Any], provider: AzureProvider) -> None:
    n = made["plan"].names
    ml = provider.clients.ml(SUB, n.resource_group)
    assert n.workspace in {w.name for w in ml.workspaces.list(scope="subscription")}
    auth = provider.clients.authorization(SUB).role_assignments
    in_group = list(auth.list_for_resource_group(n.resource_group))
    assert len(in_group) == sum(len(s.spec.assignments) for s in made["plan"].steps if s.kind == "access") + 1
    in_sub = {a.id for a in auth.list_for_subscription()}
    assert {a.id for a in in_group} <= in_sub
    at_group = list(auth.list_for_resource_group(n.resource_group, filter="atScope()"))
    assert [a.role_definition_id.rsplit("/", 1)[-1] for a in at_group] == [AZURE_AI_ADMINISTRATOR]
    resources = {
        r.id.lower() for r in provider.clients.resources(SUB).resources.list_by_resource_group(n.resource_group)
    }
    assert made["plan"].step("workspace").resource_id.lower() in resources
    assert made["plan"].step("storage").resource_id.lower() in resources


def test_lists_page_with_next_link(made: dict[str, Any], provider: AzureProvider, emulator: EmulatorServer) -> None:
    n = made["plan"].names
    auth = provider.clients.authorization(SUB).role_assignments
    whole = [a.id for a in auth.list_for_resource_group(n.resource_group)]
    emulator.state.config.page_size = 2
    try:
        first = emulator.state.list_page(
            parse_path(
                f"/subscriptions/{SUB}/resourceGroups/{n.resource_group}/providers/Microsoft.Authorization/roleAssignments"
            ),
            {},
            "https://emulator.local/x?api-version=2022-04-01",
        )
        assert len(first["value"]) == 2 and "%24skipToken=2" in first["nextLink"]
        assert [a.id for a in auth.list_for_resource_group(n.resource_group)] == whole  # the SDK follows nextLink
    finally:
        emulator.state.config.page_size = 100
