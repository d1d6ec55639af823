"""The CLI's commands. They talk to the API over HTTP, except `onboard`, which writes to the bus.

The lifecycle commands (update, delete, cancel, retry, extend, drift, revisions) are in `cli.lifecycle`;
the approval commands (approvals, approve, deny) are in `cli.approvals`.

Every API call sends `Authorization: Bearer <token>` when the CLI has one: the token `login` got
from the devhost's embedded issuer and remembered (in the data directory, mode 0600, until it
expires; only for the service it came from), or, with `--as USER`, a fresh one for that directory
user, used for that one command and not remembered.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import httpx
import jwt
from pydantic import BaseModel, SecretStr, ValidationError

from cli.views import approval_lines, estimate_lines, lifecycle_lines, rule_lines
from models.identity import LOCAL_ISSUER_PATH, AccessTokenClaims, OpenIdConfiguration, TokenResponse

TERMINAL = {
    "succeeded",
    "failed",
    "rejected",
    "cancelled",
    "deleted",
    "denied",
    "expired",
}  # settled: nothing moves until asked
WAITING = "awaiting_approval"  # nothing moves until an approver decides: following it would wait for a person
LOGIN_FILE = "cli-token.json"
EXPIRY_MARGIN = timedelta(seconds=30)  # a token about to expire is not sent: it would expire on the way
MARK = {
    "succeeded": "✔",
    "failed": "✘",
    "skipped": "–",
    "cancelled": "⊘",
    "running": "▶",
    "waiting": "…",
    "queued": "·",
    "pending": " ",
}
STATUSES = [
    "accepted",
    "provisioning",
    "succeeded",
    "failed",
    "rejected",
    "updating",
    "cancelling",
    "cancelled",
    "deleting",
    "deleted",
    "awaiting_approval",
    "denied",
    "expired",
]


class CliError(Exception):
    """A problem to tell the user in one line (exit code 1)."""


def _url() -> str:
    port = os.environ.get("PORT", "7071")
    return os.environ.get("VENDING_URL", f"http://127.0.0.1:{port}")


def load_json(path: str) -> Any:
    """Read a JSON file, or raise a `CliError` saying why it cannot be read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise CliError(f"{path} is not valid JSON: {exc}") from exc


def _check(resp: httpx.Response) -> Any:
    if resp.status_code < 400:
        return resp.json()
    # The service's refusal may already say how to sign in; otherwise the CLI does.
    unsigned = resp.status_code == 401 and "cli login" not in resp.text
    hint = "  sign in first: python -m cli login <user> (see: python -m cli whoami)" if unsigned else ""
    try:
        body = resp.json()
    except ValueError:
        raise CliError("\n".join(filter(None, [f"HTTP {resp.status_code}: {resp.text[:300]}", hint]))) from None
    lines = [f"{body.get('title', 'error')} (HTTP {resp.status_code})"]
    if body.get("detail"):
        lines.append(f"  {body['detail']}")
    if body.get("rule"):
        lines.append(f"  rule: {body['rule']}")
    if body.get("code"):
        lines.append(f"  code: {body['code']}")
    for err in body.get("errors") or []:
        lines.append(f"  - {err['field']}: {err['message']}")
    if hint:
        lines.append(hint)
    raise CliError("\n".join(lines))


class Login(BaseModel):
    """A token the CLI remembers: for one service and one directory user, until it expires."""

    service_url: str
    username: str
    access_token: SecretStr
    expires_at: datetime

    def usable_for(self, service_url: str, now: datetime) -> bool:
        """Say whether the token may be sent to `service_url` now: the service it came from, not expired."""
        return self.service_url.rstrip("/") == service_url.rstrip("/") and now + EXPIRY_MARGIN < self.expires_at


def token_file() -> Path:
    """Where the remembered login is kept: the data directory ($VENDING_DATA_DIR, default .local)."""
    return Path(os.environ.get("VENDING_DATA_DIR", ".local")) / LOGIN_FILE


