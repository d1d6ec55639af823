"""Confinement (DESIGN section 9): a request reaches only what policy gives its team, whoever asks.

Authorisation (engine/authz.py) decides who may ask for a team; confinement decides what a request
for that team may touch. It does not look at the caller: a `Vending.Admin` acting for a team is held
to the team's scopes and the team's groups exactly as the team's own members are.

The rules, each a stable name in `Rule`, all checked before anything is created:

- **Where.** Subscription and resource group are the environment's (`environments.<env>`) or one the
  team's policy names for that environment (`teams.<team>.targets.<env>`); nothing else. The service's
  own subscription (`service_subscription_id`) is never a target unless `allow_service_subscription`.
- **Brought resources** (`existing.*`) lie in the request's own subscription and resource group, exist,
  and carry the team's tag (`team_tag`, with the team's name: what the planner writes on every resource
  it creates). The last two need ARM: `cloud_refusals`.
- **The workspace** is adopted only from the team that made it: the store's first request with the
  same workspace key must be this team's (`WorkspaceHistory`), and a workspace that ARM says exists
  but no request of this team ever named is refused.
- **Roles** go to the team's groups, to groups nested in them, and to users who are members of them
  (the `Membership` port, transitively, as Graph's `checkMemberGroups` answers); to a service
  principal only when `teams.<team>.service_principals` names it. A compute instance's assigned user
  must be a member too. ARM holds a role assignment's declared `principalType` to the principal's
  real type (it refuses `UnmatchedPrincipalType`), so a service principal cannot pass as a user.

Nested groups count as the team's: their members are the team's members transitively, which is also
how Entra's `groups` claim, and therefore `Authorizer.teams_of`, sees them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from engine.authz import Act, Decision
from engine.planner import derive_names
from engine.ports import Membership
from models.errors import ForbiddenError, Problem, TransientError
from models.plan import Plan, ResourceNames
from models.policy import Policy, TeamAccess

if TYPE_CHECKING:
    from engine.audit import Guard
    from models.identity import Caller
from models.request import ARM_ID, Principal, PrincipalType, WorkspaceRequest

CONFINEMENT_REFUSAL = "The request reaches beyond what the platform policy gives its team."

EXISTING_FIELDS = ("storage_account_id", "key_vault_id", "application_insights_id", "container_registry_id")


class Rule(StrEnum):
    """The confinement rules, by the name a refusal carries (stable: clients may match on them)."""

    UNKNOWN_TEAM = "UnknownTeam"
    SUBSCRIPTION_NOT_ALLOWED = "SubscriptionNotAllowed"
    RESOURCE_GROUP_NOT_ALLOWED = "ResourceGroupNotAllowed"
    SERVICE_SUBSCRIPTION = "ServiceSubscription"
    EXISTING_OUTSIDE_TARGET = "ExistingOutsideTarget"
    EXISTING_NOT_FOUND = "ExistingNotFound"
    EXISTING_NOT_TEAM_TAGGED = "ExistingNotTeamTagged"
    TEAM_TAG_MISMATCH = "TeamTagMismatch"
    WORKSPACE_OF_ANOTHER_TEAM = "WorkspaceOfAnotherTeam"
    WORKSPACE_NOT_MADE_BY_TEAM = "WorkspaceNotMadeByTeam"
    PRINCIPAL_NOT_TEAM_MEMBER = "PrincipalNotTeamMember"
    GROUP_NOT_TEAM_GROUP = "GroupNotTeamGroup"
    SERVICE_PRINCIPAL_NOT_ALLOWED = "ServicePrincipalNotAllowed"
    INSTANCE_USER_NOT_TEAM_MEMBER = "InstanceUserNotTeamMember"


@dataclass(frozen=True)
class Refusal:
    """One way a request reaches too far: the rule, the field to change, and what to do."""

    rule: Rule
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """Return the JSON shape of one refusal in a problem+json body."""
        return {"rule": self.rule.value, "field": self.field, "message": self.message}


class ConfinementError(ForbiddenError):
    """A request broke one or more confinement rules: answer 403 listing every refusal.

    `rule` is the first refusal's rule (refusals come in a fixed order); `refusals` has them all.
    """

    def __init__(self, refusals: Sequence[Refusal]) -> None:
        if not refusals:
            raise ValueError("a confinement error needs at least one refusal")
        self.refusals = tuple(refusals)
        self.title = CONFINEMENT_REFUSAL
        detail = " ".join(f"{r.field}: {r.message}" for r in self.refusals)
        super().__init__(
            f"{CONFINEMENT_REFUSAL} {detail}",
            rule=self.refusals[0].rule.value,
            problems=[Problem(r.field, r.message, r.rule.value) for r in self.refusals],
        )


class WorkspaceHistory(Protocol):
    """What the store knows of who made a workspace (the store implements it)."""

    def workspace_owner(self, workspace_key: str) -> str | None:
        """Return the team of the first request ever recorded with this workspace key, or None."""
        ...


@dataclass(frozen=True)
class ArmResource:
    """What confinement reads of one resource in ARM: its id and its tags."""

    id: str
    tags: Mapping[str, str] = field(default_factory=dict)


class ResourceReader(Protocol):
    """Reads resources from ARM for the checks that need the cloud (cloud/preflight.py implements it)."""

    def read_resources(self, resource_ids: Sequence[str], *, timeout_s: float) -> Mapping[str, ArmResource | None]:
        """GET every resource; map each id as given to what ARM says, None where ARM answers 404.

        Raise `TransientError` when any of them cannot be read within `timeout_s`: confinement fails
        closed, the request is refused for now, never let through unchecked.
        """
        ...


def workspace_key(names: ResourceNames) -> str:
    """Return the key a workspace is known by in the store: subscription/resource group/workspace, lowercase."""
    return f"{names.subscription_id}/{names.resource_group}/{names.workspace}".lower()


# ----- the checks that need no cloud -------------------------------------------------------------


def refusals(
    *,
    request: WorkspaceRequest,
    policy: Policy,
    membership: Membership,
    history: WorkspaceHistory,
    service_subscription_id: str | None = None,
) -> list[Refusal]:
    """Return every way a resolved request reaches beyond its team's scopes (empty when it does not).

    `service_subscription_id` is the service's own subscription as the deployment knows it, refused
    like `policy.service_subscription_id`.
    """
    access = policy.teams.get(request.team)
    if access is None:
        return [
            Refusal(
                Rule.UNKNOWN_TEAM,
                "team",
                f"team '{request.team}' is not known to the platform; ask the platform team to add it to the "
                "policy's teams.",
            )
        ]
    found = _target_refusals(request, policy, access, service_subscription_id)
    found += _existing_placement_refusals(request)
    found += _team_tag_refusals(request, policy)
    found += _workspace_refusals(request, history)
    found += _principal_refusals(request, access, membership)
    return found


def _target_refusals(
    request: WorkspaceRequest, policy: Policy, access: TeamAccess, service_subscription_id: str | None
) -> list[Refusal]:
    env = request.environment
    sub = str(request.subscription_id).lower() if request.subscription_id is not None else None
    rg = (request.resource_group or "").lower()
    own = {str(s).lower() for s in (policy.service_subscription_id, service_subscription_id) if s is not None}
    if sub is not None and sub in own and not policy.allow_service_subscription:
        return [
            Refusal(
                Rule.SERVICE_SUBSCRIPTION,
                "subscription_id",
                f"subscription {sub} is the one the service itself runs in and is never a target; leave "
                "subscription_id out to use the environment's.",
            )
        ]
    allowed = access.allowed_targets(env)
    defaults = policy.environments.get(env)
    if defaults is not None:
        default_sub, default_rg = defaults.target(team=request.team, environment=env.value)
        allowed.setdefault(default_sub, set()).add(default_rg)
    if sub is None or sub not in allowed:
        listed = ", ".join(sorted(allowed)) or "none"
        return [
            Refusal(
                Rule.SUBSCRIPTION_NOT_ALLOWED,
                "subscription_id",
                f"team '{request.team}' may not provision into subscription {sub} for {env.value}; leave "
                f"subscription_id out, or use one the policy gives the team ({listed}).",
            )
        ]
    if rg not in allowed[sub]:
        return [
            Refusal(
                Rule.RESOURCE_GROUP_NOT_ALLOWED,
                "resource_group",
                f"team '{request.team}' may not provision into resource group '{request.resource_group}' of "
                f"subscription {sub} for {env.value}; leave resource_group out, or use one the policy gives "
                f"the team there ({', '.join(sorted(allowed[sub]))}).",
            )
        ]
    return []


def _existing_placement_refusals(request: WorkspaceRequest) -> list[Refusal]:
    sub = str(request.subscription_id).lower()
    rg = (request.resource_group or "").lower()
    out = []
    for name in EXISTING_FIELDS:
        rid = getattr(request.existing, name)
        m = ARM_ID.match(rid) if rid else None
        if m is None:
            continue
        if m["sub"].lower() != sub or m["rg"].lower() != rg:
            out.append(
                Refusal(
                    Rule.EXISTING_OUTSIDE_TARGET,
                    f"existing.{name}",
                    f"'{rid}' is not in the workspace's own resource group ({request.resource_group} in "
                    f"subscription {sub}); bring only resources of that resource group, or leave it out to have "
                    "one created.",
                )
            )
    return out


def _team_tag_refusals(request: WorkspaceRequest, policy: Policy) -> list[Refusal]:
    # The planner writes the team tag itself; a request may not set it to another team's name (in any
    # letter case: ARM tag names ignore case), or its resources would pass for that team's later.
    wanted = policy.team_tag.lower()
    return [
        Refusal(
            Rule.TEAM_TAG_MISMATCH,
            f"tags.{name}",
            f"the tag '{name}' says which team owns a resource and is set to '{request.team}' by the service; "
            "remove it from tags.",
        )
        for name, value in request.tags.items()
        if name.lower() == wanted and (name != policy.team_tag or value != request.team)
    ]


def _workspace_refusals(request: WorkspaceRequest, history: WorkspaceHistory) -> list[Refusal]:
    names = derive_names(request)
    owner = history.workspace_owner(workspace_key(names))
    if owner is None or owner == request.team:
        return []
    return [
        Refusal(
            Rule.WORKSPACE_OF_ANOTHER_TEAM,
            "workspace_name",
            f"the workspace '{names.workspace}' in resource group {names.resource_group} was asked for by another "
            "team; choose another workspace_name.",
        )
    ]


class _TeamMembers:
    """Answers "is this principal the team's?" through the membership port, asking once per principal."""

    def __init__(self, access: TeamAccess, membership: Membership) -> None:
        self.groups = sorted(str(g).lower() for g in access.groups)
        self.service_principals = {str(p).lower() for p in access.service_principals}
        self.membership = membership
        self._asked: dict[str, bool] = {}

    def member(self, object_id: str) -> bool:
        """Say whether a user (or group) is a member of one of the team's groups, transitively."""
        oid = object_id.lower()
        if oid not in self._asked:
            self._asked[oid] = bool(self.membership.member_groups(principal=oid, groups=self.groups))
        return self._asked[oid]

    def team_group(self, object_id: str) -> bool:
        """Say whether a group is one of the team's groups or nested in one."""
        return object_id.lower() in self.groups or self.member(object_id)


