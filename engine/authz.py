"""The one authorisation function (DESIGN section 9): what a caller may do, for which team.

Every door (REST, chat, queue, operator tools) authenticates its caller into a `Caller` and asks
`authorize` before it acts; nothing else decides. A caller acts for a team when one of its groups
is one of the team's groups in policy (`teams: {<team>: {groups: [...]}}`); when the token said the
caller has too many groups to list (overage), the membership port answers instead. Reading another
team's request is a `404`, so that ids do not reveal other teams' work; any other refusal is a `403`
that names the rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from engine.ports import Membership
from models.errors import ForbiddenError, NotFoundError
from models.identity import AppRole, Caller
from models.policy import Policy


class Act(StrEnum):
    """What a caller asks to do."""

    REQUEST = "request"  # submit or plan a workspace for a team
    CHANGE = "change"  # update, cancel, retry, extend or tear down a team's workspace: the same rule as request
    READ = "read"  # see a team's requests, steps, events and outputs
    OPERATE = "operate"  # dead letters, replay, sweeps: the service's own plumbing
    APPROVE = "approve"  # approve or deny a team's request that an approval rule holds


@dataclass(frozen=True)
class ApprovalAsk:
    """What an approval decision is about: who asked for the request, and each rule's approver groups."""

    requester: str
    rules: Mapping[str, Sequence[str]]  # rule name -> object ids of the groups that approve for it
    others: tuple[str, ...] = ()  # who else asked: a waiting revision's request was made by someone too


@dataclass(frozen=True)
class Decision:
    """The answer: allowed or not, the rule that decided, and a sentence for the caller."""

    allowed: bool
    rule: str
    reason: str
    hide: bool = False  # refuse as "not found": the caller may not learn that the thing exists
    rules: tuple[str, ...] = ()  # Act.APPROVE: the rules the caller may approve for

    def enforce(self) -> None:
        """Raise the refusal this decision stands for (nothing when allowed)."""
        if self.allowed:
            return
        if self.hide:
            raise NotFoundError(self.reason)
        raise ForbiddenError(self.reason, rule=self.rule)


def _allow(rule: str) -> Decision:
    return Decision(True, rule, "allowed")


class Authority(Protocol):
    """What the doors ask: `Authorizer`, or a stand-in in tests about other things."""

    def authorize(
        self, caller: Caller, act: Act, *, team: str | None = None, approval: ApprovalAsk | None = None
    ) -> Decision:
        """Decide one act."""
        ...

    def teams_of(self, caller: Caller) -> frozenset[str]:
        """Return the policy teams the caller belongs to."""
        ...

    def visible_teams(self, caller: Caller) -> frozenset[str] | None:
        """Return the teams whose requests the caller may read; None for every team."""
        ...


