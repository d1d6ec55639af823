"""The CLI's approval commands: approvals, approve and deny (docs/approvals.md).

`approvals` lists the requests waiting for the caller's decision (never their own); `approve` and
`deny` are one call each of the REST API's approval routes (`handlers/approvals.py`). The service
decides who may decide what; its refusals are printed as every command prints them, with the rule
(403) or code (409) that refused.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from cli.commands import Api
from cli.views import estimate_summary, needed_text, when


def _path(request_id: str, tail: str) -> str:
    return f"/api/workspaces/{request_id}{tail}"


def item_lines(item: dict[str, Any]) -> list[str]:
    """Show one request waiting for a decision: who asked for what, the rules, what is needed, cost, due time."""
    approval = item["approval"]
    requester = item.get("requester_name") or item["requester"]
    rules = ", ".join(t["rule"] for t in approval.get("rules") or []) or "-"
    lines = [
        f"{item['id']}  {item['team']}  {item['environment']}  {item.get('workspace_name') or '-'}  "
        f"asked by {requester}  due {when(approval.get('due_at'))}",
        f"  {approval['operation']}: rules {rules}; still needed: {needed_text(approval.get('still_needed') or {})}",
        f"  estimate: {estimate_summary(approval.get('estimate') or item.get('estimate'))}",
    ]
    if approval.get("change"):
        lines.append(f"  the change: {approval['change']}")
    return lines


def cmd_approvals(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    listed = api.call("GET", "/api/approvals")
    if args.json:
        out.write(json.dumps(listed, indent=2) + "\n")
        return 0
    items = listed["items"]
    if not items:
        out.write("nothing waits for your decision\n")
        return 0
    for item in items:
        out.write("\n".join(item_lines(item)) + "\n")
    out.write(
        "decide with: python -m cli approve ID [--reason TEXT] or: python -m cli deny ID --reason TEXT; "
        "see one in full with: python -m cli status ID\n"
    )
    return 0


def _decided(done: dict[str, Any], verb: str, out: TextIO) -> int:
    """Say what a decision did: recorded or found recorded, and where the request stands now."""
    rid = done["id"]
    if not done["recorded"]:
        out.write(f"{rid}: you had {verb} it already; nothing new was recorded ({done['outcome']}, {done['status']})\n")
    elif done["outcome"] == "approved":
        out.write(
            f"{rid}: approved; it runs now ({done['status']}). Follow it with: python -m cli status {rid} --wait\n"
        )
    elif done["outcome"] == "pending":
        out.write(f"{rid}: your approval is recorded; it still waits: {needed_text(done.get('still_needed') or {})}\n")
    elif done["outcome"] == "denied" and done["status"] == "denied":
        out.write(f"{rid}: denied; nothing was made, and the requester is told your reason\n")
    elif done["outcome"] == "denied":
        out.write(f"{rid}: the change is denied and dropped; the workspace stays as it was ({done['status']})\n")
    else:
        out.write(f"{rid}: {done['outcome']} ({done['status']})\n")
    return 0


def cmd_approve(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    body = {"reason": args.reason} if args.reason is not None else {}
    return _decided(api.call("POST", _path(args.id, "/approve"), json=body), "approved", out)


def cmd_deny(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    return _decided(api.call("POST", _path(args.id, "/deny"), json={"reason": args.reason}), "denied", out)


def add_approval_commands(sub: Any) -> None:
    """Describe the approval commands on the CLI's subcommand parser."""
    s = sub.add_parser(
        "approvals",
        help="approvers: list the requests waiting for your decision (never your own), soonest due first",
    )
    s.add_argument("--json", action="store_true", help="print the API's answer as it is")
    s.set_defaults(run=cmd_approvals)
    s = sub.add_parser(
        "approve", help="approvers: approve a request waiting for approval; once every rule has its approvals, it runs"
    )
    s.add_argument("id")
    s.add_argument("--reason", metavar="TEXT", default=None, help="why (optional); the requester is told it")
    s.set_defaults(run=cmd_approve)
    s = sub.add_parser(
        "deny", help="approvers: deny a request waiting for approval, saying why; a revision denied is dropped"
    )
    s.add_argument("id")
    s.add_argument("--reason", metavar="TEXT", required=True, help="why (required); the requester is told it")
    s.set_defaults(run=cmd_deny)
