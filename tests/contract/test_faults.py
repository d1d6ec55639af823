"""Every row of the Azure error table, injected through the emulator: the step outcome and what the requester reads."""

from __future__ import annotations

from typing import Any

import pytest

from cloud.errors import RULES
from cloud.provider import AzureProvider
from emulator.faults import Fault
from emulator.server import EmulatorServer
from emulator.state import parse_path
from models.outcomes import Done, Fail, Retry, Wait
from tests.conftest import example
from tests.contract.conftest import VAULT_BODY, _plan, drive, held_elsewhere

SUB = "11111111-1111-1111-1111-111111111111"


def _up_to(provider: AzureProvider, p: Any, last: str) -> dict[str, dict[str, Any]]:
    """Provision the plan's steps before `last`, returning their outputs."""
    outputs: dict[str, dict[str, Any]] = {}
    for s in p.steps:
        if s.id == last:
            break
        assert isinstance(drive(provider, p, s.id, outputs), Done), s.id
    return outputs


def _fault(emulator: EmulatorServer, **rule: Any) -> None:
    emulator.state.faults.replace([Fault(**rule)])


@pytest.mark.parametrize(
    ("status", "code", "retry_after"),
    [
        (429, "TooManyRequests", 7),
        (500, "InternalServerError", None),
        (503, "ServiceUnavailable", None),
        (504, "GatewayTimeout", None),
        (409, "AnotherOperationInProgress", None),
        (409, "Conflict", None),
    ],
)
def test_transient_errors_become_retries(
    provider: AzureProvider, emulator: EmulatorServer, status: int, code: str, retry_after: int | None
) -> None:
    p = _plan(example("cpu-small.json") | {"team": f"t{status}{code.lower()[:6]}"})
    outputs = _up_to(provider, p, "storage")
    _fault(
        emulator,
        type="Microsoft.Storage/storageAccounts",
        method="PUT",
        status=status,
        code=code,
        message="Azure is having a moment.",
        retry_after_s=retry_after,
    )
    outcome = drive(provider, p, "storage", outputs, retry=False)
    assert isinstance(outcome, Retry), outcome
    assert outcome.code == code
    assert "Azure is having a moment" in outcome.error
    if retry_after:
        assert outcome.after_s == retry_after
    provider.throttle._cool_until.clear()  # the cool-down is tested on its own below
    assert isinstance(drive(provider, p, "storage", outputs), Done)  # the fault fired once; the retry succeeds


def test_a_429_on_a_write_slows_every_write_in_the_subscription(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "throttled"})
    outputs = _up_to(provider, p, "storage")
    _fault(
        emulator,
        type="Microsoft.Storage/storageAccounts",
        method="PUT",
        status=429,
        code="TooManyRequests",
        retry_after_s=30,
    )
    assert isinstance(drive(provider, p, "storage", outputs, retry=False), Retry)
    calls = len(emulator.state.requests)
    other = drive(provider, p, "key-vault", outputs, retry=False)  # another step, same subscription
    # Its write held back by the service itself, not refused by Azure: a wait, not a failed attempt.
    assert isinstance(other, Wait) and "throttling writes in subscription" in other.reason
    assert 29 < other.after_s <= 30
    assert len(emulator.state.requests) == calls  # it wrote nothing to ARM
    provider.throttle._cool_until.clear()


@pytest.mark.parametrize(
    ("rtype", "step", "status", "code", "words"),
    [
        ("Microsoft.Storage/storageAccounts", "storage", 403, "AuthorizationFailed", "lacks permission"),
        ("Microsoft.KeyVault/vaults", "key-vault", 403, "RequestDisallowedByPolicy", "Azure Policy"),
        ("Microsoft.OperationalInsights/workspaces", "insights", 400, "InvalidResourceName", "naming rules"),
        ("Microsoft.Storage/storageAccounts", "storage", 409, "QuotaExceeded", "raise the subscription's quota"),
        ("Microsoft.Storage/storageAccounts", "storage", 404, "ResourceGroupNotFound", "does not exist"),
    ],
)
def test_permanent_errors_fail_with_what_to_do(
    provider: AzureProvider, emulator: EmulatorServer, rtype: str, step: str, status: int, code: str, words: str
) -> None:
    p = _plan(example("cpu-small.json") | {"team": f"p{code.lower()[:12]}"})
    outputs = _up_to(provider, p, step)
    _fault(emulator, type=rtype, method="PUT", status=status, code=code, message="Azure said no.", times=None)
    outcome = drive(provider, p, step, outputs)
    assert isinstance(outcome, Fail), outcome
    assert outcome.code == code
    assert "Azure said no" in outcome.error and words in outcome.error


