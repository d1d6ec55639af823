"""The benchmark's baseline script (bench/baseline.py) builds what the service builds, so the two compare one outcome.

A comparison of makespans and ARM calls means something only when both make the same resources with
the same settings and grant the same roles: this runs the script and the service for two teams on one
emulator and compares what each left, resource by resource, with the team's part of each name taken out.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from bench.baseline import Script
from cloud.provider import AzureProvider
from emulator.server import EmulatorServer
from emulator.state import parse_path
from tests.conftest import example
from tests.contract.conftest import _plan
from tests.contract.lifecycle import applied, held

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# The settings that make a resource what it is, where ARM keeps them (each type's own properties).
SETTINGS = (
    "isHnsEnabled",
    "allowSharedKeyAccess",
    "allowBlobPublicAccess",
    "minimumTlsVersion",
    "supportsHttpsTrafficOnly",
    "enableRbacAuthorization",
    "enablePurgeProtection",
    "softDeleteRetentionInDays",
    "retentionInDays",
    "IngestionMode",
    "Application_Type",
    "vmSize",
    "scaleSettings",
    "datastoreType",
    "containerName",
)


def _settings(body: dict[str, Any]) -> str:
    found: dict[str, Any] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k in SETTINGS:
                    found[k] = v
                walk(v)

    walk(body.get("properties") or {})
    text = repr(sorted({**found, "sku": body.get("sku"), "kind": body.get("kind"), "tags": body.get("tags")}.items()))
    return GUID.sub("<guid>", text)  # a system datastore's container is named after its workspace's id


def _shape(emulator: EmulatorServer, resource_group: str, team: str) -> Counter[str]:
    """What a resource group holds: each resource's type and settings (tags without the team), and each role's grant."""
    shape: Counter[str] = Counter()
    for rid in held(emulator, resource_group):
        p = parse_path(rid)
        body: dict[str, Any] = emulator.state.get(p)
        tags = dict(body.get("tags") or {})
        if "team" in tags:
            tags["team"] = "<team>"
        # The service marks a group it made with the request that made it (so a teardown deletes only its own).
        tags.pop("vending-created-by", None)
        body = body | {"tags": tags or None}
        rtype = p.type.lower()
        if rtype == "microsoft.authorization/roleassignments":
            props = body["properties"]
            scope = parse_path(p.parent_id).type if "/providers/" in p.parent_id.lower() else "resource group"
            role = props["roleDefinitionId"].rsplit("/", 1)[-1]
            shape[f"role {role} on a {scope} for a {props.get('principalType')}"] += 1
        elif rtype == "microsoft.resources/deployments":
            shape["a deployment"] += 1  # named by azure-ai-ml with a timestamp
        else:
            shape[f"{rtype} {_settings(body)}"] += 1
    return shape


def test_the_baseline_script_leaves_what_the_service_leaves(
    provider: AzureProvider, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.ai.ml.constants._common import LROConfigurations

    monkeypatch.setattr(LROConfigurations, "SLEEP_TIME", 0.05)  # azure-ai-ml's 5 s, on the emulator's clock
    service_plan = _plan(example("cpu-small.json") | {"team": "bl-service"})
    script_plan = _plan(example("cpu-small.json") | {"team": "bl-script"})
    applied(provider, service_plan)
    emulator.state.requests.clear()
    Script(emulator.url, str(emulator.ca_bundle), script_plan.names.subscription_id, latency=0.05).vend(script_plan)
    writes = [r for r in emulator.state.requests if r["method"] in ("PUT", "PATCH", "POST")]
    service = _shape(emulator, service_plan.names.resource_group, "bl-service")
    script = _shape(emulator, script_plan.names.resource_group, "bl-script")
    assert sum(script.values()) >= 15, script  # the group, storage and container, vault, insights, workspace, ...
    assert script == service, (sorted((script - service).items()), sorted((service - script).items()))
    # One write per resource and per role, as the service: the same ARM writes for the same outcome.
    assert len(writes) == 15, [(w["method"], w["path"]) for w in writes]
