"""The Azure provider against the local ARM emulator, over HTTPS, through the real SDKs."""

from __future__ import annotations

import json
from typing import Any

from cloud.provider import AzureProvider
from emulator.server import EmulatorServer
from emulator.state import parse_path
from engine.ports import StepContext
from models.outcomes import Done, Fail, Wait
from tests.conftest import example, shipped_policy
from tests.contract.conftest import STORAGE_BODY, _plan, drive, held_elsewhere, run_plan

POLICY = shipped_policy()


def test_every_step_kind_provisions_and_a_second_run_creates_nothing(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("gpu-research.json") | {"team": "contract"})
    results = run_plan(provider, p)
    assert all(isinstance(o, Done) for o in results.values()), results
    ids = {sid: o.outputs["id"] for sid, o in results.items() if isinstance(o, Done) and o.outputs.get("id")}
    assert ids["workspace"].endswith("/workspaces/mlw-contract-test")
    assert results["storage"].outputs["hierarchical_namespace"] is True  # type: ignore[union-attr]
    assert results["workspace"].outputs["principal_id"]  # type: ignore[union-attr]
    instance = results["compute:ada-notebook"].outputs  # type: ignore[union-attr]
    assert instance["kind"] == "instance" and instance["assigned_user"] == "0c9a3f5e-2b1d-4e6f-8a7b-9c0d1e2f3a4b"
    held = set(emulator.state.resource_ids())
    for sid, rid in ids.items():
        assert rid in held, sid
    # Datastores, containers, shares and role assignments exist too.
    assert any(r.endswith("/datastores/lake") for r in held)
    assert any(r.endswith("/fileServices/default/shares/shared") for r in held)
    granted = sum(len(s.spec.assignments) for s in p.steps if s.kind == "access")
    # What the access steps grant, and the role Azure gives the workspace identity on the group.
    assert sum("/roleAssignments/" in r and "/rg-ml-contract-test/" in r for r in held) == granted + 1
    creates = dict(emulator.state.creates)
    again = run_plan(provider, p)
    assert all(isinstance(o, Done) for o in again.values())
    assert dict(emulator.state.creates) == creates  # idempotent: nothing created twice
    assert all(n == 1 for k, n in creates.items() if "/rg-ml-contract-test" in k)


def test_missing_resource_group_fails_when_policy_forbids_creating_it(provider: AzureProvider) -> None:
    p = _plan(example("cpu-small.json") | {"team": "nogroup"}, create_groups=False)
    outcome = drive(provider, p, "resource-group", {})
    assert isinstance(outcome, Fail) and outcome.code == "ResourceGroupNotFound"
    assert "Ask the platform team to create it" in outcome.error


def test_storage_name_taken_elsewhere_is_a_permanent_failure(provider: AzureProvider, emulator: EmulatorServer) -> None:
    p = _plan(example("cpu-small.json") | {"team": "taken"})
    held_elsewhere(emulator, "Microsoft.Storage/storageAccounts", p.names.storage_account, STORAGE_BODY)
    drive(provider, p, "resource-group", {})
    outcome = drive(provider, p, "storage", {})
    assert isinstance(outcome, Fail) and outcome.code == "StorageAccountAlreadyTaken"
    assert "Storage account names are global" in outcome.error


def test_bring_your_own_storage_must_exist(provider: AzureProvider) -> None:
    missing = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/shared/providers/Microsoft.Storage/storageAccounts/stshared01"
    p = _plan(example("cpu-small.json") | {"team": "byo", "existing": {"storage_account_id": missing}})
    outcome = drive(provider, p, "storage", {})
    assert isinstance(outcome, Fail) and outcome.code == "LinkedResourceNotFound"


def test_adls_needs_hierarchical_namespace_on_an_existing_account(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "flat"})
    run_plan(provider, p)  # a blob-only account, no HNS
    lake = example("cpu-small.json") | {
        "team": "flat",
        "datastores": [{"name": "lake", "kind": "adls_gen2", "container": "lake"}],
    }
    outcome = drive(provider, _plan(lake), "storage", {})
    assert isinstance(outcome, Fail) and outcome.code == "HierarchicalNamespaceRequired"


def test_workspace_creation_deploys_the_azure_ai_ml_template(provider: AzureProvider, emulator: EmulatorServer) -> None:
    p = _plan(example("cpu-small.json") | {"team": "deploy"})
    outputs: dict[str, dict[str, Any]] = {}
    for sid in ("resource-group", "storage", "key-vault", "insights"):
        drive(provider, p, sid, outputs)
    step = p.step("workspace")
    ctx = StepContext(request_id="r", names=p.names, attempt=1, dependency_outputs=outputs)
    first = provider.reconcile(step, ctx)
    assert isinstance(first, Wait) and "deployment started" in first.reason
    deployments = [r for r in emulator.state.resource_ids() if "/deployments/mlw-deploy-dev-" in r]
    assert len(deployments) == 1
    assert isinstance(drive(provider, p, "workspace", outputs), Done)


def test_account_key_datastores_only_when_policy_asks(provider: AzureProvider, emulator: EmulatorServer) -> None:
    body = example("gpu-research.json") | {"team": "keys"}
    p = _plan(body, datastore_credentials="account_key")
    results = run_plan(provider, p)
    assert all(isinstance(o, Done) for o in results.values()), results
    assert results["datastore:raw_images"].outputs["credentials"] == "account_key"  # type: ignore[union-attr]
    assert results["datastore:shared_files"].outputs["credentials"] == "account_key"  # type: ignore[union-attr]
    assert results["datastore:lake"].outputs["credentials"] == "identity"  # type: ignore[union-attr]  # ADLS Gen2
    account = emulator.state.get(parse_path(p.step("storage").resource_id))
    assert account["properties"]["allowSharedKeyAccess"] is True
    key = emulator.state.account_key(p.step("storage").resource_id, "key1")
    assert all(key not in json.dumps(o.outputs) for o in results.values())  # the key stays in Azure ML
    # The default keeps shared keys off and stores no key.
    plain = run_plan(provider, _plan(example("cpu-small.json") | {"team": "nokeys"}))
    assert plain["datastore:training_data"].outputs["credentials"] == "identity"  # type: ignore[union-attr]
