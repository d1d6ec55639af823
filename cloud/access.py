"""Reconcile for access: role assignments for a principal on the workspace and the storage account."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

from cloud.clients import Clients
from cloud.common import Timing, call, get_or_none
from engine.ports import StepContext
from models.errors import PermanentError, TransientError, VendingError
from models.outcomes import Done, Outcome
from models.plan import AccessSpec, Step


def assignment_name(scope: str, role_definition: str, principal_id: str) -> str:
    """Derive the role assignment name, so that a re-run finds the assignment it made."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{scope.lower()}|{role_definition}|{principal_id}"))


def _identity_of(step: Step, ctx: StepContext) -> str:
    """Return the principal id of the managed identity the step's `principal_from` step reported."""
    # The planner sets principal_from on every step that has no principal_id.
    source = step.spec_as(AccessSpec).principal_from or ""
    principal = ctx.dependency_outputs.get(source, {}).get("principal_id")
    if not principal:
        raise PermanentError(
            f"step '{source}' reported no managed identity, so '{step.resource_name}' cannot be granted its roles.",
            code="IdentityMissing",
        )
    return str(principal)


def _existing(ops: Any, scope: str, role_definition: str, principal: str, what: str) -> Any:
    """Find the assignment of this role to this principal at exactly this scope (None if it cannot be seen)."""
    found = call(f"listing {what}", lambda: list(ops.list_for_scope(scope, filter=f"principalId eq '{principal}'")))
    for item in found:
        role = str(item.role_definition_id or "").lower().rstrip("/").rsplit("/", 1)[-1]
        at = str(getattr(item, "scope", "") or "").lower().rstrip("/")
        same_principal = str(item.principal_id or "").lower() == principal.lower()
        if role == role_definition.lower() and same_principal and at == scope.lower().rstrip("/"):
            return item
    return None


def reconcile_access(step: Step, ctx: StepContext, clients: Clients, timing: Timing) -> Outcome:
    """Ensure each role assignment of the step exists."""
    from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters

    sub = ctx.names.subscription_id
    ops = clients.authorization(sub).role_assignments
    spec = step.spec_as(AccessSpec)
    principal = spec.principal_id or _identity_of(step, ctx)
    # A step that has never run creates without reading first: an assignment can exist already only when
    # someone made it by hand, and then the create answers 409 RoleAssignmentExists, handled below. A later
    # attempt, one whose worker died, or a later run (a revision, a retry, a repair) reads first: what this
    # service made is left as it is, never sent again (a PUT replaces an assignment whole, so it would drop
    # a condition or description added since). One read per assignment saved on every new workspace.
    fresh = ctx.attempt <= 1 and not ctx.resumed and not ctx.ran_before
    made = []
    for a in spec.assignments:
        scope = a.scope
        name = assignment_name(scope, a.role_definition, principal)
        what = f"role assignment '{a.role}' for {principal}"
        current = None if fresh else get_or_none(f"reading {what}", partial(ops.get, scope, name))
        if current is None:
            params = RoleAssignmentCreateParameters(
                role_definition_id=f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{a.role_definition}",
                principal_id=principal,
                principal_type=spec.principal_type,
            )
            try:
                current = call(f"creating {what}", partial(ops.create, scope, name, params))
            except VendingError as exc:
                if getattr(exc, "code", "") != "RoleAssignmentExists":
                    raise
                # ARM refuses a second assignment of one role to one principal at one scope with 409
                # RoleAssignmentExists (RoleAssignments_Create, Microsoft.Authorization spec, api-version
                # 2022-04-01; Microsoft Learn, "Troubleshoot Azure RBAC"): made by hand under another name,
                # it is what we want. Report the one that exists.
                current = _existing(ops, scope, a.role_definition, principal, what)
                if current is None:
                    # The list lags the write that made it: look again rather than report an assignment without its id.
                    raise TransientError(
                        f"{what} exists (ARM answered 409 RoleAssignmentExists) but is not listed at {scope} yet",
                        code="RoleAssignmentNotListed",
                    ) from exc
        made.append({"role": a.role, "scope": scope, "id": getattr(current, "id", None)})
    return Done({"id": made[0]["id"] if made else None, "principal_id": principal, "assignments": made})
