"""The platform team's policy: where workspaces may go, what they may hold, and presets."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.approvals import ApprovalPolicy, ApproverChannels, PriceTable
from models.azure_names import name_problem
from models.callbacks import CallbackPolicy
from models.identity import AppRole
from models.request import ComputeSpec, DatastoreSpec, Environment


class PolicyModel(BaseModel):
    """Base for policy models: a typo in the policy file is an error at start, not a silent default."""

    model_config = ConfigDict(extra="forbid")


class VmSize(PolicyModel):
    """One entry of the VM size catalogue."""

    vcpus: int = Field(ge=1)
    gpus: int = Field(0, ge=0)
    family: str = Field(description="The quota family, e.g. standardDSv2Family.")


class EnvironmentDefaults(PolicyModel):
    """Where an environment's workspaces go: every team's, unless the team's own targets say otherwise."""

    subscription_id: UUID
    resource_group: str = Field("rg-ml-{team}-{environment}", description="A template with {team} and {environment}.")

    def target(self, *, team: str, environment: str) -> tuple[str, str]:
        """Return the (subscription, resource group) a team's request goes to by default, lowercase."""
        return str(self.subscription_id).lower(), self.resource_group.format(team=team, environment=environment).lower()


class Profile(PolicyModel):
    """A named preset that fills in compute and datastores."""

    description: str = ""
    compute: list[ComputeSpec] = Field(default_factory=list)
    datastores: list[DatastoreSpec] = Field(default_factory=list)
    container_registry: bool = False


class KeyVaultPolicy(PolicyModel):
    """How key vaults are created."""

    soft_delete_retention_days: int = Field(90, ge=7, le=90)
    purge_protection: bool = True
    on_soft_deleted: Literal["recover", "purge", "rename", "fail"] = Field(
        "recover",
        description="When a soft-deleted vault holds the planned name: recover it, purge it and create anew, "
        "create one with a fresh name suffix, or fail and say so.",
    )


class WorkspacePolicy(PolicyModel):
    """How workspaces are created."""

    on_soft_deleted: Literal["purge", "fail"] = Field(
        "fail",
        description="When a soft-deleted workspace holds the name: purge it and create anew, or fail and say so. "
        "(Recovery is not offered: azure-ai-ml's workspace template always deploys with recovery off.)",
    )


class ExpiryPolicy(PolicyModel):
    """How long an environment's workspaces live unless their teams extend them."""

    default_days: float | None = Field(
        None, gt=0, description="A request without expires_at expires this many days after it is accepted; None: never."
    )
    max_days: float | None = Field(
        None, gt=0, description="No request or extension may set an expiry further than this from now; None: no limit."
    )
    remind_days: float = Field(3.0, ge=0, description="Tell the requester this many days before the expiry.")

    @model_validator(mode="after")
    def _default_within_max(self) -> ExpiryPolicy:
        if self.default_days and self.max_days and self.default_days > self.max_days:
            raise ValueError(f"default_days {self.default_days:g} is above max_days {self.max_days:g}")
        return self


class LifecyclePolicy(PolicyModel):
    """What happens after a workspace is made: teardown, expiry, drift."""

    purge_on_delete: bool = Field(
        False,
        description="Teardown purges the workspace and key vault it deletes (frees their names at once); "
        "false: they stay soft-deleted for their retention, recoverable. DELETE ?purge=true asks for it once.",
    )
    expiry: dict[Environment, ExpiryPolicy] = Field(default_factory=dict)
    drift_interval_s: float = Field(
        3600.0, ge=0, description="How often each succeeded workspace is compared with the cloud; 0: never."
    )
    repair_drift: bool = Field(False, description="True: drift found is repaired by applying the revision again.")


class PreflightPolicy(PolicyModel):
    """Checks against the cloud before a request is accepted."""

    enabled: bool = True
    on_failure: Literal["refuse", "warn"] = Field(
        "refuse", description="refuse: a request that cannot succeed gets 422; warn: accepted, with warnings."
    )
    timeout_s: float = Field(5.0, gt=0, le=60, description="The most the checks may add to a submission.")


