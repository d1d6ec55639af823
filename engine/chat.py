"""ChatOps, door-neutral: parse a command, check who asks, plan, confirm, submit, and say how it went.

Slack and Teams adapters turn a `Reply` into Block Kit or an Adaptive Card; this module never
formats for one of them. Commands:

    create team=<team> env=<dev|test|prod> region=<region> [profile=<name>] [name=<workspace>] [<tag>=<value>]
    plan   (the same arguments)
    status <request id>
    list   [team]
    help

Arguments are key=value, in any order, with "quoted values" when they hold spaces. `create` first
shows the plan; Slack confirms it with a button, Teams by sending the same command with `confirm=yes`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.intake import Intake
from engine.ports import Store
from models.errors import ConflictError, InvalidInputError, Problem, TransientError
from models.policy import ChatUser, Policy
from models.records import RequestRecord, RequestStatus, StepRecord, StepStatus
from models.request import parse_request

Door = Literal["slack", "teams"]
KEYS = {"team": "team", "env": "environment", "environment": "environment", "region": "region", "profile": "profile"}
NAME_KEYS = {"name", "workspace", "workspace_name"}
CONFIRM_TTL_S = 15 * 60
CHAT_PREFLIGHT_BUDGET_S = 1.5  # chat doors answer within seconds (Slack: 3 s)

USAGE = """\
`create team=<team> env=<dev|test|prod> region=<region> [profile=<name>] [name=<workspace>] [<tag>=<value>]`
    plans a workspace and asks you to confirm it
