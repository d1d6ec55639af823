"""The exact ARM requests the provider sends for each step kind, compared with fixtures in tests/events/arm/.

Run with UPDATE_ARM_FIXTURES=1 to write the fixtures anew after a deliberate change, and review the diff.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest

from cloud.provider import AzureProvider
from emulator.server import EmulatorServer
from models.outcomes import Done
from tests.conftest import ROOT, example
from tests.contract.conftest import _plan, drive

FIXTURES = ROOT / "tests" / "events" / "arm"
UPDATE = os.environ.get("UPDATE_ARM_FIXTURES") == "1"


def _normalise(call: dict[str, Any]) -> dict[str, Any]:
    """Drop what changes from run to run: azure-ai-ml's random deployment suffix, its version, its template text."""
    out = dict(call)
    out["path"] = re.sub(r"(/deployments/mlw-[a-z0-9-]+?)-\d+", r"\1-<n>", call["path"])
    body = call.get("body")
    if isinstance(body, dict) and "template" in (body.get("properties") or {}):
        props = dict(body["properties"])
        props["template"] = "<azure-ai-ml workspace_base.json>"
        params = {
            k: v.get("value") for k, v in (props.get("parameters") or {}).items() if v.get("value") not in ("", None)
        }
        if isinstance(params.get("tagValues"), dict):
            params["tagValues"] = {k: v for k, v in params["tagValues"].items() if k != "createdByToolkit"}
        props["parameters"] = params
        out["body"] = {**body, "properties": props}
    return out


@pytest.fixture(scope="module")
def captured(provider: AzureProvider, emulator: EmulatorServer) -> dict[str, list[dict[str, Any]]]:
    p = _plan(example("gpu-research.json") | {"team": "fixtures"})
    outputs: dict[str, dict[str, Any]] = {}
    calls: dict[str, list[dict[str, Any]]] = {}
    for step in p.steps:
        emulator.state.requests.clear()
        assert isinstance(drive(provider, p, step.id, outputs), Done), step.id
        calls[step.id] = [_normalise(c) for c in emulator.state.requests]
    return calls


STEPS = [
    "resource-group",
    "storage",
    "key-vault",
    "insights",
    "registry",
    "workspace",
    "compute:gpu-cluster",
    "compute:ada-notebook",
    "datastore:lake",
    "datastore:shared_files",
    "access:7d8e9f0a-1b2c-4d3e-8f4a-5b6c7d8e9f0a",
    "access:workspace",
    "access:compute:gpu-cluster",
]


@pytest.mark.parametrize("step_id", STEPS)
def test_requests_match_the_fixture(captured: dict[str, list[dict[str, Any]]], step_id: str) -> None:
    path = FIXTURES / (re.sub(r"[^a-z0-9_-]", "-", step_id) + ".json")
    if UPDATE:
        path.write_text(json.dumps(captured[step_id], indent=2, sort_keys=True) + "\n")
    expected = json.loads(path.read_text())
    assert captured[step_id] == expected


def test_what_the_bodies_promise(captured: dict[str, list[dict[str, Any]]]) -> None:
    storage = captured["storage"][0]  # the account itself comes first, then its containers and shares
    props = storage["body"]["properties"]
    assert props["isHnsEnabled"] is True and props["allowSharedKeyAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2" and props["allowBlobPublicAccess"] is False
    vault = next(c for c in captured["key-vault"] if c["method"] == "PUT")["body"]["properties"]
    assert vault["enableRbacAuthorization"] is True and vault["enablePurgeProtection"] is True
    assert vault["softDeleteRetentionInDays"] == 90
    gpu = next(c for c in captured["compute:gpu-cluster"] if c["method"] == "PUT")["body"]["properties"]
    assert gpu["computeType"] == "AmlCompute"
    assert gpu["properties"]["vmPriority"] == "LowPriority" and gpu["properties"]["scaleSettings"]["maxNodeCount"] == 2
    lake = next(c for c in captured["datastore:lake"] if c["method"] == "PUT")["body"]["properties"]
    assert lake["datastoreType"] == "AzureDataLakeGen2" and lake["credentials"]["credentialsType"] == "None"
    deployment = next(c for c in captured["workspace"] if c["method"] == "PUT")
    assert deployment["path"].endswith("/providers/Microsoft.Resources/deployments/mlw-fixtures-test-<n>")
    assert deployment["body"]["properties"]["parameters"]["storageAccountOption"] == "existing"
