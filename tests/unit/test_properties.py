"""Properties of the request model and the planner, over generated requests (hypothesis).

Valid requests plan into acyclic graphs whose names pass Azure's rules; the same request always
plans the same names; invalid requests are refused with the path of each field that is wrong.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.planner import plan as make_plan
from engine.policy import admit
from models.azure_names import name_problem
from models.errors import InvalidInputError
from models.request import parse_request
from tests.conftest import shipped_policy

POLICY = shipped_policy()
SIZES = sorted(k for k, v in POLICY.vm_sizes.items() if v.vcpus <= 8)
PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Each strategy draws only names that models/azure_names.py accepts, so every generated request is
# one the properties claim is valid.
teams = st.from_regex(r"[a-z][a-z0-9-]{0,18}[a-z0-9]", fullmatch=True)  # TEAM
compute_names = st.from_regex(r"[a-z][a-z0-9-]{1,10}[a-z]", fullmatch=True)  # COMPUTE_CLUSTER (and COMPUTE)
datastore_names = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)  # DATASTORE
# CONTAINER: 3 to 63 lowercase letters and digits in groups joined by single hyphens (11 + 4 * 13 = 63).
container_names = st.builds(
    lambda first, rest: "-".join([first, *rest]),
    st.from_regex(r"[a-z0-9]{3,11}", fullmatch=True),
    st.lists(st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True), max_size=4),
)
principals = st.builds(
    lambda u, t: {"object_id": str(u), "type": t}, st.uuids(), st.sampled_from(["User", "Group", "ServicePrincipal"])
)


@st.composite
def requests(draw: Any) -> dict[str, Any]:
    """A request within the default policy's limits."""
    compute = [
        {"name": name, "vm_size": draw(st.sampled_from(SIZES)), "min_nodes": 0, "max_nodes": draw(st.integers(1, 2))}
        for name in draw(st.lists(compute_names, max_size=3, unique=True))
    ]
    datastores = [
        {"name": name, "kind": "blob", "container": draw(container_names)}
        for name in draw(st.lists(datastore_names, max_size=3, unique=True))
    ]
    people = draw(st.lists(principals, max_size=4, unique_by=lambda p: p["object_id"]))
    body: dict[str, Any] = {
        "team": draw(teams),
        "environment": draw(st.sampled_from(["dev", "test", "prod"])),
        "region": draw(st.sampled_from(POLICY.allowed_regions)),
        "compute": compute,
        "datastores": datastores,
        "owners": people[: len(people) // 2],
        "members": people[len(people) // 2 :],
        "tags": {"cost-center": draw(st.from_regex(r"CC-[0-9]{1,6}", fullmatch=True))},
    }
    if draw(st.booleans()):
        body["profile"] = draw(st.sampled_from(sorted(POLICY.profiles)))
        body.pop("compute")
        body.pop("datastores")
    return body


def _plan(body: dict[str, Any]) -> Any:
    return make_plan(admit(parse_request(body), POLICY), POLICY)


@PROPERTIES
@given(requests())
def test_valid_requests_plan_into_acyclic_graphs_with_valid_names(body: dict[str, Any]) -> None:
    plan = _plan(body)
    ids = [s.id for s in plan.steps]
    assert len(ids) == len(set(ids))
    seen: set[str] = set()
    for step in plan.steps:  # steps come in an order where every prerequisite is earlier: no cycle
        assert set(step.depends_on) <= seen, (step.id, step.depends_on)
        seen.add(step.id)
    n = plan.names
    for kind, value in (
        ("storage_account", n.storage_account),
        ("key_vault", n.key_vault),
        ("workspace", n.workspace),
        ("resource_group", n.resource_group),
    ):
        assert name_problem(kind, value) is None, (kind, value)
    for step in plan.steps:
        if step.id.startswith("compute:"):
            assert name_problem("compute", step.resource_name) is None


@PROPERTIES
@given(requests())
def test_the_same_request_always_plans_the_same_names(body: dict[str, Any]) -> None:
    first, second = _plan(body), _plan(dict(body))
    assert first.names == second.names
    assert [(s.id, s.resource_id) for s in first.steps] == [(s.id, s.resource_id) for s in second.steps]


BREAKERS = {
    "team": ("team", st.sampled_from(["", "Team_With_Caps", "-x", "a" * 40, "9lives"])),
    "environment": ("environment", st.sampled_from(["staging", "", "PROD"])),
    "region": ("region", st.just(123)),
    "tags": ("tags", st.sampled_from(["", "  ", "x" * 300])),
}


@PROPERTIES
@given(requests(), st.sampled_from(sorted(BREAKERS)), st.data())
def test_invalid_requests_are_refused_with_field_paths(body: dict[str, Any], field: str, data: Any) -> None:
    path, values = BREAKERS[field]
    broken = dict(body)
    if field == "tags":
        broken["tags"] = {"cost-center": data.draw(values)}
    else:
        broken[field] = data.draw(values)
    with pytest.raises(InvalidInputError) as refused:
        admit(parse_request(broken), POLICY)
    fields = {p.field for p in refused.value.problems}
    assert any(f == path or f.startswith(path + ".") or f.startswith(path + "[") for f in fields), fields
