"""Azure ML usages (Usages_List) as the spec shows them, in the emulator and in the quota pre-flight.

The spec example is tests/events/arm/usages-list.json (machineLearningServices 2024-04-01,
examples/Usage/list.json): names like "Standard DSv2 Family Cluster Dedicated vCPUs", regional totals,
repeats per workspace and compute, and limit -1 for per-family low priority.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from adapters.sqlite_bus import SqliteBus
from adapters.sqlite_store import SqliteStore
from cloud.clients import emulator_endpoint
from cloud.credentials import EmulatorCredential
from cloud.preflight import ML_API, ArmPreflight, Demand, Usage, UsagePage, quota_problems
from composition import Container
from emulator.faults import load_scenario
from emulator.server import EmulatorServer
from models.errors import InvalidInputError
from models.request import parse_request
from models.settings import Settings
from tests.callers import PLATFORM, PermitAll, Unconfined
from tests.conftest import ROOT, example
from tests.contract.conftest import POLICY, SUB
from tests.fakes import FakeCloud

SPEC = json.loads((ROOT / "tests" / "events" / "arm" / "usages-list.json").read_text())
FAMILY_NAME = re.compile(r"^Standard \S+ Family Cluster (Dedicated|LowPriority) vCPUs$")
TOTALS = {"Clusters", "Total Cluster Dedicated Regional vCPUs", "Total Cluster LowPriority Regional vCPUs"}


def _spec_usages(**change: Any) -> list[Usage]:
    return UsagePage.model_validate({"value": [u | change for u in SPEC["value"]]}).value


def test_spec_shaped_usages_with_every_limit_at_zero_refuse_the_demand() -> None:
    dsv2 = Demand(family="standardDSv2Family", low_priority=False, vcpus=4, computes=[0])
    problems = quota_problems(_spec_usages(limit=0), [dsv2], "eastus")
    labels = {re.search(r"of '([^']+)'", p.message)[1] for p in problems}  # type: ignore[index]
    assert labels == {"Standard DSv2 Family Cluster Dedicated vCPUs", "Total Cluster Dedicated Regional vCPUs"}
    assert all(p.code == "QuotaExceeded" and p.field == "compute[0].max_nodes" for p in problems)


def test_only_the_subscription_entries_count_and_minus_one_is_no_limit_of_its_own() -> None:
    usages = _spec_usages()
    # Low priority NC: the family entry says -1, the regional total has 50 - 18 = 32 left.
    fits = Demand(family="standardNCFamily", low_priority=True, vcpus=32, computes=[0])
    assert quota_problems(usages, [fits], "eastus") == []
    too_many = Demand(family="standardNCFamily", low_priority=True, vcpus=33, computes=[1])
    [problem] = quota_problems(usages, [too_many], "eastus")
    assert "'Total Cluster LowPriority Regional vCPUs'" in problem.message and "18 of 50" in problem.message
    # Workspace and compute repeats of a family at 0 do not limit the subscription.
    repeats = [u.model_copy(update={"limit": 0}) if not u.subscription_level else u for u in usages]
    assert (
        quota_problems(
            repeats, [Demand(family="standardNCFamily", low_priority=False, vcpus=6, computes=[0])], "eastus"
        )
        == []
    )


@pytest.fixture
def preflight(emulator: EmulatorServer) -> ArmPreflight:
    return ArmPreflight(emulator_endpoint(emulator.url, str(emulator.ca_bundle)), EmulatorCredential())


def test_the_emulator_answers_usages_as_the_spec_shows_them_page_by_page(
    emulator: EmulatorServer, preflight: ArmPreflight
) -> None:
    path = f"/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/locations/swedencentral/usages"
    emulator.state.config.usages_page_size = 4
    try:
        status, first = preflight._call("GET", path, ML_API, 10)
        everything = preflight._usages(path, 10)
    finally:
        emulator.state.config.usages_page_size = 50
    assert status == 200 and len(first["value"]) == 4 and first["nextLink"].startswith(emulator.url)
    assert everything is not None and len(everything) == len(emulator.state.usages(SUB, "swedencentral")) > 4
    spec_keys = {frozenset(u) for u in SPEC["value"]}
    assert {frozenset(u) for u in first["value"]} <= spec_keys
    for usage in everything:
        assert usage.name.value in TOTALS or FAMILY_NAME.match(usage.name.value), usage.name.value
        if usage.name.value.endswith("LowPriority vCPUs"):
            assert usage.limit == -1  # as in the spec: only the regional total limits low priority


def _container(emulator: EmulatorServer, settings: Settings) -> Container:
    return Container(
        settings,
        authorizer=PermitAll(),
        confinement=Unconfined(),
        store=SqliteStore(":memory:"),
        bus=SqliteBus(":memory:"),
        cloud=FakeCloud(),
        policy=POLICY,
        preflight=ArmPreflight(emulator_endpoint(emulator.url, str(emulator.ca_bundle)), EmulatorCredential()),
        sinks=[],
    )


@pytest.mark.parametrize(
    ("tier", "label"),
    [
        ("low_priority", "Total Cluster LowPriority Regional vCPUs"),
        ("dedicated", "Standard NCADS_A100_v4 Family Cluster Dedicated vCPUs"),
    ],
)
def test_the_no_gpu_quota_scenario_refuses_gpu_clusters_by_their_real_usage_names(
    emulator: EmulatorServer, settings: Settings, tier: str, label: str
) -> None:
    emulator.state.config.quota = load_scenario(ROOT / "examples" / "faults" / "no-gpu-quota.yaml").quota
    body = example("gpu-research.json") | {"team": f"nogpu-{tier[:3]}"}
    body["compute"] = [c | {"tier": tier} if c.get("kind") != "instance" else c for c in body["compute"]]
    with pytest.raises(InvalidInputError) as info:
        _container(emulator, settings).intake.submit(request=parse_request(body), caller=PLATFORM, source="test")
    quota = [p for p in info.value.problems if p.code == "QuotaExceeded"]
    assert quota and all(re.fullmatch(r"compute\[\d+\]\.max_nodes", p.field) for p in quota)
    # Other tests of the session may already hold vCPUs there; the limit is what the scenario says.
    assert any(re.search(rf"'{re.escape(label)}' in swedencentral, but \d+ of 0 are in use", p.message) for p in quota)
