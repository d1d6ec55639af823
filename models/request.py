"""What a team asks for: `WorkspaceRequest`, and `TeamOnboarding` that expands into several."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AnyHttpUrl,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from models.azure_names import name_problem, tag_problem
from models.errors import InvalidInputError, Problem

ARM_ID = re.compile(
    r"^/subscriptions/(?P<sub>[0-9a-fA-F-]{36})/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"(?P<type>[A-Za-z.]+/[A-Za-z]+)/(?P<name>[^/]+)$",
    re.IGNORECASE,
)


class Environment(StrEnum):
    """The stage a workspace serves."""

    DEV = "dev"
    TEST = "test"
    PROD = "prod"


class Strict(BaseModel):
    """Base for input models: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _check_name(kind: str, value: str) -> str:
    if problem := name_problem(kind, value):
        raise PydanticCustomError("name", problem)
    return value


class ComputeSpec(Strict):
    """One AmlCompute cluster, or a compute instance assigned to one user."""

    name: str
    kind: Literal["cluster", "instance"] = "cluster"
    vm_size: str = Field(description="Azure VM size, e.g. Standard_DS3_v2; must be in the policy's catalogue.")
    min_nodes: int = Field(0, ge=0, le=1000)
    max_nodes: int = Field(1, ge=1, le=1000)
    tier: Literal["dedicated", "low_priority"] = "dedicated"
    idle_seconds: int = Field(1800, ge=60, le=604800, description="Idle time before scale-down (or shutdown).")
    assigned_user: UUID | None = Field(
        None, validate_default=True, description="The Entra object id of the instance's user (instances only)."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name("compute", v)

    @model_validator(mode="after")
    def _cluster_name(self) -> ComputeSpec:
        # Clusters have a stricter name rule than instances (models/azure_names.py COMPUTE_CLUSTER); the
        # kind is known only here, and the problem is still reported at `name`.
        if self.kind == "cluster" and (problem := name_problem("compute_cluster", self.name)):
            raise ValidationError.from_exception_data(
                "ComputeSpec",
                [InitErrorDetails(type=PydanticCustomError("name", problem), loc=("name",), input=self.name)],
            )
        return self

    @field_validator("assigned_user")
    @classmethod
    def _user(cls, v: UUID | None, info: ValidationInfo) -> UUID | None:
        kind = info.data.get("kind")
        if kind == "instance" and v is None:
            raise PydanticCustomError(
                "assigned_user", "a compute instance belongs to one user: set assigned_user to their Entra object id."
            )
        if kind == "cluster" and v is not None:
            raise PydanticCustomError("assigned_user", "only a compute instance has an assigned_user; remove it.")
        return v

    @field_validator("max_nodes")
    @classmethod
    def _nodes(cls, v: int, info: ValidationInfo) -> int:
        # A field validator (not a model one) so that this is reported even when other fields are wrong.
        low = info.data.get("min_nodes")
        if low is not None and low > v:
            raise PydanticCustomError(
                "nodes",
                "min_nodes ({min}) is larger than max_nodes ({max}); make min_nodes at most max_nodes.",
                {"min": low, "max": v},
            )
        return v


class DatastoreKind(StrEnum):
    """The storage a datastore points at."""

    BLOB = "blob"
    FILE = "file"
    ADLS_GEN2 = "adls_gen2"


class DatastoreSpec(Strict):
    """One datastore, backed by a container (blob, ADLS Gen2 filesystem) or a file share."""

    name: str
    kind: DatastoreKind = DatastoreKind.BLOB
    container: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name("datastore", v)

    @field_validator("container")
    @classmethod
    def _container(cls, v: str) -> str:
        return _check_name("container", v)


class PrincipalType(StrEnum):
    """Microsoft Entra principal types that role assignments accept."""

    USER = "User"
    GROUP = "Group"
    SERVICE_PRINCIPAL = "ServicePrincipal"


class Principal(Strict):
    """A Microsoft Entra principal given access to the workspace."""

    object_id: UUID
    type: PrincipalType = PrincipalType.GROUP
    display_name: str | None = Field(None, max_length=256)


def _arm_id_validator(expected_type: str) -> Any:
    def check(v: str | None) -> str | None:
        if v is None:
            return v
        m = ARM_ID.match(v)
        if not m or m["type"].lower() != expected_type.lower():
            raise PydanticCustomError(
                "arm_id",
                "'{value}' is not a {type} resource id; expected "
                "/subscriptions/<id>/resourceGroups/<group>/providers/{type}/<name>.",
                {"value": v, "type": expected_type},
            )
        return v

    return check


class ExistingResources(Strict):
    """Bring-your-own dependent resources, by ARM resource id."""

    storage_account_id: str | None = None
    key_vault_id: str | None = None
    application_insights_id: str | None = None
    container_registry_id: str | None = None

    _storage = field_validator("storage_account_id")(_arm_id_validator("Microsoft.Storage/storageAccounts"))
    _kv = field_validator("key_vault_id")(_arm_id_validator("Microsoft.KeyVault/vaults"))
    _ai = field_validator("application_insights_id")(_arm_id_validator("Microsoft.Insights/components"))
    _acr = field_validator("container_registry_id")(_arm_id_validator("Microsoft.ContainerRegistry/registries"))


Tags = Annotated[dict[str, str], Field(default_factory=dict, max_length=50)]


def _unique(items: list[Any], what: str) -> None:
    seen: set[str] = set()
    for item in items:
        key = item.name.lower()
        if key in seen:
            raise PydanticCustomError(
                "duplicate",
                "{what} name '{name}' appears more than once; give each {what} its own name.",
                {"what": what, "name": item.name},
            )
        seen.add(key)


def _tags(v: dict[str, str]) -> dict[str, str]:
    problems = [p for name, value in v.items() if (p := tag_problem(name, value))]
    if problems:
        raise PydanticCustomError("tags", " ".join(problems))
    return v


class WorkspaceRequest(Strict):
    """A request for one Azure ML workspace with its resources, compute, datastores and access."""

    team: str
    environment: Environment
    region: str = Field(description="Azure region, e.g. westeurope; must be allowed by policy.")
    profile: str | None = Field(None, description="A preset from policy that fills in compute and datastores.")
    compute: list[ComputeSpec] = Field(default_factory=list, max_length=20)
    datastores: list[DatastoreSpec] = Field(default_factory=list, max_length=20)
    owners: list[Principal] = Field(default_factory=list, max_length=50)
    members: list[Principal] = Field(default_factory=list, max_length=50)
    tags: Tags
    workspace_name: str | None = None
    subscription_id: UUID | None = None
    resource_group: str | None = None
    container_registry: bool = Field(False, description="Create a container registry for the workspace.")
    existing: ExistingResources = Field(default_factory=ExistingResources)
    callback_url: AnyHttpUrl | None = Field(None, description="Called with the final status when provisioning ends.")
    expires_at: AwareDatetime | None = Field(
        None,
        description="When the workspace is torn down unless extended (policy sets the default and the latest allowed).",
    )

    @field_validator("team")
    @classmethod
    def _team(cls, v: str) -> str:
        return _check_name("team", v)

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        v = v.lower().replace(" ", "")
        if not re.fullmatch(r"[a-z0-9]{2,40}", v):
            raise PydanticCustomError("region", "'{v}' is not an Azure region name such as westeurope.", {"v": v})
        return v

    @field_validator("workspace_name")
    @classmethod
    def _ws(cls, v: str | None) -> str | None:
        return None if v is None else _check_name("workspace", v)

    @field_validator("resource_group")
    @classmethod
    def _rg(cls, v: str | None) -> str | None:
        return None if v is None else _check_name("resource_group", v)

    @field_validator("compute")
    @classmethod
    def _compute(cls, v: list[ComputeSpec]) -> list[ComputeSpec]:
        _unique(v, "compute")
        return v

    @field_validator("datastores")
    @classmethod
    def _datastores(cls, v: list[DatastoreSpec]) -> list[DatastoreSpec]:
        _unique(v, "datastore")
        return v

    _check_tags = field_validator("tags")(_tags)

    @model_validator(mode="after")
    def _principals(self) -> WorkspaceRequest:
        ids = [p.object_id for p in [*self.owners, *self.members]]
        if len(ids) != len(set(ids)):
            raise PydanticCustomError(
                "duplicate", "a principal is listed more than once in owners and members; list each once."
            )
        return self


class TeamOnboarding(Strict):
    """A team joining the platform: one workspace request per environment."""

    kind: Literal["TeamOnboarding"] = "TeamOnboarding"
    team: str
    members: list[Principal] = Field(default_factory=list, max_length=50)
    owners: list[Principal] = Field(default_factory=list, max_length=50)
    cost_center: str = Field(min_length=1, max_length=64)
    environments: list[Environment] = Field(min_length=1, max_length=3)
    region: str
    profile: str | None = None
    tags: Tags

    _team = field_validator("team")(lambda v: _check_name("team", v))
    _check_tags = field_validator("tags")(_tags)

    @field_validator("environments")
    @classmethod
    def _envs(cls, v: list[Environment]) -> list[Environment]:
        if len(set(v)) != len(v):
            raise PydanticCustomError("duplicate", "an environment is listed more than once; list each once.")
        return v

    def requests(self) -> list[WorkspaceRequest]:
        """Expand into one `WorkspaceRequest` per environment."""
        return [
            WorkspaceRequest(
                team=self.team,
                environment=env,
                region=self.region,
                profile=self.profile,
                owners=self.owners,
                members=self.members,
                tags={**self.tags, "cost-center": self.cost_center},
            )
            for env in self.environments
        ]


def _raw_duplicates(data: Any, field: str, what: str) -> list[Problem]:
    items = data.get(field) if isinstance(data, dict) else None
    if not isinstance(items, list):
        return []
    seen: dict[str, int] = {}
    out = []
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            continue
        if name.lower() in seen:
            out.append(
                Problem(
                    f"{field}[{i}].name",
                    f"{what} name '{name}' is also used by {field}[{seen[name.lower()]}]; give each {what} its own name.",
                    "duplicate",
                )
            )
        else:
            seen[name.lower()] = i
    return out


def parse_request(data: Any, *, prefix: str = "") -> WorkspaceRequest:
    """Validate `data` as a `WorkspaceRequest`, reporting every problem at once."""
    try:
        return WorkspaceRequest.model_validate(data)
    except ValidationError as exc:
        problems = problems_from(exc, prefix)
        codes = {p.code for p in problems}
        if "duplicate" not in codes:
            for field, what in (("compute", "compute"), ("datastores", "datastore")):
                problems += [
                    Problem(f"{prefix}.{p.field}" if prefix else p.field, p.message, p.code)
                    for p in _raw_duplicates(data, field, what)
                ]
        raise InvalidInputError(problems) from None


def field_path(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as `compute[0].name`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith("function-"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(body)"


_FRIENDLY = {
    "missing": "This field is required.",
    "extra_forbidden": "This field is not known; remove it or check its spelling.",
}


def problems_from(exc: ValidationError, prefix: str = "") -> list[Problem]:
    """Turn every pydantic error into a `Problem` with a field path and a sentence."""
    problems = []
    for err in exc.errors(include_url=False):
        path = field_path(tuple(err["loc"]))
        if prefix:
            path = prefix if path == "(body)" else f"{prefix}.{path}"
        message = _FRIENDLY.get(err["type"], err["msg"])
        if err["type"] == "enum" and "expected" in (err.get("ctx") or {}):
            message = f"'{err.get('input')}' is not allowed; use one of {err['ctx']['expected']}."
        elif not message.endswith("."):
            message += "."
        problems.append(Problem(field=path, message=message, code=err["type"]))
    return problems
