"""Confinement: every refusal here would pass if its check were removed, and what a team owns still passes."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pytest
from pydantic import ValidationError

from devhost.identity import LocalMembership, load_directory
from engine.confinement import (
    ArmResource,
    Confinement,
    ConfinementError,
    Refusal,
    Rule,
    cloud_refusals,
    refusals,
    workspace_key,
)
from engine.planner import derive_names, plan
from engine.policy import resolve
from models.errors import ForbiddenError, TransientError
from models.identity import DEFAULT_DIRECTORY
from models.policy import Policy, TeamAccess, TeamTarget
from models.request import WorkspaceRequest, parse_request
from tests.conftest import ROOT, shipped_policy

FRAUD = "3a8e5c1f-2d47-4b96-8e0a-6f1c2d3b4a51"  # fraud-detection's group (policy/default.yaml)
CHURN = "7c2b9e4d-5a13-4f68-9d2e-1b0a3c4d5e62"  # churn's group
NESTED = "0a0a0a0a-0000-4000-8000-000000000001"  # a group nested in fraud-detection's
ALICE = "1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01"  # fraud-detection (policy/directory.example.yaml)
BOB = "2e4b6d8f-0c3e-4f7a-9b2d-4f6b8d0f2c02"  # churn
PIPELINE = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"  # a service principal, a member of fraud-detection's group
DEV = "11111111-1111-1111-1111-111111111111"
PROD = "22222222-2222-2222-2222-222222222222"
TEAM_SUB = "44444444-4444-4444-4444-444444444444"

BASE = shipped_policy()
POLICY = BASE.model_copy(
    update={
        "teams": {
            "fraud-detection": TeamAccess(
                groups=[UUID(FRAUD)],
                targets={"prod": [TeamTarget(subscription_id=UUID(TEAM_SUB), resource_groups=["rg-fraud-models"])]},
            ),
            "churn": TeamAccess(groups=[UUID(CHURN)]),
        }
    }
)


@dataclass
class FakeDirectory:
    """Transitive membership, as Microsoft Graph's checkMemberGroups answers it."""

    members: dict[str, set[str]] = field(
        default_factory=lambda: {ALICE: {FRAUD}, BOB: {CHURN}, NESTED: {FRAUD}, PIPELINE: {FRAUD}}
    )
    asked: list[str] = field(default_factory=list)

    def member_groups(self, *, principal: str, groups: list[str]) -> frozenset[str]:
        self.asked.append(principal)
        return frozenset(g for g in groups if g in self.members.get(principal, set()))


@dataclass
class FakeHistory:
    """The store's first team per workspace key."""

    owners: dict[str, str] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def workspace_owner(self, workspace_key: str) -> str | None:
        self.asked.append(workspace_key)
        return self.owners.get(workspace_key)


def request(**fields: Any) -> WorkspaceRequest:
    body: dict[str, Any] = {
        "team": "fraud-detection",
        "environment": "dev",
        "region": "westeurope",
        "owners": [{"object_id": FRAUD, "type": "Group"}],
        "members": [{"object_id": ALICE, "type": "User"}],
        "compute": [
            {"name": "cpu", "vm_size": "Standard_DS3_v2", "max_nodes": 2},
            {"name": "nb-alice", "kind": "instance", "vm_size": "Standard_DS3_v2", "assigned_user": ALICE},
        ],
        "tags": {"cost-center": "CC-1"},
    }
    body.update(fields)
    return resolve(parse_request(body), POLICY)


def rules(
    req: WorkspaceRequest,
    *,
    policy: Policy = POLICY,
    history: FakeHistory | None = None,
    directory: FakeDirectory | None = None,
    **kw: Any,
) -> list[tuple[str, str]]:
    found = refusals(
        request=req, policy=policy, membership=directory or FakeDirectory(), history=history or FakeHistory(), **kw
    )
    return [(r.rule.value, r.field) for r in found]


def test_a_request_within_its_teams_scopes_passes() -> None:
    assert rules(request()) == []
    req = request()
    Confinement(policy=POLICY, membership=FakeDirectory(), history=FakeHistory(), reader=FakeArm()).check(
        plan=plan(req, POLICY), request=req
    )


