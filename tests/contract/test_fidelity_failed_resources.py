"""A resource whose create ends Failed is applied again, once per retry of its step.

The emulator makes a create end Failed with a fault rule (`provisioning_state: Failed`): the PUT is
accepted, then the operation and the resource's provisioningState end Failed, as Azure reports an
asynchronous failure (ARM async operations: status Failed with an error).
"""

from __future__ import annotations

from typing import Any

import pytest

from cloud.provider import AzureProvider
from emulator.faults import Fault
from emulator.server import EmulatorServer
from models.outcomes import Done, Retry, Wait
from tests.conftest import example
from tests.contract.conftest import _plan, drive


@pytest.mark.parametrize(
    ("request_file", "step_id", "rtype", "path_part"),
    [
        (
            "cpu-small.json",
            "compute:cpu-cluster",
            "Microsoft.MachineLearningServices/workspaces/computes",
            "/computes/",
        ),
        ("cpu-small.json", "insights", "Microsoft.OperationalInsights/workspaces", "/microsoft.operationalinsights/"),
        ("gpu-research.json", "registry", "Microsoft.ContainerRegistry/registries", "/microsoft.containerregistry/"),
    ],
)
def test_a_failed_create_is_applied_again(
    provider: AzureProvider, emulator: EmulatorServer, request_file: str, step_id: str, rtype: str, path_part: str
) -> None:
    team = f"failed-{step_id.split(':', maxsplit=1)[0][:6]}"
    p = _plan(example(request_file) | {"team": team})
    outputs: dict[str, dict[str, Any]] = {}
    for s in p.steps:
        if s.id == step_id:
            break
        assert isinstance(drive(provider, p, s.id, outputs), Done), s.id
    emulator.state.faults.replace(
        [Fault(type=rtype, method="PUT", provisioning_state="Failed", code="InternalServerError", times=1)]
    )
    emulator.state.requests.clear()
    outcomes = []
    for _ in range(100):
        outcome = drive(provider, p, step_id, outputs, retry=False)
        outcomes.append(outcome)
        if not isinstance(outcome, (Wait, Retry)):
            break
    assert isinstance(outcomes[-1], Done), outcomes[-1]
    retries = [o for o in outcomes if isinstance(o, Retry)]
    assert len(retries) == 1 and retries[0].code == "ResourceFailed" and "Failed" in retries[0].error
    puts = [r for r in emulator.state.requests if r["method"] == "PUT" and path_part in r["path"].lower()]
    assert len(puts) == 2  # created, then applied again once: one retry's worth