class ChatUser(PolicyModel):
    """Who a chat user is: the Entra principal they act as, and the app roles they act with.

    A chat platform sends no Entra token, so the policy says who a Slack or Teams user is. The teams
    they act for come from the teams' Entra groups, as for every caller (engine/authz.py asks the
    membership port whether `principal` is in them); the policy never lists a chat user's teams.
    """

    slack_user: str | None = Field(None, description="Slack user id, e.g. U012AB3CD.")
    teams_user: UUID | None = Field(None, description="Microsoft Entra object id of the Teams user (from.aadObjectId).")
    principal: UUID = Field(
        description="The Entra object id this person acts as: recorded as the requester, added as a workspace "
        "owner, and looked up in the teams' groups."
    )
    name: str | None = Field(None, max_length=256)
    roles: list[AppRole] = Field(
        default_factory=lambda: [AppRole.REQUEST],
        description="The app roles this person acts with in chat (no token carries them): Workspaces.Request by "
        "default; Workspaces.ReadAll to read every team; Vending.Admin to act for every team.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_member_of(cls, data: object) -> object:
        if isinstance(data, dict) and "member_of" in data:
            raise ValueError(
                "member_of is no longer read: a chat user's teams come from the teams' Entra groups "
                "(teams.<team>.groups) that `principal` is a member of; remove member_of"
            )
        return data

    @model_validator(mode="after")
    def _has_a_chat_identity(self) -> ChatUser:
        if not self.slack_user and not self.teams_user:
            raise ValueError("a chat user needs slack_user, teams_user or both")
        return self


class TeamTarget(PolicyModel):
    """A subscription a team may name for one environment, and the resource groups it may name in it."""

    subscription_id: UUID
    resource_groups: list[str] = Field(
        min_length=1, description="Resource group names, exactly (no patterns); Azure compares them ignoring case."
    )

    @field_validator("resource_groups")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if problem := name_problem("resource_group", name):
                raise ValueError(f"'{name}': {problem}")
        return v


class TeamAccess(PolicyModel):
    """Who belongs to a team (its Microsoft Entra groups) and what the team may reach beyond the defaults."""

    groups: list[UUID] = Field(min_length=1, description="Object ids of the team's Entra groups.")
    targets: dict[Environment, list[TeamTarget]] = Field(
        default_factory=dict,
        description="Per environment, the subscriptions and resource groups a request of this team may name, "
        "besides the environment's own (environments.<env>); a request may name no others.",
    )
    service_principals: list[UUID] = Field(
        default_factory=list,
        description="Service principals the team's workspaces may grant roles to; none by default (users and "
        "groups only, and only the team's).",
    )
    approvers: list[UUID] = Field(
        default_factory=list,
        description="Entra groups whose members (with Workspaces.Approve) approve this team's requests that "
        "approval rules catch (rules with approvers: team); the platform's approvers may too.",
    )
    approval_channels: ApproverChannels | None = Field(
        None, description="Where this team's approvers are asked; default: the platform's (approvals.channels)."
    )

    def allowed_targets(self, environment: Environment) -> dict[str, set[str]]:
        """Return, for one environment, subscription (lowercase) -> the resource groups (lowercase) named here."""
        out: dict[str, set[str]] = {}
        for target in self.targets.get(environment, []):
            out.setdefault(str(target.subscription_id).lower(), set()).update(g.lower() for g in target.resource_groups)
        return out


class Policy(PolicyModel):
    """Everything the platform team decides for the teams."""

    allowed_regions: list[str] = Field(min_length=1)
    environments: dict[Environment, EnvironmentDefaults]
    vm_sizes: dict[str, VmSize] = Field(min_length=1)
    max_nodes_per_cluster: int = Field(10, ge=1)
    max_team_vcpus: int = Field(200, ge=1, description="Total vCPUs at max scale across a team's live workspaces.")
    required_tags: list[str] = Field(default_factory=list)
    profiles: dict[str, Profile] = Field(default_factory=dict)
    create_resource_groups: bool = Field(True, description="False: resource groups must already exist.")
    key_vault: KeyVaultPolicy = Field(default_factory=KeyVaultPolicy)
    preflight: PreflightPolicy = Field(default_factory=PreflightPolicy)
    workspace: WorkspacePolicy = Field(default_factory=WorkspacePolicy)
    lifecycle: LifecyclePolicy = Field(default_factory=LifecyclePolicy)
    datastore_credentials: Literal["identity", "account_key"] = Field(
        "identity",
        description="identity: datastores use the caller's identity and storage shared keys stay off; "
        "account_key: blob and file datastores store the account key in the workspace (ADLS Gen2 stays identity).",
    )
    # The Entra tenant written into every key vault (tenantId) and compute instance (user_tenant_id): the
    # service's own tenant. No default: composition.py takes it from the policy or the service's identity
    # (VENDING_TENANT_ID / AZURE_TENANT_ID), and in cloud=azure refuses to start without one.
    configured_tenant: UUID | None = Field(
        None,
        alias="tenant_id",
        description="The Entra tenant (directory) id of the service and the teams; unset: the service's own "
        "(VENDING_TENANT_ID or AZURE_TENANT_ID).",
    )
    allowed_callback_hosts: list[str] = Field(
        default_factory=list,
        description="Host patterns (fnmatch) that callback_url may point at; empty: callbacks are refused.",
    )
    callbacks: CallbackPolicy = Field(
        default_factory=CallbackPolicy,
        description="How callbacks are delivered: https only and public addresses only unless this says otherwise.",
    )
    teams: dict[str, TeamAccess] = Field(
        default_factory=dict,
        description="The teams that may ask for workspaces: their Entra groups, and what each may reach "
        "(engine/confinement.py).",
    )
    service_subscription_id: UUID | None = Field(
        None,
        description="The subscription the service itself runs in: never a provisioning target, not even through "
        "environments, unless allow_service_subscription says so.",
    )
    allow_service_subscription: bool = Field(
        False, description="True: the service's own subscription may be a target (a single-subscription lab)."
    )
    team_tag: str = Field(
        "team",
        min_length=1,
        max_length=512,
        description="The tag that says which team a resource belongs to: brought resources must carry it with "
        "the team's name (the planner writes it on every resource it creates).",
    )
    max_min_nodes: int = Field(
        0,
        ge=0,
        description="The most nodes a cluster may keep running when idle (min_nodes). 0: clusters scale to zero "
        "and cost nothing while no job runs.",
    )
    chat_users: list[ChatUser] = Field(
        default_factory=list,
        description="Chat users allowed to use the Slack and Teams commands: the Entra principal and app roles each acts with.",
    )
    prices: PriceTable | None = Field(
        None, description="What compute costs: every request's estimated monthly cost comes from it (no network call)."
    )
    approvals: ApprovalPolicy = Field(
        default_factory=ApprovalPolicy, description="Which requests wait for a person's yes (docs/approvals.md)."
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @property
    def tenant_id(self) -> UUID:
        """The tenant resources are created for; refused when neither the policy nor the service names one."""
        if self.configured_tenant is None:
            raise ValueError(
                "no Entra tenant: set tenant_id in the policy, or VENDING_TENANT_ID (or AZURE_TENANT_ID) for the service"
            )
        return self.configured_tenant

    def chat_user(self, *, slack: str | None = None, teams: str | None = None) -> ChatUser | None:
        """Find the chat user with this Slack user id or Teams (Entra) object id."""
        for user in self.chat_users:
            if slack and user.slack_user == slack:
                return user
            if teams and user.teams_user and str(user.teams_user) == teams.lower():
                return user
        return None

    @model_validator(mode="after")
    def _profiles_use_catalogue(self) -> Policy:
        lowered = {k.lower() for k in self.vm_sizes}
        for name, profile in self.profiles.items():
            for c in profile.compute:
                if c.vm_size.lower() not in lowered:
                    raise ValueError(f"profile '{name}' uses vm size '{c.vm_size}' that is not in vm_sizes")
        return self

    @model_validator(mode="after")
    def _profiles_within_limits(self) -> Policy:
        for name, profile in self.profiles.items():
            for c in profile.compute:
                if c.kind == "cluster" and c.min_nodes > self.max_min_nodes:
                    raise ValueError(
                        f"profile '{name}' keeps {c.min_nodes} nodes of '{c.name}' running (min_nodes); "
                        f"max_min_nodes is {self.max_min_nodes}"
                    )
        return self

    @model_validator(mode="after")
    def _service_subscription_is_no_target(self) -> Policy:
        if self.service_subscription_id is None or self.allow_service_subscription:
            return self
        own = self.service_subscription_id
        for env, defaults in self.environments.items():
            if defaults.subscription_id == own:
                raise ValueError(
                    f"environments.{env.value}.subscription_id is the service's own subscription "
                    "(service_subscription_id); provision into another one"
                )
        for team, access in self.teams.items():
            for env, targets in access.targets.items():
                if any(t.subscription_id == own for t in targets):
                    raise ValueError(
                        f"teams.{team}.targets.{env.value} names the service's own subscription "
                        "(service_subscription_id); provision into another one"
                    )
        return self

    @model_validator(mode="after")
    def _rules_can_be_approved(self) -> Policy:
        rules = self.approvals.rules
        platform = bool(self.approvals.approvers)
        for rule in rules:
            if rule.approvers == "platform" and not platform:
                raise ValueError(
                    f"approval rule '{rule.name}' is approved by the platform, but approvals.approvers lists no group"
                )
            if rule.approvers == "team" and not platform:
                lacking = sorted(t for t, access in self.teams.items() if not access.approvers)
                if lacking:
                    raise ValueError(
                        f"approval rule '{rule.name}' is approved by each team's approvers, but teams {lacking} "
                        "list none and approvals.approvers lists no group: nobody could approve their requests"
                    )
            if rule.min_monthly_cost is not None:
                if self.prices is None:
                    raise ValueError(f"approval rule '{rule.name}' uses min_monthly_cost, but the policy has no prices")
                unpriced = sorted(v for v in self.vm_sizes if self.prices.hourly(v) is None)
                if unpriced:
                    raise ValueError(
                        f"approval rule '{rule.name}' uses min_monthly_cost, but prices.vm_hourly has no price for "
                        f"{unpriced}: a request using them would be estimated below its cost"
                    )
            for family in rule.vm_families:
                if not any(v.family.lower() == family.lower() for v in self.vm_sizes.values()):
                    raise ValueError(
                        f"approval rule '{rule.name}' names VM family '{family}', which no size in vm_sizes is of"
                    )
        return self

    def vm_size(self, name: str) -> VmSize | None:
        """Look a VM size up in the catalogue, ignoring case as Azure does."""
        for key, value in self.vm_sizes.items():
            if key.lower() == name.lower():
                return value
        return None
