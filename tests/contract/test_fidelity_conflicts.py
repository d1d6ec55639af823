"""Conflicts told apart as Azure documents them: storage names, and a role assignment that already exists.

Storage: Microsoft Learn, "Resolve errors for storage account names" (StorageAccountAlreadyTaken,
StorageAccountInAnotherResourceGroup, InvalidResourceLocation). Role assignments: a second assignment of
one role to one principal at one scope is refused with 409 RoleAssignmentExists (RoleAssignments_Create,
Microsoft.Authorization spec, api-version 2022-04-01; Microsoft Learn, "Troubleshoot Azure RBAC").
"""

from __future__ import annotations

from typing import Any

import pytest

from cloud.provider import AzureProvider
from emulator.arm_errors import ArmError
from emulator.faults import Fault
from emulator.server import EmulatorServer
from emulator.state import parse_path
from models.outcomes import Done, Fail
from tests.conftest import example
from tests.contract.conftest import SUB, _plan, drive

ROLE = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"  # Storage Blob Data Contributor
PRINCIPAL = "5f0b7c1e-8a55-4a3e-9a9e-2d4b1f0c7a11"


@pytest.mark.parametrize(
    ("status", "code", "message", "advice"),
    [
        (409, "StorageAccountAlreadyTaken", "The storage account named {n} is already taken.", "another subscription"),
        (
            409,
            "StorageAccountInAnotherResourceGroup",
            "The account {n} is already in another resource group in this subscription.",
            "another resource group of this subscription",
        ),
        (
            400,
            "InvalidResourceLocation",
            "The resource '{n}' already exists in location 'westus' in resource group 'rg'. A resource with the "
            "same name cannot be created in location 'westeurope'. Please select a new resource name.",
            "cannot move region",
        ),
    ],
)
def test_storage_name_conflicts_are_told_apart(
    provider: AzureProvider, emulator: EmulatorServer, status: int, code: str, message: str, advice: str
) -> None:
    p = _plan(example("cpu-small.json") | {"team": f"st-{code[-8:].lower()}"})
    assert isinstance(drive(provider, p, "resource-group", {}), Done)
    name = p.names.storage_account
    emulator.state.faults.replace(
        [
            Fault(
                type="Microsoft.Storage/storageAccounts",
                method="PUT",
                status=status,
                code=code,
                message=message.format(n=name),
            )
        ]
    )
    outcome = drive(provider, p, "storage", {})
    assert isinstance(outcome, Fail) and outcome.code == code, outcome
    assert message.format(n=name) in outcome.error and advice in outcome.error


def _assignment(scope: str, name: str) -> Any:
    return parse_path(f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}")


def _body() -> dict[str, Any]:
    return {
        "properties": {
            "roleDefinitionId": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{ROLE}",
            "principalId": PRINCIPAL,
            "principalType": "User",
        }
    }


def test_the_emulator_refuses_the_same_assignment_under_another_name(emulator: EmulatorServer) -> None:
    scope = f"/subscriptions/{SUB}/resourceGroups/rg-rbac-dup"
    emulator.state.put(parse_path(scope), {"location": "westeurope"})
    emulator.state.put(_assignment(scope, "11111111-0000-4000-8000-000000000001"), _body())
    with pytest.raises(ArmError) as refused:
        emulator.state.put(_assignment(scope, "11111111-0000-4000-8000-000000000002"), _body())
    assert refused.value.status == 409 and refused.value.code == "RoleAssignmentExists"
    # The same name again is the same assignment: accepted.
    status, _, _ = emulator.state.put(_assignment(scope, "11111111-0000-4000-8000-000000000001"), _body())
    assert status == 200


def test_an_assignment_made_by_hand_counts_as_done(provider: AzureProvider, emulator: EmulatorServer) -> None:
    p = _plan(example("cpu-small.json") | {"team": "rbac-hand"})
    access = next(s for s in p.steps if s.id.startswith("access:"))
    outputs: dict[str, dict[str, Any]] = {}
    for s in p.steps:
        if s.id == access.id:
            break
        assert isinstance(drive(provider, p, s.id, outputs), Done), s.id
    first = access.spec.assignments[0]
    by_hand = _assignment(first.scope, "0badc0de-0000-4000-8000-000000000001")
    body = _body()
    body["properties"]["roleDefinitionId"] = (
        f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{first.role_definition}"
    )
    body["properties"]["principalId"] = access.spec.principal_id
    emulator.state.put(by_hand, body)
    outcome = drive(provider, p, access.id, outputs)
    assert isinstance(outcome, Done), outcome
    made = outcome.outputs["assignments"][0]
    assert made["id"] is not None and made["id"].lower() == by_hand.id.lower()  # the one that exists


def test_a_first_attempt_creates_each_assignment_without_reading_it_and_a_later_one_reads_first(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    from dataclasses import replace

    from cloud.access import assignment_name
    from engine.ports import StepContext

    p = _plan(example("cpu-small.json") | {"team": "rbac-reads"})
    access = next(s for s in p.steps if s.id.startswith("access:") and s.spec.principal_id)
    outputs: dict[str, dict[str, Any]] = {}
    for s in p.steps:
        if s.id == access.id:
            break
        assert isinstance(drive(provider, p, s.id, outputs), Done), s.id
    first = StepContext(request_id="r", names=p.names, attempt=1, dependency_outputs={})

    def calls(ctx: StepContext) -> tuple[int, int]:
        """The role assignment reads and writes one reconcile sends (the emulator's tally of ARM calls)."""
        before = dict(emulator.state.tally)
        assert isinstance(provider.reconcile(access, ctx), Done)
        sent = {k: n - before.get(k, 0) for k, n in emulator.state.tally.items()}
        kind = "Microsoft.Authorization/roleAssignments"
        return sum(n for (op, t, _, _), n in sent.items() if t == kind and op == "reads"), sum(
            n for (op, t, _, _), n in sent.items() if t == kind and op == "writes"
        )

    n = len(access.spec.assignments)
    assert calls(first) == (0, n)  # nothing to read: the step has never run
    # Again, as a retry or after a worker died: each is read, and, being there, not created again.
    assert calls(replace(first, attempt=2)) == (n, 0)
    assert calls(replace(first, resumed=True)) == (n, 0)
    # A later run (a revision, a retry, a repair) reads first too: what the service made is not sent again.
    assert calls(replace(first, ran_before=True)) == (n, 0)
    # A first attempt over assignments that exist: the same name is the same one (ARM answers 200).
    assert calls(first) == (0, n)
    # Or ARM refuses the same name as existing (409 RoleAssignmentExists, as it has at times): the one listed.
    emulator.state.faults.replace(
        [
            Fault(
                type="Microsoft.Authorization/roleAssignments",
                method="PUT",
                status=409,
                code="RoleAssignmentExists",
                message="The role assignment already exists.",
                times=None,
            )
        ]
    )
    refused = provider.reconcile(access, first)
    emulator.state.faults.replace([])
    assert isinstance(refused, Done), refused
    listed = {m["id"].rsplit("/", 1)[-1] for m in refused.outputs["assignments"]}
    names = {
        assignment_name(a.scope, a.role_definition, str(access.spec.principal_id)) for a in access.spec.assignments
    }
    assert listed == names
    ours = {assignment_name(a.scope, a.role_definition, str(access.spec.principal_id)) for a in access.spec.assignments}
    held = {r.rsplit("/", 1)[-1] for r in emulator.state.resource_ids() if "/roleassignments/" in r.lower()}
    assert ours <= held and len(ours) == n  # one of each, under the name the service gives it
