"""A long-running create is looked at again no sooner than its Retry-After (ARM RPC, v1.0/async-api-reference.md:
"Clients should wait for the Retry-After interval, if it was specified ... before polling again").

Storage, key vault and Log Analytics are started with a hook on their first answer; a compute cluster is
started by azure-ai-ml, whose poller keeps that answer (`cloud.common.after_poller`)."""

from __future__ import annotations

from typing import Any

import pytest

from cloud.provider import AzureProvider
from emulator.server import EmulatorServer
from models.outcomes import Done, Wait
from models.plan import Plan
from tests.conftest import example
from tests.contract.conftest import _plan, drive
from tests.contract.lifecycle import context


def _first_look(provider: AzureProvider, p: Plan, step_id: str) -> Any:
    """Provision what the step waits for, then reconcile the step once: its create goes out."""
    outputs: dict[str, dict[str, Any]] = {}
    for s in p.steps:
        if s.id == step_id:
            break
        assert isinstance(drive(provider, p, s.id, outputs), Done), s.id
    step = p.step(step_id)
    return provider.reconcile(step, context(p, step, outputs))


@pytest.mark.parametrize("step_id", ["storage", "key-vault", "insights", "workspace", "compute:cpu-cluster"])
def test_a_create_is_looked_at_again_after_its_retry_after(
    provider: AzureProvider, emulator: EmulatorServer, step_id: str
) -> None:
    emulator.state.config.retry_after_s = 7
    try:
        p = _plan(example("cpu-small.json") | {"team": "ra" + "".join(c for c in step_id if c.isalpha())[:8]})
        outcome = _first_look(provider, p, step_id)
    finally:
        emulator.state.config.retry_after_s = 1
    assert isinstance(outcome, Wait), outcome
    assert outcome.after_s == 7  # not the provider's own 0.05 s


def test_without_a_retry_after_the_providers_own_pace_holds(provider: AzureProvider, emulator: EmulatorServer) -> None:
    emulator.state.config.retry_after_s = 0
    try:
        outcome = _first_look(provider, _plan(example("cpu-small.json") | {"team": "ranone"}), "storage")
    finally:
        emulator.state.config.retry_after_s = 1
    assert isinstance(outcome, Wait) and outcome.after_s == 0.05
