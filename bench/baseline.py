"""The baseline a platform team would write instead of the service: a script, as Microsoft's documentation shows.

    python -m bench.baseline <example.json> <n> <sequential|threads> <latency>   (with VENDING_EMULATOR_URL and _CA_BUNDLE)

It vends `n` workspaces of one example against an emulator in another process, the way the docs
write each part, every long-running call followed by `.result()`:
- the resource group, `ResourceManagementClient.resource_groups.create_or_update` (Microsoft Learn,
  "Provision a resource group with the Azure libraries for Python");
- the storage account and its containers, `StorageManagementClient.storage_accounts.begin_create(...)
  .result()` and `blob_containers.create` ("Provision Azure Storage with the Azure libraries for Python");
- the key vault, `KeyVaultManagementClient.vaults.begin_create_or_update(...).result()`;
- Log Analytics and Application Insights, `begin_create_or_update(...).result()` and `components.create_or_update`;
- the workspace on those resources, `MLClient.workspaces.begin_create(Workspace(..., storage_account=,
  key_vault=, application_insights=)).result()` ("Manage Azure Machine Learning workspaces with the
  Python SDK (v2)", "Use existing resources");
- each compute cluster, `ml_client.compute.begin_create_or_update(AmlCompute(...)).result()` ("Create
  an Azure Machine Learning compute cluster");
- each datastore, `ml_client.create_or_update(AzureBlobDatastore(...))` ("Create datastores");
- each role, `AuthorizationManagementClient.role_assignments.create(scope, uuid4(), ...)` ("Assign
  Azure roles using the Azure libraries").

`sequential` runs the requests one after another; `threads` runs each in a thread of its own. The
SDKs keep their default retry, and their polling at its default pace on the emulator's clock: the
emulator runs a create in `latency` seconds where Azure takes tens of seconds, so the SDKs' fixed
timers (30 s between polls for the management SDKs, azure-ai-ml's 5 s sleeps while a workspace
deploys) are shortened by the same factor, latency ÷ 30 s. Left at 30 s they would make the script
look many times slower than it is in Azure. It builds what the
service builds: the names, settings and role grants come from the service's own plan of the same
request, so the two are compared on one outcome. Prints one JSON line: the makespan and how many
succeeded, with the first error when one failed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from models.plan import (
    AccessSpec,
    ComputeStepSpec,
    DatastoreStepSpec,
    InsightsSpec,
    KeyVaultSpec,
    Plan,
    ResourceGroupSpec,
    StorageSpec,
    WorkspaceSpec,
)

# The management SDKs' default pause between polls when an answer has no Retry-After (azure-mgmt-*
# configuration, `polling_interval`), and the time Azure takes for a create that the emulator takes
# `latency` seconds for: the factor the SDKs' fixed timers are shortened by.
SDK_POLL_S = 30.0
AZURE_CREATE_S = 30.0


def _on_emulator_clock(latency: float) -> None:
    """Shorten azure-ai-ml's fixed sleeps while a workspace deploys (LROConfigurations, 5 s) by latency ÷ 30 s."""
    from azure.ai.ml.constants._common import LROConfigurations

    LROConfigurations.SLEEP_TIME = LROConfigurations.SLEEP_TIME * latency / AZURE_CREATE_S  # type: ignore[misc]
    LROConfigurations.POLL_INTERVAL = LROConfigurations.POLL_INTERVAL * latency / AZURE_CREATE_S  # type: ignore[misc]


def _supported(p: Plan) -> None:
    """Refuse a plan with parts the script does not make, so that the comparison is always of one outcome."""
    for step in p.steps:
        spec = step.spec
        if (
            step.kind.value == "registry"
            or (isinstance(spec, StorageSpec) and spec.shares)
            or (isinstance(spec, ComputeStepSpec) and spec.kind != "cluster")
            or (isinstance(spec, DatastoreStepSpec) and spec.kind.value != "blob")
        ):
            raise SystemExit(f"the baseline script does not make {step.id}; compare with cpu-small")


def _plan(body: dict[str, Any]) -> Plan:
    from bench.service_run import unlimited
    from composition import policy_with_tenant
    from engine.planner import plan
    from engine.policy import admit, load_policy
    from models.request import parse_request
    from models.settings import Settings

    settings = Settings()
    policy = unlimited(policy_with_tenant(load_policy(settings.policy_file), settings))
    made = plan(admit(parse_request(body), policy), policy)
    _supported(made)
    return made


