"""The devhost on the Tables store: `VENDING_STORE=tables` with Azurite, as a user with Azurite runs it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.tables_store import TablesStore, connect
from emulator.server import free_port
from tests.azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from tests.conftest import ROOT, assert_closes_the_timeline, example
from tests.e2e.conftest import Devhost, started_devhost
from tests.e2e.test_devhost import _wait


@pytest.fixture(scope="module")
def tables_devhost(tmp_path_factory: pytest.TempPathFactory, azurite: Azurite) -> Iterator[Devhost]:
    env = {"VENDING_STORE": "tables", "TablesConnection": azurite.connection_string, "VENDING_TABLES_PREFIX": "e2e"}
    with started_devhost(tmp_path_factory.mktemp("devhost-tables"), **env) as host:
        yield host


def test_a_request_is_provisioned_with_its_state_in_tables(tables_devhost: Devhost, azurite: Azurite) -> None:
    banner = (tables_devhost.data_dir / "devhost.log").read_text()
    assert f"Azure Tables at {azurite.endpoint}" in banner and "AccountKey" not in banner
    resp = tables_devhost.http.post(
        "/api/workspaces", json=example("gpu-research.json"), headers={"Idempotency-Key": "tables-e2e-1"}
    )
    assert resp.status_code == 202, resp.text
    rid = resp.json()["id"]
    view = _wait(tables_devhost, rid)
    assert view["status"] == "succeeded", view
    assert len(view["steps"]) == 17 and {s["status"] for s in view["steps"]} == {"succeeded"}
    again = tables_devhost.http.post(
        "/api/workspaces", json=example("gpu-research.json"), headers={"Idempotency-Key": "tables-e2e-1"}
    )
    assert again.status_code == 200 and again.json()["id"] == rid
    listed = tables_devhost.http.get("/api/workspaces", params={"status": "succeeded", "team": "vision"}).json()
    assert [item["id"] for item in listed["items"]] == [rid]
    events = tables_devhost.http.get(f"/api/workspaces/{rid}/events").json()["items"]
    assert events[0]["name"] == "WorkspaceRequestAccepted"
    assert_closes_the_timeline([e["name"] for e in events], "WorkspaceProvisioned")
    # What the API showed is what the tables hold.
    store = TablesStore(connect(connection_string=azurite.connection_string), prefix="e2e", create_tables=False)
    try:
        record = store.get_request(rid)
        assert record is not None and record.status.value == "succeeded"
        assert len(store.get_steps(rid)) == 17 and len(store.list_events(rid)) == len(events)
    finally:
        store.close()


def _start_fails(tmp_path: Path, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "devhost"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "VENDING_DATA_DIR": str(tmp_path), "PORT": str(free_port()), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    return result.stderr


def test_the_devhost_refuses_to_start_without_a_table_service(tmp_path: Path) -> None:
    unreachable = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"TableEndpoint=http://127.0.0.1:{free_port()}/{ACCOUNT};"
    )
    stderr = _start_fails(tmp_path, VENDING_STORE="tables", TablesConnection=unreachable)
    assert "error: cannot start: the state store cannot be reached" in stderr
    assert "Is the Table service at http://127.0.0.1:" in stderr and ACCOUNT_KEY not in stderr
    stderr = _start_fails(tmp_path, VENDING_STORE="tables")
    assert "error: cannot start: the Tables store needs TablesConnection" in stderr
