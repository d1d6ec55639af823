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

Who asks (DESIGN section 9): a chat user is the Entra principal the policy maps them to
(`chat_users`), acting with the app roles listed there (`Workspaces.Request` unless it says more),
since a chat platform sends no Entra token. Their teams are never taken from the policy's chat
section: the caller is built with its groups unknown, so the one authorisation function asks the
membership port whether the principal is in each team's Entra groups, for every command (`plan`,
`create`, `list`, `status`, a status button) and again when a sealed confirmation is used. Every
decision goes to the `audit` callable with the caller's oid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from uuid import UUID

from engine.authz import Act, Authority, Authorizer, Decision
from engine.intake import Intake
from engine.ports import Store
from models.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    Problem,
    TransientError,
)
from models.identity import Caller
from models.policy import ChatUser, Policy
from models.records import ChatConversation, RequestRecord, RequestStatus, StepRecord, StepStatus
from models.request import parse_request

log = logging.getLogger(__name__)

Door = Literal["slack", "teams"]
KEYS = {"team": "team", "env": "environment", "environment": "environment", "region": "region", "profile": "profile"}
NAME_KEYS = {"name", "workspace", "workspace_name"}
CONFIRM_TTL_S = 15 * 60
CHAT_PREFLIGHT_BUDGET_S = 1.5  # chat doors answer within seconds (Slack: 3 s)
# Submissions a person may make from chat: a workspace is a few minutes of cloud work and money, so
# this is generous for people and tight for a script looping on a command.
CHAT_SUBMISSIONS = 10
CHAT_SUBMISSION_WINDOW_S = 600.0

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


RULE_TITLES = {
    "NotTeamMember": "That team is not yours.",
    "UnknownTeam": "That team is not known here.",
    "MissingRole": "You may not do that from chat.",
}


Refused = InvalidInputError | ConflictError | TransientError | ForbiddenError | NotFoundError


def refusal(exc: Refused, *, usage: bool = False) -> Reply:
    """Say why something was refused: the problems (with the usage after a command), a rule, a taken name, or "later"."""
    if isinstance(exc, InvalidInputError):
        named = usage and exc.title != "The request is not valid."
        return Reply(exc.title if named else "That did not work.", problems=exc.problems, usage=usage, ok=False)
    if isinstance(exc, ForbiddenError):
        lines = [str(exc)]
        if exc.rule == "NotTeamMember":
            lines.append(
                "Who belongs to a team is decided by the team's Microsoft Entra groups: if you should, ask the "
                "team's owners to add you to one of them, then ask again."
            )
        return Reply(RULE_TITLES.get(exc.rule, "That is not allowed."), lines=lines, ok=False)
    if isinstance(exc, NotFoundError):
        return Reply("I cannot find that.", lines=[str(exc)], ok=False)
    if isinstance(exc, ConflictError):
        return Reply("That workspace is taken.", lines=[str(exc)], ok=False)
    return Reply("I cannot do that right now.", lines=[f"{exc} Try again in a minute."], ok=False)


def chat_caller(user: ChatUser, *, tenant: UUID) -> Caller:
    """Return the caller a chat user acts as: its principal and policy roles, its groups asked of the membership port."""
    return Caller(
        oid=str(user.principal),
        tid=str(tenant),
        name=user.name or str(user.principal),
        roles=frozenset(role.value for role in user.roles),
        # No token lists the groups of a chat user: like a token's group overage, membership is asked.
        groups_overage=True,
        auth="chat",
    )


class ChatAudit(Protocol):
    """Where chat's decisions are recorded (as status events with the caller's oid)."""

    def __call__(
        self,
        *,
        caller: Caller,
        decision: Decision,
        act: Act,
        team: str | None,
        door: Door,
        command: str,
        request_id: str | None,
    ) -> None:
        """Record one decision; may raise, the command goes on."""
        ...


def no_audit(
    *,
    caller: Caller,
    decision: Decision,
    act: Act,
    team: str | None,
    door: Door,
    command: str,
    request_id: str | None,
) -> None:
    """Record nothing (until the composition root wires audit events)."""


SubmissionLimit = Callable[[Caller], float | None]
"""Take one submission from a caller's allowance: None when allowed, else the seconds to wait."""


def submission_bucket(caller: Caller) -> str:
    """Name the rate limit bucket of a caller's submissions (one per principal, whatever the door)."""
    return f"submit:{caller.oid}"


