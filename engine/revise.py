"""The plans of the runs after a create: what a revision changes, what Azure cannot change in place, the teardown.

Pure functions, like the planner: a revision's plan is the new request's plan with each step marked
`apply` (create or change it), `keep` (it exists as asked) or `delete` (the revision drops it), and
a teardown's plan is every step the service made, marked `delete`, in the reverse order of creation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

from models.errors import Problem
from models.lifecycle import Change, FieldChange, PlanDiff, ResourceChange
from models.plan import (
    AccessSpec,
    KeyVaultSpec,
    Plan,
    ResourceGroupSpec,
    Step,
    StepAction,
    StepKind,
    StorageSpec,
    WorkspaceSpec,
)
from models.records import StepRecord, StepStatus
from models.request import WorkspaceRequest

# What no revision may change, and what to do instead. A workspace's region, its resource group and
# its name are fixed in Azure (a resource's location and name cannot change: ARM "move" only changes
# the group or the subscription, and Azure ML does not support moving workspaces:
# https://learn.microsoft.com/azure/machine-learning/how-to-move-workspace lists only same-region
# moves as preview). The resources a workspace links (storage, key vault, insights) are fixed too:
# https://learn.microsoft.com/azure/machine-learning/how-to-manage-workspace ("you can't change the
# storage account, key vault or Application Insights after the workspace is created").
NEW_REQUEST = "ask for a new workspace with it (POST /api/workspaces), then DELETE this one when it is no longer needed"
FIXED_FIELDS: dict[str, str] = {
    "team": "a workspace belongs to its team for good",
    "environment": "a workspace serves one environment for good",
    "region": "an Azure resource's region cannot change",
    "subscription_id": "the service does not move workspaces between subscriptions",
    "resource_group": "the service does not move workspaces between resource groups",
    "workspace_name": "an Azure resource's name cannot change",
    "existing": "a workspace's storage account, key vault and Application Insights cannot be swapped once it exists",
    "container_registry": "the service links a container registry only when it creates the workspace",
}

# A compute's size, kind, priority and user are fixed once it exists (Azure ML "You can't change the VM
# size of a compute cluster once created": https://learn.microsoft.com/azure/machine-learning/how-to-create-attach-compute-cluster,
# and the same for compute instances). Scale settings (min/max nodes, idle time) change in place.
FIXED_COMPUTE = ("kind", "vm_size", "tier", "assigned_user")
FIXED_DATASTORE = ("kind",)


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def fixed_field_problems(old: WorkspaceRequest, new: WorkspaceRequest, old_plan: Plan, new_plan: Plan) -> list[Problem]:
    """Return every change a revision asks for that Azure cannot make in place, each with what to do instead."""
    problems: list[Problem] = []
    for field, why in FIXED_FIELDS.items():
        before, after = getattr(old, field), getattr(new, field)
        if before != after:
            problems.append(
                Problem(
                    field,
                    f"'{field}' cannot change from {_text(_plain(before))} to {_text(_plain(after))}: {why}. "
                    f"To have it, {NEW_REQUEST}.",
                    "ImmutableField",
                )
            )
    old_compute = {c.name.lower(): c for c in old.compute}
    for i, c in enumerate(new.compute):
        was = old_compute.get(c.name.lower())
        if was is None:
            continue
        if was.name != c.name:
            problems.append(_renamed(f"compute[{i}].name", "compute", was.name, c.name))
            continue
        for field in FIXED_COMPUTE:
            before, after = getattr(was, field), getattr(c, field)
            same = (
                before.lower() == after.lower()
                if isinstance(before, str) and isinstance(after, str)
                else before == after
            )
            if not same:
                problems.append(
                    Problem(
                        f"compute[{i}].{field}",
                        f"compute '{c.name}' cannot change its {field} from {_text(_plain(before))} to "
                        f"{_text(_plain(after))} in place: Azure ML fixes it when the compute is made. Add a compute "
                        f"with another name and this {field}, and remove '{c.name}' (in the same revision).",
                        "ImmutableField",
                    )
                )
    old_stores = {d.name.lower(): d for d in old.datastores}
    for i, d in enumerate(new.datastores):
        was_store = old_stores.get(d.name.lower())
        if was_store is not None and was_store.name != d.name:
            problems.append(_renamed(f"datastores[{i}].name", "datastore", was_store.name, d.name))
        elif was_store is not None and was_store.kind != d.kind:
            problems.append(
                Problem(
                    f"datastores[{i}].kind",
                    f"datastore '{d.name}' cannot change from {was_store.kind.value} to {d.kind.value}: add one with "
                    "another name and remove this one.",
                    "ImmutableField",
                )
            )
    problems += _storage_problems(old_plan, new_plan)
    return problems


def _renamed(field: str, what: str, before: str, after: str) -> Problem:
    # Azure names ignore case: '{after}' is the same resource as '{before}', and the service's step ids do not.
    return Problem(
        field,
        f"{what} '{before}' cannot be renamed to '{after}': Azure names ignore case, so both name one {what}. "
        f"Keep '{before}', or add one with a different name and remove '{before}'.",
        "ImmutableField",
    )


def _storage_problems(old_plan: Plan, new_plan: Plan) -> list[Problem]:
    """Refuse a change of the storage account's hierarchical namespace: it is set when the account is made."""
    try:
        before = old_plan.step("storage").spec_as(StorageSpec)
        after = new_plan.step("storage").spec_as(StorageSpec)
    except KeyError:
        return []
    if before.existing or before.hierarchical_namespace == after.hierarchical_namespace:
        return []
    if after.hierarchical_namespace:
        message = (
            "an adls_gen2 datastore needs a storage account with a hierarchical namespace, and this workspace's "
            "account was made without one (Azure turns it on only by a one-way account upgrade the service does not "
            "make). Use a blob datastore here, or ask for a new workspace with the adls_gen2 datastore."
        )
    else:
        message = (
            "removing the last adls_gen2 datastore would turn the storage account's hierarchical namespace off, which "
            "Azure cannot do. Keep one adls_gen2 datastore, or ask for a new workspace without them."
        )
    return [Problem("datastores", message, "ImmutableField")]


