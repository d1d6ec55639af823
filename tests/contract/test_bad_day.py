"""Whole requests on a bad day: throttling, a slow workspace, no GPU quota, a taken storage name.

The engine, the real provider and the emulator together; each request ends with exactly the step
statuses and messages its requester should see.
"""

from __future__ import annotations

from collections import Counter

from adapters.sqlite_bus import SqliteBus
from adapters.sqlite_store import SqliteStore
from cloud.provider import AzureProvider
from composition import Container
from emulator.faults import Fault
from emulator.server import EmulatorServer
from models.records import RequestStatus, StepStatus
from models.request import parse_request
from models.settings import Settings
from tests.callers import PLATFORM, PermitAll, Unconfined
from tests.conftest import example, poll, running_steps, whole_timeline
from tests.contract.conftest import STORAGE_BODY, _plan, held_elsewhere

SUB = "11111111-1111-1111-1111-111111111111"


def test_a_bad_day_ends_with_the_right_statuses_and_messages(
    provider: AzureProvider, emulator: EmulatorServer, settings: Settings
) -> None:
    settings.poll_s = 0.1
    gpu_team = example("gpu-research.json") | {"team": "badday-gpu"}
    taken_team = example("cpu-small.json") | {"team": "badday-taken"}
    # Someone else holds the second team's storage account name.
    name = _plan(taken_team).names.storage_account
    held_elsewhere(emulator, "Microsoft.Storage/storageAccounts", name, STORAGE_BODY)
    emulator.state.config.quota = {"swedencentral": {"lowPriority": 0}}
    emulator.state.faults.replace(
        [
            Fault(
                type="Microsoft.Storage/storageAccounts",
                method="PUT",
                name="stbaddaygpu*",
                status=429,
                code="TooManyRequests",
                message="The request is being throttled.",
                retry_after_s=1,
                times=2,
            ),
            Fault(
                type="Microsoft.MachineLearningServices/workspaces",
                method="PUT",
                name="mlw-badday-gpu-*",
                latency_s=1.5,
                times=None,
            ),
        ]
    )
    store, bus = SqliteStore(":memory:"), SqliteBus(":memory:")
    c = Container(settings, store=store, bus=bus, cloud=provider, authorizer=PermitAll(), confinement=Unconfined())
    try:
        with running_steps(c, threads=6):
            ids = [
                c.intake.submit(request=parse_request(b), caller=PLATFORM, source="test").record.id
                for b in (gpu_team, taken_team)
            ]
            poll(
                lambda: all(store.get_request(r).status.terminal for r in ids),
                timeout=120,
                what="both requests to finish",
            )
    finally:
        provider.throttle._cool_until.clear()

    gpu, taken = (store.get_request(r) for r in ids)
    assert gpu is not None and taken is not None
    gpu_steps = {s.step_id: s for s in store.get_steps(gpu.id)}
    # The GPU request: everything but the low-priority GPU cluster succeeded; that one says what to do.
    assert gpu.status == RequestStatus.FAILED
    failed = {sid for sid, s in gpu_steps.items() if s.status == StepStatus.FAILED}
    assert failed == {"compute:gpu-cluster"}
    # The cluster's own access step (its identity's data role) waits on it and is skipped.
    skipped = {sid for sid, s in gpu_steps.items() if s.status == StepStatus.SKIPPED}
    assert skipped == {"access:compute:gpu-cluster"}
    assert all(s.status == StepStatus.SUCCEEDED for sid, s in gpu_steps.items() if sid not in failed | skipped)
    error = gpu_steps["compute:gpu-cluster"].error
    assert error is not None and "LowPriority vCPUs quota of 0" in error.message
    assert "Ask the platform team to raise the vCPU quota" in error.message
    assert gpu.error is not None and gpu.error.message.startswith("step 'compute:gpu-cluster' failed:")
    # Throttled twice, then created; the slow workspace waited.
    assert gpu_steps["storage"].retries >= 1
    assert gpu_steps["workspace"].attempt >= 3 and gpu_steps["workspace"].waited_s > 0
    whole_timeline(lambda: [e.name.value for e in store.list_events(gpu.id)])  # written just after the status
    events = Counter((e.name.value, e.step) for e in store.list_events(gpu.id))
    assert events[("WorkspaceStepRetrying", "storage")] >= 1
    assert events[("WorkspaceStepWaiting", "workspace")] >= 2
    assert events[("WorkspaceProvisioningFailed", None)] == 1

    # The taken-name request: storage failed permanently, what depends on it was skipped, the rest finished.
    taken_steps = {s.step_id: s for s in store.get_steps(taken.id)}
    assert taken.status == RequestStatus.FAILED
    assert taken_steps["storage"].status == StepStatus.FAILED
    assert taken_steps["storage"].error.code == "StorageAccountAlreadyTaken"  # type: ignore[union-attr]
    assert "Storage account names are global" in taken_steps["storage"].error.message  # type: ignore[union-attr]
    for sid in ("workspace", "compute:cpu-cluster", "datastore:training_data"):
        assert taken_steps[sid].status == StepStatus.SKIPPED
        assert taken_steps[sid].status_reason == "skipped because 'storage' failed"
    assert taken_steps["key-vault"].status == StepStatus.SUCCEEDED
    assert taken_steps["insights"].status == StepStatus.SUCCEEDED