def test_missing_provider_registration(provider: AzureProvider, emulator: EmulatorServer) -> None:
    p = _plan(example("cpu-small.json") | {"team": "unregistered"})
    outputs = _up_to(provider, p, "key-vault")
    emulator.state.config.unregistered = ["microsoft.keyvault"]
    outcome = drive(provider, p, "key-vault", outputs)
    assert isinstance(outcome, Fail) and outcome.code == "MissingSubscriptionRegistration"
    assert "register" in outcome.error and "Microsoft.KeyVault" in outcome.error


def test_per_family_vcpu_quota(provider: AzureProvider, emulator: EmulatorServer) -> None:
    gpu = {"name": "gpu-cluster", "vm_size": "Standard_NC24ads_A100_v4", "max_nodes": 2, "tier": "dedicated"}
    p = _plan(example("gpu-research.json") | {"team": "quota", "compute": [gpu]})
    outputs = _up_to(provider, p, "compute:gpu-cluster")
    emulator.state.config.quota = {"swedencentral": {"standardNCADSA100v4Family": 24}}
    gpu = drive(provider, p, "compute:gpu-cluster", outputs)  # 2 nodes x 24 vCPUs = 48 > 24
    assert isinstance(drive(provider, p, "compute:cpu-cluster", outputs), Done)  # another family's quota
    assert isinstance(gpu, Fail), gpu
    assert "Standard NCADS_A100_v4 Family Cluster Dedicated vCPUs quota of 24" in gpu.error
    assert "raise the vCPU quota" in gpu.error


def test_vault_name_taken_elsewhere(provider: AzureProvider, emulator: EmulatorServer) -> None:
    p = _plan(example("cpu-small.json") | {"team": "kvtaken"})
    outputs = _up_to(provider, p, "key-vault")
    held_elsewhere(emulator, "Microsoft.KeyVault/vaults", p.names.key_vault, VAULT_BODY)
    outcome = drive(provider, p, "key-vault", outputs)
    assert isinstance(outcome, Fail) and outcome.code == "VaultAlreadyExists"
    assert "Key vault names are global" in outcome.error


def _soft_delete_vault(provider: AzureProvider, emulator: EmulatorServer, team: str, **policy: Any) -> tuple[Any, dict]:
    p = _plan(example("cpu-small.json") | {"team": team}, **policy)
    outputs = _up_to(provider, p, "key-vault")
    assert isinstance(drive(provider, p, "key-vault", outputs), Done)
    emulator.state.delete(parse_path(p.step("key-vault").resource_id))
    return p, outputs


@pytest.mark.parametrize(
    ("action", "purge_protection", "result", "expected"),
    [
        ("recover", True, Done, "recovered"),
        ("purge", False, Done, None),
        ("purge", True, Fail, "purge protection"),
        ("rename", True, Done, "renamed from"),
        ("fail", True, Fail, "Recover it or purge it"),
    ],
)
def test_a_soft_deleted_vault_holding_the_name(
    provider: AzureProvider,
    emulator: EmulatorServer,
    action: str,
    purge_protection: bool,
    result: type,
    expected: str | None,
) -> None:
    from models.policy import KeyVaultPolicy

    kv = KeyVaultPolicy(on_soft_deleted=action, purge_protection=purge_protection)  # type: ignore[arg-type]
    p, outputs = _soft_delete_vault(provider, emulator, f"sd-{action}-{int(purge_protection)}", key_vault=kv)
    assert emulator.state.deleted_vaults(SUB, p.names.key_vault)
    outcome = drive(provider, p, "key-vault", outputs)
    assert isinstance(outcome, result), outcome
    if isinstance(outcome, Done):
        if expected:
            assert expected in outcome.outputs.get("soft_delete_action", "")
        if action == "rename":
            assert outcome.outputs["name"] == f"{p.names.key_vault[:21].rstrip('-')}-2"
            assert outcome.outputs["renamed_from"] == p.names.key_vault
        else:
            assert outcome.outputs["name"] == p.names.key_vault
            assert not emulator.state.deleted_vaults(SUB, p.names.key_vault)
        # The workspace links the vault the step reports, renamed or not.
        outputs["key-vault"] = outcome.outputs
        assert isinstance(drive(provider, p, "insights", outputs), Done)
        assert isinstance(drive(provider, p, "workspace", outputs), Done)
        ws = emulator.state.get(parse_path(p.step("workspace").resource_id))
        assert ws["properties"]["keyVault"].lower() == outcome.outputs["id"].lower()
    else:
        assert expected is not None and expected in outcome.error


