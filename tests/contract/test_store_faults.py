"""Store faults: a store that cannot be written answers 503 with Retry-After, and health says which part and why.

Tests run as root, where file modes do not stop writes, so the faults come from SQLite itself:
`PRAGMA query_only` answers SQLITE_READONLY ("attempt to write a readonly database"), as a file the
service may not write does; `PRAGMA max_page_count` answers SQLITE_FULL ("database or disk is full"),
as a full disk does; a write lock held by another connection past the busy timeout, and a folder
that went away, are the real thing.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.sqlite_base import SqliteDatabase
from adapters.sqlite_bus import SqliteBus
from adapters.sqlite_store import SCHEMA, SqliteStore
from composition import Container
from handlers.api import create_api
from models.errors import TransientError
from models.settings import Settings
from tests.azurite import Azurite
from tests.callers import PermitAll, Unconfined, bearer
from tests.conftest import example, served
from tests.fakes import FakeCloud

BODY = example("cpu-small.json")


class Disk(SqliteDatabase):
    """The store's database file, met as a read-only or a full disk by connections opened while `fault` is set.

    A connection keeps what it met when it was opened, as SQLite's read-only open does.
    """

    def __init__(self, path: Path, *, fault: str | None = None, busy_timeout_s: float = 30.0) -> None:
        self.fault = fault
        super().__init__(path, SCHEMA, busy_timeout_s=busy_timeout_s)

    def _connect(self) -> Any:
        conn = super()._connect()
        if self.fault == "read-only":
            conn.execute("PRAGMA query_only = ON")
        elif self.fault == "full":
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    def fails(self, fault: str | None) -> None:
        """Make the disk fail under every connection, open ones too (a remount, a disk filling up)."""
        self.fault = fault
        self.reopen()


@pytest.fixture
def data(settings: Settings) -> Path:
    """The state file, with its tables (a store made before the fault)."""
    path = settings.data_dir / "state" / "state.db"
    SqliteStore(path)
    return path


@contextmanager
def serving(settings: Settings, store: Any) -> Iterator[httpx.Client]:
    """Serve the API over loopback HTTP on `store`, with the embedded bus and a fake cloud."""
    container = Container(
        settings,
        store=store,
        bus=SqliteBus(":memory:"),
        cloud=FakeCloud(),
        authorizer=PermitAll(),
        confinement=Unconfined(),
    )
    with (
        served(create_api(lambda: container)) as url,
        httpx.Client(base_url=url, timeout=30, headers=bearer(container)) as client,
    ):
        yield client


@pytest.fixture
def api(settings: Settings, data: Path) -> Iterator[tuple[httpx.Client, SqliteStore]]:
    """The API on a SQLite store whose disk the test controls (`store.db` is a `Disk`)."""
    store = SqliteStore(data)
    store.db = Disk(data)
    with serving(settings, store) as client:
        yield client, store


def _team(i: int) -> dict[str, Any]:
    return BODY | {"team": f"faults{i}"}


def _assert_503(response: Any, *, retry_after: str, says: str, path: Path) -> dict[str, Any]:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == retry_after
    body: dict[str, Any] = response.json()
    assert body["status"] == 503 and says in body["detail"] and str(path) in body["detail"], body
    return body


# ----- the SQLite layer ------------------------------------------------------------------------


def _holding_the_write_lock(path: Path) -> sqlite3.Connection:
    """Another process's connection in the middle of a write."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


@pytest.mark.parametrize(
    ("fault", "code", "retry_after_s", "says"),
    [
        ("read-only", "StoreReadOnly", 30.0, "is read-only for this service"),
        ("full", "StoreFull", 30.0, "is full: free space on it"),
        ("locked", "StoreLocked", 2.0, "stayed locked by another connection for more than 0.1 s"),
    ],
)
def test_sqlite_faults_become_transient_errors_that_name_the_file(
    data: Path, fault: str, code: str, retry_after_s: float, says: str
) -> None:
    disk = Disk(data, busy_timeout_s=0.1)
    holder = None
    if fault == "locked":
        holder = _holding_the_write_lock(data)
    else:
        disk.fails(fault)
    with pytest.raises(TransientError) as raised, disk.transaction() as conn:
        conn.execute("INSERT INTO events (request_id, body) VALUES ('r', ?)", ("x" * 20_000,))
    assert raised.value.code == code and raised.value.retry_after_s == retry_after_s
    assert says in str(raised.value) and str(data) in str(raised.value)
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    # The fault did not leave the connection in a transaction: once it clears, writes work again.
    if holder is not None:
        holder.execute("ROLLBACK")
    disk.fault = None
    with disk.transaction() as conn:
        conn.execute("INSERT INTO events (request_id, body) VALUES ('r', 'y')")
    assert disk.conn().execute("SELECT count(*) FROM events").fetchone()[0] == 1


