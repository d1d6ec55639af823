"""The CLI's lifecycle commands: update, delete, cancel, retry, extend, drift and revisions (docs/lifecycle.md).

Each is one call of the REST API's lifecycle routes with the remembered token (`handlers/lifecycle.py`);
the service decides who may do what, and its refusals are printed as every command prints them.
`--wait` follows the run to its end as `submit --wait` does.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any, TextIO

from cli.commands import WAITING, Api, CliError, follow, load_json, summary
from cli.patching import PatchError, merge_patch_of
from cli.views import change_lines, drift_lines, revision_lines, teardown_lines, when

MERGE_PATCH = "application/merge-patch+json"


def _path(request_id: str, tail: str = "") -> str:
    return f"/api/workspaces/{request_id}{tail}"


def _waited(api: Api, request_id: str, out: TextIO, wanted: set[str]) -> int:
    """Follow the run to its end and show how it ended; 0 when it ended as `wanted`."""
    view = follow(api, request_id, out)
    summary(view, out)
    return 0 if view["status"] in wanted else 1


def cmd_update(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    if not args.file and not args.set:
        raise CliError("give a FILE (a JSON merge patch of the request) or --set PATH=VALUE, or both")
    base: Any = load_json(args.file) if args.file else {}
    if not isinstance(base, dict):
        raise CliError(f"{args.file} must hold a JSON object: a merge patch (RFC 7396) of the request")
    patch: dict[str, Any] = base
    if args.set:
        current = api.call("GET", _path(args.id))["request"]
        try:
            patch = merge_patch_of(args.set, current, base=base, load=load_json)
        except PatchError as exc:
            raise CliError(str(exc)) from exc
    if args.plan:
        diff = api.call("POST", _path(args.id, "/plan"), json=patch)
        out.write("\n".join(change_lines(diff)) + "\n")
        out.write("nothing was changed (--plan); run the same command without --plan to apply it\n")
        return 0
    done = api.call("PATCH", _path(args.id), content=json.dumps(patch).encode(), headers={"content-type": MERGE_PATCH})
    if done.get("changes"):
        out.write("\n".join(change_lines(done["changes"])) + "\n")
    if done.get("status") == WAITING:
        out.write(
            f"{done['id']}: the change waits for approval; revision {done['revision']} stays as it is until an approver "
            f"approves it. See why with: python -m cli status {done['id']}\n"
        )
        return 0
    if not done["started"]:
        out.write(
            f"{done['id']}: no resource changes, no run started (revision {done['revision']}, {done['status']})\n"
        )
        return 0
    out.write(f"{done['id']}: revision {done['revision']} is being applied (run {done['run']}, {done['status']})\n")
    return _waited(api, done["id"], out, {"succeeded"}) if args.wait else 0


def _confirmed(question: str, out: TextIO, stdin: TextIO) -> bool:
    out.write(f"{question} [y/N] ")
    out.flush()
    return stdin.readline().strip().lower() in ("y", "yes")


def cmd_delete(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    view = api.call("GET", _path(args.id))
    name = view.get("workspace_name") or args.id
    if not args.yes:
        if not args.stdin.isatty():
            raise CliError(
                f"delete tears down {name} and cannot be undone; there is no terminal to ask on, so confirm "
                "with --yes. Nothing was deleted."
            )
        names = view.get("names") or {}
        held = (
            "The workspace and key vault are purged: their names are free at once."
            if args.purge
            else "Azure keeps the workspace and key vault soft-deleted, holding their names, unless purged "
            "(--purge, or the policy's purge_on_delete)."
        )
        out.write(
            f"This tears down workspace {name} of team {view['team']} ({view['environment']}) in resource group "
            f"{names.get('resource_group', '-')}: every resource the service made, in the reverse order of "
            f"creation. What the team brought is kept. {held}\n"
        )
        if not _confirmed(f"Delete {name} ({args.id})?", out, args.stdin):
            out.write("nothing was deleted\n")
            return 1
    done = api.call("DELETE", _path(args.id), params={"purge": "true"} if args.purge else None)
    if not done["started"]:
        out.write(f"{done['id']}: already {done['status']}; nothing new was started\n")
        if done["status"] == "deleted":
            out.write("\n".join(teardown_lines(api.call("GET", _path(args.id)).get("teardown"))) + "\n")
            return 0
    else:
        out.write(f"{done['id']}: tearing down {name} (run {done['run']}, {done['status']})\n")
    return _waited(api, done["id"], out, {"deleted"}) if args.wait else 0


def cmd_cancel(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    done = api.call("POST", _path(args.id, "/cancel"))
    if done["started"]:
        out.write(
            f"{done['id']}: cancelling its {done['operation']} (run {done['run']}): no new step starts; a step that "
            "is running finishes its current call to Azure\n"
        )
    else:
        out.write(f"{done['id']}: already {done['status']}\n")
    return _waited(api, done["id"], out, {"cancelled"}) if args.wait else 0


def cmd_retry(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    done = api.call("POST", _path(args.id, "/retry"))
    if done["started"]:
        out.write(
            f"{done['id']}: retrying its {done['operation']} (run {done['run']}, {done['status']}): the steps "
            "that did not succeed run again; those that did are not\n"
        )
    else:
        out.write(f"{done['id']}: {done['status']}, already in flight; nothing to retry\n")
    wanted = {"deleted"} if done["operation"] == "delete" else {"succeeded"}
    return _waited(api, done["id"], out, wanted) if args.wait else 0


def cmd_extend(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    body: dict[str, Any]
    if args.until is not None:
        try:
            moment = datetime.fromisoformat(args.until)
        except ValueError as exc:
            raise CliError(f"--until {args.until} is not an ISO 8601 time (for example 2027-01-31T00:00:00Z)") from exc
        if moment.tzinfo is None:
            raise CliError(f"--until {args.until} has no time zone; give one (for example 2027-01-31T00:00:00Z)")
        body = {"expires_at": moment.isoformat()}
    else:
        if args.days <= 0:
            raise CliError("--days must be more than 0")
        body = {"days": args.days}
    view = api.call("POST", _path(args.id, "/extend"), json=body)
    expires = view.get("expires_at")
    left = ""
    if expires:
        days = (datetime.fromisoformat(expires) - datetime.now(UTC)).total_seconds() / 86400
        left = f" (in {days:.1f} days)"
    out.write(f"{view['id']}: {view.get('workspace_name') or ''} expires at {when(expires)}{left}\n")
    return 0


def cmd_drift(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    if args.check:
        api.call("POST", _path(args.id, "/drift"))
        out.write(
            f"{args.id}: a drift check is asked for; the drift timer makes it at its next tick "
            f"(it reads Azure, changes nothing). See it with: python -m cli drift {args.id}\n"
        )
        return 0
    out.write("\n".join(drift_lines(api.call("GET", _path(args.id, "/drift")))) + "\n")
    return 0


def cmd_revisions(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    items = api.call("GET", _path(args.id, "/revisions"))["items"]
    out.write("\n".join(revision_lines(items)) + "\n")
    return 0


def add_lifecycle_commands(sub: Any) -> None:
    """Describe the lifecycle commands on the CLI's subcommand parser."""
    s = sub.add_parser(
        "update",
        help="change a workspace: a JSON merge patch from FILE and/or --set PATH=VALUE; each change is a revision",
        description="A merge patch of the request as `status --json` shows it: objects merge, null removes a field, "
        "a list is replaced whole. --set compute[1].max_nodes=4 edits the current list and sends all of it.",
    )
    s.add_argument("id")
    s.add_argument("file", nargs="?", help="a JSON merge patch (RFC 7396) of the request")
    s.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="e.g. tags.project=churn, compute[1].max_nodes=4, members=@members.json; null removes; repeatable",
    )
    s.add_argument("--plan", action="store_true", help="show what would change, per resource; change nothing")
    s.add_argument("--wait", action="store_true", help="follow the revision's run to its end")
    s.set_defaults(run=cmd_update)
    s = sub.add_parser("delete", help="tear a workspace down, in the reverse order of creation")
    s.add_argument("id")
    s.add_argument("--purge", action="store_true", help="purge what Azure soft-deletes, freeing the names at once")
    s.add_argument("--wait", action="store_true", help="follow the teardown to its end")
    s.add_argument("--yes", action="store_true", help="do not ask for confirmation (needed without a terminal)")
    s.set_defaults(run=cmd_delete)
    s = sub.add_parser("cancel", help="stop a run in flight: no new step starts")
    s.add_argument("id")
    s.add_argument("--wait", action="store_true", help="wait until it is cancelled")
    s.set_defaults(run=cmd_cancel)
    s = sub.add_parser("retry", help="resume a failed or cancelled run from the steps that did not succeed")
    s.add_argument("id")
    s.add_argument("--wait", action="store_true", help="follow the run to its end")
    s.set_defaults(run=cmd_retry)
    s = sub.add_parser("extend", help="move a workspace's expiry, within the environment's policy")
    s.add_argument("id")
    when_group = s.add_mutually_exclusive_group(required=True)
    when_group.add_argument("--days", type=float, help="expire this many days from now")
    when_group.add_argument("--until", metavar="ISO8601", help="expire at this time (with a time zone)")
    s.set_defaults(run=cmd_extend)
    s = sub.add_parser("drift", help="show what the last drift check found; --check asks for one")
    s.add_argument("id")
    s.add_argument("--check", action="store_true", help="ask for a drift check at the drift timer's next tick")
    s.set_defaults(run=cmd_drift)
    s = sub.add_parser("revisions", help="list a request's revisions: what each asked, who, when, what became of it")
    s.add_argument("id")
    s.set_defaults(run=cmd_revisions)