class Script:
    """One user's script: its SDK clients, built as the docs build them, for one subscription."""

    def __init__(self, url: str, ca_bundle: str, subscription: str, latency: float) -> None:
        from azure.mgmt.applicationinsights import ApplicationInsightsManagementClient
        from azure.mgmt.authorization import AuthorizationManagementClient
        from azure.mgmt.keyvault import KeyVaultManagementClient
        from azure.mgmt.loganalytics import LogAnalyticsManagementClient
        from azure.mgmt.resource.resources import ResourceManagementClient
        from azure.mgmt.storage import StorageManagementClient

        from cloud.clients import emulator_endpoint, prepare_environment
        from cloud.credentials import EmulatorCredential

        self.endpoint = emulator_endpoint(url, ca_bundle)
        prepare_environment(self.endpoint)
        self.credential = EmulatorCredential()  # DefaultAzureCredential() in Azure
        self.subscription = subscription
        self.phases: dict[str, float] = {}  # seconds spent in each part of `vend`
        self._last = time.monotonic()
        self.polling_interval = SDK_POLL_S * latency / AZURE_CREATE_S
        # The emulator is a cloud of its own: the management clients are told where ARM is and what to trust.
        kw: dict[str, Any] = {
            "base_url": self.endpoint.arm_url,
            "credential_scopes": [self.endpoint.scope],
            "connection_verify": ca_bundle,
            "polling_interval": self.polling_interval,
        }
        self.resources = ResourceManagementClient(self.credential, subscription, **kw)
        self.storage = StorageManagementClient(self.credential, subscription, **kw)
        self.vaults = KeyVaultManagementClient(self.credential, subscription, **kw)
        self.logs = LogAnalyticsManagementClient(self.credential, subscription, **kw)
        self.insights = ApplicationInsightsManagementClient(self.credential, subscription, **kw)
        self.authorization = AuthorizationManagementClient(self.credential, subscription, **kw)

    def ml(self, group: str, workspace: str | None = None) -> Any:
        from azure.ai.ml import MLClient

        return MLClient(
            self.credential,
            self.subscription,
            group,
            workspace_name=workspace,
            connection_verify=self.endpoint.ca_bundle,
            polling_interval=self.polling_interval,
            **self.endpoint.ml_cloud_kwargs(),
        )

    def _phase(self, name: str) -> None:
        now = time.monotonic()
        self.phases[name] = self.phases.get(name, 0.0) + now - self._last
        self._last = now

    def vend(self, p: Plan) -> None:
        """Make one workspace and everything around it, one call after another."""
        self._last = time.monotonic()
        from azure.ai.ml.entities import AmlCompute, AzureBlobDatastore, IdentityConfiguration, Workspace
        from azure.core.exceptions import ResourceExistsError
        from azure.mgmt.applicationinsights.models import ApplicationInsightsComponent
        from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
        from azure.mgmt.keyvault.models import Sku as VaultSku
        from azure.mgmt.keyvault.models import VaultCreateOrUpdateParameters, VaultProperties
        from azure.mgmt.loganalytics.models import Workspace as LogWorkspace
        from azure.mgmt.loganalytics.models import WorkspaceSku
        from azure.mgmt.storage.models import BlobContainer, Sku, StorageAccountCreateParameters

        names = p.names
        group = names.resource_group
        rg = p.step("resource-group").spec_as(ResourceGroupSpec)
        self.resources.resource_groups.create_or_update(group, {"location": rg.location, "tags": rg.tags})

        self._phase("resource group")
        st = p.step("storage").spec_as(StorageSpec)
        account = p.step("storage").resource_name
        self.storage.storage_accounts.begin_create(
            group,
            account,
            StorageAccountCreateParameters(
                sku=Sku(name=st.sku),
                kind="StorageV2",
                location=st.location,
                tags=st.tags,
                is_hns_enabled=st.hierarchical_namespace,
                allow_shared_key_access=st.shared_key_access,
                allow_blob_public_access=False,
                minimum_tls_version="TLS1_2",
                enable_https_traffic_only=True,
            ),
        ).result()
        for container in st.containers:
            self.storage.blob_containers.create(group, account, container, BlobContainer())

        self._phase("storage")
        kv = p.step("key-vault").spec_as(KeyVaultSpec)
        self.vaults.vaults.begin_create_or_update(
            group,
            p.step("key-vault").resource_name,
            VaultCreateOrUpdateParameters(
                location=kv.location,
                tags=kv.tags,
                properties=VaultProperties(
                    tenant_id=kv.tenant_id,
                    sku=VaultSku(family="A", name="standard"),
                    enable_rbac_authorization=True,
                    soft_delete_retention_in_days=kv.soft_delete_retention_days,
                    enable_purge_protection=True if kv.purge_protection else None,
                ),
            ),
        ).result()

        self._phase("key vault")
        ai = p.step("insights").spec_as(InsightsSpec)
        la = self.logs.workspaces.begin_create_or_update(
            group,
            ai.log_analytics,
            LogWorkspace(location=ai.location, tags=ai.tags, sku=WorkspaceSku(name="PerGB2018"), retention_in_days=30),
        ).result()
        self.insights.components.create_or_update(
            group,
            p.step("insights").resource_name,
            ApplicationInsightsComponent(
                location=ai.location,
                tags=ai.tags,
                kind="web",
                application_type="web",
                workspace_resource_id=la.id,
                ingestion_mode="LogAnalytics",
            ),
        )

        self._phase("insights")
        ws = p.step("workspace").spec_as(WorkspaceSpec)
        ml = self.ml(group)
        workspace = ml.workspaces.begin_create(
            Workspace(
                name=p.step("workspace").resource_name,
                location=ws.location,
                display_name=ws.display_name,
                tags=ws.tags,
                storage_account=ws.storage_account_id,
                key_vault=ws.key_vault_id,
                application_insights=ws.application_insights_id,
                identity=IdentityConfiguration(type="system_assigned"),
                system_datastores_auth_mode=ws.system_datastores_auth_mode,
            )
        ).result()
        principals = {"workspace": workspace.identity.principal_id}

        self._phase("workspace")
        in_workspace = self.ml(group, workspace.name)
        for step in p.steps:
            if step.kind.value == "compute":
                c = step.spec_as(ComputeStepSpec)
                cluster = in_workspace.compute.begin_create_or_update(
                    AmlCompute(
                        name=step.resource_name,
                        size=c.vm_size,
                        location=c.location,
                        min_instances=c.min_nodes,
                        max_instances=c.max_nodes,
                        idle_time_before_scale_down=c.idle_seconds,
                        tier=c.tier,
                        identity=IdentityConfiguration(type="system_assigned"),
                    )
                ).result()
                principals[step.id] = cluster.identity.principal_id
        self._phase("compute")
        for step in p.steps:
            if step.kind.value == "datastore":
                d = step.spec_as(DatastoreStepSpec)
                if d.kind.value != "blob":
                    raise SystemExit(f"the baseline makes blob datastores only, not {d.kind.value}")
                in_workspace.create_or_update(
                    AzureBlobDatastore(name=step.resource_name, account_name=account, container_name=d.container)
                )
        self._phase("datastores")
        for step in p.steps:
            if step.kind.value == "access":
                a = step.spec_as(AccessSpec)
                principal = a.principal_id or principals[str(a.principal_from)]
                for grant in a.assignments:
                    try:
                        self.authorization.role_assignments.create(
                            grant.scope,
                            str(uuid.uuid4()),
                            RoleAssignmentCreateParameters(
                                role_definition_id=f"/subscriptions/{self.subscription}/providers/"
                                f"Microsoft.Authorization/roleDefinitions/{grant.role_definition}",
                                principal_id=principal,
                                principal_type=a.principal_type,
                            ),
                        )
                    except ResourceExistsError as exc:
                        # Another workspace of the team granted the group this role on the group already
                        # (409 RoleAssignmentExists): a careful script carries on.
                        if getattr(exc.error, "code", None) != "RoleAssignmentExists":
                            raise
        self._phase("roles")


