"""A workspace's life through the step engine with the fake cloud: revise, cancel, retry, tear down, expire, drift."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from composition import Container
from devhost.workers import QueueWorkers
from models.errors import ConflictError, InvalidInputError
from models.lifecycle import Change, DriftFinding
from models.outcomes import Fail
from models.plan import StepAction
from models.policy import ExpiryPolicy
from models.records import RequestRecord, RequestStatus, StepStatus
from models.request import parse_request
from tests.callers import PLATFORM
from tests.conftest import example, poll
from tests.fakes import FakeCloud

Service = tuple[Container, QueueWorkers]


def _settled(container: Container, rid: str) -> RequestRecord:
    def done() -> RequestRecord | None:
        record = container.store.get_request(rid)
        return record if record is not None and record.status.terminal else None

    found: RequestRecord = poll(done, what=f"request {rid} to settle")
    return found


def _made(container: Container, name: str = "cpu-small.json") -> RequestRecord:
    sub = container.intake.submit(request=parse_request(example(name)), caller=PLATFORM, source="test")
    record = _settled(container, sub.record.id)
    assert record.status == RequestStatus.SUCCEEDED
    return record


def _compute(record: RequestRecord) -> list[dict[str, Any]]:
    return list(record.request.model_dump(mode="json")["compute"])


def _events(container: Container, rid: str) -> Counter[str]:
    return Counter(e.name.value for e in container.store.list_events(rid))


def _once(container: Container, rid: str, name: str) -> None:
    """Wait for the event (the store's timeline is written after the transition), then check it came once."""
    poll(lambda: _events(container, rid)[name] >= 1, what=f"{name} in the timeline")
    assert _events(container, rid)[name] == 1


def test_a_revision_adds_a_compute_and_keeps_what_is_unchanged(service: Service, fake_cloud: FakeCloud) -> None:
    container, _ = service
    record = _made(container)
    creates = sum(fake_cloud.creates.values())
    extra = {"name": "extra", "vm_size": "Standard_DS3_v2", "max_nodes": 2}
    patch = {"compute": [*_compute(record), extra], "tags": {"project": "churn"}}

    preview = container.lifecycle.preview(record.id, patch, caller=PLATFORM, door="test")
    assert [c.step_id for c in preview.of(Change.CREATE)] == ["compute:extra", "access:compute:extra"]
    assert preview.of(Change.DELETE) == []
    assert container.store.get_request(record.id) == record  # a preview changes nothing

    done = container.lifecycle.update(record.id, patch, caller=PLATFORM, door="test")
    assert done.started and done.record.status in (RequestStatus.UPDATING, RequestStatus.SUCCEEDED)
    after = _settled(container, record.id)
    assert after.status == RequestStatus.SUCCEEDED and after.revision == 2 and after.run == 2
    assert [r.status for r in after.revisions] == ["applied", "applied"]
    steps = {s.step_id: s for s in container.store.get_steps(record.id)}
    assert steps["compute:extra"].status == StepStatus.SUCCEEDED and steps["compute:extra"].run == 2
    # The new tag changes every resource's spec: each is applied again, none is created twice.
    assert all(n == 1 for n in fake_cloud.creates.values())
    assert sum(fake_cloud.creates.values()) == creates + 2
    assert after.applied is not None and "compute:extra" in {s.id for s in after.applied.steps}
    _once(container, record.id, "WorkspaceUpdated")

    again = container.lifecycle.update(record.id, patch, caller=PLATFORM, door="test")
    assert not again.started and again.record.run == 2  # the same patch twice is one revision


def test_an_unchanged_step_is_kept_not_run_again(service: Service, fake_cloud: FakeCloud) -> None:
    container, _ = service
    record = _made(container)
    calls = Counter(fake_cloud.calls)
    extra = {"name": "extra", "vm_size": "Standard_DS3_v2", "max_nodes": 2}
    container.lifecycle.update(record.id, {"compute": [*_compute(record), extra]}, caller=PLATFORM, door="test")
    _settled(container, record.id)
    steps = {s.step_id: s for s in container.store.get_steps(record.id)}
    assert steps["storage"].action == StepAction.KEEP and steps["storage"].run == 2
    assert fake_cloud.calls[f"{record.id}/storage"] == calls[f"{record.id}/storage"]  # not asked again


def test_removing_a_compute_deletes_it_and_its_identity_access_first(service: Service, fake_cloud: FakeCloud) -> None:
    container, _ = service
    record = _made(container, "gpu-research.json")
    names = [c["name"] for c in _compute(record)]
    gone = names[0]
    keep = [c for c in _compute(record) if c["name"] != gone]
    preview = container.lifecycle.preview(record.id, {"compute": keep}, caller=PLATFORM, door="test")
    assert {c.step_id for c in preview.of(Change.DELETE)} >= {f"compute:{gone}"}
    container.lifecycle.update(record.id, {"compute": keep}, caller=PLATFORM, door="test")
    after = _settled(container, record.id)
    assert after.status == RequestStatus.SUCCEEDED
    assert after.plan is not None
    step = after.plan.step(f"compute:{gone}")
    assert step.action == StepAction.DELETE
    if f"access:compute:{gone}" in {s.id for s in after.plan.steps}:
        assert f"access:compute:{gone}" in step.depends_on  # its role assignments go before the identity does
    assert not any(f"/computes/{gone}:" in rid for rid in fake_cloud.resources)
    assert after.applied is not None and f"compute:{gone}" not in {s.id for s in after.applied.steps}


def test_changes_azure_cannot_make_in_place_are_refused_by_field(service: Service) -> None:
    container, _ = service
    record = _made(container)
    compute = _compute(record)
    compute[0] = {**compute[0], "vm_size": "Standard_NC6s_v3"}
    with pytest.raises(InvalidInputError) as refused:
        container.lifecycle.update(
            record.id, {"compute": compute, "region": "northeurope"}, caller=PLATFORM, door="test"
        )
    fields = {p.field: p for p in refused.value.problems}
    assert set(fields) >= {"compute[0].vm_size", "region"}
    assert "another name" in fields["compute[0].vm_size"].message
    assert container.store.get_request(record.id) == record  # nothing written


def test_a_bad_patch_gets_every_field_error(service: Service) -> None:
    container, _ = service
    record = _made(container)
    with pytest.raises(InvalidInputError) as refused:
        container.lifecycle.update(
            record.id, {"compute": [{"name": "x"}], "colour": "red"}, caller=PLATFORM, door="test"
        )
    assert {p.field for p in refused.value.problems} >= {"compute[0].vm_size", "colour"}


def test_cancel_stops_new_steps_and_retry_finishes_the_rest(service: Service, fake_cloud: FakeCloud) -> None:
    container, _ = service
    gate = threading.Event()
    fake_cloud.gates["workspace"] = gate
    sub = container.intake.submit(request=parse_request(example("cpu-small.json")), caller=PLATFORM, source="test")
    rid = sub.record.id
    poll(
        lambda: (s := container.store.get_step(rid, "workspace")) is not None and s.attempt >= 2,
        what="the workspace step to be waiting at its gate",
    )
    cancelled = container.lifecycle.cancel(rid, caller=PLATFORM, door="test")
    assert cancelled.started
    record = _settled(container, rid)
    assert record.status == RequestStatus.CANCELLED
    steps = {s.step_id: s for s in container.store.get_steps(rid)}
    assert steps["storage"].status == StepStatus.SUCCEEDED
    assert steps["workspace"].status == StepStatus.CANCELLED
    assert all(s.status == StepStatus.CANCELLED for k, s in steps.items() if k.startswith(("compute:", "datastore:")))
    assert not any("/computes/" in r for r in fake_cloud.resources)  # nothing after the workspace started
    assert record.error is not None and "retry" in record.error.message
    assert [r.status for r in record.revisions] == ["cancelled"]
    storage_calls = fake_cloud.calls[f"{rid}/storage"]

    gate.set()
    retried = container.lifecycle.retry(rid, caller=PLATFORM, door="test")
    assert retried.started
    done = _settled(container, rid)
    assert done.status == RequestStatus.SUCCEEDED
    assert fake_cloud.calls[f"{rid}/storage"] == storage_calls  # succeeded steps are not run again
    assert [r.status for r in done.revisions] == ["applied"]  # the retried run applied the revision after all
    assert all(n == 1 for n in fake_cloud.creates.values())
    with pytest.raises(ConflictError):
        container.lifecycle.retry(rid, caller=PLATFORM, door="test")  # a succeeded request has nothing to retry


def test_teardown_deletes_in_reverse_order_and_keeps_the_names_soft_delete_holds(
    service: Service, fake_cloud: FakeCloud
) -> None:
    container, _ = service
    record = _made(container)
    made = dict(fake_cloud.resources)
    done = container.lifecycle.delete(record.id, caller=PLATFORM, door="test")
    assert done.started
    after = _settled(container, record.id)
    assert after.status == RequestStatus.DELETED and after.operation == "delete"
    assert fake_cloud.resources == {}
    assert set(fake_cloud.deletes) == set(made) and all(n == 1 for n in fake_cloud.deletes.values())
    steps = {s.step_id: s for s in container.store.get_steps(record.id)}
    # The workspace went after every compute, datastore and role assignment; storage after the workspace.
    for sid, s in steps.items():
        if sid.startswith(("compute:", "datastore:", "access:")):
            assert s.finished_at is not None and steps["workspace"].started_at is not None
            assert s.finished_at <= steps["workspace"].started_at
    assert steps["workspace"].finished_at is not None and steps["storage"].started_at is not None
    assert steps["workspace"].finished_at <= steps["storage"].started_at
    assert after.teardown is not None
    held = {s.kind for s in after.teardown.soft_deleted}
    assert held == {"workspace", "key-vault"}  # not purged by default: their names stay held
    assert container.lifecycle.delete(record.id, caller=PLATFORM, door="test").started is False
    _once(container, record.id, "WorkspaceDeleted")
    # The name is free again: the same request can be made anew.
    _made(container)


def test_a_locked_resource_stops_teardown_with_a_record_and_retry_resumes(
    service: Service, fake_cloud: FakeCloud
) -> None:
    container, _ = service
    record = _made(container)
    fake_cloud.fail_delete["storage"] = Fail(
        "the scope is locked (CanNotDelete lock 'keep'); remove it.", "ScopeLocked"
    )
    container.lifecycle.delete(record.id, caller=PLATFORM, door="test", purge=True)
    stopped = _settled(container, record.id)
    assert stopped.status == RequestStatus.FAILED and stopped.operation == "delete"
    assert stopped.error is not None and stopped.error.code == "ScopeLocked"
    assert stopped.teardown is not None and stopped.teardown.purge
    remaining = {r.step_id for r in stopped.teardown.remaining}
    assert "storage" in remaining and "resource-group" in remaining  # the group waits for the storage
    assert stopped.teardown.soft_deleted == []  # purged
    with pytest.raises(ConflictError):
        container.lifecycle.update(record.id, {"tags": {"x": "y"}}, caller=PLATFORM, door="test")
    del fake_cloud.fail_delete["storage"]
    container.lifecycle.retry(record.id, caller=PLATFORM, door="test")
    after = _settled(container, record.id)
    assert after.status == RequestStatus.DELETED
    assert fake_cloud.resources == {}


def test_brought_resources_are_never_deleted(service: Service, fake_cloud: FakeCloud) -> None:
    container, _ = service
    body = example("cpu-small.json")
    sub = "11111111-1111-1111-1111-111111111111"
    body["existing"] = {
        "storage_account_id": f"/subscriptions/{sub}/resourceGroups/rg-ml-fraud-detection-dev/providers/"
        "Microsoft.Storage/storageAccounts/stbrought01"
    }
    made = container.intake.submit(request=parse_request(body), caller=PLATFORM, source="test")
    assert _settled(container, made.record.id).status == RequestStatus.SUCCEEDED
    container.lifecycle.delete(made.record.id, caller=PLATFORM, door="test")
    after = _settled(container, made.record.id)
    assert after.status == RequestStatus.DELETED
    assert after.plan is not None and "storage" not in {s.id for s in after.plan.steps}
    assert after.teardown is not None and [k.step_id for k in after.teardown.kept] == ["storage"]
    assert any("stbrought01" in r for r in fake_cloud.resources)  # still there


def test_expiry_reminds_then_tears_down(service: Service, fake_cloud: FakeCloud) -> None:
    container, _ = service
    container.policy.lifecycle.expiry[parse_request(example("cpu-small.json")).environment] = ExpiryPolicy(
        default_days=10, max_days=30, remind_days=2
    )
    record = _made(container)
    assert record.expires_at is not None
    assert abs((record.expires_at - record.created_at) - timedelta(days=10)) < timedelta(seconds=5)
    now = datetime.now(UTC)
    container.lifecycle.clock = lambda: now + timedelta(days=8, hours=1)
    assert container.lifecycle.expire_due() == 1
    reminded = container.store.get_request(record.id)
    assert reminded is not None and reminded.reminded_at is not None and reminded.status == RequestStatus.SUCCEEDED
    assert container.lifecycle.expire_due() == 0  # reminded once
    with pytest.raises(InvalidInputError):
        container.lifecycle.extend(record.id, caller=PLATFORM, door="test", expires_at=now + timedelta(days=60))
    container.lifecycle.clock = lambda: now + timedelta(days=10, hours=1)
    assert container.lifecycle.expire_due() == 1
    after = _settled(container, record.id)
    assert after.status == RequestStatus.DELETED
    _once(container, record.id, "WorkspaceExpired")


def test_drift_is_recorded_and_repaired_when_policy_says_so(service: Service, fake_cloud: FakeCloud) -> None:
    container, _ = service
    record = _made(container)
    assert container.lifecycle.check_one(record).findings == []
    compute = next(s for s in container.store.get_steps(record.id) if s.step_id.startswith("compute:"))
    fake_cloud.changed[compute.step_id] = DriftFinding(
        step_id=compute.step_id,
        kind="compute",
        resource_id="x",
        drift="changed",
        field="max_nodes",
        expected="2",
        actual="8",
        message="max_nodes was changed from 2 to 8 outside the service",
    )
    report = container.lifecycle.check_one(record)
    assert [f.field for f in report.findings] == ["max_nodes"] and report.repaired_run is None
    seen = container.store.get_request(record.id)
    assert seen is not None and seen.drift is not None and seen.drift.findings
    _once(container, record.id, "WorkspaceDriftDetected")

    container.policy.lifecycle.repair_drift = True
    report = container.lifecycle.check_one(seen)
    assert report.repaired_run == seen.run + 1
    repaired = _settled(container, record.id)
    assert repaired.status == RequestStatus.SUCCEEDED and fake_cloud.changed == {}
    assert container.lifecycle.check_one(repaired).findings == []


def test_teardown_keeps_what_another_live_workspace_of_the_team_shares(service: Service, fake_cloud: FakeCloud) -> None:
    container, _ = service
    first = _made(container)
    second = container.intake.submit(
        request=parse_request(example("cpu-small.json") | {"workspace_name": "mlw-fraud-second"}),
        caller=PLATFORM,
        source="test",
    )
    assert _settled(container, second.record.id).status == RequestStatus.SUCCEEDED
    container.lifecycle.delete(second.record.id, caller=PLATFORM, door="test", purge=True)
    gone = _settled(container, second.record.id)
    assert gone.status == RequestStatus.DELETED and gone.teardown is not None
    kept = {k.step_id: k.reason for k in gone.teardown.kept}
    assert {"storage", "key-vault", "insights", "resource-group"} <= set(kept)
    assert first.id in kept["storage"]
    mine = [r for r in fake_cloud.resources if r.startswith(f"{first.id}:")]
    assert any("storageAccounts" in r for r in mine)  # the first workspace's storage is untouched


def test_a_patch_removing_the_expiry_gets_the_policy_default(service: Service) -> None:
    container, _ = service
    record = _made(container)
    assert record.expires_at is not None  # the shipped policy: dev workspaces expire after 30 days
    done = container.lifecycle.update(record.id, {"expires_at": None}, caller=PLATFORM, door="test")
    assert done.record.expires_at is not None
    assert done.record.expires_at - datetime.now(UTC) <= timedelta(days=30, minutes=1)


def test_retry_refuses_a_name_another_request_took_meanwhile(service: Service, fake_cloud: FakeCloud) -> None:
    container, _ = service
    fake_cloud.fail["key-vault"] = Fail("the vault name is held elsewhere", "VaultNameTaken")
    failed = container.intake.submit(request=parse_request(example("cpu-small.json")), caller=PLATFORM, source="test")
    assert _settled(container, failed.record.id).status == RequestStatus.FAILED
    del fake_cloud.fail["key-vault"]
    _made(container)  # the name was given back when the first failed: another request takes it
    with pytest.raises(ConflictError) as refused:
        container.lifecycle.retry(failed.record.id, caller=PLATFORM, door="test")
    assert refused.value.code == "WorkspaceNameTaken"


def test_what_a_failed_revision_made_is_torn_down(service: Service, fake_cloud: FakeCloud) -> None:
    container, _ = service
    record = _made(container)
    fake_cloud.fail["datastore:more"] = Fail("no", "Nope")
    extra = {"name": "extra", "vm_size": "Standard_DS3_v2", "max_nodes": 2}
    patch = {
        "compute": [*_compute(record), extra],
        "datastores": [
            *record.request.model_dump(mode="json")["datastores"],
            {"name": "more", "kind": "blob", "container": "more"},
        ],
    }
    container.lifecycle.update(record.id, patch, caller=PLATFORM, door="test")
    failed = _settled(container, record.id)
    assert failed.status == RequestStatus.FAILED and failed.applied is not None
    assert "compute:extra" in {s.id for s in failed.applied.steps}  # what the failed run made counts as made
    del fake_cloud.fail["datastore:more"]
    container.lifecycle.delete(record.id, caller=PLATFORM, door="test")
    assert _settled(container, record.id).status == RequestStatus.DELETED
    assert not any("/computes/extra" in r for r in fake_cloud.resources)


def test_the_masked_callback_and_a_case_only_rename_are_refused(service: Service) -> None:
    container, _ = service
    record = _made(container)
    with pytest.raises(InvalidInputError) as masked:
        container.lifecycle.update(
            record.id, {"callback_url": "https://hooks.example.com/***"}, caller=PLATFORM, door="test"
        )
    assert masked.value.problems[0].code == "MaskedValue"
    compute = _compute(record)
    compute[0] = {**compute[0], "name": compute[0]["name"].upper()}
    with pytest.raises(InvalidInputError) as renamed:
        container.lifecycle.update(record.id, {"compute": compute}, caller=PLATFORM, door="test")
    assert renamed.value.problems[0].field == "compute[0].name"
