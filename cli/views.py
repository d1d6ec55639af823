"""How the CLI shows a workspace's life: what a change does, revisions, expiry, drift and what a teardown left.

Also what a request would cost and where its approval stands (docs/approvals.md).

Each function takes the JSON the REST API answers (`RequestView`, `PlanDiff`, `Revision`,
`DriftReport`, `CostEstimate`, `ApprovalView`) and returns lines to print; none calls the service.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from models.approvals import CostEstimate

CHANGE_MARK = {"create": "+", "update": "~", "delete": "-", "unchanged": "="}
SHOWN_CHANGES = ("create", "update", "delete")


def when(text: str | None) -> str:
    """Show an API timestamp as UTC to the minute (the text itself when it is not one)."""
    if not text:
        return "-"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def days_from_now(text: str, now: datetime) -> float | None:
    """Return how many days from `now` an API timestamp is (None when it is not one)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - now).total_seconds() / 86400


def change_summary(diff: dict[str, Any]) -> str:
    """Say in one line how many resources a change creates, updates and deletes."""
    counts = {c: sum(1 for r in diff.get("changes", []) if r["change"] == c) for c in SHOWN_CHANGES}
    return ", ".join(f"{n} to {c}" for c, n in counts.items() if n) or "no change"


def change_lines(diff: dict[str, Any]) -> list[str]:
    """Show a `PlanDiff` per resource: each created, updated or deleted one, with the fields that change."""
    lines = [f"revision {diff.get('revision')}: {change_summary(diff)}"]
    unchanged = 0
    for r in diff.get("changes", []):
        if r["change"] not in SHOWN_CHANGES:
            unchanged += 1
            continue
        lines.append(f"  {CHANGE_MARK[r['change']]} {r['change']:<7} {r['step_id']:<44} {r['resource_name']}")
        for field, before, after in _field_changes(r.get("fields") or []):
            lines.append(f"      {field}: {before} → {after}"[:240])
    if unchanged:
        lines.append(f"  = {unchanged} unchanged (kept as they are, not called again)")
    return lines