class Authorizer:
    """Decide every act of every caller against the policy's teams and the caller's roles and groups."""

    def __init__(self, *, policy: Policy, membership: Membership) -> None:
        self.policy = policy
        self.membership = membership

    def teams_of(self, caller: Caller) -> frozenset[str]:
        """Return the policy teams the caller belongs to (through one of each team's groups)."""
        # One group may stand for several teams: a member acts for each of them.
        wanted = {(str(g).lower(), team) for team, access in self.policy.teams.items() for g in access.groups}
        if caller.groups_overage:
            found = self.membership.member_groups(principal=caller.oid, groups=sorted({g for g, _ in wanted}))
        else:
            found = frozenset(caller.groups)
        return frozenset(team for group, team in wanted if group in found)

    def _member_of(self, caller: Caller, groups: Iterable[str]) -> frozenset[str]:
        """Return which of these groups (object ids) the caller is a member of."""
        wanted = sorted({g.lower() for g in groups})
        if not wanted:
            return frozenset()
        if caller.groups_overage:
            return frozenset(self.membership.member_groups(principal=caller.oid, groups=wanted))
        return frozenset(g for g in wanted if g in caller.groups)

    def approves_for(self, caller: Caller) -> frozenset[str] | None:
        """Return the teams whose requests the caller approves (None: every team); empty without the role."""
        if not caller.has_role(AppRole.APPROVE):
            return frozenset()
        platform = [str(g) for g in self.policy.approvals.approvers]
        teams = {team: [str(g) for g in access.approvers] for team, access in self.policy.teams.items()}
        found = self._member_of(caller, [*platform, *(g for gs in teams.values() for g in gs)])
        if any(g.lower() in found for g in platform):
            return None
        return frozenset(team for team, groups in teams.items() if any(g.lower() in found for g in groups))

    def visible_teams(self, caller: Caller) -> frozenset[str] | None:
        """Return the teams whose requests the caller may read (approvers: those they approve for); None for every team."""
        if caller.has_role(AppRole.READ_ALL) or caller.has_role(AppRole.ADMIN):
            return None
        approves = self.approves_for(caller)
        if approves is None:
            return None
        return self.teams_of(caller) | approves

    def authorize(
        self, caller: Caller, act: Act, *, team: str | None = None, approval: ApprovalAsk | None = None
    ) -> Decision:
        """Decide one act; `team` is the team acted for (required for request, read and approve).

        `approval` (with Act.APPROVE) says who asked for the request and which groups approve for
        each rule it met: the caller must hold `Workspaces.Approve` and be a member of a group of at
        least one rule (`Vending.Admin` counts for every rule), and must not be who asked;
        `Decision.rules` names the rules it counts for.
        """
        if act == Act.OPERATE:
            if caller.has_role(AppRole.OPERATOR) or caller.has_role(AppRole.ADMIN):
                return _allow("OperatorRole")
            return Decision(
                False,
                "MissingRole",
                f"this needs the app role {AppRole.OPERATOR.value}; ask the platform team to assign it to you.",
            )
        if team is None:
            raise ValueError(f"act {act.value} needs a team")
        if act == Act.APPROVE:
            return self._approve(caller, team, approval)
        if act == Act.READ:
            visible = self.visible_teams(caller)
            if visible is None or team in visible:
                return _allow("ReadOwnTeam" if visible is not None else "ReadAllRole")
            return Decision(False, "NotTeamMember", "there is no such workspace request.", hide=True)
        # Act.REQUEST and Act.CHANGE: whoever may ask for a team's workspaces may change and remove them.
        if act == Act.CHANGE and caller.has_role(AppRole.ADMIN):
            return _allow("AdminRole")  # a team taken out of the policy still has workspaces to remove
        if team not in self.policy.teams:
            return Decision(
                False,
                "UnknownTeam",
                f"team '{team}' is not known to the platform; ask the platform team to add it to the policy's teams.",
            )
        if caller.has_role(AppRole.ADMIN):
            return _allow("AdminRole")
        if not caller.has_role(AppRole.REQUEST):
            return Decision(
                False,
                "MissingRole",
                f"asking for workspaces needs the app role {AppRole.REQUEST.value}; ask the platform team to "
                "assign it to you.",
            )
        own = self.teams_of(caller)
        if team not in own:
            return Decision(
                False,
                "NotTeamMember",
                f"you are not a member of team '{team}': request workspaces for your own teams ({_listed(own)}).",
            )
        return _allow("TeamMember")

    def _approve(self, caller: Caller, team: str, approval: ApprovalAsk | None) -> Decision:
        if approval is None:
            raise ValueError("act approve needs the approval asked about")
        admin = caller.has_role(AppRole.ADMIN)
        if not (admin or caller.has_role(AppRole.APPROVE)):
            return Decision(
                False,
                "MissingRole",
                f"approving requests needs the app role {AppRole.APPROVE.value}; ask the platform team to assign it "
                "to you.",
            )
        if caller.oid in {approval.requester.lower(), *(o.lower() for o in approval.others)}:
            return Decision(
                False,
                "OwnRequest",
                "you asked for this request, and nobody approves their own request: another approver must decide it.",
            )
        if admin:
            # Vending.Admin acts for every team (DESIGN section 9): the break-glass approver, never of its own request.
            return Decision(True, "AdminRole", "allowed", rules=tuple(sorted(approval.rules)))
        found = self._member_of(caller, [g for groups in approval.rules.values() for g in groups])
        rules = tuple(sorted(r for r, groups in approval.rules.items() if any(g.lower() in found for g in groups)))
        if not rules:
            return Decision(
                False,
                "NotApprover",
                f"you are not an approver of team '{team}' for the rules this request met "
                f"({', '.join(sorted(approval.rules))}); the policy names the approver groups.",
            )
        return Decision(True, "Approver", "allowed", rules=rules)


def _listed(teams: Iterable[str]) -> str:
    names = sorted(teams)
    return ", ".join(names) if names else "you belong to none"
