"""The team's vCPU limit is a stored figure, claimed in the same atomic write as the request.

Every test runs on SQLite and on Azure Tables (Azurite). The race test fires concurrent
submissions of one team at a barrier: on a read-then-check intake several of them would pass the
check before any of them was written and the team would end over its limit together.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from composition import Container
from engine.ports import Store, VcpuLimit
from models.errors import InvalidInputError, LimitExceededError
from models.records import RequestRecord, RequestStatus
from models.request import parse_request
from models.settings import Settings
from tests.callers import PLATFORM, PermitAll, Unconfined
from tests.conftest import example
from tests.fakes import FakeCloud

Make = Callable[..., Store]
NOW = datetime(2026, 1, 1, tzinfo=UTC)
CPU_SMALL_VCPUS = 16  # profile cpu-small: Standard_DS3_v2 (4 vCPUs) x 4 nodes at max scale


def _record(rid: str, *, team: str = "vision", vcpus: int = 10, status: RequestStatus = RequestStatus.ACCEPTED) -> Any:
    return RequestRecord(
        id=rid, status=status, team=team, environment="dev", vcpus=vcpus, body_hash=rid, created_at=NOW, updated_at=NOW
    )


def _move(store: Store, rid: str, status: RequestStatus) -> RequestRecord:
    current = store.get_request(rid)
    assert current is not None
    return store.update_request(current.model_copy(update={"status": status}))


def test_a_create_claims_its_vcpus_against_the_limit_or_creates_nothing(new_store: Make) -> None:
    store = new_store()
    limit = VcpuLimit(25)
    store.create_request(_record("01A", vcpus=10), [], vcpu_limit=limit)
    store.create_request(_record("01B", vcpus=10), [], vcpu_limit=limit)
    assert store.team_vcpus("vision") == 20
    with pytest.raises(LimitExceededError) as info:
        store.create_request(_record("01C", vcpus=10), [], vcpu_limit=limit)
    assert (info.value.in_use, info.value.asked, info.value.limit) == (20, 10, 25)
    assert store.get_request("01C") is None
    assert store.team_vcpus("vision") == 20
    # Another team's figure is its own; a create without a limit still counts.
    store.create_request(_record("01D", team="speech", vcpus=24), [], vcpu_limit=limit)
    store.create_request(_record("01E", vcpus=3), [])
    assert (store.team_vcpus("speech"), store.team_vcpus("vision"), store.team_vcpus("nobody")) == (24, 23, 0)


def test_a_request_that_ends_gives_its_vcpus_back_and_holds_them_again_when_resumed(new_store: Make) -> None:
    store = new_store()
    limit = VcpuLimit(20)
    store.create_request(_record("01A", vcpus=15), [], vcpu_limit=limit)
    _move(store, "01A", RequestStatus.PROVISIONING)
    assert store.team_vcpus("vision") == 15
    _move(store, "01A", RequestStatus.FAILED)
    assert store.team_vcpus("vision") == 0
    store.create_request(_record("01B", vcpus=5), [], vcpu_limit=limit)
    # An operator resumes the failed request: it holds its vCPUs again, so the next create sees them.
    _move(store, "01A", RequestStatus.PROVISIONING)
    assert store.team_vcpus("vision") == 20
    with pytest.raises(LimitExceededError):
        store.create_request(_record("01C", vcpus=1), [], vcpu_limit=limit)
    _move(store, "01A", RequestStatus.SUCCEEDED)
    assert store.team_vcpus("vision") == 20
    # A replayed create (same idempotency key) is not counted twice.
    keyed = _record("01D", vcpus=0).model_copy(update={"idempotency_key": "k"})
    store.create_request(keyed, [], vcpu_limit=limit)
    again, created = store.create_request(keyed.model_copy(update={"id": "01E"}), [], vcpu_limit=limit)
    assert (again.id, created, store.team_vcpus("vision")) == ("01D", False, 20)


def test_tables_a_holder_left_by_a_crash_is_not_counted_after_the_grace(new_store: Make, store_kind: str) -> None:
    if store_kind != "tables":
        pytest.skip("SQLite claims and creates in one transaction: a crash leaves nothing behind")
    clock = [NOW]
    store: Any = new_store(claim_grace_s=30, clock=lambda: clock[0])
    store.create_request(_record("01A", vcpus=10), [], vcpu_limit=VcpuLimit(20))
    # A create that died after claiming its share and before writing its request.
    store._hold_vcpus(_record("01DEAD", vcpus=10), VcpuLimit(20))
    assert store.team_vcpus("vision") == 20  # it may still be being written: counted
    with pytest.raises(LimitExceededError):
        store.create_request(_record("01B", vcpus=5), [], vcpu_limit=VcpuLimit(20))
    clock[0] = NOW + timedelta(seconds=31)
    assert store.team_vcpus("vision") == 10
    store.create_request(_record("01B", vcpus=5), [], vcpu_limit=VcpuLimit(20))
    assert store.team_vcpus("vision") == 15


def test_concurrent_submissions_of_one_team_never_exceed_its_limit(settings: Settings, new_store: Make) -> None:
    store = new_store()
    container = Container(settings, store=store, cloud=FakeCloud(), authorizer=PermitAll(), confinement=Unconfined())
    fits = 3
    container.swap(policy=container.policy.model_copy(update={"max_team_vcpus": fits * CPU_SMALL_VCPUS + 5}))
    threads, barrier = 10, threading.Barrier(10)
    accepted: list[str] = []
    refused: list[InvalidInputError] = []
    lock = threading.Lock()

    def submit(i: int) -> None:
        request = parse_request(example("cpu-small.json") | {"team": "race", "workspace_name": f"mlw-race-{i:02d}"})
        barrier.wait()
        try:
            rid = container.intake.submit(request=request, caller=PLATFORM, source="test").record.id
            with lock:
                accepted.append(rid)
        except InvalidInputError as exc:
            with lock:
                refused.append(exc)

    workers = [threading.Thread(target=submit, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert len(accepted) == fits, f"{len(accepted)} accepted: the team went over its limit"
    assert len(refused) == threads - fits
    for exc in refused:
        assert [p.field for p in exc.problems] == ["compute"]
        assert "the team limit is 53" in exc.problems[0].message
    assert store.team_vcpus("race") == fits * CPU_SMALL_VCPUS
    live = [r for r in (store.get_request(rid) for rid in accepted) if r is not None and r.status.live]
    assert sum(r.vcpus for r in live) == fits * CPU_SMALL_VCPUS


def test_tables_a_create_whose_answer_was_lost_keeps_its_claims(new_store: Make, store_kind: str) -> None:
    if store_kind != "tables":
        pytest.skip("SQLite commits or rolls back the whole create: there is no half-known outcome")
    from models.errors import TransientError

    store: Any = new_store()
    real_write = store._write_request

    def write_then_lose_the_answer(*args: Any) -> None:
        real_write(*args)
        raise TransientError("the connection was reset", code="StoreUnavailable")

    store._write_request = write_then_lose_the_answer
    keyed = _record("01A", vcpus=10).model_copy(update={"idempotency_key": "k-lost", "workspace_key": "s/rg/ws"})
    with pytest.raises(TransientError):
        store.create_request(keyed, [], vcpu_limit=VcpuLimit(20))
    store._write_request = real_write
    assert store.get_request("01A") is not None
    found = store.find_by_idempotency_key("k-lost")
    assert found is not None and found.id == "01A"  # the caller's retry finds it: no second request
    assert store.team_vcpus("vision") == 10


def test_tables_a_replay_while_its_original_is_created_is_in_flight_not_new(new_store: Make, store_kind: str) -> None:
    if store_kind != "tables":
        pytest.skip("SQLite creates in one transaction: a key is never seen without its request")
    from models.errors import TransientError

    store: Any = new_store(claim_wait_s=0.1)
    # A create that has claimed its key and not yet written its request.
    store._claim_key(_record("01A").model_copy(update={"idempotency_key": "k-busy"}))
    with pytest.raises(TransientError) as info:
        store.find_by_idempotency_key("k-busy")
    assert info.value.code == "IdempotencyKeyInFlight" and info.value.retry_after_s == 2.0


def test_tables_a_request_made_live_again_is_counted_while_its_record_is_written(
    new_store: Make, store_kind: str
) -> None:
    if store_kind != "tables":
        pytest.skip("SQLite holds and writes in one transaction")
    store: Any = new_store()
    store.create_request(_record("01A", vcpus=15), [], vcpu_limit=VcpuLimit(20))
    failed = _move(store, "01A", RequestStatus.FAILED)
    assert store.team_vcpus("vision") == 0
    # An operator's resume holds the share first and writes the record second; a create in between
    # must not prune the fresh share because the record still says failed.
    store._hold_vcpus(failed.model_copy(update={"status": RequestStatus.PROVISIONING}), None)
    with pytest.raises(LimitExceededError):
        store.create_request(_record("01B", vcpus=10), [], vcpu_limit=VcpuLimit(20))
    assert store.team_vcpus("vision") == 15
