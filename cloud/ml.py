"""Reconciles for the Azure ML workspace, its compute clusters and its datastores (azure-ai-ml).

Workspace creation in azure-ai-ml deploys an ARM template (`Microsoft.Resources/deployments`);
the deployment is the long-running operation we look at again on the next attempt. The poller
azure-ai-ml returns is dropped: it finishes on its own daemon thread, and nothing waits on it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from cloud.clients import Clients
from cloud.common import (
    TRANSITIONAL,
    Timing,
    after_poller,
    call,
    get_or_none,
    hold_kinds,
    progress,
    state_of,
    tags_differ,
)
from cloud.errors import ErrorDetail, classify, classify_wrapped, retry_after_s
from engine.ports import StepContext
from models.errors import PermanentError, TransientError, VendingError
from models.outcomes import Done, Fail, Outcome, Retry, Wait
from models.plan import ComputeStepSpec, DatastoreStepSpec, Step, WorkspaceSpec

FAILED = {"failed", "canceled"}
RUNNING_DEPLOYMENT = {"accepted", "running", "created", "creating", "updating", "waiting", "validating", "deploying"}


def _same_id(a: str | None, b: str | None) -> bool:
    return (a or "").lower().rstrip("/") == (b or "").lower().rstrip("/")


def _aware(value: datetime | None) -> datetime:
    if value is None:
        return datetime.min.replace(tzinfo=UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# Deployments_ListByResourceGroup, the api-version azure-mgmt-resource-deployments sends:
# specification/resources/resource-manager/Microsoft.Resources/deployments/stable/2026-06-01/deployments.json
DEPLOYMENTS_API = "2026-06-01"
# A resource group keeps at most 800 deployments in its history (Microsoft Learn, "Automatic deletions from
# deployment history"): far fewer pages than this, so a nextLink that never ends is ARM's fault, not a long list.
MAX_DEPLOYMENT_PAGES = 50


class DeploymentProperties(BaseModel):
    """What a workspace step reads of a deployment's DeploymentPropertiesExtended (deployments.json, 2026-06-01)."""

    model_config = ConfigDict(populate_by_name=True)

    provisioning_state: str | None = Field(None, alias="provisioningState")
    timestamp: datetime | None = None
    error: JsonValue = None  # ErrorResponse: code, message, details (read by `ErrorDetail.from_json`)


