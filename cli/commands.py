"""The CLI's commands. They talk to the API over HTTP, except `onboard`, which writes to the bus."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

import httpx

TERMINAL = {"succeeded", "failed", "rejected"}
MARK = {"succeeded": "✔", "failed": "✘", "skipped": "–", "running": "▶", "waiting": "…", "queued": "·", "pending": " "}


class CliError(Exception):
    """A problem to tell the user in one line (exit code 1)."""


def _url() -> str:
    port = os.environ.get("PORT", "7071")
    return os.environ.get("VENDING_URL", f"http://127.0.0.1:{port}")


def _load(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise CliError(f"{path} is not valid JSON: {exc}") from exc


def _check(resp: httpx.Response) -> Any:
    if resp.status_code < 400:
        return resp.json()
    try:
        body = resp.json()
    except ValueError:
        raise CliError(f"HTTP {resp.status_code}: {resp.text[:300]}") from None
    lines = [f"{body.get('title', 'error')} (HTTP {resp.status_code})"]
    if body.get("detail"):
        lines.append(f"  {body['detail']}")
    for err in body.get("errors") or []:
        lines.append(f"  - {err['field']}: {err['message']}")
    raise CliError("\n".join(lines))


class Api:
    """A small client of the REST API."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=30.0)
        self.base = base

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            return _check(self.http.request(method, path, **kw))
        except httpx.TransportError as exc:
            raise CliError(
                f"cannot reach the service at {self.base} ({exc}); is it running? Start it with: make run"
            ) from exc


def _step_line(step: dict[str, Any]) -> str:
    mark = MARK.get(step["status"], "?")
    extra = ""
    if step.get("error"):
        extra = f"  {step['error']['message']}"
    elif step.get("status_reason") and step["status"] not in ("succeeded",):
        extra = f"  ({step['status_reason']})"
    return f"  {mark} {step['id']:<44} {step['status']:<10} attempt {step['attempts']}{extra}"[:200]


def _render(view: dict[str, Any], elapsed: float) -> list[str]:
    head = f"{view['id']}  {view.get('workspace_name') or ''}  {view['status']}  ({elapsed:.1f} s)"
    return [head, *[_step_line(s) for s in view.get("steps", [])]]


def follow(api: Api, request_id: str, out: TextIO, *, interval: float = 0.5, timeout: float = 3600) -> dict[str, Any]:
    """Show live per-step progress until the request is terminal; return its final view."""
    start = time.monotonic()
    tty = out.isatty()
    drawn = 0
    last: dict[str, str] = {}
    while True:
        view = api.call("GET", f"/api/workspaces/{request_id}")
        elapsed = time.monotonic() - start
        if tty:
            lines = _render(view, elapsed)
            if drawn:
                out.write(f"\x1b[{drawn}F")
            out.write("".join(f"\x1b[2K{line}\n" for line in lines))
            drawn = len(lines)
        else:
            for step in view.get("steps", []):
                key = f"{step['status']}|{step['attempts']}"
                if last.get(step["id"]) != key:
                    last[step["id"]] = key
                    out.write(f"[{elapsed:6.1f}s]{_step_line(step)}\n")
        out.flush()
        if view["status"] in TERMINAL:
            return dict(view)
        if elapsed > timeout:
            raise CliError(f"request {request_id} is still {view['status']} after {timeout:.0f} s")
        time.sleep(interval)


def _summary(view: dict[str, Any], out: TextIO) -> None:
    out.write(f"\n{view['id']}: {view['status']}\n")
    if view.get("error"):
        out.write(f"  {view['error']['message']}\n")
    for p in view.get("problems") or []:
        out.write(f"  - {p['field']}: {p['message']}\n")
    outputs = view.get("outputs") or {}
    if outputs.get("studio_url"):
        out.write(f"  Studio:      {outputs['studio_url']}\n")
        out.write(f"  config.json: {json.dumps(outputs.get('config_json'))}\n")


