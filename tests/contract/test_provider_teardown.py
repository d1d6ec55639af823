"""Teardown: the Azure provider deletes each kind of resource against the ARM emulator, through the real SDKs."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloud.provider import AzureProvider
from emulator.arm_errors import ArmError
from emulator.faults import Fault
from emulator.server import EmulatorServer
from emulator.state import parse_path
from models.errors import TransientError
from models.outcomes import Done, Fail, Outcome, Wait
from models.plan import StepAction
from tests.conftest import example, poll
from tests.contract.conftest import STORAGE_BODY, SUB, _plan
from tests.contract.lifecycle import (
    REQUEST_ID,
    applied,
    context,
    deleting,
    held,
    result,
    run_delete,
    with_spec,
)

LOCKED = (
    "The scope '{target}' cannot perform delete operation because following scope(s) are locked: '{scope}'. "
    "Please remove the lock and try again."
)


def _gone(emulator: EmulatorServer, resource_id: str) -> bool:
    try:
        emulator.state.get(parse_path(resource_id))
    except ArmError as exc:
        return exc.status == 404
    return False


def _deletes(emulator: EmulatorServer) -> list[str]:
    return [r["path"].lower() for r in emulator.state.requests if r["method"] == "DELETE"]


def test_a_full_teardown_in_reverse_order_removes_everything_and_a_second_one_finds_it_gone(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("gpu-research.json") | {"team": "td-full"})
    outputs = applied(provider, p)
    assert len(held(emulator, p.names.resource_group)) > 20
    emulator.state.requests.clear()
    results: dict[str, Any] = {}
    for step in reversed(p.steps):  # the plan's order is a topological order: its reverse is teardown's
        outcome, _ = run_delete(provider, p, deleting(step), outputs)
        results[step.id] = result(outcome)
    assert all(r.deleted for r in results.values()), {k: r for k, r in results.items() if not r.deleted}
    assert held(emulator, p.names.resource_group) == []
    assert _gone(emulator, p.step("resource-group").resource_id)
    # Each resource was deleted by its own step: the workspace delete deleted none of its dependent resources.
    deletes = _deletes(emulator)
    for step in p.steps:
        if step.kind not in ("access",):
            assert any(d == step.resource_id.lower() for d in deletes), step.id
    # Soft-delete holds the workspace 14 days and the vault until its scheduled purge date.
    workspace, vault = results["workspace"], results["key-vault"]
    assert not workspace.purged and workspace.soft_deleted_until is not None
    assert abs(workspace.soft_deleted_until - (datetime.now(UTC) + timedelta(days=14))) < timedelta(minutes=5)
    assert p.step("workspace").resource_id in emulator.state.soft_deleted_workspaces()
    deleted_vault = emulator.state.deleted_vaults(SUB, p.names.key_vault)
    assert deleted_vault and vault.soft_deleted_until is not None and not vault.purged
    scheduled = datetime.fromisoformat(deleted_vault[0]["properties"]["scheduledPurgeDate"].replace("Z", "+00:00"))
    assert vault.soft_deleted_until == scheduled
    # Again, from a fresh first attempt: everything is already gone, and nothing is deleted twice.
    emulator.state.requests.clear()
    for step in reversed(p.steps):
        outcome, attempts = run_delete(provider, p, deleting(step), outputs)
        again = result(outcome)
        assert attempts == 1 and not again.deleted, (step.id, again)
    assert _deletes(emulator) == [d for d in _deletes(emulator) if "/roleassignments/" in d]


def test_a_datastore_delete_leaves_the_container_and_its_data(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "td-datastore"})
    outputs = applied(provider, p)
    step = p.step("datastore:training_data")
    container = f"{p.step('storage').resource_id}/blobServices/default/containers/training-data"
    assert not _gone(emulator, step.resource_id) and not _gone(emulator, container)
    outcome, _ = run_delete(provider, p, deleting(step), outputs)
    assert result(outcome).deleted
    assert _gone(emulator, step.resource_id)
    assert not _gone(emulator, container)


def test_purging_teardown_deletes_the_workspace_and_the_vault_for_good(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = with_spec(_plan(example("cpu-small.json") | {"team": "td-purge"}), "key-vault", purge_protection=False)
    outputs = applied(provider, p)
    results = {}
    for step in reversed(p.steps):
        outcome, _ = run_delete(
            provider,
            p,
            deleting(step, purge_on_delete=True) if step.kind in ("workspace", "key-vault") else deleting(step),
            outputs,
        )
        results[step.id] = result(outcome)
    assert results["workspace"].purged and results["workspace"].deleted
    assert results["key-vault"].purged and results["key-vault"].deleted
    assert results["key-vault"].soft_deleted_until is None
    assert p.step("workspace").resource_id not in emulator.state.soft_deleted_workspaces()
    assert emulator.state.deleted_vaults(SUB, p.names.key_vault) == []
    assert held(emulator, p.names.resource_group) == []


def test_a_vault_with_purge_protection_is_left_soft_deleted_with_its_purge_date(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "td-protected"})
    assert p.step("key-vault").spec.purge_protection  # type: ignore[attr-defined]
    outputs = applied(provider, p)
    emulator.state.requests.clear()
    outcome, _ = run_delete(provider, p, deleting(p.step("key-vault"), purge_on_delete=True), outputs)
    vault = result(outcome)
    assert vault.deleted and not vault.purged and vault.soft_deleted_until is not None
    assert vault.kept is not None and "purge protection" in vault.kept and "cannot be purged" in vault.kept
    assert emulator.state.deleted_vaults(SUB, p.names.key_vault)
    assert not any(r["path"].lower().endswith("/purge") for r in emulator.state.requests)


def test_a_workspace_an_earlier_teardown_soft_deleted_is_purged_by_a_purging_one(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "td-later"})
    outputs = applied(provider, p)
    workspace = p.step("workspace")
    first, _ = run_delete(provider, p, deleting(workspace), outputs)
    assert result(first).deleted and not result(first).purged
    assert workspace.resource_id in emulator.state.soft_deleted_workspaces()
    emulator.state.config.latency_s = 0.3  # the purge takes a while: the step waits on it
    try:
        outcome, attempts = run_delete(provider, p, deleting(workspace, purge_on_delete=True), outputs)
    finally:
        emulator.state.config.latency_s = 0.05
    assert attempts > 1
    assert result(outcome).purged
    assert workspace.resource_id not in emulator.state.soft_deleted_workspaces()


def test_a_group_holding_another_resource_is_kept(provider: AzureProvider, emulator: EmulatorServer) -> None:
    p = _plan(example("cpu-small.json") | {"team": "td-foreign"})
    outputs = applied(provider, p)
    for step in reversed(p.steps[1:]):
        run_delete(provider, p, deleting(step), outputs)
    group = p.step("resource-group").resource_id
    foreign = f"{group}/providers/Microsoft.Storage/storageAccounts/stsomeoneelse01"
    emulator.state.put(parse_path(foreign), {"location": "westeurope", **STORAGE_BODY})
    outcome, _ = run_delete(provider, p, deleting(p.step("resource-group")), outputs)
    kept = result(outcome)
    assert not kept.deleted
    assert kept.kept is not None and "holds 1 other resource" in kept.kept and "stsomeoneelse01" in kept.kept
    assert not _gone(emulator, group) and not _gone(emulator, foreign)
    assert group.lower() not in _deletes(emulator)
    # Once the other resource is gone, the group goes too.
    emulator.state.delete(parse_path(foreign))
    outcome, _ = run_delete(provider, p, deleting(p.step("resource-group")), outputs)
    assert result(outcome).deleted and _gone(emulator, group)


def test_a_group_the_service_did_not_create_is_never_deleted(provider: AzureProvider, emulator: EmulatorServer) -> None:
    p = _plan(example("cpu-small.json") | {"team": "td-given"}, create_groups=False)
    group = p.step("resource-group").resource_id
    emulator.state.put(parse_path(group), {"location": "westeurope"})
    outcome, _ = run_delete(provider, p, deleting(p.step("resource-group")), {})
    kept = result(outcome)
    assert not kept.deleted and kept.kept and "did not create" in kept.kept
    assert not _gone(emulator, group)


def test_brought_resources_are_never_deleted(provider: AzureProvider, emulator: EmulatorServer) -> None:
    group = f"/subscriptions/{SUB}/resourceGroups/rg-ml-td-byo-dev"
    account = f"{group}/providers/Microsoft.Storage/storageAccounts/sttdbyo0001"
    vault = f"{group}/providers/Microsoft.KeyVault/vaults/kv-td-byo-0001"
    emulator.state.put(parse_path(group), {"location": "westeurope"})
    emulator.state.put(parse_path(account), {"location": "westeurope", **STORAGE_BODY})
    body = {
        "location": "westeurope",
        "properties": {"tenantId": "72f988bf-0000-4000-8000-000000000000", "sku": {"family": "A", "name": "standard"}},
    }
    emulator.state.put(parse_path(vault), body)
    p = _plan(
        example("cpu-small.json")
        | {"team": "td-byo", "existing": {"storage_account_id": account, "key_vault_id": vault}}
    )
    assert p.step("storage").spec.existing and p.step("key-vault").spec.existing  # type: ignore[attr-defined]
    emulator.state.requests.clear()
    for step_id in ("storage", "key-vault"):
        outcome, _ = run_delete(provider, p, deleting(p.step(step_id)), {})
        kept = result(outcome)
        assert not kept.deleted and kept.kept == "brought by the team"
    assert not _gone(emulator, account) and not _gone(emulator, vault)
    assert _deletes(emulator) == []


@pytest.mark.parametrize(
    ("step_id", "rtype"),
    [
        ("storage", "Microsoft.Storage/storageAccounts"),
        ("compute:cpu-cluster", "Microsoft.MachineLearningServices/workspaces/computes"),
        ("resource-group", "Microsoft.Resources/resourceGroups"),
    ],
)
def test_a_management_lock_fails_the_delete_naming_the_lock_and_the_retry(
    provider: AzureProvider, emulator: EmulatorServer, step_id: str, rtype: str
) -> None:
    p = _plan(example("cpu-small.json") | {"team": f"td-lock-{step_id[:6]}"})
    outputs = applied(provider, p)
    if step_id == "resource-group":
        for step in reversed(p.steps[1:]):
            run_delete(provider, p, deleting(step), outputs)
    step = p.step(step_id)
    scope = p.step("resource-group").resource_id
    emulator.state.faults.replace(
        [
            Fault(
                type=rtype,
                method="DELETE",
                status=409,
                code="ScopeLocked",
                message=LOCKED.format(target=step.resource_id, scope=scope),
                times=None,
            )
        ]
    )
    outcome, _ = run_delete(provider, p, deleting(step), outputs)
    assert isinstance(outcome, Fail) and outcome.code == "ScopeLocked"
    assert scope in outcome.error and "lock" in outcome.error
    assert f"POST /api/workspaces/{REQUEST_ID}/retry" in outcome.error
    assert not _gone(emulator, step.resource_id)
    # The lock removed, the same step deletes it.
    emulator.state.faults.replace([])
    outcome, _ = run_delete(provider, p, deleting(step), outputs)
    assert result(outcome).deleted and _gone(emulator, step.resource_id)


def test_a_transient_error_on_a_delete_is_raised_for_the_engine_to_retry(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("gpu-research.json") | {"team": "td-flaky"})
    outputs = applied(provider, p)
    step = deleting(p.step("registry"))
    emulator.state.faults.replace(
        [Fault(type="Microsoft.ContainerRegistry/registries", method="DELETE", status=503, code="ServiceUnavailable")]
    )
    with pytest.raises(TransientError):
        provider.reconcile(step, context(p, step, outputs))
    assert not _gone(emulator, step.resource_id)
    outcome, _ = run_delete(provider, p, step, outputs)  # Registries_Delete is long-running: waited on, then gone
    assert result(outcome).deleted and _gone(emulator, step.resource_id)


def test_a_compute_azure_is_still_deleting_is_waited_on_not_deleted_again(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "td-deleting"})
    outputs = applied(provider, p)
    step = deleting(p.step("compute:cpu-cluster"))
    key = step.resource_id.lower()
    # What an asynchronous Compute_Delete leaves while it runs: the compute reads provisioningState Deleting.
    with emulator.state.db.transaction() as conn:
        conn.execute("UPDATE resources SET state = 'Deleting', ready = ? WHERE key = ?", (time.time() + 3600, key))
    emulator.state.requests.clear()
    first = provider.reconcile(step, context(p, step, outputs))
    assert isinstance(first, Wait) and "being deleted" in first.reason
    assert _deletes(emulator) == []
    emulator.state.delete(parse_path(step.resource_id))  # Azure finishes the delete
    outcome = provider.reconcile(step, context(p, step, outputs, attempt=2))
    assert result(outcome).deleted


def test_concurrent_deletes_of_one_compute_both_end_done(provider: AzureProvider, emulator: EmulatorServer) -> None:
    p = _plan(example("cpu-small.json") | {"team": "td-race"})
    outputs = applied(provider, p)
    step = deleting(p.step("compute:cpu-cluster"))
    found: list[Outcome] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            found.append(run_delete(provider, p, step, outputs)[0])
        except BaseException as exc:  # noqa: BLE001 - the test reports what a thread raised
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(found) == 2
    assert all(isinstance(o, Done) for o in found)
    assert _gone(emulator, step.resource_id)


def test_an_identity_s_roles_are_found_from_its_resource_when_no_output_names_it(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "td-identity"})
    outputs = applied(provider, p)
    step = p.step("access:compute:cpu-cluster")
    made = outputs[step.id]["assignments"]
    assert made and all(not _gone(emulator, a["id"]) for a in made)
    outcome, _ = run_delete(provider, p, deleting(step), {})  # no outputs at all: the compute says who it is
    assert result(outcome).deleted
    assert all(_gone(emulator, a["id"]) for a in made)
    outcome, _ = run_delete(provider, p, deleting(step), outputs)
    assert not result(outcome).deleted


def test_a_renamed_key_vault_is_deleted_by_the_name_its_step_reported(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "td-renamed"})
    applied(provider, p)
    planned = p.step("key-vault").resource_id
    renamed = f"{planned}-2"  # what the rename policy makes when a soft-deleted vault holds the name
    body = emulator.state.get(parse_path(planned))
    emulator.state.put(parse_path(renamed), {"location": body["location"], "properties": body["properties"]})
    outcome, _ = run_delete(provider, p, deleting(p.step("key-vault")), {"key-vault": {"id": renamed}})
    assert result(outcome).deleted
    assert _gone(emulator, renamed) and not _gone(emulator, planned)
    assert emulator.state.deleted_vaults(SUB, renamed.rsplit("/", 1)[-1])


def test_a_step_kept_as_it_is_touches_nothing_and_keeps_its_outputs(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "td-keep"})
    outputs = applied(provider, p)
    step = p.step("storage").model_copy(update={"action": StepAction.KEEP})
    emulator.state.requests.clear()
    calls = sum(emulator.state.calls.values())
    outcome = provider.reconcile(step, context(p, step, outputs))
    assert outcome == Done(outputs["storage"])
    assert emulator.state.requests == [] and sum(emulator.state.calls.values()) == calls


def test_a_workspace_a_dead_worker_deleted_is_recorded_soft_deleted_when_its_attempt_is_resumed(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    """The delete was sent, then the worker died before recording it: the redelivery finds the workspace gone."""
    p = _plan(example("cpu-small.json") | {"team": "td-resumed"})
    outputs = applied(provider, p)
    step = deleting(p.step("workspace"))
    workspace = p.step("workspace").resource_id
    provider.reconcile(step, context(p, step, outputs))  # its outcome is never recorded
    poll(lambda: workspace in emulator.state.soft_deleted_workspaces(), what="the workspace to be soft-deleted")
    # A first attempt that nobody claimed before: gone before the teardown came, so nothing of it is said.
    fresh = result(provider.reconcile(step, context(p, step, outputs)))
    assert not fresh.deleted and fresh.soft_deleted_until is None
    # The same attempt, claimed again after its worker died: its delete held the name, and the record says so.
    resumed = result(provider.reconcile(step, replace(context(p, step, outputs), resumed=True)))
    assert resumed.deleted and not resumed.purged and resumed.soft_deleted_until is not None