# ----- where ---------------------------------------------------------------------------------


def test_the_issue_attack_is_refused_on_every_count() -> None:
    # churn, asking for dev, into fraud-detection's prod resource group in the prod subscription, with
    # fraud-detection's storage, roles for a service principal and an outsider.
    victim = f"/subscriptions/{PROD}/resourceGroups/rg-ml-fraud-detection-prod"
    req = request(
        team="churn",
        subscription_id=PROD,
        resource_group="rg-ml-fraud-detection-prod",
        existing={"storage_account_id": f"{victim}/providers/Microsoft.Storage/storageAccounts/stfraud"},
        owners=[{"object_id": PIPELINE, "type": "ServicePrincipal"}],
        members=[{"object_id": ALICE, "type": "User"}],
        compute=[{"name": "a100", "vm_size": "Standard_NC24ads_A100_v4", "max_nodes": 10}],
    )
    assert rules(req) == [
        ("SubscriptionNotAllowed", "subscription_id"),
        ("ServicePrincipalNotAllowed", "owners[0]"),
        ("PrincipalNotTeamMember", "members[0]"),
    ]


def test_a_request_may_name_only_the_subscription_policy_gives_its_team() -> None:
    assert rules(request(subscription_id=DEV)) == []  # the environment's own, named
    assert rules(request(subscription_id=PROD)) == [("SubscriptionNotAllowed", "subscription_id")]
    # A team's own target is for its environment only.
    assert rules(request(subscription_id=TEAM_SUB, resource_group="rg-fraud-models")) == [
        ("SubscriptionNotAllowed", "subscription_id")
    ]


def test_a_request_may_name_only_the_resource_groups_policy_gives_its_team() -> None:
    assert rules(request(team="churn", members=[], owners=[], compute=[], resource_group="rg-ml-churn-dev")) == []
    refused = refusals(
        request=request(team="churn", members=[], owners=[], compute=[], resource_group="rg-ml-fraud-detection-dev"),
        policy=POLICY,
        membership=FakeDirectory(),
        history=FakeHistory(),
    )
    assert [(r.rule, r.field) for r in refused] == [(Rule.RESOURCE_GROUP_NOT_ALLOWED, "resource_group")]
    assert "leave resource_group out" in refused[0].message and "rg-ml-churn-dev" in refused[0].message


def test_a_team_reaches_the_targets_its_policy_lists() -> None:
    prod = request(environment="prod", subscription_id=TEAM_SUB, resource_group="RG-Fraud-Models")
    assert rules(prod) == []  # Azure compares resource group names ignoring case
    assert rules(request(environment="prod", subscription_id=TEAM_SUB, resource_group="rg-other")) == [
        ("ResourceGroupNotAllowed", "resource_group")
    ]
    assert rules(request(environment="prod")) == []  # the environment's default stays allowed
    churn = request(
        team="churn", environment="prod", owners=[], members=[], compute=[], subscription_id=TEAM_SUB,
        resource_group="rg-fraud-models",
    )  # fmt: skip
    assert rules(churn) == [("SubscriptionNotAllowed", "subscription_id")]


def test_the_service_subscription_is_never_a_target_by_default() -> None:
    # model_copy skips the load-time check, as a deployment-provided subscription would.
    own = POLICY.model_copy(update={"service_subscription_id": UUID(DEV)})
    assert rules(request(), policy=own) == [("ServiceSubscription", "subscription_id")]
    assert rules(request(), service_subscription_id=DEV.upper()) == [("ServiceSubscription", "subscription_id")]
    assert rules(request(), service_subscription_id=PROD) == []
    lab = own.model_copy(update={"allow_service_subscription": True})
    assert rules(request(), policy=lab, service_subscription_id=DEV) == []