def test_linked_invalid_property_id_fails_the_workspace_deployment(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "badlink"})
    outputs = _up_to(provider, p, "workspace")
    emulator.state.delete(parse_path(p.step("key-vault").resource_id))  # gone behind our back
    outcome = drive(provider, p, "workspace", outputs)
    assert isinstance(outcome, Fail), outcome
    assert outcome.code == "LinkedInvalidPropertyId"
    assert "properties.keyVault" in outcome.error and "linked resource id" in outcome.error


def test_principal_not_found_is_retried_until_it_propagates(provider: AzureProvider, emulator: EmulatorServer) -> None:
    p = _plan(example("cpu-small.json") | {"team": "newprincipal"})
    access = next(s.id for s in p.steps if s.id.startswith("access:"))
    outputs = _up_to(provider, p, access)
    _fault(
        emulator,
        type="Microsoft.Authorization/roleAssignments",
        method="PUT",
        status=400,
        code="PrincipalNotFound",
        message="Principal 5f0b7c1e does not exist in the directory.",
        times=2,
    )
    first = drive(provider, p, access, outputs, retry=False)
    assert isinstance(first, Retry) and "propagate" in first.error
    assert isinstance(drive(provider, p, access, outputs), Done)


def test_a_slow_workspace_waits(provider: AzureProvider, emulator: EmulatorServer) -> None:
    p = _plan(example("cpu-small.json") | {"team": "slowws"})
    outputs = _up_to(provider, p, "workspace")
    _fault(emulator, type="Microsoft.MachineLearningServices/workspaces", method="PUT", latency_s=1.0, times=None)
    step = p.step("workspace")
    from engine.ports import StepContext

    ctx = StepContext(request_id="r", names=p.names, attempt=1, dependency_outputs=outputs)
    assert isinstance(provider.reconcile(step, ctx), Wait)
    assert isinstance(provider.reconcile(step, ctx), Wait)  # the deployment is still running
    assert isinstance(drive(provider, p, "workspace", outputs), Done)


@pytest.mark.parametrize("action", ["fail", "purge"])
def test_a_soft_deleted_workspace_holding_the_name(
    provider: AzureProvider, emulator: EmulatorServer, action: str
) -> None:
    from models.policy import WorkspacePolicy

    p = _plan(example("cpu-small.json") | {"team": f"wssd-{action}"}, workspace=WorkspacePolicy(on_soft_deleted=action))  # type: ignore[arg-type]
    outputs = _up_to(provider, p, "workspace")
    assert isinstance(drive(provider, p, "workspace", outputs), Done)
    ws_id = p.step("workspace").resource_id
    emulator.state.delete(parse_path(ws_id))  # deleted by someone: soft-deleted for 14 days
    assert ws_id in emulator.state.soft_deleted_workspaces()
    outcome = drive(provider, p, "workspace", outputs)
    if action == "fail":
        assert isinstance(outcome, Fail) and outcome.code == "WorkspaceSoftDeleted"
        assert "Soft-deleted workspace exists" in outcome.error and "--permanently-delete" in outcome.error
    else:
        assert isinstance(outcome, Done), outcome
        assert outcome.outputs["soft_delete_action"] == "purged"
        assert ws_id not in emulator.state.soft_deleted_workspaces()


@pytest.mark.parametrize("code", sorted(RULES))
def test_every_row_of_the_error_table_through_the_emulator(
    provider: AzureProvider, emulator: EmulatorServer, code: str
) -> None:
    """Each code of cloud/errors.py's table, answered by ARM to a storage account create, gives its outcome."""
    p = _plan(example("cpu-small.json") | {"team": "table"})
    outputs = _up_to(provider, p, "storage")
    rule = RULES[code]
    status = 429 if "throttl" in code or code == "toomanyrequests" else 409 if "conflict" in code else 400
    _fault(
        emulator,
        type="Microsoft.Storage/storageAccounts",
        method="PUT",
        status=status,
        code=code,
        message=f"ARM says {code}.",
        retry_after_s=3,
        times=1,
    )
    outcome = drive(provider, p, "storage", outputs, retry=False)
    provider.throttle._cool_until.clear()
    emulator.state.faults.replace([])
    assert isinstance(outcome, Retry if rule.transient else Fail), (code, outcome)
    text = outcome.error
    assert f"ARM says {code}" in text and rule.advice in text
    if rule.transient and status == 429:
        assert outcome.after_s == 3
