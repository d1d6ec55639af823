"""One contract, two stores: every test here runs on SQLite and on Azure Tables (Azurite).

Atomic creates, idempotency keys, workspace name claims, who made a workspace, conditional writes,
listings and paging, the sweeper's queries, the event timeline, the chat doors' replay guard and the
submission rate limit must behave the same on both.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine.ports import Store, VcpuLimit
from models.errors import ConflictError, LimitExceededError, StaleWriteError
from models.events import EventName, StatusEvent
from models.plan import StepKind
from models.records import Notification, RequestRecord, RequestStatus, StepRecord, StepStatus

NOW = datetime(2026, 1, 1, tzinfo=UTC)
Make = Callable[..., Store]


def record(
    rid: str,
    *,
    team: str = "vision",
    key: str | None = None,
    ws: str | None = None,
    status: RequestStatus = RequestStatus.ACCEPTED,
    body_hash: str = "h",
    updated_at: datetime = NOW,
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
        updated_at=updated_at,
    )


def steps(rid: str, count: int = 2) -> list[StepRecord]:
    first = StepRecord(request_id=rid, step_id="resource-group", kind=StepKind.RESOURCE_GROUP, updated_at=NOW)
    rest = [
        StepRecord(
            request_id=rid,
            step_id="storage" if i == 1 else f"access:{i:04d}",
            kind=StepKind.STORAGE if i == 1 else StepKind.ACCESS,
            depends_on=["resource-group"],
            updated_at=NOW,
        )
        for i in range(1, count)
    ]
    return [first, *rest]


def move(store: Store, rid: str, **update: object) -> RequestRecord:
    current = store.get_request(rid)
    assert current is not None
    return store.update_request(current.model_copy(update=update))


@pytest.fixture
def store(new_store: Make) -> Store:
    return new_store()


def test_create_and_read_back(store: Store) -> None:
    made, created = store.create_request(record("01A"), steps("01A"))
    assert created
    assert store.get_request("01A") == made
    assert [s.step_id for s in store.get_steps("01A")] == ["resource-group", "storage"]
    assert store.get_step("01A", "storage").depends_on == ["resource-group"]  # type: ignore[union-attr]
    assert store.get_request("nope") is None and store.get_steps("nope") == [] and store.get_step("01A", "x") is None


def test_a_request_with_many_steps_keeps_them_all_in_plan_order(store: Store) -> None:
    # 150 steps: more than one entity-group transaction holds on Tables.
    planned = steps("01A", 150)
    store.create_request(record("01A"), planned)
    assert [s.step_id for s in store.get_steps("01A")] == [s.step_id for s in planned]


def test_a_large_request_round_trips(store: Store) -> None:
    # About 200 KB, with characters outside the ASCII and BMP ranges: several chunks on Tables.
    big = record("01A").model_copy(update={"raw": "données 🧪 " * 16_000})
    store.create_request(big, [])
    assert store.get_request("01A") == big
    grown = store.update_request(big.model_copy(update={"outputs": {"log": "x" * 150_000}}))
    assert store.get_request("01A") == grown


def test_idempotency_key_same_body_returns_the_first_other_body_conflicts(store: Store) -> None:
    store.create_request(record("01A", key="k/1 #?"), steps("01A"))
    again, created = store.create_request(record("01B", key="k/1 #?"), steps("01B"))
    assert (again.id, created) == ("01A", False)
    assert store.get_request("01B") is None and store.get_steps("01B") == []
    with pytest.raises(ConflictError) as info:
        store.create_request(record("01C", key="k/1 #?", body_hash="other"), [])
    assert info.value.code == "IdempotencyKeyReused" and info.value.existing_id == "01A"
    assert store.find_by_idempotency_key("k/1 #?") == again
    assert store.find_by_idempotency_key("unused") is None


def test_a_refused_create_does_not_use_up_its_idempotency_key(store: Store) -> None:
    store.create_request(record("01A", ws="sub/rg/mlw"), [])
    with pytest.raises(ConflictError):
        store.create_request(record("01B", key="k", ws="sub/rg/mlw"), [])
    assert store.find_by_idempotency_key("k") is None
    # The requester fixes the name and sends the same key with the corrected body.
    _, created = store.create_request(record("01C", key="k", ws="sub/rg/other", body_hash="fixed"), [])
    assert created


def test_a_live_request_holds_its_workspace_name(store: Store) -> None:
    store.create_request(record("01A", ws="sub/rg/mlw"), [])
    with pytest.raises(ConflictError) as info:
        store.create_request(record("01B", ws="sub/rg/mlw"), [])
    assert info.value.code == "WorkspaceNameTaken" and info.value.existing_id == "01A"
    move(store, "01A", status=RequestStatus.FAILED)
    _, created = store.create_request(record("01C", ws="sub/rg/mlw"), [])
    assert created  # a failed request gives its name back
    with pytest.raises(ConflictError) as info:
        store.create_request(record("01D", ws="sub/rg/mlw"), [])
    assert info.value.existing_id == "01C"


# ----- who made a workspace ----------------------------------------------------------------------


def test_a_workspace_no_request_named_has_no_owner(store: Store) -> None:
    store.create_request(record("01A", ws="sub/rg/mlw"), [])
    assert store.workspace_owner("sub/rg/other") is None
    assert store.workspace_owner("sub/rg2/mlw") is None


def test_the_first_team_to_ask_for_a_workspace_is_its_owner(store: Store) -> None:
    store.create_request(record("01A", team="vision", ws="sub/rg/mlw"), [])
    assert store.workspace_owner("sub/rg/mlw") == "vision"
    move(store, "01A", status=RequestStatus.SUCCEEDED)
    assert store.workspace_owner("sub/rg/mlw") == "vision"


def test_another_team_asking_after_the_first_failed_does_not_become_the_owner(store: Store) -> None:
    store.create_request(record("01A", team="vision", ws="sub/rg/mlw"), [])
    with pytest.raises(ConflictError):
        store.create_request(record("01B", team="speech", ws="sub/rg/mlw"), [])
    assert store.workspace_owner("sub/rg/mlw") == "vision"
    move(store, "01A", status=RequestStatus.FAILED)  # the name is released
    _, created = store.create_request(record("01C", team="speech", ws="sub/rg/mlw"), [])
    assert created
    move(store, "01C", status=RequestStatus.SUCCEEDED)
    assert store.workspace_owner("sub/rg/mlw") == "vision"  # the first owner stays the owner


def test_a_create_refused_by_its_team_limit_records_no_owner(store: Store) -> None:
    greedy = record("01A", team="speech", ws="sub/rg/mlw").model_copy(update={"vcpus": 8})
    with pytest.raises(LimitExceededError):
        store.create_request(greedy, [], vcpu_limit=VcpuLimit(4))
    assert store.workspace_owner("sub/rg/mlw") is None
    store.create_request(record("01B", team="vision", ws="sub/rg/mlw"), [])
    assert store.workspace_owner("sub/rg/mlw") == "vision"


def test_the_owner_is_found_whatever_the_letter_case_of_the_key(store: Store) -> None:
    store.create_request(record("01A", team="vision", ws="sub/rg/mlw"), [])
    store.create_request(record("01B", team="speech", ws="Sub/RG/Mixed"), [])
    assert store.workspace_owner("SUB/RG/MLW") == "vision"
    assert store.workspace_owner("sub/rg/mixed") == "speech"
    assert store.workspace_owner("SUB/rg/MIXED") == "speech"


def test_a_rejected_record_does_not_make_its_team_the_owner(store: Store) -> None:
    store.create_request(record("01A", team="speech", status=RequestStatus.REJECTED), [])
    store.create_request(record("01B", team="speech", ws="sub/rg/mlw", status=RequestStatus.REJECTED), [])
    assert store.workspace_owner("sub/rg/mlw") is None
    store.create_request(record("01C", team="vision", ws="sub/rg/mlw"), [])
    assert store.workspace_owner("sub/rg/mlw") == "vision"


def test_conditional_writes_refuse_stale_versions(store: Store) -> None:
    store.create_request(record("01A"), steps("01A"))
    step = store.get_step("01A", "storage")
    assert step is not None
    newer = store.update_step(step.model_copy(update={"status": StepStatus.QUEUED}))
    assert newer.version == step.version + 1
    with pytest.raises(StaleWriteError):
        store.update_step(step.model_copy(update={"status": StepStatus.SKIPPED}))
    assert store.get_step("01A", "storage").status == StepStatus.QUEUED  # type: ignore[union-attr]
    assert store.update_step(newer.model_copy(update={"status": StepStatus.RUNNING})).version == step.version + 2
    current = store.get_request("01A")
    assert current is not None
    store.update_request(current.model_copy(update={"status": RequestStatus.PROVISIONING}))
    with pytest.raises(StaleWriteError):
        store.update_request(current.model_copy(update={"status": RequestStatus.FAILED}))
    assert store.get_request("01A").status == RequestStatus.PROVISIONING  # type: ignore[union-attr]
    with pytest.raises(StaleWriteError):
        store.update_step(StepRecord(request_id="01A", step_id="nope", kind=StepKind.STORAGE, updated_at=NOW))


def test_a_slow_writer_never_overwrites_a_newer_status(store: Store) -> None:
    store.create_request(record("01A"), steps("01A"))
    seen_by_slow = store.get_step("01A", "storage")
    seen_by_fast = store.get_step("01A", "storage")
    assert seen_by_slow is not None and seen_by_fast is not None
    store.update_step(seen_by_fast.model_copy(update={"status": StepStatus.SUCCEEDED, "outputs": {"id": "x"}}))
    with pytest.raises(StaleWriteError):
        store.update_step(seen_by_slow.model_copy(update={"status": StepStatus.RUNNING}))
    final = store.get_step("01A", "storage")
    assert final is not None and final.status == StepStatus.SUCCEEDED and final.outputs == {"id": "x"}


@pytest.mark.parametrize("threads", [16])
def test_many_threads_claiming_one_step_exactly_one_wins(store: Store, threads: int) -> None:
    store.create_request(record("01A"), steps("01A"))
    pending = store.get_step("01A", "storage")
    assert pending is not None
    wins: list[int] = []
    barrier = threading.Barrier(threads)

    def claim(i: int) -> None:
        barrier.wait()
        try:
            store.update_step(pending.model_copy(update={"status": StepStatus.QUEUED, "attempt": i}))
            wins.append(i)
        except StaleWriteError:
            pass

    workers = [threading.Thread(target=claim, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert len(wins) == 1
    final = store.get_step("01A", "storage")
    assert final is not None and final.attempt == wins[0] and final.version == pending.version + 1


def test_racing_request_writers_leave_one_status_and_one_listing(store: Store) -> None:
    store.create_request(record("01A"), [])
    seen = store.get_request("01A")
    assert seen is not None
    targets = [RequestStatus.PROVISIONING, RequestStatus.FAILED, RequestStatus.SUCCEEDED] * 4
    wins: list[RequestStatus] = []
    barrier = threading.Barrier(len(targets))

    def write(status: RequestStatus) -> None:
        barrier.wait()
        try:
            store.update_request(seen.model_copy(update={"status": status}))
            wins.append(status)
        except StaleWriteError:
            pass

    workers = [threading.Thread(target=write, args=(s,)) for s in targets]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert len(wins) == 1
    final = store.get_request("01A")
    assert final is not None and final.status == wins[0] and final.version == 1
    for status in RequestStatus:
        listed = [r.id for r in store.list_requests(status=status).items]
        assert listed == (["01A"] if status == wins[0] else []), status


def test_listing_newest_first_with_filters_and_pages(store: Store) -> None:
    for i in range(7):
        store.create_request(record(f"01{i}", team="a" if i % 2 else "b"), [])
    page = store.list_requests(limit=3)
    assert [r.id for r in page.items] == ["016", "015", "014"]
    page2 = store.list_requests(limit=3, cursor=page.next_cursor)
    assert [r.id for r in page2.items] == ["013", "012", "011"]
    page3 = store.list_requests(limit=3, cursor=page2.next_cursor)
    assert [r.id for r in page3.items] == ["010"] and page3.next_cursor is None
    assert [r.id for r in store.list_requests(team="a").items] == ["015", "013", "011"]
    assert store.list_requests(team="c").items == []
    assert store.list_requests(status=RequestStatus.FAILED).items == []
    exact = store.list_requests(limit=7)
    assert len(exact.items) == 7 and exact.next_cursor is None


def test_listings_follow_status_changes(store: Store) -> None:
    for i in range(4):
        store.create_request(record(f"01{i}", team="a" if i < 3 else "b"), [])
    move(store, "011", status=RequestStatus.PROVISIONING)
    move(store, "012", status=RequestStatus.PROVISIONING)
    move(store, "012", status=RequestStatus.FAILED)
    move(store, "013", status=RequestStatus.PROVISIONING)

    def ids(**filters: object) -> list[str]:
        return [r.id for r in store.list_requests(**filters).items]  # type: ignore[arg-type]

    assert ids(status=RequestStatus.ACCEPTED) == ["010"]
    assert ids(status=RequestStatus.PROVISIONING) == ["013", "011"]
    assert ids(status=RequestStatus.PROVISIONING, team="a") == ["011"]
    assert ids(status=RequestStatus.FAILED) == ["012"]
    assert sorted(r.id for r in store.live_requests(team="a")) == ["010", "011"]
    assert [r.id for r in store.live_requests(team="b")] == ["013"]
    # A failed request brought back (a replayed dead letter) is listed where it now belongs.
    move(store, "012", status=RequestStatus.PROVISIONING)
    assert ids(status=RequestStatus.PROVISIONING) == ["013", "012", "011"]
    assert ids(status=RequestStatus.FAILED) == []
    assert sorted(r.id for r in store.live_requests(team="a")) == ["010", "011", "012"]


def test_unfinished_requests_and_pending_notifications(store: Store) -> None:
    old, late = NOW, NOW + timedelta(minutes=10)
    store.create_request(record("01A", updated_at=old), [])
    store.create_request(record("01B", updated_at=late), [])
    store.create_request(record("01C", updated_at=old), [])
    move(store, "01C", status=RequestStatus.SUCCEEDED, notification=Notification())
    store.create_request(record("01D", updated_at=old), [])
    move(store, "01D", status=RequestStatus.FAILED, notification=Notification(status="delivered"))
    cut = NOW + timedelta(minutes=1)
    assert [r.id for r in store.unfinished_requests(before=cut)] == ["01A"]
    assert [r.id for r in store.pending_notifications(before=cut)] == ["01C"]
    move(store, "01C", notification=Notification(status="delivered"))
    assert store.pending_notifications(before=cut) == []
    assert len(store.unfinished_requests(before=late + timedelta(seconds=1), limit=1)) == 1


def test_stalled_steps_of_unfinished_requests_only(store: Store) -> None:
    store.create_request(record("01A"), steps("01A"))
    store.create_request(record("01B"), steps("01B"))
    for rid in ("01A", "01B"):
        step = store.get_step(rid, "resource-group")
        assert step is not None
        store.update_step(step.model_copy(update={"status": StepStatus.QUEUED, "due_at": NOW}))
    running = store.get_step("01A", "storage")
    assert running is not None
    store.update_step(
        running.model_copy(update={"status": StepStatus.RUNNING, "lease_until": NOW + timedelta(seconds=30)})
    )
    move(store, "01B", status=RequestStatus.FAILED)
    stalled = store.stalled_steps(before=NOW + timedelta(seconds=1))
    assert [(s.request_id, s.step_id) for s in stalled] == [("01A", "resource-group")]
    later = store.stalled_steps(before=NOW + timedelta(minutes=1))
    assert [(s.request_id, s.step_id) for s in later] == [("01A", "resource-group"), ("01A", "storage")]
    assert store.stalled_steps(before=NOW - timedelta(seconds=1)) == []


def test_events_come_back_in_the_order_they_were_kept(store: Store) -> None:
    store.create_request(record("01A"), [])
    events = [
        StatusEvent(name=name, time=NOW, request_id="01A", status=name.value, message="é 🧪")
        for name in (EventName.ACCEPTED, EventName.STEP_STARTED, EventName.STEP_SUCCEEDED, EventName.PROVISIONED)
    ]
    for event in events:
        store.append_event(event)
    store.append_event(StatusEvent(name=EventName.ACCEPTED, time=NOW, request_id="01B", status="accepted"))
    assert store.list_events("01A") == events
    assert store.list_events("nope") == []


# ----- the replay guard ---------------------------------------------------------------------------


def test_a_key_is_remembered_once_per_scope_until_its_time(store: Store) -> None:
    until = NOW + timedelta(minutes=5)
    assert store.remember_once("slack", "v0=abc", now=NOW, until=until)
    assert not store.remember_once("slack", "v0=abc", now=NOW + timedelta(minutes=4), until=until)
    assert store.remember_once("teams", "v0=abc", now=NOW, until=until)  # scopes are apart
    assert store.remember_once("slack", "v0=abd", now=NOW, until=until)
    # Keys that table keys may not hold (/ \\ # ?), long ones, and non-ASCII ones are kept apart too.
    odd = ["19:x@thread.skype/1?#", "19:x@thread.skype/1?", "é" * 300, "a\\b"]
    assert all(store.remember_once("teams", key, now=NOW, until=until) for key in odd)
    assert not any(store.remember_once("teams", key, now=NOW, until=until) for key in odd)


def test_an_expired_key_is_new_again_and_then_remembered_again(store: Store) -> None:
    assert store.remember_once("slack", "k", now=NOW, until=NOW + timedelta(seconds=10))
    later = NOW + timedelta(seconds=10)
    assert store.remember_once("slack", "k", now=later, until=later + timedelta(seconds=10))
    assert not store.remember_once("slack", "k", now=later + timedelta(seconds=9), until=later)
    # Expired entries of other keys are purged as new ones come; the guard still holds for live ones.
    for i in range(5):
        assert store.remember_once("slack", f"old{i}", now=NOW, until=NOW + timedelta(seconds=1))
    far = NOW + timedelta(hours=1)
    assert store.remember_once("slack", "new", now=far, until=far + timedelta(minutes=5))
    assert all(store.remember_once("slack", f"old{i}", now=far, until=far + timedelta(minutes=5)) for i in range(5))
    assert not store.remember_once("slack", "new", now=far, until=far + timedelta(minutes=5))


def test_of_many_threads_remembering_one_key_exactly_one_is_first(store: Store) -> None:
    threads, firsts = 12, []
    barrier = threading.Barrier(threads)

    def remember(i: int) -> None:
        barrier.wait()
        if store.remember_once("slack", "raced", now=NOW, until=NOW + timedelta(minutes=5)):
            firsts.append(i)

    workers = [threading.Thread(target=remember, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert len(firsts) == 1


def test_of_many_threads_taking_over_one_expired_key_exactly_one_is_first(store: Store) -> None:
    assert store.remember_once("slack", "stale", now=NOW, until=NOW + timedelta(seconds=1))
    later = NOW + timedelta(minutes=1)
    threads, firsts = 12, []
    barrier = threading.Barrier(threads)

    def remember(i: int) -> None:
        barrier.wait()
        if store.remember_once("slack", "stale", now=later, until=later + timedelta(minutes=5)):
            firsts.append(i)

    workers = [threading.Thread(target=remember, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert len(firsts) == 1


@pytest.fixture
def reopened(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[], Any]]:
    """Open the same stored state again, as a restarted instance (or another one) would."""
    opened: list[Any] = []
    if store_kind == "sqlite":
        from adapters.sqlite_store import SqliteStore

        def make() -> Any:
            opened.append(SqliteStore(tmp_path / "state.db"))
            return opened[-1]
    else:
        from adapters.tables_store import TablesStore, connect

        server = request.getfixturevalue("azurite")
        prefix = f"t{uuid.uuid4().hex[:16]}"

        def make() -> Any:
            opened.append(TablesStore(connect(connection_string=server.connection_string), prefix=prefix))
            return opened[-1]

    yield make
    for store in opened:
        close = getattr(store, "close", None)
        if close is not None:
            close()


def test_what_one_instance_remembered_and_took_another_sees_after_a_restart(reopened: Callable[[], Any]) -> None:
    first, until = reopened(), NOW + timedelta(minutes=5)
    assert first.remember_once("slack", "1531420618:v0=a2114d", now=NOW, until=until)
    assert first.take("submit:ada", now=NOW, limit=1, window_s=60) is None
    second = reopened()
    assert not second.remember_once("slack", "1531420618:v0=a2114d", now=NOW, until=until)
    assert second.take("submit:ada", now=NOW, limit=1, window_s=60) == pytest.approx(60)


# ----- the rate limit -----------------------------------------------------------------------------


def test_a_bucket_allows_its_limit_in_any_window_and_says_how_long_to_wait(store: Store) -> None:
    at = [NOW, NOW + timedelta(seconds=10), NOW + timedelta(seconds=20)]
    assert [store.take("submit:ada", now=t, limit=3, window_s=60) for t in at] == [None, None, None]
    assert store.take("submit:ada", now=NOW + timedelta(seconds=30), limit=3, window_s=60) == pytest.approx(30)
    # A refused take is not counted: asking again later is told the same moment.
    assert store.take("submit:ada", now=NOW + timedelta(seconds=50), limit=3, window_s=60) == pytest.approx(10)
    assert store.take("submit:bob", now=NOW + timedelta(seconds=50), limit=3, window_s=60) is None
    # The window slides: once the first take is a minute old, one more is allowed, and no more.
    assert store.take("submit:ada", now=NOW + timedelta(seconds=60), limit=3, window_s=60) is None
    assert store.take("submit:ada", now=NOW + timedelta(seconds=61), limit=3, window_s=60) == pytest.approx(9)
    assert store.take("submit:ada", now=NOW + timedelta(seconds=200), limit=3, window_s=60) is None


def test_limits_a_store_cannot_keep_are_refused(store: Store) -> None:
    for limit, window in [(0, 60.0), (1001, 60.0), (1, 0.0)]:
        with pytest.raises(ValueError, match="must be"):
            store.take("submit:ada", now=NOW, limit=limit, window_s=window)


def test_many_threads_taking_at_once_never_exceed_the_limit_together(store: Store) -> None:
    threads, allowed, waits = 16, [], []
    barrier = threading.Barrier(threads)

    def take(i: int) -> None:
        barrier.wait()
        wait = store.take("submit:raced", now=NOW, limit=5, window_s=60)
        (allowed if wait is None else waits).append(wait)

    workers = [threading.Thread(target=take, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert len(allowed) == 5
    assert waits == [pytest.approx(60)] * (threads - 5)