def remember(login: Login) -> Path:
    """Keep a login in the token file, created with mode 0600 and replaced whole."""
    from adapters.secrets import write_secret_file

    path = token_file()
    body = {
        "service_url": login.service_url,
        "username": login.username,
        "access_token": login.access_token.get_secret_value(),
        "expires_at": login.expires_at.isoformat(),
    }
    write_secret_file(path, json.dumps(body).encode())
    return path


def remembered() -> Login | None:
    """Return the remembered login, if there is a readable one."""
    try:
        return Login.model_validate_json(token_file().read_bytes())
    except (OSError, ValidationError):
        return None


class Api:
    """A small client of the REST API; `credentials` gives the bearer token to send, if any."""

    def __init__(self, base: str, *, credentials: Callable[[Api], str | None] = lambda api: None) -> None:
        self.http = httpx.Client(base_url=base, timeout=30.0)
        self.base = base
        self._credentials = credentials
        self._token: str | None = None
        self._asked = False

    def bearer(self) -> str | None:
        """Return the access token this client sends, if it has one."""
        if not self._asked:
            self._token = self._credentials(self)
            self._asked = True
        return self._token

    def _authorization(self) -> dict[str, str]:
        token = self.bearer()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, **kw: Any) -> Any:
        headers = {**kw.pop("headers", {}), **self._authorization()}
        try:
            return _check(self.http.request(method, path, headers=headers, **kw))
        except httpx.TransportError as exc:
            raise CliError(
                f"cannot reach the service at {self.base} ({exc}); is it running? Start it with: make run"
            ) from exc

    def token_for(self, username: str) -> TokenResponse:
        """Get a token for a directory user from the service's embedded issuer (the devhost's)."""
        try:
            found = self.http.get(f"{LOCAL_ISSUER_PATH}/.well-known/openid-configuration")
            if found.status_code == 404:
                raise CliError(
                    f"the service at {self.base} has no local sign-in (it is not a devhost with "
                    "VENDING_AUTH_MODE=local); get a token from Microsoft Entra ID instead"
                )
            doc = OpenIdConfiguration.model_validate(_check(found))
            if not doc.token_endpoint:
                raise CliError(f"the issuer at {self.base} names no token endpoint")
            answer = self.http.post(doc.token_endpoint, data={"grant_type": "password", "username": username})
        except httpx.TransportError as exc:
            raise CliError(
                f"cannot reach the service at {self.base} ({exc}); is it running? Start it with: make run"
            ) from exc
        except ValidationError as exc:
            raise CliError(f"the issuer at {self.base} sent a discovery document of another shape") from exc
        if answer.status_code == 400:
            refused = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
            raise CliError(f"cannot log in as {username}: {refused.get('error_description') or answer.text[:200]}")
        try:
            return TokenResponse.model_validate(_check(answer))
        except ValidationError as exc:
            raise CliError(f"the issuer at {self.base} answered with something other than a token") from exc


def _step_line(step: dict[str, Any]) -> str:
    mark = MARK.get(step["status"], "?")
    extra = ""
    if step.get("action") == "keep":
        extra = "  (kept as it is)"
    elif step.get("action") == "delete" and step["status"] == "succeeded":
        extra = "  (deleted)"
    if step.get("error"):
        extra = f"  {step['error']['message']}"
    elif step.get("status_reason") and step["status"] not in ("succeeded",):
        extra = f"  ({step['status_reason']})"
    return f"  {mark} {step['id']:<44} {step['status']:<10} attempt {step['attempts']}{extra}"[:200]


def _render(view: dict[str, Any], elapsed: float) -> list[str]:
    head = f"{view['id']}  {view.get('workspace_name') or ''}  {view['status']}  ({elapsed:.1f} s)"
    return [head, *[_step_line(s) for s in view.get("steps", [])]]


