"""Step specs: one frozen model per step kind, and stored plans that read back exactly."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from engine.planner import plan
from engine.policy import admit
from models.plan import SPEC_MODELS, AccessSpec, Plan, StepKind
from models.records import RequestRecord
from models.request import parse_request
from tests.conftest import example, shipped_policy

POLICY = shipped_policy()


def _plan(body: dict, **policy: object) -> Plan:  # type: ignore[type-arg]
    effective = POLICY.model_copy(update=policy)
    return plan(admit(parse_request(body), effective), effective)


@pytest.mark.parametrize(
    ("body", "policy"),
    [
        ("gpu-research.json", {}),
        ("gpu-research.json", {"datastore_credentials": "account_key"}),
        ("cpu-small.json", {"create_resource_groups": False}),
    ],
)
def test_a_stored_plan_reads_back_with_each_spec_its_kinds_model(body: str, policy: dict[str, object]) -> None:
    p = _plan(example(body), **policy)
    stored = p.model_dump_json()
    back = Plan.model_validate_json(stored)
    assert back == p
    assert back.model_dump_json() == stored
    assert {s.kind for s in back.steps} >= {StepKind.STORAGE, StepKind.WORKSPACE, StepKind.ACCESS}
    for s in back.steps:
        assert type(s.spec) is SPEC_MODELS[s.kind], s.id


def test_a_stored_record_keeps_its_plans_specs() -> None:
    p = _plan(example("gpu-research.json"))
    record = RequestRecord.model_construct(plan=p)
    back = Plan.model_validate(json.loads(record.model_dump_json())["plan"])
    assert back == p


def test_access_specs_store_only_the_principal_they_name() -> None:
    p = _plan(example("gpu-research.json"))
    stored = json.loads(p.model_dump_json())
    for step in stored["steps"]:
        if step["kind"] == "access":
            spec = step["spec"]
            assert ("principal_id" in spec) != ("principal_from" in spec), step["id"]
            assert all(set(a) == {"role_definition", "role", "scope"} for a in spec["assignments"])


def test_a_spec_of_another_kind_is_refused() -> None:
    p = _plan(example("cpu-small.json"))
    stored = json.loads(p.model_dump_json())
    storage = next(s for s in stored["steps"] if s["kind"] == "storage")
    storage["spec"] = next(s for s in stored["steps"] if s["kind"] == "access")["spec"]
    with pytest.raises(ValidationError):
        Plan.model_validate(stored)


def test_specs_are_frozen() -> None:
    spec = _plan(example("cpu-small.json")).step("key-vault").spec
    with pytest.raises(ValidationError):
        spec.tags = {}  # type: ignore[misc]
    access = next(s for s in _plan(example("cpu-small.json")).steps if s.kind == StepKind.ACCESS)
    assert isinstance(access.spec, AccessSpec)
    with pytest.raises(ValidationError):
        access.spec.assignments[0].scope = "/"  # type: ignore[misc]