def _principal_refusals(request: WorkspaceRequest, access: TeamAccess, membership: Membership) -> list[Refusal]:
    team = _TeamMembers(access, membership)
    out = []
    for where, principals in (("owners", request.owners), ("members", request.members)):
        for i, p in enumerate(principals):
            refusal = _principal_refusal(f"{where}[{i}]", p, team, request.team)
            if refusal is not None:
                out.append(refusal)
    for i, c in enumerate(request.compute):
        if c.assigned_user is not None and not team.member(str(c.assigned_user)):
            out.append(
                Refusal(
                    Rule.INSTANCE_USER_NOT_TEAM_MEMBER,
                    f"compute[{i}].assigned_user",
                    f"{c.assigned_user} is not a member of team '{request.team}' (none of its Entra groups); assign "
                    "the instance to a member of the team.",
                )
            )
    return out


def _principal_refusal(where: str, p: Principal, team: _TeamMembers, name: str) -> Refusal | None:
    oid = str(p.object_id)
    if p.type == PrincipalType.USER and not team.member(oid):
        return Refusal(
            Rule.PRINCIPAL_NOT_TEAM_MEMBER,
            where,
            f"user {oid} is not a member of team '{name}' (none of its Entra groups); grant access only to the "
            "team's members, or ask for them to be added to one of its groups.",
        )
    if p.type == PrincipalType.GROUP and not team.team_group(oid):
        return Refusal(
            Rule.GROUP_NOT_TEAM_GROUP,
            where,
            f"group {oid} is not one of the Entra groups of team '{name}' nor nested in one; grant access only to the "
            "team's groups.",
        )
    if p.type == PrincipalType.SERVICE_PRINCIPAL and oid.lower() not in team.service_principals:
        return Refusal(
            Rule.SERVICE_PRINCIPAL_NOT_ALLOWED,
            where,
            f"service principal {oid} may not be granted roles in the workspaces of team '{name}'; the platform team "
            f"must name it in the policy (teams.{name}.service_principals) first.",
        )
    return None