def _plain(value: object) -> object:
    dump = getattr(value, "model_dump", None)
    return (
        dump(mode="json")
        if callable(dump)
        else (str(value) if value is not None and not isinstance(value, (bool, int, float, str)) else value)
    )


def _spec_fields(step: Step) -> dict[str, object]:
    return step.spec.model_dump(mode="json")


def field_changes(before: Step, after: Step) -> list[FieldChange]:
    """Return the spec fields that differ between two versions of one step, sorted by name."""
    a, b = _spec_fields(before), _spec_fields(after)
    return [
        FieldChange(field=k, before=_text(a.get(k)), after=_text(b.get(k)))
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def diff(base: Plan, desired: Plan, records: Mapping[str, StepRecord]) -> PlanDiff:
    """Say what applying `desired` over `base` (what exists) does to each resource.

    A step whose spec is unchanged but whose record did not succeed (a failed create, say) is an
    update: applying it again is what the revision must do.
    """
    changes: list[ResourceChange] = []
    before = {s.id: s for s in base.steps}
    for step in desired.steps:
        was = before.get(step.id)
        record = records.get(step.id)
        if was is None or record is None:
            changes.append(
                ResourceChange(step_id=step.id, kind=step.kind, resource_name=step.resource_name, change=Change.CREATE)
            )
            continue
        fields = field_changes(was, step)
        if not fields and record.status != StepStatus.SUCCEEDED:
            fields = [FieldChange(field="status", before=record.status.value, after=StepStatus.SUCCEEDED.value)]
        changes.append(
            ResourceChange(
                step_id=step.id,
                kind=step.kind,
                resource_name=step.resource_name,
                change=Change.UPDATE if fields else Change.UNCHANGED,
                fields=fields,
            )
        )
    wanted = {s.id for s in desired.steps}
    changes += [
        ResourceChange(step_id=s.id, kind=s.kind, resource_name=s.resource_name, change=Change.DELETE)
        for s in base.steps
        if s.id not in wanted and _deletable(s)
    ]
    return PlanDiff(revision=0, changes=changes)


def ancestors(steps: Iterable[Step]) -> dict[str, set[str]]:
    """Return, for each step, every step it depends on directly or not."""
    by_id = {s.id: s for s in steps}
    memo: dict[str, set[str]] = {}

    def up(step_id: str, seen: frozenset[str]) -> set[str]:
        if step_id in memo:
            return memo[step_id]
        found: set[str] = set()
        step = by_id.get(step_id)
        for d in step.depends_on if step else []:
            if d in seen:
                continue
            found |= {d} | up(d, seen | {d})
        memo[step_id] = found
        return found

    return {s: up(s, frozenset({s})) for s in by_id}


def _reversed(deleting: Sequence[Step], graph: Iterable[Step]) -> list[Step]:
    """Return the delete steps, each waiting for the deletes of everything that was made on top of it."""
    above = ancestors(graph)
    ids = {s.id for s in deleting}
    return [
        s.model_copy(
            update={
                "action": StepAction.DELETE,
                "depends_on": sorted(t for t in ids if t != s.id and s.id in above.get(t, set())),
            }
        )
        for s in deleting
    ]


def _deletable(step: Step) -> bool:
    """Say whether the service made the step's resource (and may delete it): never what a team brought."""
    spec = step.spec
    if getattr(spec, "existing", False):
        return False
    return not (isinstance(spec, ResourceGroupSpec) and not spec.create)


def revision_plan(base: Plan, desired: Plan, changes: PlanDiff) -> Plan:
    """Return the run plan of a revision: desired steps to apply or keep, and the dropped ones to delete."""
    by_change = {c.step_id: c.change for c in changes.changes}
    steps = [
        s.model_copy(
            update={"action": StepAction.KEEP if by_change.get(s.id) == Change.UNCHANGED else StepAction.APPLY}
        )
        for s in desired.steps
    ]
    dropped = [s for s in base.steps if by_change.get(s.id) == Change.DELETE]
    return desired.model_copy(update={"steps": [*steps, *_reversed(dropped, base.steps)]})


def desired_of(plan: Plan) -> Plan:
    """Return the revision a run plan applies: its steps other than deletes, each to apply."""
    return plan.model_copy(
        update={
            "steps": [
                s.model_copy(update={"action": StepAction.APPLY}) for s in plan.steps if s.action != StepAction.DELETE
            ]
        }
    )


def made(base: Plan | None, plan: Plan, records: Iterable[StepRecord]) -> Plan:
    """Return what exists after a run of `plan` over `base`: the base, plus what the run made or tried, less what it deleted.

    A step the run worked on (succeeded, failed, or cancelled after it had started) may have made
    its resource, so it counts: a later revision applies or deletes it, a teardown deletes it.
    """
    by_id = {r.step_id: r for r in records}
    found: dict[str, Step] = {s.id: s for s in (base.steps if base else [])}
    for s in plan.steps:
        r = by_id.get(s.id)
        if s.action == StepAction.DELETE:
            if r is not None and r.status == StepStatus.SUCCEEDED:
                found.pop(s.id, None)
            continue
        worked = r is not None and (
            r.status in (StepStatus.SUCCEEDED, StepStatus.FAILED)
            or (r.status == StepStatus.CANCELLED and r.started_at is not None)
        )
        if worked or s.action == StepAction.KEEP:
            found[s.id] = s.model_copy(update={"action": StepAction.APPLY})
    order = [s.id for s in plan.steps] + [i for i in found if i not in {s.id for s in plan.steps}]
    return plan.model_copy(update={"steps": [found[i] for i in order if i in found]})


def known_steps(*plans: Plan | None) -> list[Step]:
    """Return every step any of the plans names, the later plan's version winning (as it is newest)."""
    found: dict[str, Step] = {}
    for plan in plans:
        for s in plan.steps if plan else []:
            found[s.id] = s.model_copy(update={"action": StepAction.APPLY})
    return list(found.values())


def teardown_plan(
    applied: Plan | None, current: Plan, *, purge: bool, shared: Mapping[str, str] | None = None
) -> tuple[Plan, list[tuple[Step, str]]]:
    """Return the teardown's plan (every resource the service made, deleted in the reverse order of creation).

    `applied` is what the request has made and `current` the latest run's plan: every step either
    names is deleted, except what is kept, returned with the reason: what the team brought, a
    resource group the service did not create, and what another live request uses too (`shared`:
    lowercased resource id to that request's id), such as the storage account two workspaces of
    one team and environment share, with the role assignments on it.
    """
    shared = shared or {}
    steps = known_steps(applied, current)
    kept: list[tuple[Step, str]] = []
    deleting: list[Step] = []
    for s in steps:
        if getattr(s.spec, "existing", False):
            kept.append((s, "brought by the team: the service never deletes it"))
        elif isinstance(s.spec, ResourceGroupSpec) and not s.spec.create:
            kept.append((s, "the resource group was there before the service: it is not deleted"))
        elif (other := _shared_with(s, shared)) is not None:
            kept.append((s, f"request {other} uses it too: it goes with the last of them"))
        else:
            deleting.append(_with_purge(s, purge))
    return current.model_copy(update={"steps": _reversed(deleting, steps)}), kept


def _shared_with(step: Step, shared: Mapping[str, str]) -> str | None:
    ids = [step.resource_id]
    if isinstance(step.spec, AccessSpec):
        ids += [g.scope for g in step.spec.assignments]
    return next((shared[i.lower()] for i in ids if i.lower() in shared), None)


def resource_ids(plan: Plan) -> set[str]:
    """Return the ids of the resources a plan makes (its role assignments aside), lowercased: what another may share."""
    return {s.resource_id.lower() for s in plan.steps if _deletable(s) and not isinstance(s.spec, AccessSpec)}


def _with_purge(step: Step, purge: bool) -> Step:
    spec = step.spec
    if isinstance(spec, WorkspaceSpec | KeyVaultSpec):
        return step.model_copy(update={"spec": spec.model_copy(update={"purge_on_delete": purge})})
    return step


def repair_plan(applied: Plan, drifted: set[str]) -> Plan:
    """Return the run plan that applies the drifted steps again and keeps the others."""
    steps = [
        s.model_copy(update={"action": StepAction.APPLY if s.id in drifted else StepAction.KEEP}) for s in applied.steps
    ]
    return applied.model_copy(update={"steps": steps})


SOFT_DELETING = frozenset({StepKind.WORKSPACE, StepKind.KEY_VAULT})
"""The kinds Azure soft-deletes: a teardown that does not purge leaves their names held for a while."""