def cmd_submit(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    body = _load(args.file)
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    accepted = api.call("POST", "/api/workspaces", json=body, headers=headers)
    out.write(f"accepted: {accepted['id']} ({accepted['links']['self']})\n")
    if not args.wait:
        return 0
    view = follow(api, accepted["id"], out)
    _summary(view, out)
    return 0 if view["status"] == "succeeded" else 1


def timeline_line(event: dict[str, Any]) -> str:
    """One status event as a timeline line: time, event, step and attempt, and what happened."""
    parts = [event["time"][11:23], event["name"]]
    if event.get("step"):
        parts.append(f"{event['step']} (attempt {event.get('attempt')})")
    if event.get("duration_ms") is not None and event["name"] != "WorkspaceStepStarted":
        parts.append(f"{event['duration_ms'] / 1000:.1f} s")
    if event.get("error_code"):
        parts.append(f"{event['error_code']}: {event.get('message') or ''}".rstrip(": "))
    elif event.get("message"):
        parts.append(event["message"])
    return ("  " + "  ".join(parts))[:240]


def cmd_status(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    view = api.call("GET", f"/api/workspaces/{args.id}")
    if args.json:
        out.write(json.dumps(view, indent=2) + "\n")
        return 0
    if args.wait and view["status"] not in TERMINAL:
        view = follow(api, args.id, out)
    else:
        out.write("\n".join(_render(view, 0.0)[1:]) + "\n")
    events = api.call("GET", f"/api/workspaces/{args.id}/events")["items"]
    if events:
        out.write("\ntimeline:\n")
        for e in events:
            out.write(timeline_line(e) + "\n")
    _summary(view, out)
    return 0


def cmd_list(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    params = {k: v for k, v in {"team": args.team, "status": args.status, "limit": args.limit}.items() if v}
    page = api.call("GET", "/api/workspaces", params=params)
    if not page["items"]:
        out.write("no requests\n")
    for r in page["items"]:
        out.write(
            f"{r['id']}  {r['status']:<12} {r['team']:<20} {r['environment']:<5} {r.get('workspace_name') or '-'}\n"
        )
    if page.get("next"):
        out.write(f"more: {page['next']}\n")
    return 0


def cmd_plan(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    plan = api.call("POST", "/api/plan", json=_load(args.file))
    names = plan["names"]
    out.write(
        f"subscription {names['subscription_id']}  resource group {names['resource_group']}  region {names['location']}\n"
    )
    for s in plan["steps"]:
        deps = ", ".join(s["depends_on"]) or "-"
        out.write(f"  {s['id']:<44} {s['resource_name']:<30} after {deps}\n")
    return 0


def cmd_events(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    for e in api.call("GET", f"/api/workspaces/{args.id}/events")["items"]:
        out.write(json.dumps(e) + "\n")
    return 0


def cmd_onboard(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    from composition import Container
    from engine.ports import OutgoingMessage
    from models.settings import Settings

    body = _load(args.file)
    settings = Settings()
    message_id = args.message_id or str(uuid.uuid4())
    Container(settings).bus.send(
        settings.onboarding_queue,
        OutgoingMessage(
            message_id=message_id, body=json.dumps(body).encode(), application_properties={"source": "cli"}
        ),
    )
    out.write(
        f"sent message {message_id} to the '{settings.onboarding_queue}' queue in {settings.data_dir.resolve()}\n"
        f"follow it with: python -m cli list --team {body.get('team', '<team>')}\n"
    )
    return 0


def cmd_deadletters(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    from composition import Container
    from models.settings import Settings

    dead = Container(Settings()).deadletters
    if args.action == "process":
        out.write(f"recorded {dead.process()} dead-lettered messages\n")
        return 0
    if args.action == "list":
        views = dead.list()
        if not views:
            out.write("no dead letters\n")
        for v in views:
            letter = v.letter
            out.write(f"{letter.message_id:<60} {letter.queue:<14} {letter.reason}: {letter.description[:80]}\n")
        return 0
    if not args.message_id:
        raise CliError(f"deadletters {args.action} needs a MESSAGE_ID (see: python -m cli deadletters list)")
    if args.action == "show":
        view = dead.find(args.message_id)
        if view is None:
            raise CliError(f"no dead letter with message id {args.message_id}")
        letter = view.letter
        out.write(
            json.dumps(
                {
                    "message_id": letter.message_id,
                    "queue": letter.queue,
                    "kind": view.kind,
                    "reason": letter.reason,
                    "description": letter.description,
                    "delivery_count": letter.delivery_count,
                    "dead_lettered_at": letter.dead_lettered_at.isoformat(),
                    "application_properties": letter.application_properties,
                    "body": letter.body.decode("utf-8", "replace"),
                },
                indent=2,
            )
            + "\n"
        )
        return 0
    out.write(dead.replay(args.message_id) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Describe the commands."""
    p = argparse.ArgumentParser(prog="python -m cli", description="Workspace Vending command line.")
    p.add_argument(
        "--url", default=None, help="the service (default: $VENDING_URL or http://127.0.0.1:$PORT, port 7071)"
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("submit", help="submit a workspace request from a JSON file")
    s.add_argument("file")
    s.add_argument("--wait", action="store_true", help="show live per-step progress until it finishes")
    s.add_argument("--idempotency-key", default=None)
    s.set_defaults(run=cmd_submit)
    s = sub.add_parser("status", help="show a request, its steps and its timeline")
    s.add_argument("id")
    s.add_argument("--json", action="store_true")
    s.add_argument("--wait", action="store_true")
    s.set_defaults(run=cmd_status)
    s = sub.add_parser("list", help="list requests, newest first")
    s.add_argument("--team")
    s.add_argument("--status", choices=["accepted", "provisioning", "succeeded", "failed", "rejected"])
    s.add_argument("--limit", type=int, default=20)
    s.set_defaults(run=cmd_list)
    s = sub.add_parser("plan", help="show what a request would create, creating nothing")
    s.add_argument("file")
    s.set_defaults(run=cmd_plan)
    s = sub.add_parser("events", help="print a request's status events as JSON lines")
    s.add_argument("id")
    s.set_defaults(run=cmd_events)
    s = sub.add_parser("onboard", help="put a WorkspaceRequest or TeamOnboarding on the onboarding queue")
    s.add_argument("file")
    s.add_argument("--message-id", default=None, help="the message id (duplicates are dropped by it)")
    s.set_defaults(run=cmd_onboard)
    s = sub.add_parser("deadletters", help="operators: list, show, replay or record dead-lettered messages")
    s.add_argument("action", choices=["list", "show", "replay", "process"])
    s.add_argument("message_id", nargs="?")
    s.set_defaults(run=cmd_deadletters)
    return p


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run one command."""
    args = build_parser().parse_args(argv)
    api = Api(args.url or _url())
    try:
        return int(args.run(args, api, out))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