# ----- the checks that read ARM ------------------------------------------------------------------


def cloud_refusals(
    *,
    plan: Plan,
    request: WorkspaceRequest,
    policy: Policy,
    reader: ResourceReader,
    history: WorkspaceHistory,
    timeout_s: float | None = None,
) -> list[Refusal]:
    """Return the refusals only ARM can tell: brought resources missing or not the team's, a workspace not its own.

    Runs whatever the pre-flight settings say (it is a rule, not advice), and fails closed: when ARM
    cannot answer in time the reader raises `TransientError` and nothing is accepted.
    """
    # Only what lies in the request's own resource group is read: the rest is refused without a look
    # (ExistingOutsideTarget), so a request cannot probe whether another team's resources exist.
    sub, rg = str(request.subscription_id).lower(), (request.resource_group or "").lower()
    brought = {
        name: rid
        for name in EXISTING_FIELDS
        if (rid := getattr(request.existing, name))
        and (m := ARM_ID.match(rid)) is not None
        and (m["sub"].lower(), m["rg"].lower()) == (sub, rg)
    }
    workspace_id = plan.step("workspace").resource_id
    found = reader.read_resources(
        [*brought.values(), workspace_id], timeout_s=timeout_s if timeout_s is not None else policy.preflight.timeout_s
    )
    out = []
    for name, rid in brought.items():
        resource = found.get(rid)
        if resource is None:
            out.append(
                Refusal(
                    Rule.EXISTING_NOT_FOUND,
                    f"existing.{name}",
                    f"'{rid}' does not exist; check the id, or leave it out to have one created.",
                )
            )
        elif _tag(resource.tags, policy.team_tag) != request.team:
            out.append(
                Refusal(
                    Rule.EXISTING_NOT_TEAM_TAGGED,
                    f"existing.{name}",
                    f"'{rid}' does not carry the tag {policy.team_tag}={request.team}, so it is not known to belong to "
                    f"team '{request.team}'; tag it so, or leave it out to have one created.",
                )
            )
    if found.get(workspace_id) is not None:
        owner = history.workspace_owner(workspace_key(plan.names))
        if owner != request.team:
            out.append(
                Refusal(
                    Rule.WORKSPACE_NOT_MADE_BY_TEAM,
                    "workspace_name",
                    f"a workspace '{plan.names.workspace}' already exists in resource group {plan.names.resource_group} "
                    f"and team '{request.team}' did not make it through this service; choose another workspace_name.",
                )
            )
    return out


