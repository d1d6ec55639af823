"""Load the policy and check requests against it, reporting every violation at once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import yaml
from pydantic import ValidationError

try:
    # libyaml's safe loader, which PyYAML's wheels are built with: the same safe YAML, read in a tenth of the
    # pure-Python loader's time (1.5 ms against 16.6 ms for policy/default.yaml), at every cold start.
    from yaml import CSafeLoader as SafeLoader
except ImportError:  # a PyYAML built without libyaml
    from yaml import SafeLoader  # type: ignore[assignment]

from models.callbacks import url_refusals
from models.errors import InvalidInputError, Problem
from models.policy import Policy
from models.request import ComputeSpec, DatastoreSpec, WorkspaceRequest, field_path

if TYPE_CHECKING:
    from models.identity import AuthSettings
    from models.settings import Settings

POLICY_REFUSAL = "The request does not comply with the platform policy."


@dataclass(frozen=True)
class Startup:
    """What `startup_check` read and checked: the policy with its tenant, and the callers' identity settings."""

    policy: Policy
    auth_settings: AuthSettings


class PolicyFileError(Exception):
    """The policy file cannot be read or does not validate; the service must not start with it."""


def startup_check(settings: Settings) -> Startup | None:
    """Refuse what the service cannot start with, before any function runs: in cloud=azure, the policy, its tenant and the identity settings.

    The Functions entry calls it at import, so that a deployment the service cannot run with fails the
    worker's indexing (no function, no queue listener: messages wait in their queues) instead of every
    invocation failing and Service Bus dead-lettering each message after its deliveries. Raises
    `PolicyFileError` or `ValueError` saying what to fix. Returns what it read, for the container to use
    rather than read again; on the emulator it reads nothing (None): the policy is read on first use.
    A package that lacks a dependency is not caught here (the modules that would need it are imported on
    first use): the deployment's build installs requirements.txt, which CI tests.
    """
    if settings.cloud != "azure":
        return None
    from models.identity import AuthSettings

    policy = policy_with_tenant(load_policy(settings.policy_file), settings)
    # The callers' identity: a mode the service cannot run with on App Service, or no audience.
    return Startup(policy=policy, auth_settings=AuthSettings())


