"""The Azure provider after a crash: a step whose answer was lost runs again and must report what it did."""

from __future__ import annotations

from cloud.provider import AzureProvider
from emulator.server import EmulatorServer
from emulator.state import parse_path
from models.lifecycle import DeleteResult
from models.outcomes import Done
from tests.conftest import example
from tests.contract.conftest import _plan
from tests.contract.lifecycle import context, deleting, result, run_delete


def test_a_group_made_by_a_step_whose_answer_was_lost_is_still_known_as_made_and_is_deleted(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "cr-group"})
    step = p.step("resource-group")
    first = provider.reconcile(step, context(p, step, {}))
    assert isinstance(first, Done) and first.outputs["created"] is True
    # The worker died before it wrote that answer: the step runs again with no outputs of its own.
    again = provider.reconcile(step, context(p, step, {}))
    assert isinstance(again, Done) and again.outputs["created"] is True
    outcome, _ = run_delete(provider, p, deleting(step), {step.id: again.outputs})
    assert result(outcome) == DeleteResult(deleted=True)
    assert step.resource_id.lower() not in {r.lower() for r in emulator.state.resource_ids()}


def test_a_group_that_was_there_before_is_not_taken_for_one_the_service_made(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "cr-theirs"})
    step = p.step("resource-group")
    emulator.state.put(parse_path(step.resource_id), {"location": "westeurope", "tags": {"team": "cr-theirs"}})
    for _ in range(2):
        outcome = provider.reconcile(step, context(p, step, {}))
        assert isinstance(outcome, Done) and outcome.outputs["created"] is False
