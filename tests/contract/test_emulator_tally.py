"""The emulator counts every ARM call by kind of operation and resource type (what `make bench` reports).

ARM's throttling buckets are per kind of operation (reads, writes, deletes: Microsoft Learn, "Understand
how Azure Resource Manager throttles requests"), so the count is kept the same way; a poll of an async
operation is a read, counted against the resource it works on; a throttled call is counted apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.server import EmulatorServer
from emulator.state import Config
from tests.conftest import poll
from tests.contract.conftest import STORAGE_BODY, SUB
from tests.contract.lifecycle import arm as client

RG = f"/subscriptions/{SUB}/resourceGroups/rg-tally"
ACCOUNT = f"{RG}/providers/Microsoft.Storage/storageAccounts/sttally001"
STORAGE_API = "2026-09-01"  # azure-mgmt-storage 25.3
RG_API = "2025-04-01"


@pytest.fixture
def arm(tmp_path: Path) -> Iterator[EmulatorServer]:
    server = EmulatorServer(data_dir=tmp_path, config=Config(latency_s=0.05)).start()
    yield server
    server.stop()


def _tally(http: httpx.Client) -> dict[tuple[str, str, bool, bool], int]:
    rows: list[dict[str, Any]] = http.get("/_emulator/stats").json()["calls_by_type"]
    return {(r["operation"], r["type"].lower(), r["poll"], r["throttled"]): r["count"] for r in rows}


def test_calls_are_counted_by_kind_type_and_poll(arm: EmulatorServer) -> None:
    with client(arm) as http:
        assert http.put(f"{RG}?api-version={RG_API}", json={"location": "westeurope"}).status_code in (200, 201)
        created = http.put(f"{ACCOUNT}?api-version={STORAGE_API}", json=STORAGE_BODY | {"location": "westeurope"})
        assert created.status_code == 202, created.text
        status_url = created.headers["Azure-AsyncOperation"]
        polls = 0

        def finished() -> bool:
            nonlocal polls
            polls += 1
            return http.get(status_url).json()["status"] == "Succeeded"

        poll(finished, timeout=10, what="the storage account's create")
        assert http.get(f"{ACCOUNT}?api-version={STORAGE_API}").status_code == 200
        assert http.delete(f"{ACCOUNT}?api-version={STORAGE_API}").status_code in (200, 204)
        http.get(status_url)  # the create's operation, asked after the account is gone: still the account's
        polls += 1
        tally = _tally(http)
    storage = "microsoft.storage/storageaccounts"
    assert tally[("writes", "microsoft.resources/resourcegroups", False, False)] == 1
    assert tally[("writes", storage, False, False)] == 1
    assert tally[("reads", storage, True, False)] == polls  # each status poll, against the account it creates
    assert tally[("reads", storage, False, False)] == 1
    assert tally[("deletes", storage, False, False)] == 1
    assert not any(throttled for (_, _, _, throttled) in tally)


def test_a_throttled_call_is_counted_as_throttled(arm: EmulatorServer) -> None:
    with client(arm) as http:
        limits = {"subscription_reads": {"size": 1, "refill_per_s": 0.001}}
        assert http.put("/_emulator/config", json={"throttling": limits}).status_code == 200
        assert http.get(f"{RG}?api-version={RG_API}").status_code == 404  # the one token: the group is not there
        assert http.get(f"{RG}?api-version={RG_API}").status_code == 429
        tally = _tally(http)
    group = "microsoft.resources/resourcegroups"
    assert tally[("reads", group, False, False)] == 1
    assert tally[("reads", group, False, True)] == 1


def test_calls_let_through_are_counted_per_subscription(arm: EmulatorServer) -> None:
    other = "22222222-2222-2222-2222-222222222222"
    with client(arm) as http:
        assert http.put(f"{RG}?api-version={RG_API}", json={"location": "westeurope"}).status_code in (200, 201)
        assert http.get(f"{RG}?api-version={RG_API}").status_code == 200
        assert http.get(f"/subscriptions/{other}/resourceGroups/rg-none?api-version={RG_API}").status_code == 404
        limits = {"subscription_reads": {"size": 0, "refill_per_s": 0.001}}
        assert http.put("/_emulator/config", json={"throttling": limits}).status_code == 200
        assert http.get(f"/subscriptions/{other}/resourceGroups/rg-none?api-version={RG_API}").status_code == 429
        by_subscription = http.get("/_emulator/stats").json()["calls_by_subscription"]
    # A throttled call is not one the subscription's bucket admitted.
    assert by_subscription == {SUB.lower(): {"reads": 1, "writes": 1}, other: {"reads": 1}}