def main() -> int:
    from cloud.clients import Clients

    Clients.warm()  # the SDKs imported before the clock starts, as for the service

    example, n, mode, latency = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    _on_emulator_clock(latency)
    url, ca = os.environ["VENDING_EMULATOR_URL"], os.environ["VENDING_EMULATOR_CA_BUNDLE"]
    body = json.loads(example.read_text())
    plans = [_plan(body | {"workspace_name": f"bench-{example.stem[:12]}-{i:03d}"}) for i in range(n)]
    errors: list[str] = []
    phases: dict[str, float] = {}
    lock = threading.Lock()

    def one(p: Plan) -> None:
        script = Script(url, ca, p.names.subscription_id, latency)
        try:
            script.vend(p)
        except Exception as exc:  # noqa: BLE001 - a failed request is counted and shown, not fatal to the run
            with lock:
                errors.append(f"{p.names.workspace}: {type(exc).__name__}: {str(exc)[:300]}")
        with lock:
            for name, seconds in script.phases.items():
                phases[name] = phases.get(name, 0.0) + seconds / len(plans)

    started = time.monotonic()
    if mode == "sequential":
        for p in plans:
            one(p)
    elif mode == "threads":
        pool = [threading.Thread(target=one, args=(p,)) for p in plans]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    else:
        raise SystemExit(f"mode is sequential or threads, not {mode!r}")
    makespan = time.monotonic() - started
    print(
        json.dumps(
            {
                "makespan_s": makespan,
                "succeeded": n - len(errors),
                "first_error": errors[0] if errors else "",
                "phases_s": phases,  # the mean seconds a request spent in each part
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
