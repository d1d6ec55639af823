"""Reconcile for access: role assignments for a principal on the workspace and the storage account."""

from __future__ import annotations

import uuid
from functools import partial

from cloud.clients import Clients
from cloud.common import Timing, call, get_or_none
from engine.ports import StepContext
from models.errors import PermanentError, VendingError
from models.outcomes import Done, Outcome
from models.plan import Step


def assignment_name(scope: str, role_definition: str, principal_id: str) -> str:
    """Derive the role assignment name, so that a re-run finds the assignment it made."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{scope.lower()}|{role_definition}|{principal_id}"))


def _identity_of(step: Step, ctx: StepContext) -> str:
    """Return the principal id of the managed identity the step's `principal_from` step reported."""
    source = step.spec["principal_from"]
    principal = ctx.dependency_outputs.get(source, {}).get("principal_id")
    if not principal:
        raise PermanentError(
            f"step '{source}' reported no managed identity, so '{step.resource_name}' cannot be granted its roles.",
            code="IdentityMissing",
        )
    return str(principal)


def reconcile_access(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Ensure each role assignment of the step exists."""
    from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters

    sub = ctx.names.subscription_id
    ops = clients.authorization(sub).role_assignments
    principal = step.spec.get("principal_id") or _identity_of(step, ctx)
    made = []
    for a in step.spec["assignments"]:
        scope = a["scope"]
        name = assignment_name(scope, a["role_definition"], principal)
        what = f"role assignment '{a['role']}' for {principal}"
        current = get_or_none(f"reading {what}", partial(ops.get, scope, name))
        if current is None:
            params = RoleAssignmentCreateParameters(
                role_definition_id=f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{a['role_definition']}",
                principal_id=principal,
                principal_type=step.spec["principal_type"],
            )
            try:
                current = call(f"creating {what}", partial(ops.create, scope, name, params))
            except VendingError as exc:
                if getattr(exc, "code", "") != "RoleAssignmentExists":
                    raise
                # The same assignment exists under another name (made by hand): that is what we want.
                made.append({"role": a["role"], "scope": scope, "id": None})
                continue
        made.append({"role": a["role"], "scope": scope, "id": current.id})
    return Done({"id": made[0]["id"] if made else None, "principal_id": principal, "assignments": made})