def _json_object(text: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _shown(value: Any) -> str:
    if value is None:
        return "(none)"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _field_changes(fields: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """Return (field, before, after) per change; an object (tags, say) by each of its keys that differs."""
    found: list[tuple[str, str, str]] = []
    for f in fields:
        before, after = _json_object(f.get("before")), _json_object(f.get("after"))
        if before is not None and after is not None:
            found += [
                (f"{f['field']}.{k}", _shown(before.get(k)), _shown(after.get(k)))
                for k in sorted(set(before) | set(after))
                if before.get(k) != after.get(k)
            ]
        else:
            found.append((f["field"], _shown(f.get("before")), _shown(f.get("after"))))
    return found


def revision_lines(items: list[dict[str, Any]]) -> list[str]:
    """Show a request's revisions, oldest first: number, what became of it, when, who, and what it changed."""
    if not items:
        return ["no revisions"]
    return [
        f"  #{r['number']:<3} {r['status']:<10} {when(r.get('at'))}  run {r['run']:<3} by {r['by']}  "
        f"{r.get('summary') or ('the create' if r['number'] == 1 else '')}".rstrip()
        for r in items
    ]


def drift_lines(report: dict[str, Any] | None) -> list[str]:
    """Show what the last drift check found (or that there has been none yet)."""
    if report is None:
        return ["drift: not checked yet"]
    findings = report.get("findings") or []
    head = f"drift: checked {when(report.get('checked_at'))}: "
    head += f"{len(findings)} finding{'s' if len(findings) != 1 else ''}" if findings else "nothing differs"
    lines = [head]
    for f in findings:
        detail = f" (expected {f['expected']}, found {f['actual']})" if f.get("expected") or f.get("actual") else ""
        lines.append(f"  - {f['step_id']}: {f['message']}{detail}"[:240])
    if report.get("error"):
        lines.append(f"  the check did not finish: {report['error']}")
    if report.get("repaired_run"):
        lines.append(f"  repaired by run {report['repaired_run']} (policy repairs drift)")
    if report.get("requested"):
        lines.append("  a check is asked for: the drift timer makes it at its next tick")
    return lines


def teardown_lines(report: dict[str, Any] | None) -> list[str]:
    """Show what a teardown removed, kept and left, and which names soft-delete holds until when."""
    if report is None:
        return []
    lines = [
        f"teardown ({'purging' if report.get('purge') else 'soft-deleting'}): "
        f"{len(report.get('deleted') or [])} resources deleted"
    ]
    for k in report.get("kept") or []:
        lines.append(f"  kept       {k['resource_id']}: {k['reason']}")
    for r in report.get("remaining") or []:
        code = f" [{r['code']}]" if r.get("code") else ""
        lines.append(f"  remaining  {r['resource_id']}: {r['reason']}{code}")
    for s in report.get("soft_deleted") or []:
        until = f"until {when(s['until'])}" if s.get("until") else "for Azure's retention"
        lines.append(f"  held       {s['name']} ({s['kind']}) {until}; to free it now: {s['purge']}")
    return lines


def expiry_line(view: dict[str, Any], now: datetime) -> str:
    """Say when the workspace expires, and how far off that is."""
    expires = view.get("expires_at")
    if not expires:
        return "expires: never"
    if view.get("status") == "deleted" or view.get("operation") == "delete":
        return "expires: - (it is torn down, or being torn down)"
    days = days_from_now(expires, now)
    ahead = "" if days is None else (f" (in {days:.1f} days)" if days >= 0 else " (passed)")
    return f"expires: {when(expires)}{ahead}; move it with: python -m cli extend {view['id']} --days N"


def lifecycle_lines(view: dict[str, Any], now: datetime) -> list[str]:
    """Show a request's operation, run and revision, its expiry, drift and teardown report."""
    lines = [
        f"operation: {view.get('operation', 'create')}  run {view.get('run', 1)}  revision {view.get('revision', 1)}",
        expiry_line(view, now),
    ]
    if view.get("status") in ("succeeded", "updating") or view.get("drift"):
        lines += drift_lines(view.get("drift"))
    lines += teardown_lines(view.get("teardown"))
    return lines


def estimate_summary(estimate: dict[str, Any] | None) -> str:
    """Say a cost estimate in one line: currency, monthly maximum and idle cost, and the prices' date."""
    if not estimate:
        return "no estimate"
    try:
        return CostEstimate.model_validate(estimate).summary()
    except ValidationError:
        return f"{estimate.get('currency', '?')} {estimate.get('monthly_max', '?')}/month at most"


def estimate_lines(estimate: dict[str, Any] | None) -> list[str]:
    """Show a cost estimate: its summary, each compute's share, and what it could not price."""
    if not estimate:
        return []
    lines = [f"estimate: {estimate_summary(estimate)}"]
    currency = estimate.get("currency", "")
    for line in estimate.get("lines") or []:
        lines.append(
            f"  {line['compute']:<20} {line['vm_size']:<26} {line['tier']:<12} "
            f"{currency} {line['monthly_max']:,.0f} max, {line['monthly_idle']:,.0f} idle "
            f"({line['idle_nodes']}-{line['max_nodes']} nodes at {line['hourly']:g}/h)"
        )
    if estimate.get("unpriced"):
        lines.append(f"  not priced (no price in the policy): {', '.join(estimate['unpriced'])}")
    lines += [f"  {note}" for note in estimate.get("notes") or []]
    return lines


def needed_text(still_needed: dict[str, int]) -> str:
    """Say per rule how many more approvals it needs (`-` when none)."""
    return ", ".join(f"{rule} {n} more" for rule, n in still_needed.items()) or "-"


def rule_lines(rules: list[dict[str, Any]]) -> list[str]:
    """Show the approval rules a request met: who approves, how many must, and why each rule applies."""
    lines: list[str] = []
    for t in rules:
        who = "the team's or the platform's approvers" if t["approvers"] == "team" else "the platform's approvers"
        count = f"{t['approvals']} approval{'s' if t['approvals'] != 1 else ''}"
        lines.append(
            f"  rule {t['rule']}: {count} from {who}" + (f" ({t['description']})" if t.get("description") else "")
        )
        lines += [f"    - {reason}" for reason in t.get("reasons") or []]
    return lines


def approval_lines(approval: dict[str, Any] | None, request_id: str) -> list[str]:
    """Show where a request's approval stands: outcome, rules and why, what is still needed, decisions, due time."""
    if not approval:
        return []
    outcome = approval["outcome"]
    head = f"approval ({approval['operation']}, round {approval['round']}): {outcome}"
    if outcome == "pending":
        head += f", due {when(approval.get('due_at'))}"
    elif approval.get("decided_at"):
        head += f" at {when(approval['decided_at'])}"
    lines = [head]
    if approval.get("change"):
        lines.append(f"  the change: {approval['change']}")
    lines += rule_lines(approval.get("rules") or [])
    if outcome == "pending":
        lines.append(f"  still needed: {needed_text(approval.get('still_needed') or {})}")
    for d in approval.get("decisions") or []:
        why = f": {d['reason']}" if d.get("reason") else ""
        lines.append(
            f"  {d['decision']:<7} by {d.get('name') or d['by']} {when(d.get('at'))} ({d.get('door', '-')}){why}"
        )
    if outcome == "pending":
        lines.append(
            f"  an approver decides with: python -m cli approve {request_id} [--reason TEXT] "
            f"or: python -m cli deny {request_id} --reason TEXT"
        )
    return lines
