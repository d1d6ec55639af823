"""Chaos for a workspace's life: creates, then revisions, then teardowns, while everything goes wrong.

The machinery of `tests/chaos/test_chaos.py` (the real engine, provider and emulator; workers killed
after the cloud did its part; messages delivered twice; throttling, 5xx and slow operations on
creates), with faults on deletes besides: throttled, failing, slow, and long-running deletes that
are accepted and then end Failed. A request in four brings its own storage account.

Afterwards, for every request: it is `deleted`, after its revision was `applied`; every resource the
service made was created exactly once and deleted exactly once (the emulator's counts); nothing of it
is left in the emulator but what its record says soft-delete holds (and, beside a brought account,
what is not the service's to delete); nothing brought was deleted; and every message was completed or
dead-lettered with a recorded reason.

Size: `VENDING_CHAOS_LIFECYCLE_REQUESTS` (CI: 8; e.g. 60 for a larger run).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from composition import Container
from emulator.faults import Fault
from emulator.server import EmulatorServer
from emulator.state import AZURE_AI_ADMINISTRATOR, Config, parse_path
from models.errors import ConflictError
from models.records import RequestRecord, RequestStatus, StepStatus
from models.request import parse_request
from tests.callers import PLATFORM
from tests.chaos.test_chaos import FAULTS, ChaosCloud, ChaosWorkers, chaos_running
from tests.conftest import example, poll

REQUESTS = int(os.environ.get("VENDING_CHAOS_LIFECYCLE_REQUESTS", "8"))
SUB = "11111111-1111-1111-1111-111111111111"
DELETE_FAULTS = [
    Fault(
        type="Microsoft.Storage/storageAccounts",
        method="DELETE",
        status=429,
        code="TooManyRequests",
        message="throttled",
        retry_after_s=1,
        every=2,
        times=None,
    ),
    Fault(
        type="Microsoft.MachineLearningServices/workspaces/computes",
        method="DELETE",
        status=500,
        code="InternalServerError",
        message="boom",
        every=3,
        times=None,
    ),
    Fault(
        type="Microsoft.KeyVault/vaults",
        method="DELETE",
        status=503,
        code="ServiceUnavailable",
        message="unavailable",
        every=3,
        times=None,
    ),
    Fault(type="Microsoft.MachineLearningServices/workspaces", method="DELETE", latency_s=1.5, every=2, times=None),
    Fault(
        type="Microsoft.OperationalInsights/workspaces",
        method="DELETE",
        provisioning_state="Failed",
        code="InternalServerError",
        message="the delete failed",
        every=3,
        times=None,
    ),
]


def _brings_storage(i: int) -> bool:
    return i % 4 == 3


def _group(i: int) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/rg-ml-chaos-lc-{i:03d}-dev"


def _account(i: int) -> str:
    return f"{_group(i)}/providers/Microsoft.Storage/storageAccounts/stchaoslc{i:03d}byo"


def _body(i: int) -> dict[str, Any]:
    body = example("cpu-small.json") | {"team": f"chaos-lc-{i:03d}"}
    if _brings_storage(i):
        body["existing"] = {"storage_account_id": _account(i)}
    return body


def _patch(record: RequestRecord, i: int) -> dict[str, Any]:
    """A revision: a compute added, the first one removed (every other request), a tag changed."""
    compute = list(record.request.model_dump(mode="json")["compute"])
    extra = {"name": "cpu-extra", "vm_size": "Standard_DS3_v2", "min_nodes": 0, "max_nodes": 2}
    kept = compute[1:] if i % 2 == 0 else compute
    return {"compute": [*kept, extra], "tags": {"cost-center": f"CC-{7000 + i}"}}


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[tuple[Container, EmulatorServer, ChaosWorkers, ChaosCloud]]:
    emulator = EmulatorServer(data_dir=tmp_path, config=Config(latency_s=0.2), faults=[*FAULTS, *DELETE_FAULTS]).start()
    try:
        with chaos_running(tmp_path, emulator, seed=20261205) as (container, workers, cloud):
            yield container, emulator, workers, cloud
    finally:
        emulator.stop()


def _bring(emulator: EmulatorServer, i: int) -> None:
    """Make the team's resource group and its storage account before the request, as a team brings them."""
    emulator.state.put(parse_path(_group(i)), {"location": "westeurope"})
    emulator.state.put(
        parse_path(_account(i)),
        {
            "location": "westeurope",
            "sku": {"name": "Standard_LRS"},
            "kind": "StorageV2",
            "tags": {"team": f"chaos-lc-{i:03d}"},
            "properties": {"allowSharedKeyAccess": False, "isHnsEnabled": False},
        },
    )
    poll(
        lambda: emulator.state.get(parse_path(_account(i)))["properties"]["provisioningState"] == "Succeeded",
        what="the brought storage account",
    )


