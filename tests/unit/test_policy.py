"""Policy: loading, resolving profiles and defaults, and reporting every violation at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.policy import PolicyFileError, admit, check, load_policy, resolve
from models.errors import InvalidInputError
from models.policy import Policy
from models.request import parse_request
from tests.conftest import ROOT, example

POLICY = load_policy(ROOT / "policy" / "default.yaml")


def test_default_policy_loads_and_json_works_too(tmp_path: Path) -> None:
    assert "cpu-small" in POLICY.profiles
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(POLICY.model_dump(mode="json")))
    assert load_policy(path) == POLICY


def test_bad_policy_files_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("allowed_regions: [westeurope\n")
    with pytest.raises(PolicyFileError, match="not valid"):
        load_policy(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("allowed_regions: []\nenvironments: {}\nvm_sizes: {}\ncolour: blue\n")
    with pytest.raises(PolicyFileError) as info:
        load_policy(wrong)
    assert "allowed_regions" in str(info.value) and "colour" in str(info.value)


def test_a_policy_file_cannot_make_python_objects(tmp_path: Path) -> None:
    # The policy is read with a safe loader (libyaml's when PyYAML has it): a Python tag is refused, never run.
    hostile = tmp_path / "hostile.yaml"
    marker = tmp_path / "ran"
    hostile.write_text(f'allowed_regions: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(PolicyFileError, match="not valid yaml: could not determine a constructor"):
        load_policy(hostile)
    assert not marker.exists()
    # Tags a FullLoader would build (a Python name, a tuple) are refused too.
    for tag in ("!!python/name:os.system", "!!python/tuple [a, b]"):
        hostile.write_text(f"allowed_regions: {tag}\n")
        with pytest.raises(PolicyFileError, match="could not determine a constructor"):
            load_policy(hostile)


def test_profile_fills_in_and_request_wins_by_name() -> None:
    req = parse_request(
        example("cpu-small.json") | {"compute": [{"name": "cpu-cluster", "vm_size": "Standard_DS4_v2", "max_nodes": 2}]}
    )
    resolved = resolve(req, POLICY)
    assert [c.name for c in resolved.compute] == ["cpu-cluster"]
    assert resolved.compute[0].vm_size == "Standard_DS4_v2"
    assert [d.name for d in resolved.datastores] == ["training_data"]
    assert str(resolved.subscription_id) == "11111111-1111-1111-1111-111111111111"
    assert resolved.resource_group == "rg-ml-fraud-detection-dev"


def test_every_violation_is_reported() -> None:
    body = example("cpu-small.json") | {
        "region": "australiaeast",
        "profile": "nope",
        "tags": {},
        "compute": [
            {"name": "big", "vm_size": "Standard_M128s", "max_nodes": 2},
            {"name": "wide", "vm_size": "Standard_DS3_v2", "max_nodes": 50},
        ],
    }
    with pytest.raises(InvalidInputError) as info:
        admit(parse_request(body), POLICY)
    fields = {p.field: p.message for p in info.value.problems}
    assert "not allowed" in fields["region"]
    assert "does not exist" in fields["profile"]
    assert "required tags: cost-center" in fields["tags"]
    assert "not in the catalogue" in fields["compute[0].vm_size"]
    assert "above the policy limit of 10" in fields["compute[1].max_nodes"]


def test_clusters_may_not_keep_more_idle_nodes_than_policy_allows() -> None:
    # The attack: a 10-node always-on A100 cluster. By default every cluster scales to zero.
    always_on = {"name": "a100", "vm_size": "Standard_NC24ads_A100_v4", "min_nodes": 10, "max_nodes": 10}
    body = example("cpu-small.json") | {"compute": [always_on]}
    with pytest.raises(InvalidInputError) as info:
        admit(parse_request(body), POLICY)
    [problem] = [p for p in info.value.problems if p.field == "compute[0].min_nodes"]
    assert "allows at most 0" in problem.message and problem.code == "policy"
    warm = POLICY.model_copy(update={"max_min_nodes": 1})
    one = {"name": "warm", "vm_size": "Standard_DS3_v2", "min_nodes": 1, "max_nodes": 2}
    assert check(resolve(parse_request(example("cpu-small.json") | {"compute": [one]}), warm), warm) == []
    assert [
        p.field for p in check(resolve(parse_request(example("cpu-small.json") | {"compute": [one]}), POLICY), POLICY)
    ] == ["compute[0].min_nodes"]


def test_a_profile_that_keeps_idle_nodes_above_the_limit_does_not_load() -> None:
    data = POLICY.model_dump(mode="json")
    data["profiles"]["cpu-small"]["compute"][0]["min_nodes"] = 2
    with pytest.raises(ValidationError, match="max_min_nodes is 0"):
        Policy.model_validate(data)
    assert Policy.model_validate({**data, "max_min_nodes": 2}).max_min_nodes == 2


def test_team_vcpu_limit_counts_live_workspaces() -> None:
    req = resolve(parse_request(example("gpu-research.json")), POLICY)
    assert check(req, POLICY, team_vcpus_in_use=0) == []
    problems = check(req, POLICY, team_vcpus_in_use=POLICY.max_team_vcpus - 10)
    assert [p.field for p in problems] == ["compute"]
    assert "team limit is 400" in problems[0].message


def test_a_problem_in_a_row_the_caller_wrote_is_at_the_callers_index_beside_a_profile() -> None:
    # gpu-research brings cpu-cluster and gpu-cluster; the caller replaces gpu-cluster and adds one of their own.
    body = example("gpu-research.json") | {
        "compute": [
            {"name": "wide", "vm_size": "Standard_DS3_v2", "max_nodes": 50},
            {"name": "gpu-cluster", "vm_size": "Standard_M128s", "max_nodes": 2},
        ]
    }
    resolved = resolve(parse_request(body), POLICY)
    assert [c.name for c in resolved.compute] == ["wide", "gpu-cluster", "cpu-cluster"]
    with pytest.raises(InvalidInputError) as info:
        admit(parse_request(body), POLICY)
    fields = {p.field for p in info.value.problems}
    assert {"compute[0].max_nodes", "compute[1].vm_size"} <= fields
    assert not {f for f in fields if f.startswith("compute[2]")}
