"""What only the Tables store has to prove: crash leftovers, entity limits, paging, keys and errors."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.tables_store import (
    CHUNK_UNITS,
    TablesStore,
    _digest,
    connect,
    inverted,
    split_body,
    table_names,
)
from models.errors import ConflictError, InvalidInputError, PermanentError, TransientError
from models.records import RequestStatus
from tests.azurite import ACCOUNT, Azurite
from tests.callers import ALICE_OID, PermitAll, Unconfined, bearer
from tests.conftest import tables_store
from tests.contract.test_store_contract import record, steps


@pytest.fixture
def tables(azurite: Azurite) -> Iterator[Any]:
    made: list[TablesStore] = []

    def make(**options: Any) -> TablesStore:
        store: TablesStore = tables_store(azurite, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def _crash_after_claims(store: TablesStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next create die after its claims and pointers, before the request is written."""

    def die(*args: object) -> None:
        raise SystemExit("the worker process died")

    monkeypatch.setattr(store, "_write_request", die)
    monkeypatch.setattr(store, "_release", lambda claim: None)  # a dead process releases nothing


def test_an_idempotency_key_left_by_a_crashed_create_is_busy_then_taken_over(
    tables: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: TablesStore = tables(claim_wait_s=0.2)
    with monkeypatch.context() as patch:
        _crash_after_claims(store, patch)
        with pytest.raises(SystemExit):
            store.create_request(record("01A", key="k", ws="sub/rg/mlw"), steps("01A"))
    assert store.get_request("01A") is None and store.list_requests().items == []
    with pytest.raises(TransientError) as busy:
        store.create_request(record("01B", key="k", ws="sub/rg/mlw"), steps("01B"))
    assert busy.value.code == "IdempotencyKeyInFlight" and busy.value.retry_after_s
    # After the grace period the claims are taken over and the retry creates the request.
    store.claim_grace = timedelta(0)
    made, created = store.create_request(record("01B", key="k", ws="sub/rg/mlw"), steps("01B"))
    assert created and store.find_by_idempotency_key("k") == made
    assert [r.id for r in store.list_requests().items] == ["01B"]
    with pytest.raises(ConflictError) as taken:
        store.create_request(record("01C", ws="sub/rg/mlw"), [])
    assert taken.value.existing_id == "01B"


def test_a_workspace_claim_left_by_a_crash_holds_only_for_the_grace_period(
    tables: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: TablesStore = tables()
    with monkeypatch.context() as patch:
        _crash_after_claims(store, patch)
        with pytest.raises(SystemExit):
            store.create_request(record("01A", ws="sub/rg/mlw"), [])
    with pytest.raises(ConflictError) as held:
        store.create_request(record("01B", ws="sub/rg/mlw"), [])
    assert held.value.code == "WorkspaceNameTaken" and held.value.existing_id == "01A"
    store.claim_grace = timedelta(0)
    assert store.create_request(record("01B", ws="sub/rg/mlw"), [])[1]
    # Pointers left by the crashed create point at nothing: skipped, then pruned.
    assert [r.id for r in store.list_requests().items] == ["01B"]
    left = [e["RequestId"] for e in store.index.query_entities("PartitionKey eq 'all'")]
    assert left == ["01B"]


def test_a_workspace_owner_stays_when_its_teams_create_fails_and_the_name_is_released(
    tables: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: TablesStore = tables()

    def lost(*args: object) -> None:
        raise TransientError("the connection was reset", code="StoreUnavailable")

    with monkeypatch.context() as patch:
        patch.setattr(store, "_write_request", lost)
        with pytest.raises(TransientError):
            store.create_request(record("01A", team="vision", ws="sub/rg/mlw"), [])
    # The name claim went back (another team may ask for the name at once), the owner did not.
    assert store.get_request("01A") is None
    assert store.create_request(record("01B", team="speech", ws="sub/rg/mlw"), [])[1]
    assert store.workspace_owner("sub/rg/mlw") == "vision"
    owner = store.index.get_entity(f"workspace-owner-{_digest('sub/rg/mlw')}", "owner")
    assert (owner["Team"], owner["RequestId"]) == ("vision", "01A")


def test_a_pointer_left_by_a_writer_that_died_is_ignored_and_pruned(tables: Any) -> None:
    store: TablesStore = tables()
    store.create_request(record("01A"), [])
    current = store.get_request("01A")
    assert current is not None
    # A writer added the pointer for its new status, then died before writing the record.
    store._add_pointer("status-failed", current.model_copy(update={"version": 1}))
    assert store.list_requests(status=RequestStatus.FAILED).items == []
    moved = store.update_request(current.model_copy(update={"status": RequestStatus.PROVISIONING}))
    store.update_request(moved.model_copy(update={"status": RequestStatus.SUCCEEDED}))
    assert store.list_requests(status=RequestStatus.FAILED).items == []  # label 1 < version 2: pruned
    assert list(store.index.query_entities("PartitionKey eq 'status-failed'")) == []


def test_listings_follow_the_services_continuation_tokens(tables: Any) -> None:
    store: TablesStore = tables(page_size=3)
    for i in range(11):
        store.create_request(record(f"01{i:02d}"), [])
    pager = store.index.query_entities("PartitionKey eq 'all'", results_per_page=3).by_page()
    next(iter(next(pager)))
    assert pager.continuation_token  # the service answered in pages
    assert [r.id for r in store.list_requests(limit=50).items] == [f"01{i:02d}" for i in reversed(range(11))]
    assert len(store.live_requests(team="vision")) == 11
    assert len(store.unfinished_requests(before=datetime.now(UTC) + timedelta(days=3650))) == 11
    page = store.list_requests(limit=4)
    second = store.list_requests(limit=4, cursor=page.next_cursor)
    assert [r.id for r in second.items] == ["0106", "0105", "0104", "0103"]


def test_a_request_too_large_for_an_entity_is_refused_clearly(tables: Any) -> None:
    store: TablesStore = tables()
    huge = record("01A").model_copy(update={"request": {"notes": "x" * 600_000}})
    with pytest.raises(InvalidInputError) as refused:
        store.create_request(huge, [])
    problem = refused.value.problems[0]
    assert problem.field == "(body)" and "too large" in problem.message and "at most 960,000" in problem.message
    assert store.get_request("01A") is None
    store.create_request(record("01A"), [])
    current = store.get_request("01A")
    assert current is not None
    with pytest.raises(PermanentError) as too_big:
        store.update_request(current.model_copy(update={"outputs": {"log": "y" * 600_000}}))
    assert too_big.value.code == "RecordTooLarge"


def test_bodies_split_by_utf16_units_and_join_back() -> None:
    rng = random.Random(7)
    alphabet = ["a", "é", "中", "🧪", "\U0010fffd"]
    for size in (0, 1, CHUNK_UNITS - 1, CHUNK_UNITS, CHUNK_UNITS + 1, 3 * CHUNK_UNITS + 5):
        text = "".join(rng.choice(alphabet) for _ in range(size))
        chunks = split_body(text)
        assert "".join(chunks) == text
        assert all(len(c.encode("utf-16-le")) // 2 <= CHUNK_UNITS for c in chunks)


def test_inverted_ids_sort_newest_first() -> None:
    rng = random.Random(3)
    ids = {
        "".join(rng.choice("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for _ in range(rng.randint(1, 6))) for _ in range(500)
    }
    assert sorted(ids, key=inverted) == sorted(ids, reverse=True)


def test_keys_that_tables_forbid_are_hashed() -> None:
    assert _digest("k/1 #?") == _digest("k/1 #?") and "/" not in _digest("k/1 #?")
    with pytest.raises(PermanentError, match="prefix must be letters and digits"):
        table_names("bad-prefix")


def test_an_unreachable_store_is_transient_and_a_wrong_key_is_access_denied(azurite: Azurite) -> None:
    from emulator.server import free_port

    closed = connect(
        connection_string=azurite.connection_string.replace(str(azurite.port), str(free_port())), timeout_s=1
    )
    with pytest.raises(TransientError) as down:
        TablesStore(closed, prefix="unreachable")
    assert down.value.code == "StoreUnavailable" and "cannot be reached" in str(down.value)
    wrong = connect(
        connection_string=f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};"
        f"AccountKey={'A' * 86}==;TableEndpoint={azurite.endpoint};"
    )
    with pytest.raises(PermanentError) as denied:
        TablesStore(wrong, prefix="denied")
    assert denied.value.code == "StoreAccessDenied" and "Storage Table Data Contributor" in str(denied.value)


def test_the_api_answers_503_with_retry_after_while_the_store_is_down(settings: Any) -> None:
    import httpx

    from composition import Container
    from engine.intake import rest_key
    from handlers.api import create_api
    from tests.conftest import example, served
    from tests.fakes import FakeCloud

    server = Azurite().start()
    with ExitStack() as stack:
        stack.callback(server.stop)
        store = TablesStore(connect(connection_string=server.connection_string, timeout_s=1), claim_wait_s=0.1)
        container = Container(
            settings, store=store, cloud=FakeCloud(), authorizer=PermitAll(), confinement=Unconfined()
        )
        client = stack.enter_context(
            httpx.Client(base_url=stack.enter_context(served(create_api(lambda: container))), headers=bearer(container))
        )
        body = example("cpu-small.json")
        first = client.post("/api/workspaces", json=body, headers={"Idempotency-Key": "k1"})
        assert first.status_code == 202, first.text
        # A create that died after claiming its key: the same key is "in flight" for the grace period.
        store.index.upsert_entity(
            {
                "PartitionKey": f"key-{_digest(rest_key(ALICE_OID, 'k2'))}",
                "RowKey": "idempotency",
                "RequestId": "01DEAD",
                "BodyHash": "h",
                "ClaimedAt": datetime.now(UTC),
            }
        )
        busy = client.post("/api/workspaces", json=body | {"team": "other"}, headers={"Idempotency-Key": "k2"})
        assert busy.status_code == 503 and busy.headers["content-type"] == "application/problem+json"
        assert busy.headers["retry-after"] == "2" and "still being created" in busy.json()["detail"]
        server.stop()
        down = client.post("/api/workspaces", json=body | {"team": "third"}, headers={"Idempotency-Key": "k3"})
        assert down.status_code == 503 and down.headers["content-type"] == "application/problem+json"
        assert int(down.headers["retry-after"]) >= 1
        assert "cannot be reached" in down.json()["detail"] and "Idempotency-Key" in down.json()["detail"]
        assert client.get(f"/api/workspaces/{first.json()['id']}").status_code == 503


class _Response:
    """Just enough of an azure-core HTTP response for its error classes."""

    def __init__(self, status: int, headers: dict[str, str] | None = None, code: str = "ServerBusy") -> None:
        self.status_code = status
        self.reason = "reason"
        self.headers = headers or {}
        self.content_type = "application/json"
        self._body = f'{{"odata.error": {{"code": "{code}", "message": {{"value": "detail"}}}}}}'
        self.request = None

    def text(self, encoding: str | None = None) -> str:
        return self._body

    def body(self) -> bytes:
        return self._body.encode()


@pytest.mark.parametrize(
    ("status", "headers", "expected", "code"),
    [
        (503, {"Retry-After": "7"}, TransientError, "StoreUnavailable"),
        (429, {}, TransientError, "StoreUnavailable"),
        (500, {}, TransientError, "StoreUnavailable"),
        (403, {}, PermanentError, "StoreAccessDenied"),
        (400, {}, PermanentError, "StoreError"),
    ],
)
def test_service_errors_are_translated(status: int, headers: dict[str, str], expected: type, code: str) -> None:
    from azure.core.exceptions import HttpResponseError

    from adapters.tables_store import translated

    with pytest.raises(expected) as info, translated("reading request 01A"):
        raise HttpResponseError(response=_Response(status, headers))  # type: ignore[arg-type]
    assert info.value.code == code and "reading request 01A" in str(info.value)
    if headers:
        assert info.value.retry_after_s == 7.0


def test_expired_remembered_keys_are_purged_and_an_outage_is_transient(tables: Any) -> None:
    store: TablesStore = tables()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(5):
        assert store.remember_once("slack", f"old{i}", now=now, until=now + timedelta(seconds=1))
    later = now + timedelta(hours=1)
    assert store.remember_once("slack", "new", now=later, until=later + timedelta(minutes=5))
    left = [e["RowKey"] for e in store.index.query_entities("PartitionKey eq 'once-slack'")]
    assert left == ["new"]


def test_the_replay_guard_and_the_rate_limit_are_transient_while_the_store_is_down() -> None:
    server = Azurite().start()
    try:
        store = TablesStore(connect(connection_string=server.connection_string, timeout_s=1))
        server.stop()
        now = datetime.now(UTC)
        with pytest.raises(TransientError) as guard:
            store.remember_once("slack", "k", now=now, until=now + timedelta(minutes=5))
        with pytest.raises(TransientError) as limit:
            store.take("submit:ada", now=now, limit=1, window_s=60)
        assert guard.value.code == limit.value.code == "StoreUnavailable"
        assert "remembering a slack key" in str(guard.value) and "rate limit submit:ada" in str(limit.value)
    finally:
        server.stop()