def _all_settle(container: Container, ids: list[str], what: str) -> dict[str, RequestRecord]:
    store = container.store

    def settled() -> dict[str, RequestRecord] | None:
        records = {rid: store.get_request(rid) for rid in ids}
        if all(r is not None and r.status.terminal for r in records.values()):
            return {rid: r for rid, r in records.items() if r is not None}
        return None

    found: dict[str, RequestRecord] = poll(settled, timeout=120 + len(ids) * 8, every=0.5, what=what)
    return found


def _acting(act: Callable[[], Any]) -> Any:
    """Do a lifecycle act, again when the request changed under it (a sweeper's or notifier's write)."""
    for _ in range(20):
        try:
            return act()
        except ConflictError as exc:
            if exc.code != "RequestChanged":
                raise
    raise AssertionError("the request kept changing")


def _under(resource_id: str, group: str) -> bool:
    rid, g = resource_id.lower(), group.lower()
    return rid == g or rid.startswith(g + "/")


def test_creates_revisions_and_teardowns_under_chaos_leave_nothing_and_count_each_resource_once(
    chaos: tuple[Container, EmulatorServer, ChaosWorkers, ChaosCloud],
) -> None:
    container, emulator, workers, cloud = chaos
    started = time.monotonic()
    for i in range(REQUESTS):
        if _brings_storage(i):
            _bring(emulator, i)
    ids = [
        container.intake.submit(request=parse_request(_body(i)), caller=PLATFORM, source="test").record.id
        for i in range(REQUESTS)
    ]
    made = _all_settle(container, ids, f"{REQUESTS} creates under chaos")
    assert {rid: r.status for rid, r in made.items()} == dict.fromkeys(ids, RequestStatus.SUCCEEDED), {
        rid: r.error for rid, r in made.items() if r.error
    }

    for i, rid in enumerate(ids):
        changed = _acting(partial(container.lifecycle.update, rid, _patch(made[rid], i), caller=PLATFORM, door="test"))
        assert changed.started, rid
    revised = _all_settle(container, ids, f"{REQUESTS} revisions under chaos")
    for rid, r in revised.items():
        assert (r.status, r.revision, [v.status for v in r.revisions]) == (
            RequestStatus.SUCCEEDED,
            2,
            ["applied", "applied"],
        ), (rid, r.error)

    for i, rid in enumerate(ids):
        deleting = _acting(partial(container.lifecycle.delete, rid, caller=PLATFORM, door="test", purge=i % 2 == 0))
        assert deleting.started, rid
    gone = _all_settle(container, ids, f"{REQUESTS} teardowns under chaos")
    elapsed = time.monotonic() - started
    assert {rid: r.status for rid, r in gone.items()} == dict.fromkeys(ids, RequestStatus.DELETED), {
        rid: (r.error, r.teardown) for rid, r in gone.items() if r.status != RequestStatus.DELETED
    }
    assert cloud.kills > 0 and workers.deaths == cloud.kills and workers.duplicates > 0
    fired = emulator.state.faults.fired[len(FAULTS) :]
    assert len(fired) == len(DELETE_FAULTS) and all(n > 0 for n in fired), fired  # every fault on deletes fired

    stats = emulator.state.stats()
    creates = {k.lower(): n for k, n in stats["creates"].items()}
    deletes = {k.lower(): n for k, n in stats["deletes"].items()}
    held = {r.lower() for r in emulator.state.resource_ids()}
    soft = emulator.state.soft_deleted()
    soft_ids = {item["id"].lower() for kind in ("vaults", "workspaces") for item in soft[kind]}
    for i, rid in enumerate(ids):
        record = gone[rid]
        assert record.teardown is not None and record.teardown.remaining == [], (rid, record.teardown)
        for step in container.store.get_steps(rid):
            if step.run == record.run:
                assert step.status == StepStatus.SUCCEEDED, (rid, step.step_id, step.status, step.error)
        group = _group(i)
        ours = {k for k in creates if _under(k, group)}
        brought = {group.lower(), _account(i).lower()} if _brings_storage(i) else set()
        # What is not the service's to delete beside a brought account: the data a datastore pointed at, the
        # group's deployment history, and the role Azure ML itself gave the workspace's identity on the group.
        left = {k for k in held if _under(k, group)} - brought
        if _brings_storage(i):
            not_ours = {
                k
                for k in left
                if k.startswith(_account(i).lower() + "/blobservices/default/containers/")
                or "/providers/microsoft.resources/deployments/" in k
                or (
                    k.startswith(group.lower() + "/providers/microsoft.authorization/roleassignments/")
                    and emulator.state.get(parse_path(k))["properties"]["roleDefinitionId"].endswith(
                        AZURE_AI_ADMINISTRATOR
                    )
                )
            }
            assert left == not_ours, (rid, sorted(left - not_ours))
            assert record.teardown.kept and {k.step_id for k in record.teardown.kept} >= {"storage", "resource-group"}
        else:
            # Kept: only a vault purge protection keeps soft-deleted, when the teardown purged.
            kept = {k.step_id: k.reason for k in record.teardown.kept}
            assert set(kept) == ({"key-vault"} if i % 2 == 0 else set()), (rid, kept)
            assert all("purge protection" in why for why in kept.values()), kept
            assert left == set(), (rid, sorted(left))
        # Every resource made once and removed once; nothing brought removed.
        twice = {k: n for k, n in creates.items() if k in ours and n != 1}
        assert twice == {}, (rid, twice)
        undeleted = {k: deletes.get(k, 0) for k in ours - held if deletes.get(k, 0) != 1}
        assert undeleted == {}, (rid, undeleted)
        assert all(deletes.get(b, 0) == 0 for b in brought), (rid, {b: deletes.get(b) for b in brought})
        # Soft-delete holds exactly what the record lists (nothing when the teardown purged, but a purge-protected
        # vault).
        listed = {s.resource_id.lower() for s in record.teardown.soft_deleted}
        assert {s for s in soft_ids if _under(s, group)} == listed, (rid, listed)
        kinds = {s.kind for s in record.teardown.soft_deleted}
        assert kinds == ({"key-vault"} if i % 2 == 0 else {"workspace", "key-vault"}), (rid, kinds)

    # No message unaccounted for: queues drained; anything dead-lettered carries its reason.
    queues = (container.settings.steps_queue, container.settings.notifications_queue)
    poll(
        lambda: all(
            sum(container.bus.counts(q)[k] for k in ("active", "locked", "scheduled")) == 0  # type: ignore[attr-defined]
            for q in queues
        ),
        timeout=60,
        what="the queues to drain",
    )
    for queue in queues:
        for letter in container.bus.dead_letters(queue):  # type: ignore[attr-defined]
            assert letter.reason and letter.description, letter
    print(
        f"\nchaos lifecycle: {REQUESTS} requests created, revised and torn down in {elapsed:.1f} s; "
        f"{cloud.kills} workers killed, {workers.duplicates} duplicate deliveries, "
        f"{sum(creates.values())} creates, {sum(deletes.values())} deletes"
    )