`plan <same arguments>`    shows what would be created, creates nothing
`status <request id>`      where a request stands, step by step
`list [team]`              the newest requests (of a team)
`help`                     this text
Values with spaces go in quotes: `cost-center="CC 1042"`."""


@dataclass(frozen=True)
class Button:
    """An action offered with a reply (a Slack button; Teams users type the command instead)."""

    label: str
    action: Literal["confirm_create", "refresh_status", "cancel"]
    value: str
    style: Literal["primary", "danger"] | None = None


@dataclass
class Reply:
    """What the bot answers, before it is rendered for a chat."""

    title: str
    lines: list[str] = field(default_factory=list)
    fields: list[tuple[str, str]] = field(default_factory=list)
    link: tuple[str, str] | None = None
    buttons: list[Button] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    usage: bool = False
    ok: bool = True
    public: bool = False

    def text(self) -> str:
        """Return the reply as plain text (notifications' fallback, logs, tests)."""
        parts = [self.title, *self.lines, *(f"{k}: {v}" for k, v in self.fields)]
        parts += [f"{p.field}: {p.message}" for p in self.problems]
        if self.link:
            parts.append(f"{self.link[0]}: {self.link[1]}")
        return "\n".join(parts)


@dataclass(frozen=True)
class Who:
    """The person behind a chat message."""

    door: Door
    user_id: str
    user: ChatUser | None

    @property
    def label(self) -> str:
        """How requests record who asked."""
        return f"{self.door}:{self.user_id}"


def parse_command(text: str) -> tuple[str, dict[str, str], list[str]]:
    """Split a command into its verb, key=value arguments and bare words; raise `InvalidInputError`."""
    try:
        words = shlex.split(text.strip())
    except ValueError as exc:
        raise InvalidInputError([Problem("(command)", f"cannot read the command: {exc}; close your quotes.")]) from None
    if not words:
        return "help", {}, []
    verb, args, rest, problems = words[0].lower(), {}, [], []
    for word in words[1:]:
        if "=" in word:
            key, value = word.split("=", 1)
            key = key.strip().lower()
            if not key:
                problems.append(Problem("(command)", f"'{word}' has no name before '='."))
            elif key in args:
                problems.append(Problem(key, f"'{key}' is given twice; give it once."))
            else:
                args[key] = value
        else:
            rest.append(word)
    if problems:
        raise InvalidInputError(problems)
    return verb, args, rest


def refusal(exc: InvalidInputError | ConflictError | TransientError, *, usage: bool = False) -> Reply:
    """Say why something was refused: the problems (with the usage after a command), a taken name, or "later"."""
    if isinstance(exc, InvalidInputError):
        named = usage and exc.title != "The request is not valid."
        return Reply(exc.title if named else "That did not work.", problems=exc.problems, usage=usage, ok=False)
    if isinstance(exc, ConflictError):
        return Reply("That workspace is taken.", lines=[str(exc)], ok=False)
    return Reply("I cannot do that right now.", lines=[f"{exc} Try again in a minute."], ok=False)


class Chat:
    """The commands, shared by the Slack and Teams doors."""

    def __init__(
        self,
        *,
        intake: Intake,
        store: Store,
        policy: Callable[[], Policy],
        signing_key: bytes,
        studio_url: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.intake = intake
        self.store = store
        self._policy = policy
        self._key = hashlib.sha256(b"chat-confirm:" + signing_key).digest()
        self.studio_url = studio_url
        self.clock = clock

    # ----- the commands -------------------------------------------------------------------------

    def handle(self, *, who: Who, text: str, reply_to: dict[str, Any], traceparent: str | None = None) -> Reply:
        """Answer one command; mistakes get the usage and the exact problems, never a stack trace."""
        try:
            verb, args, rest = parse_command(text)
            if verb == "help":
                return Reply("Workspace Vending: what I can do", usage=True)
            if verb == "status":
                return self._status(rest, args)
            if verb == "list":
                return self._list(rest, args)
            if verb in ("plan", "create"):
                user = self._known(who)
                request = self._request(user, args, rest)
                if verb == "create" and args.get("confirm", "").lower() in ("yes", "y", "true"):
                    return self.submit(who=who, request=request, reply_to=reply_to, traceparent=traceparent)
                return self._plan(who, request, offer=verb == "create")
            raise InvalidInputError([Problem("(command)", f"'{verb}' is not a command I know.")])
        except (InvalidInputError, ConflictError, TransientError) as exc:
            return refusal(exc, usage=True)

    def confirm(self, *, who: Who, token: str, reply_to: dict[str, Any], traceparent: str | None = None) -> Reply:
        """Create what a confirmed plan showed (the Slack button)."""
        try:
            request = self._open(token, who)
            self._known(who)
            return self.submit(who=who, request=request, reply_to=reply_to, traceparent=traceparent, token=token)
        except (InvalidInputError, ConflictError, TransientError) as exc:
            return refusal(exc)

    def submit(
        self,
        *,
        who: Who,
        request: dict[str, Any],
        reply_to: dict[str, Any],
        traceparent: str | None = None,
        token: str | None = None,
    ) -> Reply:
        """Submit a request (pre-flight bounded to the chat's deadline) and say what happens next."""
        # One chat action creates one request: a double click or a redelivered message finds the first.
        key_source = token or json.dumps(
            {"who": who.label, "message": reply_to.get("message_id"), "request": request}, sort_keys=True
        )
        key = f"{who.door}:{hashlib.sha256(key_source.encode()).hexdigest()[:32]}"
        submitted = self.intake.submit(
            request=parse_request(request),
            requester=who.label,
            source=who.door,
            idempotency_key=key,
            traceparent=traceparent,
            reply_to=reply_to,
            preflight_budget_s=CHAT_PREFLIGHT_BUDGET_S,
        )
        record = submitted.record
        title = (
            f"Provisioning {record.workspace_name} has started."
            if submitted.created
            else f"This was already submitted as {record.id}."
        )
        lines = [
            f"Request `{record.id}`: {len(record.plan.steps) if record.plan else 0} steps. "
            "I will post here when it is ready, or if it fails."
        ]
        lines += [f"note: {w['message']}" for w in record.warnings]
        return Reply(title, lines=lines, buttons=[Button("Refresh status", "refresh_status", record.id)], public=True)

    def status(self, request_id: str) -> Reply:
        """Where one request stands."""
        record = self.store.get_request(request_id)
        if record is None:
            raise InvalidInputError([Problem("id", f"there is no request '{request_id}'; `list` shows recent ones.")])
        return self.result(record, self.store.get_steps(request_id))

    def result(self, record: RequestRecord, steps: list[StepRecord]) -> Reply:
        """Describe a request's state as a reply: ready (with its Studio link), failed (step and fix), or in progress."""
        done = sum(1 for s in steps if s.status == StepStatus.SUCCEEDED)
        fields = [("team", record.team), ("environment", record.environment), ("request", record.id)]
        if record.status == RequestStatus.SUCCEEDED:
            studio = str(record.outputs.get("studio_url") or "")
            return Reply(
                f"Workspace {record.workspace_name} is ready.",
                lines=[f"All {len(steps)} steps succeeded."],
                fields=fields,
                link=("Open in Azure ML Studio", studio) if studio else None,
                public=True,
            )
        if record.status in (RequestStatus.FAILED, RequestStatus.REJECTED):
            failed = next((s for s in steps if s.status == StepStatus.FAILED), None)
            lines = []
            if failed is not None:
                lines.append(f"Step `{failed.step_id}` failed: {failed.error.message if failed.error else 'no detail'}")
            elif record.error is not None:
                lines.append(record.error.message)
            lines += [f"{p['field']}: {p['message']}" for p in record.problems]
            lines.append(f"After fixing the cause, ask again, or replay: `python -m cli status {record.id}`.")
            return Reply(
                f"Workspace {record.workspace_name or ''} could not be provisioned.".replace("  ", " "),
                lines=lines,
                fields=fields,
                ok=False,
                public=True,
            )
        running = [s.step_id for s in steps if s.status in (StepStatus.RUNNING, StepStatus.WAITING, StepStatus.QUEUED)]
        return Reply(
            f"Workspace {record.workspace_name} is being provisioned: {done} of {len(steps)} steps done.",
            lines=[f"Working on: {', '.join(running)}"] if running else [],
            fields=fields,
            buttons=[Button("Refresh status", "refresh_status", record.id)],
        )

    # ----- pieces ---------------------------------------------------------------------------------

    def _known(self, who: Who) -> ChatUser:
        if who.user is None:
            raise InvalidInputError(
                [
                    Problem(
                        "(you)",
                        f"I do not know your {who.door.title()} user ({who.user_id}); ask your platform team to "
                        "add you to chat_users in the policy, with the teams you belong to.",
                        "unknown_user",
                    )
                ],
                title="I cannot take requests from you yet.",
            )
        return who.user

    def _request(self, user: ChatUser, args: dict[str, str], rest: list[str]) -> dict[str, Any]:
        policy = self._policy()
        problems = [Problem("(command)", f"'{w}' is not key=value; write e.g. team={w}.") for w in rest]
        request: dict[str, Any] = {}
        tags: dict[str, str] = {}
        for key, value in args.items():
            if key in KEYS:
                request[KEYS[key]] = value
            elif key in NAME_KEYS:
                request["workspace_name"] = value
            elif key.startswith("tag.") or key in policy.required_tags:
                tags[key.removeprefix("tag.")] = value
            elif key != "confirm":
                problems.append(
                    Problem(key, f"'{key}' is not an argument: use team, env, region, profile, name, or tag.<name>.")
                )
        if problems:
            raise InvalidInputError(problems)
        team = request.get("team")
        if team and team not in user.member_of:
            allowed = ", ".join(user.member_of) or "none yet"
            raise InvalidInputError(
                [
                    Problem(
                        "team", f"you are not a member of team '{team}'; you may request for: {allowed}.", "forbidden"
                    )
                ],
                title="That team is not yours.",
            )
        if tags:
            request["tags"] = tags
        request["owners"] = [{"object_id": str(user.principal), "type": "User", "display_name": user.name}]
        parse_request(request)  # the same validation, and the same words, as the REST API
        return request

    def _plan(self, who: Who, request: dict[str, Any], *, offer: bool) -> Reply:
        plan = self.intake.plan(request=parse_request(request))
        n = plan.names
        fields = [
            ("workspace", n.workspace),
            ("resource group", f"{n.resource_group} (subscription {n.subscription_id})"),
            ("storage", n.storage_account),
            ("key vault", n.key_vault),
            ("steps", str(len(plan.steps))),
        ]
        lines = [f"• {s.id}" for s in plan.steps if s.id.startswith(("compute:", "datastore:"))]
        if not offer:
            return Reply(f"Plan for {n.workspace} (nothing is created)", lines=lines, fields=fields)
        if who.door == "teams":
            lines.append("To create it, send the same command with `confirm=yes`.")
            return Reply(f"Create {n.workspace}?", lines=lines, fields=fields)
        token = self._seal(request, who)
        return Reply(
            f"Create {n.workspace}?",
            lines=lines,
            fields=fields,
            buttons=[Button("Create it", "confirm_create", token, "primary"), Button("Cancel", "cancel", "", "danger")],
        )

    def _status(self, rest: list[str], args: dict[str, str]) -> Reply:
        ids = rest or [v for k, v in args.items() if k in ("id", "request")]
        if len(ids) != 1:
            raise InvalidInputError([Problem("id", "give one request id: `status 01J…`.")])
        return self.status(ids[0])

    def _list(self, rest: list[str], args: dict[str, str]) -> Reply:
        team = (rest[0] if rest else None) or args.get("team")
        page = self.store.list_requests(team=team, limit=10)
        lines = [
            f"`{r.id}`  {r.status.value:<12} {r.team}  {r.environment}  {r.workspace_name or ''}" for r in page.items
        ]
        return Reply(f"Newest requests{f' of {team}' if team else ''}", lines=lines or ["none yet"])

    # A confirmation carries the planned request, who may confirm it and until when, sealed with a
    # key derived from the signing secret: the button cannot be forged or used by someone else.
    def _seal(self, request: dict[str, Any], who: Who) -> str:
        body = json.dumps(
            {"r": request, "u": who.label, "exp": int(self.clock()) + CONFIRM_TTL_S}, separators=(",", ":")
        )
        raw = body.encode()
        mac = hmac.new(self._key, raw, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac + raw).decode()

    def _open(self, token: str, who: Who) -> dict[str, Any]:
        try:
            data = base64.urlsafe_b64decode(token.encode())
            mac, raw = data[:16], data[16:]
            ok = hmac.compare_digest(mac, hmac.new(self._key, raw, hashlib.sha256).digest()[:16])
            sealed = json.loads(raw) if ok else None
        except (ValueError, json.JSONDecodeError):
            sealed = None
        if not isinstance(sealed, dict):
            raise InvalidInputError([Problem("(button)", "this confirmation is not valid; run `create` again.")])
        if sealed.get("u") != who.label:
            raise InvalidInputError([Problem("(button)", "only the person who asked can confirm this plan.")])
        if int(sealed.get("exp", 0)) < self.clock():
            raise InvalidInputError([Problem("(button)", "this plan is more than 15 minutes old; run `create` again.")])
        request = sealed.get("r")
        assert isinstance(request, dict)
        return request