def follow(api: Api, request_id: str, out: TextIO, *, interval: float = 0.5, timeout: float = 3600) -> dict[str, Any]:
    """Show live per-step progress until the request is terminal or waits for approval; return its final view."""
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
        if view["status"] in TERMINAL or view["status"] == WAITING:
            return dict(view)
        if elapsed > timeout:
            raise CliError(f"request {request_id} is still {view['status']} after {timeout:.0f} s")
        time.sleep(interval)


def summary(view: dict[str, Any], out: TextIO) -> None:
    """Show how a request stands: its error or problems, outputs, estimate, approval, expiry, drift and teardown."""
    out.write(f"\n{view['id']}: {view['status']}\n")
    if view.get("error"):
        out.write(f"  {view['error']['message']}\n")
    for p in view.get("problems") or []:
        out.write(f"  - {p['field']}: {p['message']}\n")
    outputs = view.get("outputs") or {}
    if outputs.get("studio_url") and view["status"] not in ("deleting", "deleted"):
        out.write(f"  Studio:      {outputs['studio_url']}\n")
        out.write(f"  config.json: {json.dumps(outputs.get('config_json'))}\n")
    lines = estimate_lines(view.get("estimate")) + approval_lines(view.get("approval"), view["id"])
    if view["status"] != "rejected":
        lines += lifecycle_lines(view, datetime.now(UTC))
    out.write("".join(f"  {line}\n" for line in lines))


