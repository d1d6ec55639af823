"""Pure parts of approval: a request's estimated monthly cost, and which of the policy's rules it meets.

Both are functions of the request and the policy alone (no store, no cloud, no clock), so the plan,
the approval message and the request view show the same figures, and a test can pin them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.approvals import ApprovalRule, CostEstimate, CostLine, PriceTable, Triggered
from models.policy import Policy
from models.request import WorkspaceRequest

__all__ = ["Measures", "approver_groups", "estimate", "measures", "triggered"]


def estimate(request: WorkspaceRequest, policy: Policy) -> CostEstimate | None:
    """Estimate a month of the request's compute from the policy's price table; None when the policy has none.

    A cluster costs its nodes' hourly price (at its tier) times the pricing month: `monthly_idle` with
    `min_nodes` running, `monthly_max` with `max_nodes` running all month. A compute instance runs one
    node whenever it is on, so it is counted in both. Storage, key vault and insights are billed by use
    and are left out (said in the notes); a registry is counted at the table's monthly price.
    """
    prices = policy.prices
    if prices is None:
        return None
    lines: list[CostLine] = []
    unpriced: list[str] = []
    for c in request.compute:
        dedicated = prices.hourly(c.vm_size)
        if dedicated is None:
            unpriced.append(c.vm_size)
            continue
        hourly = _tiered(prices, dedicated, c.tier)
        idle, top = (1, 1) if c.kind == "instance" else (c.min_nodes, c.max_nodes)
        lines.append(
            CostLine(
                compute=c.name,
                vm_size=c.vm_size,
                tier=c.tier,
                hourly=round(hourly, 4),
                idle_nodes=idle,
                max_nodes=top,
                monthly_idle=round(hourly * idle * prices.hours_per_month, 2),
                monthly_max=round(hourly * top * prices.hours_per_month, 2),
            )
        )
    registry = (
        prices.registry_monthly if (request.container_registry and not request.existing.container_registry_id) else 0.0
    )
    notes = ["storage, key vault, Application Insights and data transfer are billed by use and are not included"]
    if registry:
        notes.append(f"includes the container registry at {prices.currency} {registry:,.2f}/month")
    if unpriced:
        notes.append(f"no price for {', '.join(sorted(set(unpriced)))}: not included")
    return CostEstimate(
        currency=prices.currency,
        as_of=prices.as_of,
        source=prices.source,
        monthly_idle=round(sum(line.monthly_idle for line in lines) + registry, 2),
        monthly_max=round(sum(line.monthly_max for line in lines) + registry, 2),
        lines=lines,
        unpriced=sorted(set(unpriced)),
        notes=notes,
    )


def _tiered(prices: PriceTable, dedicated: float, tier: str) -> float:
    return dedicated * (1 - prices.low_priority_discount) if tier == "low_priority" else dedicated


@dataclass(frozen=True)
class Measures:
    """What the rules look at in one request."""

    environment: str
    gpus: int
    gpu_computes: frozenset[str]
    families: frozenset[str]
    vcpus: int
    nodes: int
    monthly_max: float
    brought: frozenset[str] = field(default_factory=frozenset)


def measures(request: WorkspaceRequest, policy: Policy, cost: CostEstimate | None) -> Measures:
    """Measure a resolved request as the rules see it."""
    gpus = 0
    gpu_computes: set[str] = set()
    families: set[str] = set()
    vcpus = 0
    nodes = 0
    for c in request.compute:
        size = policy.vm_size(c.vm_size)
        count = 1 if c.kind == "instance" else c.max_nodes
        nodes = max(nodes, count, c.min_nodes if c.kind == "cluster" else 0)
        if size is None:
            continue
        families.add(size.family.lower())
        vcpus += size.vcpus * count
        if size.gpus:
            gpus += size.gpus * count
            gpu_computes.add(c.name)
    existing = request.existing
    brought = {
        what
        for what, rid in (
            ("storage", existing.storage_account_id),
            ("key vault", existing.key_vault_id),
            ("Application Insights", existing.application_insights_id),
            ("container registry", existing.container_registry_id),
        )
        if rid
    }
    return Measures(
        environment=request.environment.value,
        gpus=gpus,
        gpu_computes=frozenset(gpu_computes),
        families=frozenset(families),
        vcpus=vcpus,
        nodes=nodes,
        monthly_max=cost.monthly_max if cost else 0.0,
        brought=frozenset(brought),
    )


def _reasons(rule: ApprovalRule, m: Measures, currency: str) -> list[str] | None:
    """Return why the request meets the rule (every condition the rule sets), or None when it does not."""
    reasons: list[str] = []
    if rule.environments:
        if m.environment not in {e.value for e in rule.environments}:
            return None
        reasons.append(f"environment {m.environment}")
    if rule.gpu:
        if not m.gpus:
            return None
        reasons.append(f"GPU compute ({', '.join(sorted(m.gpu_computes))})")
    if rule.vm_families:
        hit = sorted(m.families & {f.lower() for f in rule.vm_families})
        if not hit:
            return None
        reasons.append(f"VM family {', '.join(hit)}")
    if rule.min_vcpus is not None:
        if m.vcpus < rule.min_vcpus:
            return None
        reasons.append(f"{m.vcpus} vCPUs at max scale (rule: {rule.min_vcpus} or more)")
    if rule.min_nodes is not None:
        if m.nodes < rule.min_nodes:
            return None
        reasons.append(f"a compute of {m.nodes} nodes (rule: {rule.min_nodes} or more)")
    if rule.min_monthly_cost is not None:
        if m.monthly_max < rule.min_monthly_cost:
            return None
        reasons.append(
            f"estimated {currency} {m.monthly_max:,.0f}/month at most (rule: {rule.min_monthly_cost:,.0f} or more)"
        )
    if rule.brings_resources:
        if not m.brought:
            return None
        reasons.append(f"brings its own {', '.join(sorted(m.brought))}")
    return reasons


def _raises(rule: ApprovalRule, new: Measures, old: Measures) -> bool:
    """Say whether a revision raises something the rule measures (so it needs approval again)."""
    return (
        (rule.gpu and (new.gpus > old.gpus or bool(new.gpu_computes - old.gpu_computes)))
        or bool(rule.vm_families and (new.families - old.families) & {f.lower() for f in rule.vm_families})
        or (rule.min_vcpus is not None and new.vcpus > old.vcpus)
        or (rule.min_nodes is not None and new.nodes > old.nodes)
        or (rule.min_monthly_cost is not None and new.monthly_max > old.monthly_max)
        or (rule.brings_resources and bool(new.brought - old.brought))
    )


def triggered(
    request: WorkspaceRequest,
    policy: Policy,
    cost: CostEstimate | None,
    *,
    before: WorkspaceRequest | None = None,
) -> list[Triggered]:
    """Return the rules a request meets, with why and who may approve; for a revision, only those it raises.

    `before` is the request as applied: a revision needs approval for a rule only when it meets the
    rule and did not before, or raises what the rule measures (more GPUs, vCPUs, nodes, cost, a new
    family or brought resource). A revision that lowers or keeps them runs without a wait.
    """
    now = measures(request, policy, cost)
    then = measures(before, policy, estimate(before, policy)) if before is not None else None
    currency = policy.prices.currency if policy.prices else "USD"
    found: list[Triggered] = []
    for rule in policy.approvals.rules:
        reasons = _reasons(rule, now, currency)
        if reasons is None:
            continue
        if then is not None and _reasons(rule, then, currency) is not None and not _raises(rule, now, then):
            continue
        found.append(
            Triggered(
                rule=rule.name,
                description=rule.description,
                reasons=reasons,
                approvers=rule.approvers,
                approvals=rule.approvals,
                groups=approver_groups(policy, request.team, rule.approvers),
            )
        )
    return found


def approver_groups(policy: Policy, team: str, scope: str) -> list[str]:
    """Return the object ids of the groups whose members may approve for a team under a rule's scope."""
    groups = {str(g).lower() for g in policy.approvals.approvers}
    access = policy.teams.get(team)
    if scope == "team" and access is not None:
        groups |= {str(g).lower() for g in access.approvers}
    return sorted(groups)
