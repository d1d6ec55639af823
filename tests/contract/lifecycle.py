"""Helpers for the teardown and drift contract tests: run a plan's steps as the engine would, then delete or inspect."""

from __future__ import annotations

import ssl
import time
from typing import Any

import httpx

from cloud.provider import AzureProvider
from emulator.server import EmulatorServer
from engine.ports import StepContext
from models.errors import BackPressure, PermanentError, TransientError
from models.lifecycle import DeleteResult, DriftFinding
from models.outcomes import Done, Fail, Outcome, Retry, Wait
from models.plan import Plan, Step, StepAction
from tests.contract.conftest import run_plan

REQUEST_ID = "req-teardown"


def applied(provider: AzureProvider, p: Plan) -> dict[str, dict[str, Any]]:
    """Provision every step of the plan; return each step's outputs."""
    results = run_plan(provider, p)
    assert all(isinstance(o, Done) for o in results.values()), results
    return {sid: o.outputs for sid, o in results.items() if isinstance(o, Done)}


def with_spec(p: Plan, step_id: str, **update: Any) -> Plan:
    """Return the plan with one step's spec changed (e.g. a vault without purge protection)."""
    step = p.step(step_id)
    changed = step.model_copy(update={"spec": step.spec.model_copy(update=update)})
    return p.model_copy(update={"steps": [changed if s.id == step_id else s for s in p.steps]})


def deleting(step: Step, **spec_update: Any) -> Step:
    """Return the step as a teardown sends it (action delete), its spec changed by `spec_update` (purge)."""
    spec = step.spec.model_copy(update=spec_update) if spec_update else step.spec
    return step.model_copy(update={"action": StepAction.DELETE, "spec": spec})


def context(p: Plan, step: Step, outputs: dict[str, dict[str, Any]], attempt: int = 1) -> StepContext:
    """Build the context the engine gives a step: its own record's outputs and its prerequisites'."""
    known = {sid: outputs[sid] for sid in (step.id, *step.depends_on) if sid in outputs}
    return StepContext(request_id=REQUEST_ID, names=p.names, attempt=attempt, dependency_outputs=known)


def run_delete(
    provider: AzureProvider, p: Plan, step: Step, outputs: dict[str, dict[str, Any]], limit: int = 200
) -> tuple[Outcome, int]:
    """Reconcile a delete step until it stops waiting, each Wait or Retry its next attempt (as the engine does)."""
    for attempt in range(1, limit + 1):
        ctx = context(p, step, outputs, attempt)
        try:
            outcome = provider.reconcile(step, ctx)
        except PermanentError as exc:
            outcome = Fail(str(exc), exc.code)
        except BackPressure as exc:
            outcome = Wait(exc.retry_after_s or 1.0, str(exc))
        except TransientError as exc:
            outcome = Retry(exc.retry_after_s or 0.0, str(exc), exc.code)
        if not isinstance(outcome, (Wait, Retry)):
            return outcome, attempt
        time.sleep(min(outcome.after_s, 0.05))
    raise AssertionError(f"{step.id} still not deleted after {limit} attempts")


def result(outcome: Outcome) -> DeleteResult:
    """Read a delete's DeleteResult from its Done outcome."""
    assert isinstance(outcome, Done), outcome
    return DeleteResult.model_validate(outcome.outputs)


def inspect_all(provider: AzureProvider, p: Plan, outputs: dict[str, dict[str, Any]]) -> list[DriftFinding]:
    """Inspect every step of the plan, as a drift check would."""
    return [f for s in p.steps for f in provider.inspect(s, context(p, s, outputs))]


def arm(emulator: EmulatorServer) -> httpx.Client:
    """A plain HTTPS client to the emulator's ARM endpoint, as someone changing things by hand would use."""
    return httpx.Client(
        base_url=emulator.url.rstrip("/"),
        verify=ssl.create_default_context(cafile=str(emulator.ca_bundle)),
        headers={"Authorization": "Bearer someone-else"},
        timeout=10,
        trust_env=False,
    )


def held(emulator: EmulatorServer, resource_group: str) -> list[str]:
    """Return the ids of what the emulator holds in a resource group (the group itself included)."""
    marker = f"/resourcegroups/{resource_group.lower()}"
    return [r for r in emulator.state.resource_ids() if marker in r.lower()]
