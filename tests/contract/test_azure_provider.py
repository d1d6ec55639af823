"""The Azure provider against the local ARM emulator, over HTTPS, through the real SDKs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.clients import EMULATOR_CLOUD, Clients, CloudEndpoint
from cloud.common import Timing
from cloud.credentials import EmulatorCredential
from cloud.provider import AzureProvider
from emulator.server import EmulatorServer
from emulator.state import Config, parse_path
from engine.planner import plan
from engine.policy import admit, load_policy
from engine.ports import StepContext
from models.errors import PermanentError
from models.outcomes import Done, Fail, Outcome, Retry, Wait
from models.plan import Plan
from models.request import parse_request
from tests.conftest import ROOT, example

POLICY = load_policy(ROOT / "policy" / "default.yaml")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    server = EmulatorServer(data_dir=Path(tmp_path_factory.mktemp("emulator")), config=Config(latency_s=0.05)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def provider(emulator: EmulatorServer) -> AzureProvider:
    clients = Clients(CloudEndpoint(emulator.url, str(emulator.ca_bundle), EMULATOR_CLOUD), EmulatorCredential())
    return AzureProvider(clients, Timing(poll_s=0.05))


def _plan(body: dict[str, Any], create_groups: bool = True) -> Plan:
    policy = POLICY.model_copy(update={"create_resource_groups": create_groups})
    return plan(admit(parse_request(body), policy), policy)


def drive(
    provider: AzureProvider, p: Plan, step_id: str, outputs: dict[str, dict[str, Any]], limit: int = 100
) -> Outcome:
    """Reconcile one step until it stops waiting, as the engine would (without the queue)."""
    step = p.step(step_id)
    ctx = StepContext(
        request_id="r",
        names=p.names,
        attempt=1,
        step_started_at=None,
        dependency_outputs={d: outputs.get(d, {}) for d in step.depends_on},
    )
    for _ in range(limit):
        try:
            outcome = provider.reconcile(step, ctx)
        except PermanentError as exc:  # what the engine turns a permanent error into
            outcome = Fail(str(exc), exc.code)
        if not isinstance(outcome, (Wait, Retry)):
            if isinstance(outcome, Done):
                outputs[step_id] = outcome.outputs
            return outcome
        time.sleep(min(outcome.after_s, 0.05))
    raise AssertionError(f"{step_id} still not done after {limit} reconciles")


def run_plan(provider: AzureProvider, p: Plan) -> dict[str, Outcome]:
    outputs: dict[str, dict[str, Any]] = {}
    return {s.id: drive(provider, p, s.id, outputs) for s in p.steps}  # plan order is a topological order


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
    held = set(emulator.state.resource_ids())
    for sid, rid in ids.items():
        assert rid in held, sid
    # Datastores, containers, shares and role assignments exist too.
    assert any(r.endswith("/datastores/lake") for r in held)
    assert any(r.endswith("/fileServices/default/shares/shared") for r in held)
    assert sum("/roleAssignments/" in r for r in held) == 4
    creates = dict(emulator.state.creates)
    again = run_plan(provider, p)
    assert all(isinstance(o, Done) for o in again.values())
    assert dict(emulator.state.creates) == creates  # idempotent: nothing created twice
    assert all(n == 1 for n in creates.values())


def test_missing_resource_group_fails_when_policy_forbids_creating_it(provider: AzureProvider) -> None:
    p = _plan(example("cpu-small.json") | {"team": "nogroup"}, create_groups=False)
    outcome = drive(provider, p, "resource-group", {})
    assert isinstance(outcome, Fail) and outcome.code == "ResourceGroupNotFound"
    assert "Ask the platform team to create it" in outcome.error


def test_storage_name_taken_elsewhere_is_a_permanent_failure(provider: AzureProvider, emulator: EmulatorServer) -> None:
    p = _plan(example("cpu-small.json") | {"team": "taken"})
    other = f"/subscriptions/{p.names.subscription_id}/resourceGroups/someone-else"
    emulator.state.put(parse_path(other), {"location": "westeurope"})
    emulator.state.put(
        parse_path(f"{other}/providers/Microsoft.Storage/storageAccounts/{p.names.storage_account}"),
        {"location": "westeurope", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"},
    )
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
