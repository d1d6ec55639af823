"""The planner: the DAG of DESIGN section 2, deterministic names that pass Azure's rules."""

from __future__ import annotations

import itertools

from engine.planner import plan
from engine.policy import admit
from models.azure_names import name_problem
from models.request import parse_request
from tests.conftest import example, shipped_policy

POLICY = shipped_policy()


def _plan(body: dict):  # type: ignore[no-untyped-def]
    return plan(admit(parse_request(body), POLICY), POLICY)


def test_dag_matches_the_design() -> None:
    p = _plan(example("gpu-research.json"))
    deps = {s.id: s.depends_on for s in p.steps}
    assert deps["resource-group"] == []
    for sid in ("storage", "key-vault", "insights", "registry"):
        assert deps[sid] == ["resource-group"]
    assert sorted(deps["workspace"]) == ["insights", "key-vault", "registry", "storage"]
    assert deps["compute:gpu-cluster"] == ["workspace"]
    assert sorted(deps["datastore:lake"]) == ["storage", "workspace"]
    assert deps["access:0c9a3f5e-2b1d-4e6f-8a7b-9c0d1e2f3a4b"] == ["workspace"]
    storage = p.step("storage")
    assert storage.spec.hierarchical_namespace is True
    assert storage.spec.containers == ["lake", "raw-images"]
    assert storage.spec.shares == ["shared"]


def test_same_request_same_plan_and_names() -> None:
    assert _plan(example("gpu-research.json")) == _plan(example("gpu-research.json"))


def test_names_differ_by_environment_and_pass_azure_rules() -> None:
    teams = ["ab", "vision", "fraud-detection", "a-very-long-team-nam", "x1-y2-z3"]
    seen = set()
    for team, env in itertools.product(teams, ["dev", "test", "prod"]):
        n = _plan(example("cpu-small.json") | {"team": team, "environment": env}).names
        assert name_problem("storage_account", n.storage_account) is None, n.storage_account
        assert name_problem("key_vault", n.key_vault) is None, n.key_vault
        assert name_problem("workspace", n.workspace) is None, n.workspace
        seen.add(n.storage_account)
    assert len(seen) == len(teams) * 3


def test_no_registry_step_unless_asked_and_bring_your_own_ids_are_used() -> None:
    p = _plan(example("cpu-small.json"))
    assert "registry" not in {s.id for s in p.steps}
    kv = "/subscriptions/33333333-3333-3333-3333-333333333333/resourceGroups/shared/providers/Microsoft.KeyVault/vaults/kv-shared"
    p = _plan(example("cpu-small.json") | {"existing": {"key_vault_id": kv}})
    assert p.step("key-vault").resource_id == kv
    assert p.step("key-vault").spec.existing is True
    assert p.step("workspace").spec.key_vault_id == kv
    assert p.names.key_vault == "kv-shared"


def test_critical_path() -> None:
    p = _plan(example("cpu-small.json"))
    durations = dict.fromkeys({s.kind for s in p.steps}, 1.0)
    assert p.critical_path(durations) == 5.0  # resource group, storage, workspace, compute, its identity's access