def test_a_database_that_cannot_be_opened_is_a_transient_error_that_says_where(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    disk = Disk(folder / "state.db")
    folder.rename(tmp_path / "moved")  # the folder went away while the service ran
    disk.reopen()
    with pytest.raises(TransientError) as raised:
        disk.conn().execute("SELECT 1")
    assert raised.value.code == "StoreCannotOpen" and str(folder / "state.db") in str(raised.value)
    (tmp_path / "blocker").write_text("a file where the data folder should be")
    with pytest.raises(TransientError) as refused:
        SqliteDatabase(tmp_path / "blocker" / "state.db", SCHEMA)
    assert refused.value.code == "StoreCannotOpen" and "cannot be created" in str(refused.value)


def test_a_connection_opened_on_a_read_only_file_is_replaced_once_the_file_is_fixed(data: Path) -> None:
    disk = Disk(data, fault="read-only")
    with pytest.raises(TransientError), disk.transaction() as conn:
        conn.execute("INSERT INTO events (request_id, body) VALUES ('r', 'x')")
    disk.fault = None  # fixed; this thread's connection was opened read-only
    with disk.transaction() as conn:
        conn.execute("INSERT INTO events (request_id, body) VALUES ('r', 'x')")
    disk.probe()


# ----- the API ---------------------------------------------------------------------------------


def test_a_read_only_store_answers_503_and_fails_the_health_check_until_it_is_fixed(
    api: tuple[httpx.Client, SqliteStore], data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client, store = api
    assert isinstance(store.db, Disk)
    first = client.post("/api/workspaces", json=_team(0))
    assert first.status_code == 202, first.text
    assert client.get("/api/health").status_code == 200
    caplog.set_level(logging.INFO)
    store.db.fails("read-only")
    for i in range(1, 4):
        _assert_503(
            client.post("/api/workspaces", json=_team(i), headers={"Idempotency-Key": f"k{i}"}),
            retry_after="30",
            says="is read-only for this service",
            path=data,
        )
    for _ in range(2):
        health = _assert_503(client.get("/api/health"), retry_after="30", says="read-only", path=data)
        assert health["detail"].startswith("store: the SQLite database")
        assert [c for c in health["checks"] if c["part"] == "store"] == [
            {"part": "store", "ok": False, "code": "StoreReadOnly", "reason": health["detail"].removeprefix("store: ")}
        ]
    assert client.get(f"/api/workspaces/{first.json()['id']}").status_code == 200  # reading still works
    said = [r for r in caplog.records if "StoreReadOnly" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    assert said[0].levelno == logging.WARNING and str(data) in said[0].getMessage()
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []

    store.db.fault = None  # the operator made the file writable again; the service was not restarted
    healthy = client.get("/api/health")
    assert healthy.status_code == 200, healthy.text
    assert {"part": "store", "ok": True} in healthy.json()["checks"] and healthy.json()["status"] == "ok"
    assert client.post("/api/workspaces", json=_team(1), headers={"Idempotency-Key": "k1"}).status_code == 202
    assert len([r for r in caplog.records if "the store works again" in r.getMessage()]) == 1


def test_a_full_disk_answers_503_with_retry_after(api: tuple[httpx.Client, SqliteStore], data: Path) -> None:
    client, store = api
    assert client.post("/api/workspaces", json=_team(0)).status_code == 202
    assert isinstance(store.db, Disk)
    store.db.fails("full")
    _assert_503(client.post("/api/workspaces", json=_team(1)), retry_after="30", says="is full", path=data)
    store.db.fails(None)  # space was freed
    assert client.post("/api/workspaces", json=_team(1)).status_code == 202


def test_a_store_locked_past_its_busy_timeout_answers_503_and_health_names_it(settings: Settings, data: Path) -> None:
    store = SqliteStore(data)
    store.db = SqliteDatabase(data, SCHEMA, busy_timeout_s=0.2)
    with serving(settings, store) as client:
        holder = _holding_the_write_lock(data)
        _assert_503(client.post("/api/workspaces", json=_team(0)), retry_after="2", says="locked", path=data)
        health = _assert_503(client.get("/api/health"), retry_after="2", says="locked", path=data)
        assert {"part": "store", "ok": False, "code": "StoreLocked"}.items() <= health["checks"][0].items()
        assert client.get("/api/workspaces").status_code == 200  # readers are not blocked by a writer
        holder.execute("ROLLBACK")
        assert client.get("/api/health").status_code == 200
        assert client.post("/api/workspaces", json=_team(0)).status_code == 202


@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("POST", "/api/workspaces"),
        ("GET", "/api/workspaces/{id}"),
        ("GET", "/api/workspaces"),
        ("GET", "/api/workspaces/{id}/events"),
        ("GET", "/api/health"),
    ],
)
def test_every_route_that_needs_the_store_answers_503_when_it_cannot_be_opened(
    api: tuple[httpx.Client, SqliteStore], data: Path, method: str, route: str
) -> None:
    client, store = api
    made = client.post("/api/workspaces", json=_team(0))
    assert made.status_code == 202
    data.parent.rename(data.parent.with_name("moved"))  # the data folder went away under the service
    store.db.reopen()
    answer = client.request(method, route.format(id=made.json()["id"]), json=_team(1) if method == "POST" else None)
    _assert_503(answer, retry_after="30", says="cannot be opened", path=data)


# ----- the Tables store ------------------------------------------------------------------------


def test_the_health_check_writes_to_the_tables_store_and_fails_when_it_is_unreachable(settings: Settings) -> None:
    from adapters.tables_store import TablesStore, connect

    with ExitStack() as stack:
        server = Azurite().start()
        stack.callback(server.stop)
        store = TablesStore(connect(connection_string=server.connection_string, timeout_s=1), prefix="health")
        stack.callback(store.close)
        client = stack.enter_context(serving(settings, store))
        healthy = client.get("/api/health")
        assert healthy.status_code == 200 and {"part": "store", "ok": True} in healthy.json()["checks"]
        written = store.index.get_entity("probe", "health")
        assert written["At"] is not None
        server.stop()
        down = client.get("/api/health")
        assert down.status_code == 503 and down.headers["content-type"] == "application/problem+json"
        body = down.json()
        assert body["detail"].startswith("store: the state store cannot be reached"), body
        assert {"part": "store", "ok": False, "code": "StoreUnavailable"}.items() <= body["checks"][0].items()