class ArmDeployment(BaseModel):
    """One deployment of a resource group (DeploymentExtended), as Deployments_ListByResourceGroup lists it."""

    name: str
    properties: DeploymentProperties = Field(default_factory=DeploymentProperties)

    @field_validator("properties", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return {} if value is None else value

    @property
    def state(self) -> str:
        """Its provisioning state (Succeeded if ARM gave none, as `cloud.common.state_of` reads a resource)."""
        return self.properties.provisioning_state or "Succeeded"

    @property
    def started(self) -> datetime:
        """When it ran, as ARM stamped it (timezone-aware; the earliest time when ARM gave none)."""
        return _aware(self.properties.timestamp)


class DeploymentPage(BaseModel):
    """One page of DeploymentListResult: `value`, and `nextLink` while more remain (x-ms-pageable).

    The entries stay raw JSON until a step picks its own by name: a resource group is its team's, and
    a deployment another tool left there in a shape this service does not read must not block the step.
    """

    model_config = ConfigDict(populate_by_name=True)

    value: list[JsonValue] | None = None
    next_link: str | None = Field(None, alias="nextLink")


def _on_endpoint(url: str, base: str) -> bool:
    """Say whether `url` is on the ARM endpoint `base` (scheme, host in any case, port, 443 when unsaid)."""
    a, b = urlsplit(url), urlsplit(base)
    default = {"https": 443, "http": 80}
    try:
        ports = (a.port or default.get(a.scheme.lower())), (b.port or default.get(b.scheme.lower()))
    except ValueError:  # a port that is not a number
        return False
    return (
        a.scheme.lower() == b.scheme.lower()
        and (a.hostname or "") == (b.hostname or "")  # urlsplit lowercases hostnames
        and ports[0] == ports[1]
        and not a.username
        and not a.password
    )


def _with_api_version(url: str) -> str:
    """Give a nextLink the api-version the list was asked with, when it carries none (as the SDK does)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k.lower() == "api-version" for k, _ in query):
        return url
    return urlunsplit(parts._replace(query=urlencode([*query, ("api-version", DEPLOYMENTS_API)])))


def _recent_deployments(step: Step, ctx: StepContext, clients: Clients) -> list[ArmDeployment]:
    """Return the workspace deployments azure-ai-ml started for this step ('<workspace>-<number>'), oldest first.

    The list is read raw, page by page through the deployments client's pipeline (its token, its pacing),
    and only this step's deployments are parsed, for the fields it needs: the SDK's DeploymentExtended
    models, built for every deployment the resource group has kept, cost about a fifth of the step
    workers' CPU at 200 requests (py-spy). A nextLink is followed only on the ARM endpoint, where the
    token may go, once each, and never past `MAX_DEPLOYMENT_PAGES`.
    """
    from azure.core.rest import HttpRequest

    n = ctx.names
    arm = clients.deployments(n.subscription_id)
    base = clients.endpoint.arm_url.rstrip("/")
    what = f"listing deployments in '{n.resource_group}'"
    prefix = f"{step.resource_name}-"
    url: str | None = (
        f"{base}/subscriptions/{quote(n.subscription_id, safe='')}/resourcegroups/{quote(n.resource_group, safe='')}"
        f"/providers/Microsoft.Resources/deployments?api-version={DEPLOYMENTS_API}"
    )
    seen: set[str] = set()
    listed: list[ArmDeployment] = []
    while url is not None:
        if not _on_endpoint(url, base):
            raise TransientError(f"{what}: ARM's nextLink leaves the ARM endpoint ({url[:120]}); trying again later.")
        if url in seen or len(seen) >= MAX_DEPLOYMENT_PAGES:
            raise TransientError(
                f"{what}: ARM's nextLinks {'came round again' if url in seen else f'ran past {MAX_DEPLOYMENT_PAGES} pages'}"
                "; trying again later."
            )
        seen.add(url)
        request = HttpRequest("GET", url, headers={"Accept": "application/json"})
        response = call(what, lambda request=request: arm.send_request(request))  # type: ignore[misc]
        if response.status_code >= 400:
            raise _answer_error(response, what)
        try:
            page = DeploymentPage.model_validate_json(response.content)
            listed += [
                ArmDeployment.model_validate(entry)
                for entry in page.value or []
                if isinstance(entry, dict) and str(entry.get("name") or "").startswith(prefix)
            ]
        except ValidationError as exc:
            raise TransientError(
                f"{what}: ARM answered a list this service cannot read ({exc.error_count()} "
                "problems); trying again later."
            ) from exc
        url = _with_api_version(page.next_link) if page.next_link else None
    # A deployment from before this step started belongs to an earlier request: its outcome is not ours.
    since = _aware(ctx.step_started_at) - timedelta(seconds=60) if ctx.step_started_at else None
    found = [d for d in listed if since is None or d.started >= since]
    found.sort(key=lambda d: d.started)
    return found


def deployment_error(deployment: ArmDeployment, what: str) -> VendingError:
    """Classify a failed deployment by the innermost error ARM wrapped (DeploymentFailed > Conflict > RP JSON)."""
    return classify_wrapped(ErrorDetail.from_json(deployment.properties.error), what=what)


def reconcile_workspace(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Ensure the workspace, linked to the storage, key vault, insights (and registry) of the plan."""
    from azure.ai.ml.entities import IdentityConfiguration, Workspace

    n, spec = ctx.names, step.spec_as(WorkspaceSpec)
    what = f"workspace '{step.resource_name}'"
    ml = clients.ml(n.subscription_id, n.resource_group)
    # The ids the prerequisite steps report win over the planned ones (a key vault may have been renamed).
    planned = {
        "storage": spec.storage_account_id,
        "key-vault": spec.key_vault_id,
        "insights": spec.application_insights_id,
        "registry": spec.container_registry_id,
    }
    linked = {k: ctx.dependency_outputs.get(k, {}).get("id") or v for k, v in planned.items()}
    deployments = _recent_deployments(step, ctx, clients)
    latest = deployments[-1] if deployments else None
    latest_state = latest.state.lower() if latest else ""
    if latest is not None and latest_state in RUNNING_DEPLOYMENT:
        return Wait(timing.poll_s, f"{what} is being deployed ({latest.name})")
    workspace = get_or_none(f"reading {what}", lambda: ml.workspaces.get(step.resource_name))
    # After a failed deployment an existing workspace's own state decides (azure-ai-ml updates an existing
    # workspace in place, without a new deployment): healthy is done, Failed is applied again.
    arm_state = (
        _provisioning_state(step, ctx, clients, what) if workspace is not None and latest_state == "failed" else ""
    )
    if arm_state.lower() in TRANSITIONAL:
        return Wait(timing.poll_s, f"{what} is {arm_state}")
    if workspace is not None and arm_state.lower() not in FAILED:
        if not _same_id(workspace.storage_account, linked["storage"]):
            return Fail(
                f"{what} already exists and is linked to storage account {workspace.storage_account}, not "
                f"{linked['storage']}; a workspace's storage cannot change. Choose another workspace_name.",
                "WorkspaceLinkedElsewhere",
            )
        if tags_differ(workspace.tags, spec.tags):
            return _retag_workspace(step, ctx, clients, timing, {**(workspace.tags or {}), **spec.tags}, what)
        ident = workspace.identity
        extra = (
            {"soft_delete_action": "purged"} if (workspace.tags or {}).get("vending-soft-delete") == "purged" else {}
        )
        return Done(
            {
                **extra,
                "id": workspace.id,
                "name": workspace.name,
                "workspace_id": getattr(workspace, "_workspace_id", None),
                "discovery_url": workspace.discovery_url,
                "mlflow_tracking_uri": workspace.mlflow_tracking_uri,
                "principal_id": getattr(ident, "principal_id", None) if ident else None,
            }
        )
    tags = dict(spec.tags)
    again: Retry | None = None
    if latest is not None and latest_state == "failed":
        error = deployment_error(latest, f"deploying {what}")
        soft_deleted = "soft-deleted workspace" in str(error).lower()
        if soft_deleted and spec.on_soft_deleted == "purge":
            purging = purge_workspace(step, ctx, clients, timing)
            if isinstance(purging, Wait):
                return purging
            tags["vending-soft-delete"] = "purged"
            # Deploying after a purge is a retry too: a name that keeps coming back soft-deleted fails the
            # step after the retry budget, not purge after purge for ever.
            again = Retry(timing.poll_s, f"{error} (purged, deployed again)", "WorkspaceSoftDeleted")
        elif isinstance(error, PermanentError):
            return Fail(str(error), "WorkspaceSoftDeleted" if soft_deleted else error.code)
        else:
            # Deploying again is a retry: the engine counts it against the step's retry budget, so a failure
            # that keeps coming back fails the step after that many deployments, not after hours of them.
            after = getattr(error, "retry_after_s", None) or timing.poll_s
            again = Retry(after, f"{error} (deployed again)", getattr(error, "code", "Transient"))
        # Transient, or purged: deploy again below.
    desired = Workspace(
        name=step.resource_name,
        location=spec.location,
        display_name=spec.display_name,
        description=f"Provisioned by Workspace Vending for {spec.tags.get('team', '')}",
        tags=tags,
        storage_account=linked["storage"],
        key_vault=linked["key-vault"],
        application_insights=linked["insights"],
        container_registry=linked["registry"],
        identity=IdentityConfiguration(type="system_assigned"),
        # "identity" when the storage account refuses shared keys (azure-ai-ml's Workspace, 1.17.0 and later):
        # https://learn.microsoft.com/azure/machine-learning/how-to-disable-local-auth-storage
        system_datastores_auth_mode=spec.system_datastores_auth_mode,
    )
    hold_kinds("reads", "writes")  # begin_create reads the workspace and takes any error for "none" (see there)
    poller = call(f"creating {what}", lambda: ml.workspaces.begin_create(desired))
    return again or Wait(after_poller(poller, timing), f"{what} deployment started")


def _retag_workspace(
    step: Step, ctx: StepContext, clients: Clients, timing: Timing, tags: dict[str, str], what: str
) -> Wait:
    """Send a revision's tags to an existing workspace; the next attempt reads it again.

    Workspaces_Update (PATCH, WorkspaceUpdateParameters.tags; long-running, 200 or 202), specification/
    machinelearningservices/resource-manager/Microsoft.MachineLearningServices/stable/2024-04-01/workspaceRP.json.
    azure-ai-ml's `begin_update` sends every field of the workspace it is given; a tags-only PATCH changes nothing else.
    """
    from azure.mgmt.resource.resources.models import GenericResource

    ops = clients.resources(ctx.names.subscription_id).resources
    call(
        f"tagging {what}",
        lambda: ops.begin_update_by_id(
            step.resource_id, GenericResource(tags=tags), api_version="2024-04-01", polling=False
        ),
    )
    return Wait(timing.poll_s, f"{what} tags are being updated")


def _provisioning_state(step: Step, ctx: StepContext, clients: Clients, what: str) -> str:
    """Read the workspace's provisioningState as ARM reports it (azure-ai-ml's Workspace does not carry it).

    Workspaces_Get, specification/machinelearningservices/resource-manager/Microsoft.MachineLearningServices/
    stable/2024-04-01/workspaceRP.json.
    """
    ops = clients.resources(ctx.names.subscription_id).resources
    found = get_or_none(f"reading {what}", lambda: ops.get_by_id(step.resource_id, api_version="2024-04-01"))
    return state_of(found) if found is not None else ""


def _answer_error(response: Any, what: str) -> VendingError:
    """Classify an error answer of a raw ARM call (send_request does not raise): transient or permanent."""
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = None
    detail = ErrorDetail.from_json(body) or ErrorDetail("", f"HTTP {response.status_code}")
    retry = retry_after_s(response.headers) or None
    return classify(detail.code, detail.message, what=what, status=response.status_code, retry_after=retry)


def purge_workspace(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Wait | bool:
    """Delete a soft-deleted workspace for good (forceToPurge); Wait while the purge runs, then say whether one was.

    True: a workspace was purged (the DELETE answered 200, or its operation ended Succeeded); False:
    there was nothing to purge (204, "the machine learning workspace does not exist").

    Workspaces_Delete is a long-running operation answering 200, 202 or 204, with no
    x-ms-long-running-operation-options, so a 202 is followed through its Azure-AsyncOperation (else its
    Location), as ARM's default for DELETE says (specification/machinelearningservices/resource-manager/
    Microsoft.MachineLearningServices/stable/2024-04-01/workspaceRP.json). Nothing is kept between attempts:
    the next attempt sends the DELETE again, which answers 202 while the purge runs and 204 once it is gone.
    """
    from azure.core.rest import HttpRequest

    what = f"purging the soft-deleted workspace '{step.resource_name}'"
    arm = clients.resources(ctx.names.subscription_id)
    url = f"{clients.endpoint.arm_url.rstrip('/')}{step.resource_id}?api-version=2024-04-01&forceToPurge=true"
    response = call(what, lambda: arm.send_request(HttpRequest("DELETE", url)))
    if response.status_code >= 400:
        # send_request does not raise: read ARM's error, so a 429 or 5xx is retried (after Retry-After).
        failed = _answer_error(response, what)
        # A management lock is said as such: teardown tells which lock to remove (cloud.teardown).
        if isinstance(failed, PermanentError) and failed.code.lower() != "scopelocked":
            raise PermanentError(
                f"{failed} Purge it in the portal (Azure Machine Learning, recently deleted), then submit again.",
                code="WorkspacePurgeFailed",
            )
        raise failed
    if response.status_code != 202:
        return bool(response.status_code != 204)
    monitor = response.headers.get("Azure-AsyncOperation") or response.headers.get("Location")
    retry_after = retry_after_s(response.headers) or timing.poll_s
    if not monitor:
        return Wait(retry_after, f"{what}: Azure accepted it")
    status = call(what, lambda: arm.send_request(HttpRequest("GET", monitor)))
    if status.status_code >= 400:
        raise _answer_error(status, f"{what} (reading its operation)")
    if status.status_code == 202:
        return Wait(retry_after_s(status.headers) or retry_after, f"{what}: still running")
    try:
        doc = status.json() if status.content else {}
    except ValueError:
        doc = {}
    # Over only when the operation says so: an answer without a status is not a success.
    state = str(doc.get("status") or "InProgress") if isinstance(doc, dict) else "InProgress"
    if state.lower() in ("failed", "canceled"):
        detail = ErrorDetail.from_json(doc) or ErrorDetail("PurgeFailed", "no error was given")
        raise PermanentError(
            f"{what} ended {state}: {detail.code}: {detail.message}. "
            "Purge it in the portal (Azure Machine Learning, recently deleted), then submit again.",
            code="WorkspacePurgeFailed",
        )
    if state.lower() != "succeeded":
        return Wait(retry_after_s(status.headers) or retry_after, f"{what}: {state}")
    return True


def reconcile_compute(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Ensure an AmlCompute cluster (size, tier, scale settings, identity) or a user's compute instance."""
    n, spec = ctx.names, step.spec_as(ComputeStepSpec)
    ml = clients.ml(n.subscription_id, n.resource_group, spec.workspace)
    if spec.kind == "instance":
        return _reconcile_instance(step, ml, timing)
    from azure.ai.ml.entities import AmlCompute, IdentityConfiguration

    what = f"compute cluster '{step.resource_name}'"
    desired = AmlCompute(
        name=step.resource_name,
        size=spec.vm_size,
        location=spec.location,
        min_instances=spec.min_nodes,
        max_instances=spec.max_nodes,
        idle_time_before_scale_down=spec.idle_seconds,
        tier=spec.tier,
        identity=IdentityConfiguration(type="system_assigned"),
    )
    current = _existing_compute(ml, step, what, timing, lambda: desired)
    if isinstance(current, (Wait, Retry, Fail)):
        return current
    drift = (
        current.min_instances != spec.min_nodes
        or current.max_instances != spec.max_nodes
        or (current.idle_time_before_scale_down or 0) != spec.idle_seconds
    )
    if drift:
        call(f"updating {what}", lambda: ml.compute.begin_update(desired))
        return Wait(timing.poll_s, f"{what} scale settings are being updated")
    return Done(
        {
            "id": current.id,
            "name": current.name,
            "kind": "cluster",
            "vm_size": current.size,
            "min_nodes": current.min_instances,
            "max_nodes": current.max_instances,
            "tier": spec.tier,
            # The cluster's system-assigned identity: its access step grants it data roles.
            "principal_id": getattr(current.identity, "principal_id", None) if current.identity else None,
        }
    )


def _existing_compute(ml: Any, step: Step, what: str, timing: Timing, desired: Callable[[], Any]) -> Any:
    """Return the compute when it exists, is ready and has its size; else the outcome to return (create, wait, fail)."""
    current = get_or_none(f"reading {what}", lambda: ml.compute.get(step.resource_name))
    if current is None:
        poller = call(f"creating {what}", lambda: ml.compute.begin_create_or_update(desired()))
        return Wait(after_poller(poller, timing), f"{what} is being created")
    state = state_of({"provisioningState": current.provisioning_state})
    if state.lower() in FAILED:
        # A Failed compute stays Failed until it is applied again; each time costs one retry of the step.
        call(f"applying {what} again", lambda: ml.compute.begin_create_or_update(desired()))
        return Retry(timing.poll_s, f"{what} was in state {state}; applied it again", "ResourceFailed")
    if waiting := progress({"provisioningState": current.provisioning_state}, what, timing):
        return waiting
    return _size_changed(current, step.spec_as(ComputeStepSpec), what) or current


def _size_changed(current: Any, spec: ComputeStepSpec, what: str) -> Fail | None:
    if (current.size or "").lower() == spec.vm_size.lower():
        return None
    return Fail(
        f"{what} exists with VM size {current.size}, not {spec.vm_size}; its size cannot change. "
        "Give it another name, or delete the old one first.",
        "ComputeSizeImmutable",
    )


def _reconcile_instance(step: Step, ml: Any, timing: Timing) -> Outcome:
    """Ensure a compute instance created on behalf of its user, shutting down when idle."""
    from azure.ai.ml.entities import AssignedUserConfiguration, ComputeInstance

    spec = step.spec_as(ComputeStepSpec)
    what = f"compute instance '{step.resource_name}'"
    user = str(spec.assigned_user)
    current = _existing_compute(
        ml,
        step,
        what,
        timing,
        lambda: ComputeInstance(
            name=step.resource_name,
            size=spec.vm_size,
            create_on_behalf_of=AssignedUserConfiguration(user_tenant_id=spec.tenant_id, user_object_id=user),
            idle_time_before_shutdown_minutes=max(15, spec.idle_seconds // 60),
        ),
    )
    if isinstance(current, (Wait, Retry, Fail)):
        return current
    owner = getattr(getattr(current, "create_on_behalf_of", None), "user_object_id", None)
    if owner and owner.lower() != user.lower():
        return Fail(
            f"{what} exists and belongs to user {owner}, not {user}; an instance's user cannot change. "
            "Give the instance another name.",
            "ComputeInstanceOwnedByAnother",
        )
    return Done(
        {"id": current.id, "name": current.name, "kind": "instance", "vm_size": current.size, "assigned_user": user}
    )


def reconcile_datastore(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Ensure a blob, file or ADLS Gen2 datastore with identity-based access (no keys stored)."""
    from azure.ai.ml.entities import AzureBlobDatastore, AzureDataLakeGen2Datastore, AzureFileDatastore

    n, spec = ctx.names, step.spec_as(DatastoreStepSpec)
    what = f"datastore '{step.resource_name}'"
    ml = clients.ml(n.subscription_id, n.resource_group, spec.workspace)
    account = ctx.dependency_outputs.get("storage", {}).get("name") or spec.storage_account
    kind = spec.kind.value
    credentials = None
    if spec.credentials == "account_key" and kind in ("blob", "file"):
        credentials = _account_key(ctx, clients, account)
    desired: Any
    if kind == "blob":
        desired = AzureBlobDatastore(
            name=step.resource_name, account_name=account, container_name=spec.container, credentials=credentials
        )
    elif kind == "file":
        desired = AzureFileDatastore(
            name=step.resource_name, account_name=account, file_share_name=spec.container, credentials=credentials
        )
    else:
        desired = AzureDataLakeGen2Datastore(name=step.resource_name, account_name=account, filesystem=spec.container)
    current = get_or_none(f"reading {what}", lambda: ml.datastores.get(step.resource_name))
    target = getattr(current, "container_name", None) or getattr(current, "file_share_name", None)
    target = target or getattr(current, "filesystem", None)
    mode = "account_key" if credentials is not None else "identity"
    if (
        current is None
        or current.account_name != account
        or target != spec.container
        or current.type != desired.type
        or _credential_mode(current) != mode
    ):
        current = call(f"creating {what}", lambda: ml.datastores.create_or_update(desired))
    return Done(
        {
            "id": current.id,
            "name": current.name,
            "kind": kind,
            "account": account,
            "container": spec.container,
            "credentials": mode,
        }
    )


def _credential_mode(datastore: Any) -> str:
    kind = type(getattr(datastore, "credentials", None)).__name__
    return "account_key" if kind == "AccountKeyConfiguration" else "identity"


def _account_key(ctx: StepContext, clients: Clients, account: str) -> Any:
    """Read the storage account's key for a key-based datastore; it goes to Azure ML only, never to a log."""
    from azure.ai.ml.entities import AccountKeyConfiguration

    n = ctx.names
    keys = call(
        f"listing the keys of storage account '{account}'",
        lambda: clients.storage(n.subscription_id).storage_accounts.list_keys(n.resource_group, account),
    )
    # The list-keys result is a mapping, so its `keys` attribute is the dict method: index it instead.
    return AccountKeyConfiguration(account_key=keys["keys"][0]["value"])
