"""The embedded store: atomic creates, idempotency keys, name reservations, conditional writes, paging."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from adapters.sqlite_store import SqliteStore
from models.errors import ConflictError, StaleWriteError
from models.events import EventName, StatusEvent
from models.plan import StepKind
from models.records import RequestRecord, RequestStatus, StepRecord, StepStatus

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _record(
    rid: str,
    *,
    team: str = "vision",
    key: str | None = None,
    ws: str | None = None,
    status: RequestStatus = RequestStatus.ACCEPTED,
    body_hash: str = "h",
) -> RequestRecord:
    return RequestRecord(
        id=rid,
        status=status,
        team=team,
        environment="dev",
        workspace_name=ws,
        workspace_key=ws,
        idempotency_key=key,
        body_hash=body_hash,
        created_at=NOW,
        updated_at=NOW,
    )


def _steps(rid: str) -> list[StepRecord]:
    return [
        StepRecord(request_id=rid, step_id="resource-group", kind=StepKind.RESOURCE_GROUP, updated_at=NOW),
        StepRecord(
            request_id=rid, step_id="storage", kind=StepKind.STORAGE, depends_on=["resource-group"], updated_at=NOW
        ),
    ]


@pytest.fixture
def store() -> SqliteStore:
    return SqliteStore(":memory:")


def test_create_and_read_back(store: SqliteStore) -> None:
    record, created = store.create_request(_record("01A"), _steps("01A"))
    assert created
    assert store.get_request("01A") == record
    assert [s.step_id for s in store.get_steps("01A")] == ["resource-group", "storage"]
    assert store.get_step("01A", "storage").depends_on == ["resource-group"]  # type: ignore[union-attr]
    assert store.get_request("nope") is None


def test_idempotency_key_same_body_returns_the_first_other_body_conflicts(store: SqliteStore) -> None:
    store.create_request(_record("01A", key="k"), _steps("01A"))
    again, created = store.create_request(_record("01B", key="k"), _steps("01B"))
    assert (again.id, created) == ("01A", False)
    assert store.get_request("01B") is None
    with pytest.raises(ConflictError) as info:
        store.create_request(_record("01C", key="k", body_hash="other"), [])
    assert info.value.code == "IdempotencyKeyReused" and info.value.existing_id == "01A"


def test_a_live_request_holds_its_workspace_name(store: SqliteStore) -> None:
    store.create_request(_record("01A", ws="sub/rg/mlw"), [])
    with pytest.raises(ConflictError) as info:
        store.create_request(_record("01B", ws="sub/rg/mlw"), [])
    assert info.value.code == "WorkspaceNameTaken"
    first = store.get_request("01A")
    assert first is not None
    store.update_request(first.model_copy(update={"status": RequestStatus.FAILED}))
    _, created = store.create_request(_record("01C", ws="sub/rg/mlw"), [])
    assert created  # a failed request gives its name back


def test_conditional_writes_refuse_stale_versions(store: SqliteStore) -> None:
    store.create_request(_record("01A"), _steps("01A"))
    step = store.get_step("01A", "storage")
    assert step is not None
    newer = store.update_step(step.model_copy(update={"status": StepStatus.QUEUED}))
    assert newer.version == step.version + 1
    with pytest.raises(StaleWriteError):
        store.update_step(step.model_copy(update={"status": StepStatus.SKIPPED}))
    assert store.get_step("01A", "storage").status == StepStatus.QUEUED  # type: ignore[union-attr]
    record = store.get_request("01A")
    assert record is not None
    store.update_request(record.model_copy(update={"status": RequestStatus.PROVISIONING}))
    with pytest.raises(StaleWriteError):
        store.update_request(record.model_copy(update={"status": RequestStatus.FAILED}))


def test_many_threads_claiming_one_step_exactly_one_wins(store: SqliteStore) -> None:
    store.create_request(_record("01A"), _steps("01A"))
    pending = store.get_step("01A", "storage")
    assert pending is not None
    wins: list[int] = []
    barrier = threading.Barrier(16)

    def claim(i: int) -> None:
        barrier.wait()
        try:
            store.update_step(pending.model_copy(update={"status": StepStatus.QUEUED, "attempt": 1}))
            wins.append(i)
        except StaleWriteError:
            pass

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_listing_newest_first_with_filters_and_pages(store: SqliteStore) -> None:
    for i in range(7):
        store.create_request(_record(f"01{i}", team="a" if i % 2 else "b"), [])
    page = store.list_requests(limit=3)
    assert [r.id for r in page.items] == ["016", "015", "014"]
    page2 = store.list_requests(limit=3, cursor=page.next_cursor)
    assert [r.id for r in page2.items] == ["013", "012", "011"]
    page3 = store.list_requests(limit=3, cursor=page2.next_cursor)
    assert [r.id for r in page3.items] == ["010"] and page3.next_cursor is None
    assert [r.id for r in store.list_requests(team="a").items] == ["015", "013", "011"]
    assert store.list_requests(status=RequestStatus.FAILED).items == []


def test_stalled_steps_and_events(store: SqliteStore) -> None:
    store.create_request(_record("01A"), _steps("01A"))
    step = store.get_step("01A", "resource-group")
    assert step is not None
    store.update_step(step.model_copy(update={"status": StepStatus.QUEUED, "due_at": NOW}))
    assert [s.step_id for s in store.stalled_steps(before=NOW + timedelta(seconds=1))] == ["resource-group"]
    assert store.stalled_steps(before=NOW - timedelta(seconds=1)) == []
    event = StatusEvent(name=EventName.ACCEPTED, time=NOW, request_id="01A", status="accepted")
    store.append_event(event)
    assert store.list_events("01A") == [event]
