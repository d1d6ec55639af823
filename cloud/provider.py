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
from cloud.inspection import (
    inspect_access,
    inspect_compute,
    inspect_datastore,
    inspect_insights,
    inspect_key_vault,
    inspect_registry,
    inspect_resource_group,
    inspect_storage,
    inspect_workspace,
)
from cloud.ml import reconcile_compute, reconcile_datastore, reconcile_workspace
from cloud.teardown import (
    LockedError,
    delete_access,
    delete_compute,
    delete_datastore,
    delete_insights,
    delete_key_vault,
    delete_registry,
    delete_resource_group,
    delete_storage,
    delete_workspace,
)
from cloud.throttle import SubscriptionThrottle, subscription_scope
from engine.ports import StepContext
from models.lifecycle import DriftFinding
from models.outcomes import Done, Fail, Outcome
from models.plan import Step, StepAction, StepKind
from models.policy import Policy
from models.settings import Settings

Reconcile = Callable[[Step, StepContext, Clients, Timing], Outcome]
Inspect = Callable[[Step, StepContext, Clients], list[DriftFinding]]

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

# What a teardown runs, each step brought towards gone (cloud.teardown).
DELETES: dict[StepKind, Reconcile] = {
    StepKind.RESOURCE_GROUP: delete_resource_group,
    StepKind.STORAGE: delete_storage,
    StepKind.KEY_VAULT: delete_key_vault,
    StepKind.INSIGHTS: delete_insights,
    StepKind.REGISTRY: delete_registry,
    StepKind.WORKSPACE: delete_workspace,
    StepKind.COMPUTE: delete_compute,
    StepKind.DATASTORE: delete_datastore,
    StepKind.ACCESS: delete_access,
}

# What a drift check runs: reads only (cloud.inspection).
INSPECTS: dict[StepKind, Inspect] = {
    StepKind.RESOURCE_GROUP: inspect_resource_group,
    StepKind.STORAGE: inspect_storage,
    StepKind.KEY_VAULT: inspect_key_vault,
    StepKind.INSIGHTS: inspect_insights,
    StepKind.REGISTRY: inspect_registry,
    StepKind.WORKSPACE: inspect_workspace,
    StepKind.COMPUTE: inspect_compute,
    StepKind.DATASTORE: inspect_datastore,
    StepKind.ACCESS: inspect_access,
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
        # A connection per step worker, and the pre-flight's and intake's readers beside them.
        clients = Clients(endpoint, credential, connections=max(16, settings.workers + 8))
        return cls(clients, Timing(poll_s=settings.poll_s), throttle)

    def reconcile(self, step: Step, ctx: StepContext) -> Outcome:
        """Run the step kind's reconcile (or delete), its ARM calls counted against the step's subscription.

        A `keep` step is left as it is: its own record's outputs stand, and nothing is read or written.
        """
        if step.action == StepAction.KEEP:
            return Done(dict(ctx.dependency_outputs.get(step.id, {})))
        with subscription_scope(self.throttle, ctx.names.subscription_id):
            if step.action == StepAction.DELETE:
                try:
                    return DELETES[step.kind](step, ctx, self.clients, self.timing)
                except LockedError as exc:
                    return Fail(str(exc), exc.code)
            return RECONCILES[step.kind](step, ctx, self.clients, self.timing)

    def inspect(self, step: Step, ctx: StepContext) -> list[DriftFinding]:
        """Read the step's resource and say how it drifted from its spec (GETs only, counted and throttled).

        Only `apply` steps have a desired state to compare with; others have no findings.
        """
        if step.action != StepAction.APPLY:
            return []
        with subscription_scope(self.throttle, ctx.names.subscription_id):
            return INSPECTS[step.kind](step, ctx, self.clients)
