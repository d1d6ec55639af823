"""Contract fixtures: one ARM emulator over HTTPS per session, and the real Azure provider pointed at it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.clients import Clients, emulator_endpoint
from cloud.common import Timing
from cloud.credentials import EmulatorCredential
from cloud.provider import AzureProvider
from cloud.throttle import SubscriptionThrottle
from emulator.server import EmulatorServer
from emulator.state import Config, parse_path
from emulator.throttling import BucketLimit, ThrottlingConfig
from engine.planner import plan
from engine.policy import admit
from engine.ports import StepContext
from models.errors import BackPressure, PermanentError, TransientError
from models.outcomes import Done, Fail, Outcome, Retry, Wait
from models.plan import Plan
from models.request import parse_request
from tests.conftest import shipped_policy

POLICY = shipped_policy()


def session_throttling(scale: int = 100) -> ThrottlingConfig:
    """ARM's buckets, `scale` times Azure's published sizes and refill rates.

    One emulator serves every contract test of the session, hundreds of provisioning runs a minute
    from one principal, many of them tests' own SDK reads that do not pace themselves: far more
    than one deployment of the service asks of ARM. The buckets stay on (every answer carries its
    remaining-budget headers); throttling at Azure's own figures has its tests
    (tests/contract/test_fidelity_throttling.py), each with an emulator of its own.
    """
    azure = ThrottlingConfig()
    scaled = {
        name: BucketLimit(size=limit.size * scale, refill_per_s=limit.refill_per_s * scale)
        for name, limit in azure
        if isinstance(limit, BucketLimit)
    }
    return ThrottlingConfig.model_validate(scaled)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    server = EmulatorServer(
        data_dir=Path(tmp_path_factory.mktemp("emulator")),
        config=Config(latency_s=0.05),
        throttling=session_throttling(),
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def provider(emulator: EmulatorServer) -> AzureProvider:
    clients = Clients(emulator_endpoint(emulator.url, str(emulator.ca_bundle)), EmulatorCredential())
    return AzureProvider(clients, Timing(poll_s=0.05), SubscriptionThrottle(max_concurrent=8))


@pytest.fixture(autouse=True)
def _clean_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    # Faults and cloud settings are per test; the emulator and its resources are per session (teams differ).
    yield
    if "emulator" in request.fixturenames:
        server = request.getfixturevalue("emulator")
        server.state.faults.replace([])
        server.state.config.quota = {}
        server.state.config.unregistered = []
    if "provider" in request.fixturenames:
        # The provider is the session's: a cool-down a test set (or left after failing) must not hold the next.
        request.getfixturevalue("provider").throttle._cool_until.clear()


def _plan(body: dict[str, Any], create_groups: bool = True, **policy: Any) -> Plan:
    effective = POLICY.model_copy(update={"create_resource_groups": create_groups, **policy})
    return plan(admit(parse_request(body), effective), effective)


SUB = "11111111-1111-1111-1111-111111111111"
STORAGE_BODY: dict[str, Any] = {"sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}
VAULT_BODY: dict[str, Any] = {
    "properties": {"tenantId": "72f988bf-0000-4000-8000-000000000000", "sku": {"family": "A", "name": "standard"}}
}


def held_elsewhere(
    emulator: EmulatorServer, provider_type: str, name: str, body: dict[str, Any], location: str = "westeurope"
) -> None:
    """Create a resource with this name in someone else's resource group (some names are global in Azure)."""
    other = f"/subscriptions/{SUB}/resourceGroups/rg-someone-else"
    emulator.state.put(parse_path(other), {"location": location})
    emulator.state.put(parse_path(f"{other}/providers/{provider_type}/{name}"), {"location": location, **body})


def drive(
    provider: AzureProvider,
    p: Plan,
    step_id: str,
    outputs: dict[str, dict[str, Any]],
    limit: int = 100,
    *,
    retry: bool = True,
) -> Outcome:
    """Reconcile one step until it stops waiting, as the engine would (without the queue)."""
    step = p.step(step_id)
    ctx = StepContext(
        request_id="r",
        names=p.names,
        attempt=1,
        step_started_at=None,
        dependency_outputs={d: outputs.get(d, {}) for d in step.depends_on},
    )
    for _ in range(limit):
        try:
            outcome = provider.reconcile(step, ctx)
        except PermanentError as exc:  # what the engine turns errors into
            outcome = Fail(str(exc), exc.code)
        except BackPressure as exc:
            outcome = Wait(exc.retry_after_s or 1.0, str(exc))
            if not retry:
                return outcome
        except TransientError as exc:
            outcome = Retry(exc.retry_after_s or 0.0, str(exc), exc.code)
        if isinstance(outcome, Retry) and not retry:
            return outcome
        if not isinstance(outcome, (Wait, Retry)):
            if isinstance(outcome, Done):
                outputs[step_id] = outcome.outputs
            return outcome
        time.sleep(min(outcome.after_s, 0.05))
    raise AssertionError(f"{step_id} still not done after {limit} reconciles")


def run_plan(provider: AzureProvider, p: Plan) -> dict[str, Outcome]:
    outputs: dict[str, dict[str, Any]] = {}
    return {s.id: drive(provider, p, s.id, outputs) for s in p.steps}  # plan order is a topological order