def load_policy(path: Path) -> Policy:
    """Read a policy from a YAML or JSON file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyFileError(f"cannot read policy file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.load(text, Loader=SafeLoader)
    except (ValueError, yaml.YAMLError) as exc:
        raise PolicyFileError(f"policy file {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from exc
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        lines = "; ".join(f"{field_path(tuple(e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
        raise PolicyFileError(f"policy file {path} is not valid: {lines}") from exc


def policy_with_tenant(policy: Policy, settings: Settings) -> Policy:
    """Return `policy` with the tenant resources are created for: the policy's, else the service's own.

    In cloud=azure there must be one (ValueError: the service does not start); on the emulator the local
    directory's tenant (VENDING_AUTH_DIRECTORY_FILE) stands in.
    """
    own, named = settings.tenant_id, policy.configured_tenant
    if own is not None and named is not None and own != named:
        raise ValueError(
            f"the policy's tenant_id {named} is not the service's tenant {own} (VENDING_TENANT_ID / AZURE_TENANT_ID); "
            "make them the same or remove one"
        )
    tenant = named or own
    if tenant is None and settings.cloud == "azure":
        raise ValueError(
            "cloud=azure needs the Entra tenant id: set VENDING_TENANT_ID (or AZURE_TENANT_ID), or tenant_id in the policy"
        )
    if tenant is None:
        from devhost.identity import load_directory
        from models.identity import AuthSettings

        tenant = UUID(str(load_directory(AuthSettings().directory_file).tenant_id))
    return policy.model_copy(update={"configured_tenant": tenant})


def _merge(base: list[ComputeSpec] | list[DatastoreSpec], own: list[ComputeSpec] | list[DatastoreSpec]) -> list:  # type: ignore[type-arg]
    """Return the caller's rows first, in their order, then the profile's rows they do not replace by name.

    The caller's rows keep their indices, so a problem found in a resolved request (policy, pre-flight,
    confinement, revision) names the field the caller wrote: compute[0] is the caller's compute[0]. The
    profile's own rows are held to the per-row rules when the policy loads (models/policy.py).
    """
    names = {x.name.lower() for x in own}
    return list(own) + [x for x in base if x.name.lower() not in names]


def resolve(request: WorkspaceRequest, policy: Policy) -> WorkspaceRequest:
    """Fill in what the request leaves to policy: profile presets, subscription and resource group.

    The request's own compute and datastores win over the profile's by name. Unknown profiles and
    environments are left for `check` to report.
    """
    update: dict[str, object] = {}
    profile = policy.profiles.get(request.profile) if request.profile else None
    if profile is not None:
        update["compute"] = _merge(profile.compute, request.compute)
        update["datastores"] = _merge(profile.datastores, request.datastores)
        update["container_registry"] = request.container_registry or profile.container_registry
    env = policy.environments.get(request.environment)
    if env is not None:
        if request.subscription_id is None:
            update["subscription_id"] = env.subscription_id
        if request.resource_group is None:
            update["resource_group"] = env.resource_group.format(
                team=request.team, environment=request.environment.value
            )
    return request.model_copy(update=update)


def check(request: WorkspaceRequest, policy: Policy, *, team_vcpus_in_use: int = 0) -> list[Problem]:
    """Return every way a resolved request breaks policy (empty when it complies)."""
    problems: list[Problem] = []
    if request.profile and request.profile not in policy.profiles:
        known = ", ".join(sorted(policy.profiles)) or "none are defined"
        problems.append(
            Problem("profile", f"profile '{request.profile}' does not exist; use one of: {known}.", "policy")
        )
    if request.region not in policy.allowed_regions:
        problems.append(
            Problem(
                "region",
                f"region '{request.region}' is not allowed; use one of: {', '.join(policy.allowed_regions)}.",
                "policy",
            )
        )
    if request.environment not in policy.environments:
        problems.append(
            Problem("environment", f"policy has no settings for environment '{request.environment}'.", "policy")
        )
    vcpus = 0
    for i, c in enumerate(request.compute):
        size = policy.vm_size(c.vm_size)
        if size is None:
            problems.append(
                Problem(
                    f"compute[{i}].vm_size",
                    f"vm size '{c.vm_size}' is not in the catalogue; use one of: {', '.join(policy.vm_sizes)}.",
                    "policy",
                )
            )
        else:
            vcpus += size.vcpus * (1 if c.kind == "instance" else c.max_nodes)
        if c.max_nodes > policy.max_nodes_per_cluster:
            problems.append(
                Problem(
                    f"compute[{i}].max_nodes",
                    f"max_nodes {c.max_nodes} is above the policy limit of {policy.max_nodes_per_cluster} per cluster.",
                    "policy",
                )
            )
        # Nodes kept when idle are paid for around the clock; an instance has no min_nodes to speak of.
        if c.kind == "cluster" and c.min_nodes > policy.max_min_nodes:
            problems.append(
                Problem(
                    f"compute[{i}].min_nodes",
                    f"min_nodes {c.min_nodes} keeps nodes running while no job runs; the policy allows at most "
                    f"{policy.max_min_nodes}. Lower min_nodes: the cluster scales up when jobs arrive.",
                    "policy",
                )
            )
    if vcpus and team_vcpus_in_use + vcpus > policy.max_team_vcpus:
        problems.append(
            vcpu_limit_problem(team=request.team, asked=vcpus, in_use=team_vcpus_in_use, limit=policy.max_team_vcpus)
        )
    if request.callback_url is not None:
        # The URL as written; delivery checks the addresses its host resolves to (models/callbacks.py).
        problems += [
            Problem("callback_url", f"{reason}.", "policy")
            for reason in url_refusals(
                scheme=request.callback_url.scheme,
                host=(request.callback_url.host or "").lower(),
                patterns=policy.allowed_callback_hosts,
                rules=policy.callbacks,
            )
        ]
    missing = [t for t in policy.required_tags if t not in request.tags]
    if missing:
        problems.append(Problem("tags", f"add the required tags: {', '.join(missing)}.", "policy"))
    problems += [
        Problem(f"tags.{t}", f"the required tag '{t}' is empty; give it a value.", "policy")
        for t in policy.required_tags
        if t in request.tags and not request.tags[t].strip()
    ]
    if request.workspace_name is None and len(f"mlw-{request.team}-{request.environment.value}") > 33:
        problems.append(Problem("team", "the derived workspace name is too long; set workspace_name.", "policy"))
    return problems


def vcpu_limit_problem(*, team: str, asked: int, in_use: int, limit: int) -> Problem:
    """Say that a request would take its team over the vCPU limit, and what to do."""
    return Problem(
        "compute",
        f"at max scale these clusters use {asked} vCPUs and team '{team}' already has "
        f"{in_use} in live workspaces; the team limit is {limit}. "
        "Lower max_nodes or pick smaller VM sizes.",
        "policy",
    )


def team_vcpus(request: WorkspaceRequest, policy: Policy) -> int:
    """Return the vCPUs a request's clusters use at max scale (sizes not in the catalogue count 0)."""
    return sum(
        (s.vcpus if (s := policy.vm_size(c.vm_size)) else 0) * (1 if c.kind == "instance" else c.max_nodes)
        for c in request.compute
    )


def admit(request: WorkspaceRequest, policy: Policy, *, team_vcpus_in_use: int = 0) -> WorkspaceRequest:
    """Resolve a request and check it; raise `InvalidInputError` with every violation."""
    resolved = resolve(request, policy)
    problems = check(resolved, policy, team_vcpus_in_use=team_vcpus_in_use)
    if problems:
        raise InvalidInputError(problems, title=POLICY_REFUSAL)
    return resolved
