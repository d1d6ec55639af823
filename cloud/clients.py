"""SDK clients for one cloud (Azure or the emulator), built once each and reused across steps."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy

from cloud.errors import retry_after_s
from cloud.throttle import CURRENT
from models.arm_limits import operation_of

T = TypeVar("T")

EMULATOR_CLOUD = "WorkspaceVendingEmulator"


@dataclass(frozen=True)
class CloudEndpoint:
    """Where ARM is and how to trust it."""

    arm_url: str  # e.g. https://management.azure.com/
    ca_bundle: str | None = None  # a CA bundle to trust (the emulator's), or None for the system's
    cloud_name: str | None = None  # azure-ai-ml custom cloud name, None for the public cloud

    @property
    def scope(self) -> str:
        """The token scope for ARM."""
        return self.arm_url.rstrip("/") + "/.default"

    def ml_cloud_kwargs(self) -> dict[str, Any]:
        """Return the custom-cloud keywords azure-ai-ml takes (`cloud=` with `cloud_metadata`)."""
        if self.cloud_name is None:
            return {}
        return {
            "cloud": self.cloud_name,
            "cloud_metadata": {
                "azure_portal": "https://portal.emulator.local/",
                "resource_manager": self.arm_url,
                "active_directory": self.arm_url,
                "aml_resource_id": self.arm_url,
                "storage_endpoint": "core.windows.net",
                "registry_discovery_endpoint": self.arm_url,
            },
        }


def emulator_endpoint(url: str, ca_bundle: str) -> CloudEndpoint:
    """Describe a local ARM emulator; its cloud name carries the port, as azure-ai-ml never forgets a cloud."""
    port = url.rstrip("/").rsplit(":", 1)[-1]
    return CloudEndpoint(url, ca_bundle, f"{EMULATOR_CLOUD}{port}")


def prepare_environment(endpoint: CloudEndpoint) -> None:
    """Set what the SDKs read from the environment to reach `endpoint`, before any of them is built."""
    if endpoint.ca_bundle:
        # azure-ai-ml builds some clients itself (the ARM deployment client of workspace creation)
        # without passing our keywords through; requests reads its CA bundle from this variable.
        os.environ["REQUESTS_CA_BUNDLE"] = endpoint.ca_bundle
    if endpoint.cloud_name:
        # azure-ai-ml keeps its current cloud in AZUREML_CURRENT_CLOUD and resolves it when it is
        # imported. A value inherited from a parent process names a cloud this process has not
        # registered yet, and unknown clouds are looked up at ARM_CLOUD_METADATA_URL: point that
        # at the emulator so that no lookup ever leaves this machine, and forget the stale name.
        os.environ["ARM_CLOUD_METADATA_URL"] = (
            endpoint.arm_url.rstrip("/") + "/metadata/endpoints?api-version=2019-05-01"
        )
        inherited = os.environ.get("AZUREML_CURRENT_CLOUD", "")
        if inherited.startswith(EMULATOR_CLOUD) and "azure.ai.ml" not in sys.modules:
            del os.environ["AZUREML_CURRENT_CLOUD"]


class RemainingBudgetPolicy(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Pace calls by ARM's `x-ms-ratelimit-remaining-subscription-*` headers, before ARM throttles them.

    Each response's remaining budget is recorded on the reconcile's `SubscriptionThrottle`; a call whose
    budget is nearly spent waits (at most `max_pace_s`) for tokens to come back. A 429 that still
    happens sets a cool-down for its kind of call (reads, writes or deletes: ARM's buckets are apart)
    from its Retry-After, and while it lasts a request of that kind is stopped here, before it is sent
    (`SubscriptionThrottle.hold` raises BackPressure, which `cloud.common.call` hands to the engine).
    Only requests sent inside a reconcile's `subscription_scope` are seen: azure-ai-ml's poller threads
    and the clients it builds for itself (its template deployments) send theirs unpaced and unheld.
    Header names: Microsoft Learn, "Understand how Azure Resource Manager throttles requests".

    A sans-I/O policy: azure-ai-ml shares one instance among the service clients it builds, and
    azure-core runs a sans-I/O policy in a runner of each pipeline's own, whereas an `HTTPPolicy`
    instance has one `next` (the last pipeline's), so a shared one sent other clients' requests past
    their own policies (a long-running delete's poller then failed on a 202).
    """

    def on_request(self, request: PipelineRequest) -> None:  # type: ignore[type-arg]
        """Stop while ARM throttles this kind of call; wait when the budget is low."""
        scope = CURRENT.get()
        if scope is not None:
            operation = operation_of(request.http_request.method)
            scope.throttle.hold(scope.subscription, operation)
            wait = scope.throttle.pace_s(scope.subscription, operation)
            if wait > 0:
                time.sleep(wait)
                scope.throttle.hold(scope.subscription, operation)  # a 429 may have come in meanwhile

    def on_response(self, request: PipelineRequest, response: PipelineResponse) -> None:  # type: ignore[type-arg]
        """Record what the response says is left, and a 429's cool-down for its kind of call."""
        scope = CURRENT.get()
        if scope is None:
            return
        operation = operation_of(request.http_request.method)
        headers = response.http_response.headers
        value = headers.get(f"x-ms-ratelimit-remaining-subscription-{operation}")
        if value is not None and value.strip().lstrip("-").isdigit():
            scope.throttle.observe(scope.subscription, operation, int(value))
        if response.http_response.status_code == 429:
            # Also for raw send_request calls, which do not raise: the next request of this kind waits.
            scope.throttle.throttled(scope.subscription, retry_after_s(headers), operation)