def store_submission_limit(
    store: Store,
    *,
    limit: int = CHAT_SUBMISSIONS,
    window_s: float = CHAT_SUBMISSION_WINDOW_S,
    clock: Callable[[], float] = time.time,
    bucket: Callable[[Caller], str] = submission_bucket,
) -> SubmissionLimit:
    """Return a submission limit kept in the store, shared by every instance; `bucket` names a caller's."""

    def take(caller: Caller) -> float | None:
        now = datetime.fromtimestamp(clock(), UTC)
        return store.take(bucket(caller), now=now, limit=limit, window_s=window_s)

    return take


class Replays(Protocol):
    """Where the chat doors remember what they have seen (the store: shared, surviving restarts)."""

    def remember_once(self, scope: str, key: str, *, now: datetime, until: datetime) -> bool:
        """Remember `key` in `scope` until `until`; True the first time, False for a replay."""
        ...


class _NoMembership:
    """The membership port when none is given: nobody is in any group, so only roles can allow."""

    def member_groups(self, *, principal: str, groups: list[str]) -> frozenset[str]:
        return frozenset()


@dataclass(frozen=True)
class _Asking:
    """One command's asker: the chat identity, the principal it acts as, and the authoriser deciding."""

    who: Who
    user: ChatUser
    caller: Caller
    authz: Authority
    command: str


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
        authorizer: Callable[[], Authority] | None = None,
        submissions: SubmissionLimit | None = None,
        audit: ChatAudit = no_audit,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Build the commands; `authorizer` decides every command (without one, no team has members)."""
        self.intake = intake
        self.store = store
        self._policy = policy
        self._key = hashlib.sha256(b"chat-confirm:" + signing_key).digest()
        self.studio_url = studio_url
        self.clock = clock
        if authorizer is None:
            log.warning("chat has no authoriser with a membership port: chat users act for no team")
            authorizer = self._unwired
        self._authorizer = authorizer
        self._submissions = submissions or store_submission_limit(store, clock=clock)
        self._audit = audit

    def _unwired(self) -> Authorizer:
        return Authorizer(policy=self._policy(), membership=_NoMembership())

    # ----- the commands -------------------------------------------------------------------------

    def handle(self, *, who: Who, text: str, reply_to: ChatConversation, traceparent: str | None = None) -> Reply:
        """Answer one command; mistakes get the usage and the exact problems, never a stack trace."""
        try:
            verb, args, rest = parse_command(text)
            if verb == "help":
                return Reply("Workspace Vending: what I can do", usage=True)
            if verb not in ("status", "list", "plan", "create"):
                raise InvalidInputError([Problem("(command)", f"'{verb}' is not a command I know.")])
            asking = self._asking(who, verb)
            if verb == "status":
                return self._status(asking, rest, args)
            if verb == "list":
                return self._list(asking, rest, args)
            request = self._request(asking, args, rest)
            if verb == "create" and args.get("confirm", "").lower() in ("yes", "y", "true"):
                return self._submit(asking, request=request, reply_to=reply_to, traceparent=traceparent)
            return self._plan(asking, request, offer=verb == "create")
        except (InvalidInputError, ConflictError, TransientError, ForbiddenError, NotFoundError) as exc:
            return refusal(exc, usage=True)

    def confirm(self, *, who: Who, token: str, reply_to: ChatConversation, traceparent: str | None = None) -> Reply:
        """Create what a confirmed plan showed (the Slack button), if its asker may still ask for that team."""
        try:
            asking = self._asking(who, "confirm")
            request = self._open(token, asking)
            # Decided again now: a plan sealed while its asker was in the team creates nothing after they left.
            self._decide(asking, Act.REQUEST, str(request.get("team", ""))).enforce()
            return self._submit(asking, request=request, reply_to=reply_to, traceparent=traceparent, token=token)
        except (InvalidInputError, ConflictError, TransientError, ForbiddenError, NotFoundError) as exc:
            return refusal(exc)

    def status(self, *, who: Who, request_id: str) -> Reply:
        """Where one request stands, if the asker may read its team's requests (else: no such request)."""
        try:
            return self._show(self._asking(who, "status"), request_id)
        except (InvalidInputError, TransientError, ForbiddenError, NotFoundError) as exc:
            return refusal(exc)

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

    # ----- who asks, and what they may do -------------------------------------------------------

    def _asking(self, who: Who, command: str) -> _Asking:
        if who.user is None:
            log.info("chat command %s from %s refused: not in the policy's chat_users", command, who.label)
            raise InvalidInputError(
                [
                    Problem(
                        "(you)",
                        f"I do not know your {who.door.title()} user ({who.user_id}); ask your platform team to "
                        "add you to chat_users in the policy, with the Microsoft Entra object id you act as.",
                        "unknown_user",
                    )
                ],
                title="I do not know you yet.",
            )
        caller = chat_caller(who.user, tenant=self._policy().tenant_id)
        return _Asking(who, who.user, caller, self._authorizer(), command)

    def _decide(self, asking: _Asking, act: Act, team: str, *, request_id: str | None = None) -> Decision:
        """Ask the one authorisation function, and record its answer with the caller's oid."""
        decision = asking.authz.authorize(asking.caller, act, team=team)
        self._record(asking, decision, act=act, team=team, request_id=request_id)
        return decision

    def _record(
        self, asking: _Asking, decision: Decision, *, act: Act, team: str | None, request_id: str | None = None
    ) -> None:
        try:
            self._audit(
                caller=asking.caller,
                decision=decision,
                act=act,
                team=team,
                door=asking.who.door,
                command=asking.command,
                request_id=request_id,
            )
        except Exception:  # a failing audit sink must not change the answer
            log.exception("could not record the chat decision %s for %s", decision.rule, asking.caller.oid)

    # ----- pieces ---------------------------------------------------------------------------------

    def _request(self, asking: _Asking, args: dict[str, str], rest: list[str]) -> dict[str, Any]:
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
        if team:
            self._decide(asking, Act.REQUEST, team).enforce()
        if tags:
            request["tags"] = tags
        user = asking.user
        request["owners"] = [{"object_id": str(user.principal), "type": "User", "display_name": user.name}]
        parse_request(request)  # the same validation, and the same words, as the REST API
        return request

    def _submit(
        self,
        asking: _Asking,
        *,
        request: dict[str, Any],
        reply_to: ChatConversation,
        traceparent: str | None = None,
        token: str | None = None,
    ) -> Reply:
        """Submit a request (pre-flight bounded to the chat's deadline) and say what happens next."""
        who = asking.who
        # One chat action creates one request: a double click or a redelivered message finds the first.
        key_source = token or json.dumps(
            {"who": who.label, "message": reply_to.message_id, "request": request}, sort_keys=True
        )
        key = f"{who.door}:{hashlib.sha256(key_source.encode()).hexdigest()[:32]}"
        if self.store.find_by_idempotency_key(key) is None:  # finding the first takes nothing from the allowance
            limited = self._over_limit(asking, str(request.get("team", "")))
            if limited is not None:
                return limited
        submitted = self.intake.submit(
            request=parse_request(request),
            caller=asking.caller,
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

    def _over_limit(self, asking: _Asking, team: str) -> Reply | None:
        """Take one submission from the asker's allowance; the refusal to answer when there is none left."""
        wait = self._submissions(asking.caller)
        if wait is None:
            return None
        seconds = math.ceil(wait)
        reason = f"you have asked for many workspaces in a short time; ask again in {seconds} s."
        self._record(asking, Decision(False, "SubmissionRateLimit", reason), act=Act.REQUEST, team=team)
        return Reply(
            "You have asked for many workspaces in a short time.",
            lines=[f"Nothing was created. Ask again in {seconds} s."],
            ok=False,
        )

    def _plan(self, asking: _Asking, request: dict[str, Any], *, offer: bool) -> Reply:
        plan = self.intake.plan(request=parse_request(request), caller=asking.caller, source=asking.who.door)
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
        if asking.who.door == "teams":
            lines.append("To create it, send the same command with `confirm=yes`.")
            return Reply(f"Create {n.workspace}?", lines=lines, fields=fields)
        token = self._seal(request, asking)
        return Reply(
            f"Create {n.workspace}?",
            lines=lines,
            fields=fields,
            buttons=[Button("Create it", "confirm_create", token, "primary"), Button("Cancel", "cancel", "", "danger")],
        )

    def _status(self, asking: _Asking, rest: list[str], args: dict[str, str]) -> Reply:
        ids = rest or [v for k, v in args.items() if k in ("id", "request")]
        if len(ids) != 1:
            raise InvalidInputError([Problem("id", "give one request id: `status 01J…`.")])
        return self._show(asking, ids[0])

    def _show(self, asking: _Asking, request_id: str) -> Reply:
        record = self.store.get_request(request_id)
        # Another team's request is answered exactly as one that does not exist: ids reveal nothing.
        if record is None or not self._decide(asking, Act.READ, record.team, request_id=request_id).allowed:
            raise InvalidInputError([Problem("id", f"there is no request '{request_id}'; `list` shows recent ones.")])
        return self.result(record, self.store.get_steps(request_id))

    def _list(self, asking: _Asking, rest: list[str], args: dict[str, str]) -> Reply:
        team = (rest[0] if rest else None) or args.get("team")
        if team:
            if not self._decide(asking, Act.READ, team).allowed:
                own = asking.authz.visible_teams(asking.caller) or frozenset()
                return Reply(
                    f"I cannot show the requests of team '{team}'.",
                    lines=[
                        f"You may see your own teams' requests ({', '.join(sorted(own)) or 'you belong to none'}); "
                        "`list` alone shows them. If you belong to that team, ask its owners to add you to its "
                        "Microsoft Entra group."
                    ],
                    ok=False,
                )
            items = self.store.list_requests(team=team, limit=10).items
            return self._listed(items, title=f"Newest requests of {team}")
        visible = asking.authz.visible_teams(asking.caller)
        if visible is None:  # every team's requests may be read (Workspaces.ReadAll, Vending.Admin)
            items = self.store.list_requests(limit=10).items
            allowed = {t for t in sorted({r.team for r in items}) if self._decide(asking, Act.READ, t).allowed}
            return self._listed([r for r in items if r.team in allowed], title="Newest requests")
        allowed = {t for t in sorted(visible) if self._decide(asking, Act.READ, t).allowed}
        if not allowed:
            return Reply(
                "You belong to no team yet.",
                lines=[
                    "Who belongs to a team is decided by the team's Microsoft Entra groups: ask the team's owners "
                    f"to add you ({asking.caller.oid}) to one of them; then `list` shows its requests."
                ],
                ok=False,
            )
        items = sorted(
            (r for t in sorted(allowed) for r in self.store.list_requests(team=t, limit=10).items),
            key=lambda r: r.id,
            reverse=True,
        )
        return self._listed(items[:10], title=f"Newest requests of {', '.join(sorted(allowed))}")

    @staticmethod
    def _listed(items: list[RequestRecord], *, title: str) -> Reply:
        lines = [f"`{r.id}`  {r.status.value:<12} {r.team}  {r.environment}  {r.workspace_name or ''}" for r in items]
        return Reply(title, lines=lines or ["none yet"])

    # A confirmation carries the planned request, who may confirm it (chat identity and principal)
    # and until when, sealed with a key derived from the signing secret: the button cannot be forged
    # or used by someone else. Whether its asker may still ask for the team is decided when it is used.
    def _seal(self, request: dict[str, Any], asking: _Asking) -> str:
        body = json.dumps(
            {
                "r": request,
                "u": asking.who.label,
                "p": asking.caller.oid,
                "exp": int(self.clock()) + CONFIRM_TTL_S,
            },
            separators=(",", ":"),
        )
        raw = body.encode()
        mac = hmac.new(self._key, raw, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac + raw).decode()

    def _open(self, token: str, asking: _Asking) -> dict[str, Any]:
        try:
            data = base64.urlsafe_b64decode(token.encode())
            mac, raw = data[:16], data[16:]
            ok = hmac.compare_digest(mac, hmac.new(self._key, raw, hashlib.sha256).digest()[:16])
            sealed = json.loads(raw) if ok else None
        except (ValueError, json.JSONDecodeError):
            sealed = None
        if not isinstance(sealed, dict):
            raise InvalidInputError([Problem("(button)", "this confirmation is not valid; run `create` again.")])
        if sealed.get("u") != asking.who.label:
            raise InvalidInputError([Problem("(button)", "only the person who asked can confirm this plan.")])
        if sealed.get("p") != asking.caller.oid:
            raise InvalidInputError(
                [Problem("(button)", "who you act as has changed since this plan was made; run `create` again.")]
            )
        if int(sealed.get("exp", 0)) < self.clock():
            raise InvalidInputError([Problem("(button)", "this plan is more than 15 minutes old; run `create` again.")])
        request = sealed.get("r")
        if not isinstance(request, dict):
            raise InvalidInputError([Problem("(button)", "this confirmation is not valid; run `create` again.")])
        return request
