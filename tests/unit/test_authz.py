"""The one authorisation function: every refusal here would pass if its check were removed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pytest

from engine.authz import Act, Authorizer
from models.errors import ForbiddenError, NotFoundError
from models.identity import AppRole, Caller
from models.policy import TeamAccess
from tests.conftest import shipped_policy

TENANT = "5f1d3c2a-7b64-4e19-a8d0-3c2b1a0f9e87"
FRAUD = "3a8e5c1f-2d47-4b96-8e0a-6f1c2d3b4a51"
CHURN = "7c2b9e4d-5a13-4f68-9d2e-1b0a3c4d5e62"
NESTED = "0a0a0a0a-0000-4000-8000-000000000001"


@dataclass
class FakeDirectory:
    """Membership as Microsoft Graph would answer it, for callers whose token had too many groups."""

    members: dict[str, set[str]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def member_groups(self, *, principal: str, groups: list[str]) -> frozenset[str]:
        self.asked.append(principal)
        return frozenset(g for g in groups if g in self.members.get(principal, set()))


def caller(
    oid: str = "1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01",
    *,
    roles: tuple[AppRole, ...] = (AppRole.REQUEST,),
    groups: tuple[str, ...] = (FRAUD,),
    overage: bool = False,
) -> Caller:
    return Caller(
        oid=oid,
        tid=TENANT,
        name="someone",
        roles=frozenset(r.value for r in roles),
        groups=frozenset(groups),
        groups_overage=overage,
        auth="local",
    )


@pytest.fixture
def directory() -> FakeDirectory:
    return FakeDirectory()


@pytest.fixture
def authz(directory: FakeDirectory) -> Authorizer:
    policy = shipped_policy().model_copy(
        update={
            "teams": {
                "fraud-detection": TeamAccess(groups=[UUID(FRAUD), UUID(NESTED)]),
                "churn": TeamAccess(groups=[UUID(CHURN)]),
            }
        }
    )
    return Authorizer(policy=policy, membership=directory)


def test_a_member_with_the_request_role_requests_for_its_own_team_only(authz: Authorizer) -> None:
    alice = caller()
    assert authz.authorize(alice, Act.REQUEST, team="fraud-detection").allowed
    refused = authz.authorize(alice, Act.REQUEST, team="churn")
    assert (refused.allowed, refused.rule, refused.hide) == (False, "NotTeamMember", False)
    assert "fraud-detection" in refused.reason
    with pytest.raises(ForbiddenError) as info:
        refused.enforce()
    assert info.value.rule == "NotTeamMember"


def test_membership_without_the_role_is_not_enough(authz: Authorizer) -> None:
    reader = caller(roles=())
    decision = authz.authorize(reader, Act.REQUEST, team="fraud-detection")
    assert (decision.allowed, decision.rule) == (False, "MissingRole")
    assert AppRole.REQUEST.value in decision.reason


def test_a_team_that_policy_does_not_list_is_refused_even_for_an_admin(authz: Authorizer) -> None:
    admin = caller(roles=(AppRole.ADMIN,), groups=())
    assert authz.authorize(admin, Act.REQUEST, team="churn").allowed
    decision = authz.authorize(admin, Act.REQUEST, team="made-up")
    assert (decision.allowed, decision.rule) == (False, "UnknownTeam")


def test_another_teams_request_is_not_found_not_forbidden(authz: Authorizer) -> None:
    bob = caller(groups=(CHURN,))
    assert authz.authorize(bob, Act.READ, team="churn").allowed
    decision = authz.authorize(bob, Act.READ, team="fraud-detection")
    assert (decision.allowed, decision.hide) == (False, True)
    with pytest.raises(NotFoundError):
        decision.enforce()
    assert authz.visible_teams(bob) == {"churn"}


def test_read_all_and_admin_see_every_team(authz: Authorizer) -> None:
    platform = caller(roles=(AppRole.READ_ALL,), groups=())
    assert authz.visible_teams(platform) is None
    assert authz.authorize(platform, Act.READ, team="fraud-detection").allowed
    # Reading every team is not asking for workspaces for them.
    assert not authz.authorize(platform, Act.REQUEST, team="fraud-detection").allowed


def test_operating_the_service_needs_the_operator_role(authz: Authorizer) -> None:
    assert not authz.authorize(caller(), Act.OPERATE).allowed
    assert authz.authorize(caller(roles=(AppRole.OPERATOR,), groups=()), Act.OPERATE).allowed
    assert authz.authorize(caller(roles=(AppRole.ADMIN,), groups=()), Act.OPERATE).allowed


def test_group_overage_asks_the_directory(authz: Authorizer, directory: FakeDirectory) -> None:
    many = caller(oid="9f9f9f9f-0000-4000-8000-000000000009", groups=(), overage=True)
    assert not authz.authorize(many, Act.REQUEST, team="fraud-detection").allowed
    directory.members[many.oid] = {NESTED}
    assert authz.authorize(many, Act.REQUEST, team="fraud-detection").allowed
    assert directory.asked == [many.oid, many.oid]
    # A token that lists its groups is believed as it is: the directory is not asked.
    authz.authorize(caller(), Act.REQUEST, team="fraud-detection")
    assert len(directory.asked) == 2


def _local_caller(directory: Any, login: str) -> Caller:
    """The caller a local token for `login` proves: its groups listed, or the overage claim instead."""
    user = directory.users[login]
    return Caller(
        oid=user.object_id,
        tid=directory.tenant_id,
        name=user.name,
        roles=frozenset(user.roles),
        groups=frozenset() if user.groups_overage else frozenset(directory.group_ids(user)),
        groups_overage=user.groups_overage,
        auth="local",
    )


def test_the_local_directory_answers_for_its_overage_user() -> None:
    from devhost.identity import LocalMembership, load_directory
    from models.identity import DEFAULT_DIRECTORY

    directory = load_directory(DEFAULT_DIRECTORY)
    policy = shipped_policy()  # its teams are the local directory's groups
    authz = Authorizer(policy=policy, membership=LocalMembership(directory))
    assert directory.users["carol"].groups_overage
    who = _local_caller(directory, "carol")
    assert authz.teams_of(who) == {"fraud-detection"}
    assert authz.authorize(who, Act.REQUEST, team="fraud-detection").allowed
    assert not authz.authorize(who, Act.REQUEST, team="churn").allowed
    as_bob = _local_caller(directory, "bob")
    assert authz.teams_of(as_bob) == {"churn"}


def test_a_group_several_teams_list_makes_its_members_act_for_each() -> None:
    from devhost.identity import LocalMembership, load_directory
    from models.identity import DEFAULT_DIRECTORY

    base = shipped_policy()
    shared = base.teams["fraud-detection"]
    policy = base.model_copy(update={"teams": {**base.teams, "fraud-ops": shared, "fraud-lab": shared}})
    directory = load_directory(DEFAULT_DIRECTORY)
    authz = Authorizer(policy=policy, membership=LocalMembership(directory))
    who = _local_caller(directory, "alice")
    assert authz.teams_of(who) == {"fraud-detection", "fraud-ops", "fraud-lab"}
    for team in ("fraud-detection", "fraud-ops", "fraud-lab"):
        assert authz.authorize(who, Act.REQUEST, team=team).allowed
    assert authz.teams_of(_local_caller(directory, "carol")) == {"fraud-detection", "fraud-ops", "fraud-lab"}