def cmd_submit(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    body = load_json(args.file)
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    accepted = api.call("POST", "/api/workspaces", json=body, headers=headers)
    out.write(f"accepted: {accepted['id']} ({accepted['links']['self']})\n")
    if accepted.get("status") == WAITING:
        out.write(
            f"it waits for approval; nothing is made until an approver approves it. "
            f"See why with: python -m cli status {accepted['id']}\n"
        )
    if not args.wait:
        return 0
    view = follow(api, accepted["id"], out)
    summary(view, out)
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
    if args.wait and view["status"] not in TERMINAL and view["status"] != WAITING:
        view = follow(api, args.id, out)
    else:
        out.write("\n".join(_render(view, 0.0)[1:]) + "\n")
    events = api.call("GET", f"/api/workspaces/{args.id}/events")["items"]
    if events:
        out.write("\ntimeline:\n")
        for e in events:
            out.write(timeline_line(e) + "\n")
    summary(view, out)
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
    plan = api.call("POST", "/api/plan", json=load_json(args.file))
    names = plan["names"]
    out.write(
        f"subscription {names['subscription_id']}  resource group {names['resource_group']}  region {names['location']}\n"
    )
    for s in plan["steps"]:
        deps = ", ".join(s["depends_on"]) or "-"
        out.write(f"  {s['id']:<44} {s['resource_name']:<30} after {deps}\n")
    out.write("".join(f"{line}\n" for line in estimate_lines(plan.get("estimate"))))
    rules = plan.get("approval") or []
    if rules:
        out.write("approval: it would wait in awaiting_approval until approved; nothing is made before\n")
        out.write("".join(f"{line}\n" for line in rule_lines(rules)))
    else:
        out.write("approval: none needed; it would run at once\n")
    return 0


def cmd_events(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    for e in api.call("GET", f"/api/workspaces/{args.id}/events")["items"]:
        out.write(json.dumps(e) + "\n")
    return 0


def cmd_onboard(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    from composition import Container
    from engine.ports import OutgoingMessage
    from handlers.queues import SENDER_PROPERTY
    from models.settings import Settings

    body = load_json(args.file)
    token = api.bearer()
    if token is None:
        raise CliError(
            "an onboarding message carries its sender's token: log in first (python -m cli login <user>) or use --as"
        )
    settings = Settings()
    message_id = args.message_id or str(uuid.uuid4())
    Container(settings).bus.send(
        settings.onboarding_queue,
        OutgoingMessage(
            message_id=message_id,
            body=json.dumps(body).encode(),
            application_properties={"source": "cli", SENDER_PROPERTY: f"Bearer {token}"},
        ),
    )
    out.write(
        f"sent message {message_id} to the '{settings.onboarding_queue}' queue in {settings.data_dir.resolve()}\n"
        f"follow it with: python -m cli list --team {body.get('team', '<team>')}\n"
    )
    return 0


def cmd_deadletters(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    if args.action == "process":
        out.write(api.call("POST", "/api/operator/deadletters/process")["outcome"] + "\n")
        return 0
    if args.action == "list":
        items = api.call("GET", "/api/operator/deadletters")["items"]
        if not items:
            out.write("no dead letters\n")
        for item in items:
            seq = f"#{item['sequence']}" if item.get("sequence") is not None else ""
            out.write(
                f"{item['message_id']:<60} {seq:<8} {item['queue']:<14} {item['reason']}: {item['description'][:80]}\n"
            )
        return 0
    if not args.message_id:
        raise CliError(f"deadletters {args.action} needs a MESSAGE_ID (see: python -m cli deadletters list)")
    if args.action == "show":
        items = api.call("GET", "/api/operator/deadletters")["items"]
        found = next(
            (
                item
                for item in items
                if item["message_id"] == args.message_id and args.sequence in (None, item.get("sequence"))
            ),
            None,
        )
        if found is None:
            raise CliError(f"no dead letter with message id {args.message_id}")
        out.write(json.dumps(found, indent=2) + "\n")
        return 0
    quoted = quote(args.message_id, safe="/")
    which = f"?sequence={args.sequence}" if args.sequence is not None else ""
    out.write(api.call("POST", f"/api/operator/deadletters/{quoted}/replay{which}")["outcome"] + "\n")
    return 0


def _claims(token: str) -> AccessTokenClaims:
    # The CLI reads its own token to show who it calls as; the service is the one that verifies it.
    try:
        return AccessTokenClaims.model_validate(jwt.decode(token, options={"verify_signature": False}))
    except (jwt.PyJWTError, ValidationError) as exc:
        raise CliError("the remembered token cannot be read; log in again: python -m cli login <user>") from exc


def _until(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_login(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    if args.as_user:
        raise CliError("login names its user itself: python -m cli login <user>")
    answer = api.token_for(args.user)
    expires_at = datetime.now(UTC) + timedelta(seconds=answer.expires_in)
    path = remember(
        Login(service_url=api.base, username=args.user, access_token=answer.access_token, expires_at=expires_at)
    )
    claims = _claims(answer.access_token.get_secret_value())
    out.write(
        f"logged in as {args.user} ({claims.name or claims.preferred_username or claims.oid}) at {api.base}\n"
        f"  the token is valid until {_until(expires_at)}; kept in {path}\n"
    )
    return 0


def cmd_logout(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    login = remembered()
    with contextlib.suppress(FileNotFoundError):
        token_file().unlink()
    out.write(f"logged out {login.username}\n" if login else "not logged in\n")
    return 0


def cmd_whoami(args: argparse.Namespace, api: Api, out: TextIO) -> int:
    if args.as_user:
        answer = api.token_for(args.as_user)
        token, who = answer.access_token.get_secret_value(), args.as_user
        validity = f"for {api.base}, valid for {answer.expires_in // 60} min, not remembered (--as)"
    else:
        login = remembered()
        if login is None:
            out.write("not logged in; log in with: python -m cli login <user>\n")
            return 1
        if not login.usable_for(api.base, datetime.now(UTC)):
            why = (
                f"expired at {_until(login.expires_at)}"
                if login.service_url.rstrip("/") == api.base.rstrip("/")
                else f"is for {login.service_url}"
            )
            out.write(
                f"not logged in at {api.base}: the token for {login.username} {why}; run: python -m cli login {login.username}\n"
            )
            return 1
        token, who = login.access_token.get_secret_value(), login.username
        validity = f"for {login.service_url}, valid until {_until(login.expires_at)}"
    claims = _claims(token)
    out.write(f"{who}  {claims.name or '-'} <{claims.preferred_username or '-'}>\n")
    out.write(f"  object id  {claims.oid}\n  tenant     {claims.tid}\n")
    out.write(f"  roles      {', '.join(sorted(claims.roles)) or '-'}\n")
    if claims.groups_overage:
        out.write("  groups     too many for the token (group overage): the service asks Microsoft Graph\n")
    else:
        out.write(f"  groups     {', '.join(sorted(claims.groups)) or '-'}\n")
    out.write(f"  token      {validity}\n")
    return 0


def _credentials(args: argparse.Namespace) -> Callable[[Api], str | None]:
    def credentials(api: Api) -> str | None:
        if args.as_user:
            return api.token_for(args.as_user).access_token.get_secret_value()
        login = remembered()
        if login is not None and login.usable_for(api.base, datetime.now(UTC)):
            return login.access_token.get_secret_value()
        return None  # an expired token, or one for another service, is never sent

    return credentials


def build_parser() -> argparse.ArgumentParser:
    """Describe the commands."""
    p = argparse.ArgumentParser(
        prog="python -m cli",
        description="Workspace Vending command line.",
        epilog="A request that meets an approval rule waits in awaiting_approval: `plan` and `status` say which "
        "rules and what it would cost. Approvers list what waits for them with `approvals`, and decide with "
        "`approve ID [--reason TEXT]` or `deny ID --reason TEXT`.",
    )
    p.add_argument(
        "--url", default=None, help="the service (default: $VENDING_URL or http://127.0.0.1:$PORT, port 7071)"
    )
    p.add_argument(
        "--as",
        dest="as_user",
        metavar="USER",
        default=None,
        help="call as another user of the local directory, for this command only (the token is not remembered)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("login", help="get a token for a user of the devhost's local directory and remember it")
    s.add_argument("user", help="a user of the local directory, e.g. alice (policy/directory.example.yaml)")
    s.set_defaults(run=cmd_login)
    s = sub.add_parser("logout", help="forget the remembered token")
    s.set_defaults(run=cmd_logout)
    s = sub.add_parser("whoami", help="show who the CLI calls the service as")
    s.set_defaults(run=cmd_whoami)
    s = sub.add_parser("submit", help="submit a workspace request from a JSON file")
    s.add_argument("file")
    s.add_argument("--wait", action="store_true", help="show live per-step progress until it finishes")
    s.add_argument("--idempotency-key", default=None)
    s.set_defaults(run=cmd_submit)
    s = sub.add_parser(
        "status",
        help="show a request: steps, timeline, estimate, approval, operation, revision, expiry, drift and teardown",
    )
    s.add_argument("id")
    s.add_argument("--json", action="store_true")
    s.add_argument("--wait", action="store_true")
    s.set_defaults(run=cmd_status)
    s = sub.add_parser("list", help="list requests, newest first")
    s.add_argument("--team")
    s.add_argument("--status", choices=STATUSES)
    s.add_argument("--limit", type=int, default=20)
    s.set_defaults(run=cmd_list)
    s = sub.add_parser("plan", help="show what a request would create, cost and wait for; creating nothing")
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
    s.add_argument("--sequence", type=int, default=None, help="which letter, when several share the message id")
    s.set_defaults(run=cmd_deadletters)
    # Imported here: the lifecycle commands use this module's client and rendering.
    from cli.approvals import add_approval_commands
    from cli.lifecycle import add_lifecycle_commands

    add_lifecycle_commands(sub)
    add_approval_commands(sub)
    return p


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, stdin: TextIO | None = None) -> int:
    """Run one command; `stdin` is where a confirmation is read (the terminal by default)."""
    args = build_parser().parse_args(argv)
    args.stdin = stdin if stdin is not None else sys.stdin
    api = Api((args.url or _url()).rstrip("/"), credentials=_credentials(args))
    try:
        return int(args.run(args, api, out))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
