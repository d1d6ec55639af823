"""The Azure provider: dispatches each step to its reconcile, against Azure or the local emulator."""

from __future__ import annotations

from collections.abc import Callable

from cloud.access import reconcile_access
from cloud.clients import Clients, CloudEndpoint, emulator_endpoint
from cloud.common import Timing
from cloud.core_resources import (
    reconcile_insights,
    reconcile_key_vault,
    reconcile_registry,
    reconcile_resource_group,
    reconcile_storage,
)
from cloud.credentials import EmulatorCredential, azure_credential
from cloud.ml import reconcile_compute, reconcile_datastore, reconcile_workspace
from cloud.throttle import SubscriptionThrottle, subscription_scope
from engine.ports import StepContext
from models.outcomes import Outcome
from models.plan import Step, StepKind
from models.policy import Policy
from models.settings import Settings

Reconcile = Callable[[Step, StepContext, Clients, Timing], Outcome]

RECONCILES: dict[StepKind, Reconcile] = {
    StepKind.RESOURCE_GROUP: reconcile_resource_group,
    StepKind.STORAGE: reconcile_storage,
    StepKind.KEY_VAULT: reconcile_key_vault,
    StepKind.INSIGHTS: reconcile_insights,
    StepKind.REGISTRY: reconcile_registry,
    StepKind.WORKSPACE: reconcile_workspace,
    StepKind.COMPUTE: reconcile_compute,
    StepKind.DATASTORE: reconcile_datastore,
    StepKind.ACCESS: reconcile_access,
}


class AzureProvider:
    """`Cloud` backed by the Azure SDKs."""

    def __init__(self, clients: Clients, timing: Timing, throttle: SubscriptionThrottle | None = None) -> None:
        self.clients = clients
        self.timing = timing
        self.throttle = throttle or SubscriptionThrottle(max_concurrent=8)

    @classmethod
    def from_settings(cls, settings: Settings, *, policy: Policy) -> AzureProvider:
        """Build the provider for the configured cloud (the emulator's endpoint comes from settings)."""
        if settings.cloud == "emulator":
            if not settings.emulator_url or not settings.emulator_ca_bundle:
                raise RuntimeError(
                    "cloud is 'emulator' but no emulator is running: start the devhost (make run), "
                    "or set VENDING_EMULATOR_URL and VENDING_EMULATOR_CA_BUNDLE"
                )
            endpoint = emulator_endpoint(settings.emulator_url, str(settings.emulator_ca_bundle))
            credential: object = EmulatorCredential()
        else:
            endpoint = CloudEndpoint(settings.arm_endpoint)
            credential = azure_credential(settings.azure_client_id)
        throttle = SubscriptionThrottle(max_concurrent=settings.arm_max_concurrency)
        return cls(Clients(endpoint, credential), Timing(poll_s=settings.poll_s), throttle)

    def reconcile(self, step: Step, ctx: StepContext) -> Outcome:
        """Run the step kind's reconcile, its ARM calls counted against the step's subscription."""
        with subscription_scope(self.throttle, ctx.names.subscription_id):
            return RECONCILES[step.kind](step, ctx, self.clients, self.timing)