def test_a_policy_that_targets_the_service_subscription_does_not_load() -> None:
    data = BASE.model_dump(mode="json")
    with pytest.raises(ValidationError, match=r"environments\.dev\.subscription_id is the service's own"):
        Policy.model_validate({**data, "service_subscription_id": DEV})
    data["environments"] = {k: {**v, "subscription_id": PROD} for k, v in data["environments"].items()}
    data["teams"]["churn"]["targets"] = {"test": [{"subscription_id": DEV, "resource_groups": ["rg-x"]}]}
    with pytest.raises(ValidationError, match=r"teams\.churn\.targets\.test names the service's own"):
        Policy.model_validate({**data, "service_subscription_id": DEV})
    assert Policy.model_validate({**data, "service_subscription_id": DEV, "allow_service_subscription": True})


def test_team_targets_name_resource_groups_exactly() -> None:
    with pytest.raises(ValidationError, match="resource group name"):
        TeamTarget(subscription_id=UUID(DEV), resource_groups=["rg-*."])


# ----- brought resources ---------------------------------------------------------------------


def _rid(sub: str, rg: str, kind: str, name: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{kind}/{name}"


def test_brought_resources_must_lie_in_the_requests_own_resource_group() -> None:
    own = _rid(DEV, "RG-ML-FRAUD-DETECTION-DEV", "Microsoft.Storage/storageAccounts", "stmine")
    assert rules(request(existing={"storage_account_id": own})) == []
    other_rg = _rid(DEV, "rg-ml-churn-dev", "Microsoft.KeyVault/vaults", "kv-churn")
    other_sub = _rid(PROD, "rg-ml-fraud-detection-dev", "Microsoft.Insights/components", "appi")
    registry = _rid(PROD, "rg-shared", "Microsoft.ContainerRegistry/registries", "crshared")
    req = request(
        existing={"key_vault_id": other_rg, "application_insights_id": other_sub, "container_registry_id": registry}
    )
    assert rules(req) == [
        ("ExistingOutsideTarget", "existing.key_vault_id"),
        ("ExistingOutsideTarget", "existing.application_insights_id"),
        ("ExistingOutsideTarget", "existing.container_registry_id"),
    ]


def test_a_request_may_not_set_the_team_tag_to_another_team() -> None:
    assert rules(request(tags={"cost-center": "CC-1", "team": "fraud-detection"})) == []
    assert rules(request(tags={"cost-center": "CC-1", "team": "churn"})) == [("TeamTagMismatch", "tags.team")]
    # ARM tag names ignore case: "Team" would sit beside the planner's "team".
    assert rules(request(tags={"cost-center": "CC-1", "Team": "fraud-detection"})) == [("TeamTagMismatch", "tags.Team")]
    owner_tag = POLICY.model_copy(update={"team_tag": "owner-team"})
    assert rules(request(tags={"cost-center": "CC-1", "owner-team": "churn"}), policy=owner_tag) == [
        ("TeamTagMismatch", "tags.owner-team")
    ]


# ----- the workspace -------------------------------------------------------------------------


def test_a_workspace_another_team_asked_for_is_refused() -> None:
    req = request()
    key = workspace_key(derive_names(req))
    assert key == f"{DEV}/rg-ml-fraud-detection-dev/mlw-fraud-detection-dev"
    history = FakeHistory({key: "churn"})
    assert rules(req, history=history) == [("WorkspaceOfAnotherTeam", "workspace_name")]
    assert history.asked == [key]
    assert rules(req, history=FakeHistory({key: "fraud-detection"})) == []


# ----- roles ---------------------------------------------------------------------------------


def test_roles_go_only_to_the_teams_groups_and_members() -> None:
    req = request(
        owners=[{"object_id": CHURN, "type": "Group"}, {"object_id": NESTED, "type": "Group"}],
        members=[{"object_id": BOB, "type": "User"}, {"object_id": ALICE, "type": "User"}],
    )
    assert rules(req) == [("GroupNotTeamGroup", "owners[0]"), ("PrincipalNotTeamMember", "members[0]")]


def test_service_principals_only_when_policy_names_them_for_the_team() -> None:
    # PIPELINE is in fraud-detection's group, yet membership is not enough for a service principal.
    req = request(members=[{"object_id": PIPELINE, "type": "ServicePrincipal"}])
    assert rules(req) == [("ServicePrincipalNotAllowed", "members[0]")]
    teams = dict(POLICY.teams)
    teams["fraud-detection"] = teams["fraud-detection"].model_copy(update={"service_principals": [UUID(PIPELINE)]})
    named = POLICY.model_copy(update={"teams": teams})
    assert rules(req, policy=named) == []
    churn_req = request(
        team="churn", owners=[], compute=[], members=[{"object_id": PIPELINE, "type": "ServicePrincipal"}]
    )
    assert rules(churn_req, policy=named) == [("ServicePrincipalNotAllowed", "members[0]")]


def test_a_compute_instance_belongs_to_a_team_member() -> None:
    req = request(compute=[{"name": "nb-bob", "kind": "instance", "vm_size": "Standard_DS3_v2", "assigned_user": BOB}])
    assert rules(req) == [("InstanceUserNotTeamMember", "compute[0].assigned_user")]


def test_membership_is_asked_once_per_principal_and_never_for_a_team_group() -> None:
    directory = FakeDirectory()
    assert rules(request(), directory=directory) == []
    assert directory.asked == [ALICE]  # member and assigned user: one question; the team's group: none


def test_the_local_directory_and_the_default_policy_agree() -> None:
    membership = LocalMembership(load_directory(DEFAULT_DIRECTORY))
    ok = request(members=[{"object_id": ALICE, "type": "User"}])
    found = refusals(request=ok, policy=BASE, membership=membership, history=FakeHistory())
    assert found == []
    bob = request(members=[{"object_id": BOB, "type": "User"}])
    found = refusals(request=bob, policy=BASE, membership=membership, history=FakeHistory())
    assert [r.rule for r in found] == [Rule.PRINCIPAL_NOT_TEAM_MEMBER]


# ----- the error -----------------------------------------------------------------------------


def test_every_refusal_comes_in_one_forbidden_error_that_says_what_to_fix() -> None:
    req = request(
        team="churn",
        resource_group="rg-ml-fraud-detection-dev",
        members=[{"object_id": ALICE, "type": "User"}],
        owners=[],
        compute=[],
    )
    with pytest.raises(ConfinementError) as info:
        Confinement(policy=POLICY, membership=FakeDirectory(), history=FakeHistory(), reader=FakeArm()).check(
            plan=plan(req, POLICY), request=req
        )
    err = info.value
    assert isinstance(err, ForbiddenError)
    assert err.rule == "ResourceGroupNotAllowed"
    assert [r.rule for r in err.refusals] == [Rule.RESOURCE_GROUP_NOT_ALLOWED, Rule.PRINCIPAL_NOT_TEAM_MEMBER]
    assert "members[0]: user" in str(err) and "grant access only to the team's members" in str(err)
    assert err.refusals[1].as_dict() == {
        "rule": "PrincipalNotTeamMember",
        "field": "members[0]",
        "message": err.refusals[1].message,
    }


def test_an_unknown_team_is_refused_before_anything_else() -> None:
    req = resolve(parse_request({"team": "vision", "environment": "dev", "region": "westeurope"}), POLICY)
    assert rules(req) == [("UnknownTeam", "team")]


def test_rule_names_are_stable_pascal_case() -> None:
    assert all(re.fullmatch(r"(?:[A-Z][a-z]+)+", r.value) for r in Rule)
    assert len({r.value for r in Rule}) == len(Rule)


# ----- what ARM says -------------------------------------------------------------------------

STORAGE = _rid(DEV, "rg-ml-fraud-detection-dev", "Microsoft.Storage/storageAccounts", "stfraudown")
VAULT = _rid(DEV, "rg-ml-fraud-detection-dev", "Microsoft.KeyVault/vaults", "kv-fraud-own")
WORKSPACE = _rid(
    DEV, "rg-ml-fraud-detection-dev", "Microsoft.MachineLearningServices/workspaces", "mlw-fraud-detection-dev"
)


@dataclass
class FakeArm:
    """Resources by id; records what was read and with which budget."""

    resources: dict[str, ArmResource] = field(default_factory=dict)
    reads: list[tuple[list[str], float]] = field(default_factory=list)
    down: bool = False

    def read_resources(self, resource_ids: Sequence[str], *, timeout_s: float) -> Mapping[str, ArmResource | None]:
        self.reads.append((list(resource_ids), timeout_s))
        if self.down:
            raise TransientError("no answer", code="ConfinementUnchecked")
        return {rid: self.resources.get(rid) for rid in resource_ids}

    def add(self, rid: str, **tags: str) -> None:
        self.resources[rid] = ArmResource(id=rid, tags=tags)


def in_cloud(arm: FakeArm, history: FakeHistory | None = None, **fields: Any) -> list[tuple[str, str]]:
    req = request(**fields)
    found = cloud_refusals(
        plan=plan(req, POLICY), request=req, policy=POLICY, reader=arm, history=history or FakeHistory()
    )
    return [(r.rule.value, r.field) for r in found]


def test_brought_resources_must_exist_and_carry_the_teams_tag() -> None:
    arm = FakeArm()
    arm.add(STORAGE, Team="fraud-detection")  # tag names ignore case
    arm.add(VAULT, team="Fraud-Detection")  # values do not
    existing = {"storage_account_id": STORAGE, "key_vault_id": VAULT}
    assert in_cloud(arm, existing=existing) == [("ExistingNotTeamTagged", "existing.key_vault_id")]
    arm.add(VAULT, **{"managed-by": "someone"})
    assert in_cloud(arm, existing=existing) == [("ExistingNotTeamTagged", "existing.key_vault_id")]
    arm.add(VAULT, team="fraud-detection")
    assert in_cloud(arm, existing=existing) == []
    del arm.resources[STORAGE]
    assert in_cloud(arm, existing=existing) == [("ExistingNotFound", "existing.storage_account_id")]
    [(ids, budget)] = arm.reads[-1:]
    assert ids == [STORAGE, VAULT, WORKSPACE] and budget == POLICY.preflight.timeout_s


def test_an_existing_workspace_is_adopted_only_from_the_team_that_made_it() -> None:
    arm = FakeArm()
    assert in_cloud(arm) == []  # no workspace yet: nothing to adopt
    arm.add(WORKSPACE)
    key = f"{DEV}/rg-ml-fraud-detection-dev/mlw-fraud-detection-dev"
    assert in_cloud(arm) == [("WorkspaceNotMadeByTeam", "workspace_name")]  # made outside the service
    assert in_cloud(arm, FakeHistory({key: "churn"})) == [("WorkspaceNotMadeByTeam", "workspace_name")]
    assert in_cloud(arm, FakeHistory({key: "fraud-detection"})) == []


def test_cloud_confinement_fails_closed() -> None:
    req = request()
    down = Confinement(policy=POLICY, membership=FakeDirectory(), history=FakeHistory(), reader=FakeArm(down=True))
    with pytest.raises(TransientError):
        down.check(plan=plan(req, POLICY), request=req)
    arm = FakeArm()
    arm.add(WORKSPACE)
    with pytest.raises(ConfinementError) as info:
        Confinement(policy=POLICY, membership=FakeDirectory(), history=FakeHistory(), reader=arm).check(
            plan=plan(req, POLICY), request=req, budget_s=1.5
        )
    assert info.value.rule == "WorkspaceNotMadeByTeam"
    assert arm.reads[-1][1] == 1.5


def test_a_refusal_is_typed() -> None:
    r = Refusal(Rule.EXISTING_NOT_FOUND, "existing.key_vault_id", "gone")
    assert r.as_dict()["rule"] == "ExistingNotFound"
    with pytest.raises(ValueError, match="at least one"):
        ConfinementError([])


# ----- the backstop in infra -----------------------------------------------------------------


def test_the_rbac_administrator_may_assign_to_users_and_groups_only() -> None:
    bicep = (ROOT / "infra" / "modules" / "provisioning-roles.bicep").read_text()
    types = re.search(r"var principalTypes = '(.*)'\n", bicep)
    assert types and types.group(1) == r"{\'User\', \'Group\'}"
    condition = re.search(r"var condition = '(.*)'\n", bicep)
    assert condition
    text = condition.group(1)
    for source in ("Request", "Resource"):
        clause = f"@{source}[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase ${{principalTypes}}"
        assert clause in text
        # In the same branch as the role check, joined by AND, as Microsoft's example has it.
        roles = f"@{source}[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{${{roleList}}}} AND {clause}"
        assert roles in text
    assert text.count("(") == text.count(")")


# ----- as intake asks it ---------------------------------------------------------------------


def check(confinement: Confinement, req: WorkspaceRequest, budget_s: float | None = None) -> None:
    confinement.check(plan=plan(req, POLICY), request=req, budget_s=budget_s)


def test_intakes_confinement_reports_both_halves_at_once_and_bounds_the_cloud_wait() -> None:
    arm = FakeArm()
    arm.add(STORAGE, team="churn")
    confinement = Confinement(policy=POLICY, membership=FakeDirectory(), history=FakeHistory(), reader=arm)
    check(confinement, request())
    stranger = {"object_id": "9a9a9a9a-0000-4000-8000-000000000001", "type": "User"}
    with pytest.raises(ConfinementError) as refused:
        check(confinement, request(existing={"storage_account_id": STORAGE}, members=[stranger]), budget_s=1.5)
    assert [(p.field, p.code) for p in refused.value.problems] == [
        ("members[0]", "PrincipalNotTeamMember"),
        ("existing.storage_account_id", "ExistingNotTeamTagged"),
    ]
    assert arm.reads[-1][1] == 1.5  # a chat door's budget, below the policy's timeout


def test_a_request_refused_on_where_it_goes_is_not_looked_up_in_arm() -> None:
    arm = FakeArm()
    confinement = Confinement(policy=POLICY, membership=FakeDirectory(), history=FakeHistory(), reader=arm)
    elsewhere = _rid(PROD, "rg-ml-fraud-detection-prod", "Microsoft.Storage/storageAccounts", "stfraudprod")
    with pytest.raises(ConfinementError) as refused:
        check(confinement, request(subscription_id=PROD, resource_group="rg-ml-fraud-detection-prod"))
    assert refused.value.rule == "SubscriptionNotAllowed"
    with pytest.raises(ConfinementError) as refused:
        check(confinement, request(existing={"storage_account_id": elsewhere}))
    assert [p.code for p in refused.value.problems] == ["ExistingOutsideTarget"]
    assert arm.reads == [([WORKSPACE], POLICY.preflight.timeout_s)]  # never the resource outside the target


def test_a_workspace_of_another_team_is_refused_once() -> None:
    arm = FakeArm()
    arm.add(WORKSPACE)
    history = FakeHistory({workspace_key(derive_names(request())): "churn"})
    confinement = Confinement(policy=POLICY, membership=FakeDirectory(), history=history, reader=arm)
    with pytest.raises(ConfinementError) as refused:
        check(confinement, request())
    assert [p.code for p in refused.value.problems] == ["WorkspaceOfAnotherTeam"]


def test_the_services_own_subscription_from_the_deployment_is_refused() -> None:
    confinement = Confinement(
        policy=POLICY, membership=FakeDirectory(), history=FakeHistory(), reader=FakeArm(), service_subscription_id=DEV
    )
    with pytest.raises(ConfinementError) as refused:
        check(confinement, request())
    assert refused.value.rule == "ServiceSubscription"


def test_without_a_cloud_brought_resources_are_refused_for_now_and_the_rest_passes() -> None:
    confinement = Confinement(policy=POLICY, membership=FakeDirectory(), history=FakeHistory(), reader=None)
    check(confinement, request())
    with pytest.raises(TransientError) as unchecked:
        check(confinement, request(existing={"storage_account_id": STORAGE}))
    assert unchecked.value.code == "ConfinementUnchecked"