def _tag(tags: Mapping[str, str], name: str) -> str | None:
    # Tag names are case-insensitive in ARM; values are not.
    wanted = name.lower()
    return next((value for key, value in tags.items() if key.lower() == wanted), None)


# ----- as intake asks it -------------------------------------------------------------------------


class Confinement:
    """Confinement as intake asks it: the rules above, with the deployment's policy, directory, store and ARM.

    `reader` is None only where no cloud is attached (an intake without an emulator or Azure to
    provision into). Then the checks that need ARM cannot be made, and confinement still fails
    closed: a request that brings resources is refused for now (`TransientError`), and a workspace
    is held to what the store knows of its owner.
    """

    def __init__(
        self,
        *,
        policy: Policy,
        membership: Membership,
        history: WorkspaceHistory,
        reader: ResourceReader | None,
        service_subscription_id: str | None = None,
    ) -> None:
        self.policy = policy
        self.membership = membership
        self.history = history
        self.reader = reader
        self.service_subscription_id = service_subscription_id

    def check(self, *, plan: Plan, request: WorkspaceRequest, budget_s: float | None = None) -> None:
        """Raise `ConfinementError` listing every way a resolved request and its plan reach too far.

        The rules that need no cloud go first. ARM is asked only when the request stays in its
        team's subscription and resource group, and only about what lies there (a request may not
        probe whether another team's resources exist). Then every refusal is reported at once.
        `TransientError` when ARM cannot answer in time; `budget_s` bounds the wait below the
        pre-flight timeout (chat doors answer within seconds). Runs whatever the pre-flight settings
        say: it is a rule, not advice.
        """
        found = refusals(
            request=request,
            policy=self.policy,
            membership=self.membership,
            history=self.history,
            service_subscription_id=self.service_subscription_id,
        )
        if not any(r.rule in WHERE_RULES for r in found):
            found += [r for r in self._in_cloud(plan, request, budget_s) if not _already(found, r)]
        if found:
            raise ConfinementError(found)

    def _in_cloud(self, plan: Plan, request: WorkspaceRequest, budget_s: float | None) -> list[Refusal]:
        timeout = (
            self.policy.preflight.timeout_s if budget_s is None else min(budget_s, self.policy.preflight.timeout_s)
        )
        if self.reader is None:
            if any(getattr(request.existing, name) for name in EXISTING_FIELDS):
                raise TransientError(
                    "no cloud is attached to check the resources this request brings (existing.*), so it cannot be "
                    "accepted now; try again when the service is connected to Azure.",
                    code="ConfinementUnchecked",
                )
            return []
        return cloud_refusals(
            plan=plan, request=request, policy=self.policy, reader=self.reader, history=self.history, timeout_s=timeout
        )


# A request refused on where it goes is not looked up in ARM at all.
WHERE_RULES = frozenset(
    {Rule.UNKNOWN_TEAM, Rule.SUBSCRIPTION_NOT_ALLOWED, Rule.RESOURCE_GROUP_NOT_ALLOWED, Rule.SERVICE_SUBSCRIPTION}
)


def _already(found: list[Refusal], refusal: Refusal) -> bool:
    """Say whether a field is refused already (a workspace of another team is not also 'not made by the team')."""
    return any(r.field == refusal.field for r in found)


def confine(
    confinement: Confinement,
    guard: Guard,
    *,
    plan: Plan,
    request: WorkspaceRequest,
    caller: Caller,
    act: Act,
    door: str,
    budget_s: float | None = None,
    request_id: str | None = None,
) -> None:
    """Hold a resolved request (a new one, or a revision) to its team's scopes, recording a refusal as a decision."""
    try:
        confinement.check(plan=plan, request=request, budget_s=budget_s)
    except ConfinementError as exc:
        guard.audit.decided(
            caller=caller,
            decision=Decision(False, exc.rule, str(exc)),
            act=act,
            team=request.team,
            door=door,
            request_id=request_id,
        )
        raise
