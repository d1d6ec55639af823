"""A revision applied by the Azure provider: what it changes in place reaches Azure, resource by resource."""

from __future__ import annotations

from cloud.provider import AzureProvider
from emulator.server import EmulatorServer
from emulator.state import parse_path
from models.plan import StepKind
from tests.conftest import example
from tests.contract.conftest import _plan
from tests.contract.lifecycle import applied


def test_a_changed_tag_reaches_every_resource_the_service_made(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    body = example("cpu-small.json") | {"team": "rv-tags", "container_registry": True}
    first = _plan(body)
    applied(provider, first)
    revised = _plan(body | {"tags": {"cost-center": "CC-2077"}})
    outputs = applied(provider, revised)
    # Computes, datastores and role assignments carry no tags of the service's.
    tagged = {
        s.id: str(outputs[s.id].get("id") or s.resource_id)
        for s in revised.steps
        if s.kind not in (StepKind.ACCESS, StepKind.DATASTORE, StepKind.COMPUTE)
    }
    assert {"resource-group", "storage", "key-vault", "insights", "registry", "workspace"} <= set(tagged)
    tagged["log-analytics"] = outputs["insights"]["log_analytics_id"]
    stale = {}
    for what, resource_id in tagged.items():
        resource = emulator.state.get(parse_path(resource_id))
        if (resource.get("tags") or {}).get("cost-center") != "CC-2077":
            stale[what] = resource.get("tags")
    assert stale == {}
