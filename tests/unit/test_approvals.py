"""Approval rules, the cost estimate and the approve decision, without a store or a cloud.

Each refusal of `Act.APPROVE` here fails if its check is removed: the role, the requester, the
approver groups; each rule condition is shown to match and not to match.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from engine.approval_rules import estimate, triggered
from engine.authz import Act, ApprovalAsk, Authorizer
from engine.policy import resolve
from models.identity import AppRole, Caller
from models.policy import Policy
from models.request import WorkspaceRequest, parse_request
from tests.conftest import example
from tests.conftest import shipped_policy as load_shipped

TENANT = "5f1d3c2a-7b64-4e19-a8d0-3c2b1a0f9e87"
LEADS = "5f0b7c1e-8a55-4a3e-9a9e-2d4b1f0c7a11"
PLATFORM_APPROVERS = "8b3f6e2a-1c4d-4e5f-9a6b-7c8d9e0f1a2b"


def _request(policy: Policy, **change: Any) -> WorkspaceRequest:
    body = example("cpu-small.json") | change
    return resolve(parse_request(body), policy)


def _gpu(max_nodes: int = 1, tier: str = "dedicated") -> list[dict[str, Any]]:
    return [{"name": "gpu", "vm_size": "Standard_NC6s_v3", "min_nodes": 0, "max_nodes": max_nodes, "tier": tier}]


def _caller(oid: str, *roles: AppRole, groups: tuple[str, ...] = ()) -> Caller:
    return Caller(
        oid=oid,
        tid=TENANT,
        name=oid[:4],
        roles=frozenset(r.value for r in roles),
        groups=frozenset(groups),
        auth="local",
    )


@pytest.fixture
def shipped_policy() -> Policy:
    return load_shipped()


class _NoGraph:
    def member_groups(self, *, principal: str, groups: list[str]) -> frozenset[str]:
        return frozenset()


def test_the_estimate_prices_each_compute_idle_and_at_most(shipped_policy: Policy) -> None:
    request = _request(shipped_policy, compute=_gpu(max_nodes=2, tier="low_priority"))
    cost = estimate(request, shipped_policy)
    assert cost is not None
    gpu = next(line for line in cost.lines if line.compute == "gpu")
    assert gpu.hourly == pytest.approx(3.06 * 0.2)
    assert gpu.monthly_max == pytest.approx(3.06 * 0.2 * 2 * 730, abs=0.01)
    assert gpu.monthly_idle == 0
    cpu = next(line for line in cost.lines if line.compute == "cpu-cluster")  # from the profile, 0..4 DS3_v2
    assert cost.monthly_max == pytest.approx(gpu.monthly_max + cpu.monthly_max, abs=0.02)
    assert cost.as_of.isoformat() == "2026-12-01"
    assert "not included" in cost.notes[0]


def test_no_prices_no_estimate(shipped_policy: Policy) -> None:
    policy = shipped_policy.model_copy(update={"prices": None})
    assert estimate(_request(policy), policy) is None


def test_a_prod_gpu_request_meets_prod_gpu_and_a_dev_one_does_not(shipped_policy: Policy) -> None:
    prod = _request(shipped_policy, environment="prod", compute=_gpu())
    rules = triggered(prod, shipped_policy, estimate(prod, shipped_policy))
    assert [t.rule for t in rules] == ["prod-gpu"]
    assert rules[0].reasons == ["environment prod", "GPU compute (gpu)"]
    assert set(rules[0].groups) == {LEADS, PLATFORM_APPROVERS}
    dev = _request(shipped_policy, compute=_gpu())
    assert triggered(dev, shipped_policy, estimate(dev, shipped_policy)) == []
    cpu_prod = _request(shipped_policy, environment="prod")
    assert triggered(cpu_prod, shipped_policy, estimate(cpu_prod, shipped_policy)) == []


def test_the_cost_rule_is_the_platforms_and_needs_two(shipped_policy: Policy) -> None:
    big = _request(shipped_policy, compute=_gpu(max_nodes=3))
    rules = triggered(big, shipped_policy, estimate(big, shipped_policy))
    assert [(t.rule, t.approvals, t.groups) for t in rules] == [("costly", 2, [PLATFORM_APPROVERS])]


STORAGE = (
    "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-ml-fraud-detection-dev/providers/"
    "Microsoft.Storage/storageAccounts/stmine"
)
CPU = [{"name": "cpu", "vm_size": "Standard_DS3_v2", "min_nodes": 0, "max_nodes": 2}]


@pytest.mark.parametrize(
    ("rule", "hit", "miss"),
    [
        ({"vm_families": ["standardNCSv3Family"]}, {"compute": _gpu()}, {"compute": CPU}),
        ({"min_vcpus": 12}, {"compute": _gpu(max_nodes=2)}, {"compute": _gpu(max_nodes=1)}),
        ({"min_nodes": 3}, {"compute": _gpu(max_nodes=3)}, {"compute": _gpu(max_nodes=2)}),
        ({"brings_resources": True}, {"compute": CPU, "existing": {"storage_account_id": STORAGE}}, {"compute": CPU}),
        ({"environments": ["test"], "gpu": True}, {"environment": "test", "compute": _gpu()}, {"compute": _gpu()}),
    ],
)
def test_each_condition(
    shipped_policy: Policy, rule: dict[str, Any], hit: dict[str, Any], miss: dict[str, Any]
) -> None:
    data = shipped_policy.model_dump(mode="json", by_alias=True)
    policy = Policy.model_validate(
        data | {"approvals": {"approvers": [PLATFORM_APPROVERS], "rules": [{"name": "r", **rule}]}}
    )
    found = _request(policy, profile=None, **hit)
    assert [t.rule for t in triggered(found, policy, estimate(found, policy))] == ["r"]
    missed = _request(policy, profile=None, **miss)
    assert triggered(missed, policy, estimate(missed, policy)) == []


def test_a_revision_waits_only_when_it_raises_what_the_rule_measures(shipped_policy: Policy) -> None:
    one = _request(shipped_policy, environment="prod", compute=_gpu(max_nodes=1))
    two = _request(shipped_policy, environment="prod", compute=_gpu(max_nodes=2))
    tagged = _request(
        shipped_policy, environment="prod", compute=_gpu(max_nodes=1), tags={"cost-center": "CC-1", "x": "y"}
    )
    assert "prod-gpu" in [t.rule for t in triggered(two, shipped_policy, estimate(two, shipped_policy), before=one)]
    assert triggered(tagged, shipped_policy, estimate(tagged, shipped_policy), before=one) == []
    assert triggered(one, shipped_policy, estimate(one, shipped_policy), before=two) == []  # lowered
    cpu = _request(shipped_policy, environment="prod")
    assert [t.rule for t in triggered(one, shipped_policy, estimate(one, shipped_policy), before=cpu)] == ["prod-gpu"]


def test_a_policy_nobody_could_approve_does_not_load(shipped_policy: Policy) -> None:
    data = shipped_policy.model_dump(mode="json", by_alias=True)
    with pytest.raises(ValidationError, match=r"approvals\.approvers lists no group"):
        Policy.model_validate(data | {"approvals": {"rules": [{"name": "p", "gpu": True, "approvers": "platform"}]}})
    with pytest.raises(ValidationError, match="list none"):
        Policy.model_validate(data | {"approvals": {"rules": [{"name": "t", "gpu": True}]}})
    with pytest.raises(ValidationError, match="sets no condition"):
        Policy.model_validate(data | {"approvals": {"approvers": [PLATFORM_APPROVERS], "rules": [{"name": "x"}]}})
    with pytest.raises(ValidationError, match="no prices"):
        Policy.model_validate(
            data
            | {"prices": None, "approvals": {"approvers": [LEADS], "rules": [{"name": "c", "min_monthly_cost": 1}]}}
        )
    with pytest.raises(ValidationError, match="no size in vm_sizes"):
        Policy.model_validate(
            data | {"approvals": {"approvers": [LEADS], "rules": [{"name": "f", "vm_families": ["nosuchFamily"]}]}}
        )


def test_who_may_approve(shipped_policy: Policy) -> None:
    authz = Authorizer(policy=shipped_policy, membership=_NoGraph())
    ask = ApprovalAsk(requester="1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01", rules={"prod-gpu": (LEADS, PLATFORM_APPROVERS)})
    lead = _caller("7e1a2b3c-4d5e-4f6a-8b7c-9d0e1f2a3b07", AppRole.APPROVE, AppRole.REQUEST, groups=(LEADS,))
    decision = authz.authorize(lead, Act.APPROVE, team="fraud-detection", approval=ask)
    assert (decision.allowed, decision.rules) == (True, ("prod-gpu",))
    no_role = _caller("7e1a2b3c-4d5e-4f6a-8b7c-9d0e1f2a3b07", AppRole.REQUEST, groups=(LEADS,))
    assert authz.authorize(no_role, Act.APPROVE, team="fraud-detection", approval=ask).rule == "MissingRole"
    outsider = _caller(
        "2e4b6d8f-0c3e-4f7a-9b2d-4f6b8d0f2c02", AppRole.APPROVE, groups=("7c2b9e4d-5a13-4f68-9d2e-1b0a3c4d5e62",)
    )
    assert authz.authorize(outsider, Act.APPROVE, team="fraud-detection", approval=ask).rule == "NotApprover"
    own = ApprovalAsk(requester=lead.oid, rules=ask.rules)
    assert authz.authorize(lead, Act.APPROVE, team="fraud-detection", approval=own).rule == "OwnRequest"
    admin = _caller(lead.oid, AppRole.ADMIN)
    assert authz.authorize(admin, Act.APPROVE, team="fraud-detection", approval=own).rule == "OwnRequest"
    with pytest.raises(ValueError, match="needs the approval"):
        authz.authorize(lead, Act.APPROVE, team="fraud-detection")


def test_approvers_read_the_teams_they_approve_for(shipped_policy: Policy) -> None:
    authz = Authorizer(policy=shipped_policy, membership=_NoGraph())
    platform = _caller("8f2b3c4d-5e6f-4a7b-9c8d-0e1f2a3b4c08", AppRole.APPROVE, groups=(PLATFORM_APPROVERS,))
    assert authz.visible_teams(platform) is None
    lead_only = _caller("7e1a2b3c-4d5e-4f6a-8b7c-9d0e1f2a3b07", AppRole.APPROVE, groups=(LEADS,))
    assert authz.visible_teams(lead_only) == frozenset({"fraud-detection"})
    no_role = _caller("7e1a2b3c-4d5e-4f6a-8b7c-9d0e1f2a3b07", groups=(LEADS,))
    assert authz.visible_teams(no_role) == frozenset()