def _shared_transport(connections: int, verify: str | bool) -> Any:
    """One HTTP transport for every client: one pool of kept-alive connections to ARM, as large as the workers.

    Each SDK client would otherwise keep a session of its own with requests' default pool of 10
    connections per host; with more step workers than that, connections beyond the pool were opened
    and dropped call after call, and every new one pays a TLS handshake and the loading of the CA
    bundle (about 30 ms of CPU, urllib3 `load_verify_locations`). azure-core's RequestsTransport
    takes a session it does not own (`session_owner=False`), so closing one client closes nothing.
    A client given `transport=` builds none of its own, so its `connection_verify` would be ignored:
    the CA bundle to trust (the emulator's) is the transport's.
    """
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=connections, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return RequestsTransport(session=session, session_owner=False, connection_verify=verify)


class Clients:
    """Caches one client per (kind, subscription[, group, workspace])."""

    def __init__(self, endpoint: CloudEndpoint, credential: Any, *, connections: int = 64) -> None:
        self.endpoint = endpoint
        self.credential = credential
        self._cache: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()
        self._transport = _shared_transport(connections, endpoint.ca_bundle or True)
        prepare_environment(endpoint)

    @staticmethod
    def warm() -> None:
        """Import every SDK a step uses, so that the first step of each kind does not pay for its import.

        A warm-up for a starting instance, off the request path: the clients themselves are built on first
        use (they are per subscription), but the imports are most of their cost (azure.ai.ml alone is 1-2 s).
        """
        import importlib

        for module in (
            "azure.mgmt.resource.resources",
            "azure.mgmt.resource.deployments",
            "azure.mgmt.storage",
            "azure.mgmt.keyvault",
            "azure.mgmt.loganalytics",
            "azure.mgmt.applicationinsights",
            "azure.mgmt.containerregistry",
            "azure.mgmt.authorization",
            "azure.mgmt.authorization.v2022_04_01.models",
            "azure.ai.ml",
            "azure.ai.ml.entities",
        ):
            importlib.import_module(module)

    def _get(self, key: tuple[str, ...], build: Callable[[], T]) -> T:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]  # type: ignore[no-any-return]

    def _mgmt_kwargs(self) -> dict[str, Any]:
        # No retries inside the SDK: a 429 or 5xx becomes a Retry outcome, and the step engine schedules
        # the next attempt without holding a worker (and the throttle holds that kind of call in the subscription).
        kw: dict[str, Any] = {
            "base_url": self.endpoint.arm_url,
            "credential_scopes": [self.endpoint.scope],
            "retry_total": 0,
            "per_call_policies": [RemainingBudgetPolicy()],
            "transport": self._transport,  # which carries the CA bundle (see _shared_transport)
        }
        return kw

    def resources(self, sub: str) -> Any:
        """azure-mgmt-resource."""
        from azure.mgmt.resource.resources import ResourceManagementClient

        return self._get(
            ("resources", sub), lambda: ResourceManagementClient(self.credential, sub, **self._mgmt_kwargs())
        )

    def deployments(self, sub: str) -> Any:
        """azure-mgmt-resource-deployments."""
        from azure.mgmt.resource.deployments import DeploymentsMgmtClient

        return self._get(
            ("deployments", sub), lambda: DeploymentsMgmtClient(self.credential, sub, **self._mgmt_kwargs())
        )

    def storage(self, sub: str) -> Any:
        """azure-mgmt-storage."""
        from azure.mgmt.storage import StorageManagementClient

        return self._get(("storage", sub), lambda: StorageManagementClient(self.credential, sub, **self._mgmt_kwargs()))

    def key_vault(self, sub: str) -> Any:
        """azure-mgmt-keyvault."""
        from azure.mgmt.keyvault import KeyVaultManagementClient

        return self._get(("kv", sub), lambda: KeyVaultManagementClient(self.credential, sub, **self._mgmt_kwargs()))

    def log_analytics(self, sub: str) -> Any:
        """azure-mgmt-loganalytics."""
        from azure.mgmt.loganalytics import LogAnalyticsManagementClient

        return self._get(("la", sub), lambda: LogAnalyticsManagementClient(self.credential, sub, **self._mgmt_kwargs()))

    def insights(self, sub: str) -> Any:
        """azure-mgmt-applicationinsights."""
        from azure.mgmt.applicationinsights import ApplicationInsightsManagementClient

        return self._get(
            ("ai", sub), lambda: ApplicationInsightsManagementClient(self.credential, sub, **self._mgmt_kwargs())
        )

    def registry(self, sub: str) -> Any:
        """azure-mgmt-containerregistry."""
        from azure.mgmt.containerregistry import ContainerRegistryManagementClient

        return self._get(
            ("acr", sub), lambda: ContainerRegistryManagementClient(self.credential, sub, **self._mgmt_kwargs())
        )

    def authorization(self, sub: str) -> Any:
        """azure-mgmt-authorization."""
        from azure.mgmt.authorization import AuthorizationManagementClient

        return self._get(
            ("auth", sub), lambda: AuthorizationManagementClient(self.credential, sub, **self._mgmt_kwargs())
        )

    def ml(self, sub: str, group: str, workspace: str | None = None) -> Any:
        """azure-ai-ml, scoped to a resource group (and a workspace for compute and datastores)."""

        def build() -> Any:
            import logging

            from azure.ai.ml import MLClient
            from azure.ai.ml._arm_deployments import arm_deployment_executor
            from azure.ai.ml.operations import _workspace_operations_base

            # These modules set their loggers to INFO with a console handler at import, and print
            # deployment progress; a service wants its own log lines only.
            for module in (arm_deployment_executor, _workspace_operations_base):
                logging.getLogger(module.__name__).setLevel(logging.WARNING)

            kw: dict[str, Any] = {
                "enable_telemetry": False,
                "show_progress": False,
                "retry_total": 0,
                "per_call_policies": [RemainingBudgetPolicy()],
                "transport": self._transport,
                **self.endpoint.ml_cloud_kwargs(),
            }
            return MLClient(self.credential, sub, group, workspace_name=workspace, **kw)

        return self._get(("ml", sub, group, workspace or ""), build)
