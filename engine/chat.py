"""ChatOps, door-neutral: parse a command, check who asks, plan, confirm, submit, and say how it went.

Slack and Teams adapters turn a `Reply` into Block Kit or an Adaptive Card; this module never
formats for one of them. Commands:

    create team=<team> env=<dev|test|prod> region=<region> [profile=<name>] [name=<workspace>] [<tag>=<value>]
    plan   (the same arguments)
    status <request id>
    list   [team]
    delete <request id> [purge]
    extend <request id> <days>
    approvals
    approve <request id> [reason words...]
    deny    <request id> <reason words...>
    help

Arguments are key=value, in any order, with "quoted values" when they hold spaces. `create` and
`delete` first show what they would do; Slack confirms it with a button, Teams by sending the same
command with `confirm=yes`. `delete` and `extend` are acts of `engine.lifecycle.Lifecycle`, which
decides who may do them (a confirmation is decided again when it is used).

Approval gates (docs/approvals.md): `approvals` lists what waits for the asker's decision, `approve`
and `deny` decide one request, through `engine.approvals.Approvals` (the one authorisation function
decides: `Workspaces.Approve`, an approver group of the rules met, never the requester). The
approvers' channel gets `approval_request`, whose Approve and Deny buttons carry a sealed token of
the request, its approval round and the decision; any approver may click it, and whoever clicks is
decided again then (`decide_click`). Once decided, the message becomes `approval_settled`.

Who asks (DESIGN section 9): a chat user is the Entra principal the policy maps them to
(`chat_users`), acting with the app roles listed there (`Workspaces.Request` unless it says more),
since a chat platform sends no Entra token. Their teams are never taken from the policy's chat
section: the caller is built with its groups unknown, so the one authorisation function asks the
membership port whether the principal is in each team's Entra groups, for every command (`plan`,
`create`, `list`, `status`, a status button) and again when a sealed confirmation is used. Every
decision goes to the `audit` callable with the caller's oid (the lifecycle's own decisions go to the
service's audit through its guard).
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
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol
from uuid import UUID

from engine.authz import Act, Authority, Authorizer, Decision
from engine.intake import Intake
from engine.ports import Store
from models.approvals import ApprovalState
from models.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    Problem,
    TransientError,
)
from models.identity import Caller
from models.lifecycle import Revision
from models.plan import StepAction
from models.policy import ChatUser, Policy
from models.records import ChatConversation, RequestRecord, RequestStatus, StepRecord, StepStatus
from models.request import parse_request

if TYPE_CHECKING:
    from engine.approvals import Approvals
    from engine.lifecycle import Lifecycle

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
MAX_EXTEND_DAYS = 3650.0  # the REST API's bound too (models.api.Extension); policy's max_days is usually far less
YES = ("yes", "y", "true")
# The lifecycle's refusals of an act the request's state does not allow now (engine/lifecycle.py).
NOT_NOW = frozenset(
    {
        "RequestInFlight",
        "RequestDeleted",
        "RequestRejected",
        "NothingToCancel",
        "NothingToRetry",
        "NotSucceeded",
        "RequestChanged",
    }
)
SHOWN = 10  # list at most this many items in one reply (findings, names, steps)

USAGE = """\
`create team=<team> env=<dev|test|prod> region=<region> [profile=<name>] [name=<workspace>] [<tag>=<value>]`
    plans a workspace and asks you to confirm it
`plan <same arguments>`    shows what would be created, creates nothing
`status <request id>`      where a request stands: its steps, expiry and drift
`list [team]`              the newest requests (of a team)
`delete <request id> [purge]`  tears the workspace down, after you confirm it
`extend <request id> <days>`   moves its expiry to that many days from now
`approvals`                what waits for your approval
`approve <request id> [reason]`  approves a request that waits (Workspaces.Approve)
`deny <request id> <reason>`     denies it; its requester is told the reason
`help`                     this text
Values with spaces go in quotes: `cost-center="CC 1042"`."""


@dataclass(frozen=True)
class Button:
    """An action offered with a reply (a Slack button; Teams users type the command instead)."""

    label: str
    action: Literal["confirm_create", "confirm_delete", "refresh_status", "cancel", "approve", "deny"]
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
    "OwnRequest": "You cannot approve your own request.",
    "NotApprover": "You are not an approver of this request.",
}
# Conflicts that are not a taken name: the state of an approval (engine/approvals.py).
CONFLICT_TITLES = {
    "ApprovalSettled": "That request is already decided.",
    "AlreadyDecided": "You have already decided that request.",
    "NoApprovalNeeded": "That request needs no approval.",
    "NotConfigured": "Approvals are not available here.",
}
APPROVAL_VERBS = ("approve", "deny")


Refused = InvalidInputError | ConflictError | TransientError | ForbiddenError | NotFoundError


def refusal(exc: Refused, *, usage: bool = False) -> Reply:
    """Say why something was refused: the problems (with the usage after a command), a rule, a taken name, or "later"."""
    if isinstance(exc, InvalidInputError):
        named = exc.title != "The request is not valid."  # a title of its own says more than "did not work"
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
        if exc.code in NOT_NOW:
            return Reply("That cannot be done to this request now.", lines=[str(exc)], ok=False)
        if exc.code in CONFLICT_TITLES:
            return Reply(CONFLICT_TITLES[exc.code], lines=[str(exc)], ok=False)
        return Reply("That workspace is taken.", lines=[str(exc)], ok=False)
    return Reply("I cannot do that right now.", lines=[f"{exc} Try again in a minute."], ok=False)


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN]) or "none"
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def _current_steps(record: RequestRecord, steps: list[StepRecord]) -> list[StepRecord]:
    """Return the steps of the request's current run, in plan order (the records keep earlier runs too)."""
    if record.plan is None:
        return steps
    by_id = {s.step_id: s for s in steps if s.run == record.run}
    return [by_id[p.id] for p in record.plan.steps if p.id in by_id]


def _revision(record: RequestRecord) -> Revision | None:
    return next((r for r in record.revisions if r.number == record.revision), None)


def _last_applied(record: RequestRecord) -> int:
    """Return the number of the newest revision before the current one that was applied (1: the create)."""
    return max((r.number for r in record.revisions if r.status == "applied" and r.number < record.revision), default=1)


def _drift(record: RequestRecord) -> tuple[str, list[str]]:
    """Say what the last drift check found: a field's value, and a line per finding."""
    report = record.drift
    if report is None:
        return "not checked yet", []
    asked = "; a check is asked for" if report.requested else ""
    lines = [f"Drift: {f.message}" for f in report.findings[:SHOWN]]
    if report.error:
        lines.append(f"The drift check did not finish: {report.error}")
    if not report.findings:
        return f"none found at {_at(report.checked_at)}{asked}", lines
    if report.repaired_run:
        lines.append(f"Repaired by run {report.repaired_run}.")
    return f"{_count(len(report.findings), 'finding')} at {_at(report.checked_at)}{asked}", lines


def _what(record: RequestRecord) -> str:
    return f"{record.workspace_name or record.id} ({record.team}, {record.environment})"


def _requester(record: RequestRecord) -> str:
    return record.requester_name or record.requester


def _deciders(state: ApprovalState) -> str:
    names = [d.name or d.by for d in state.decisions if d.decision == "approve"]
    return ", ".join(names) or "its approvers"


def _approval_lines(state: ApprovalState, record: RequestRecord) -> list[str]:
    """Say why a request waits (or waited), who decided so far, what is still needed, what it costs, until when."""
    lines = [f"• {t.rule}{f' ({t.description})' if t.description else ''}: {'; '.join(t.reasons)}" for t in state.rules]
    for d in state.decisions:
        said = f": {d.reason}" if d.reason else ""
        lines.append(f"{'Approved' if d.decision == 'approve' else 'Denied'} by {d.name or d.by}{said}")
    if state.outcome == "pending":
        missing = state.missing()
        if missing:
            lines.append("Still needed: " + ", ".join(f"{_count(n, 'approval')} for {t.rule}" for t, n in missing))
    if state.estimate is not None:
        lines.append(f"Estimated cost: {state.estimate.summary()}")
        if state.estimate.unpriced:
            lines.append(f"Not priced: {_names(state.estimate.unpriced)}")
    if state.outcome == "pending":
        lines.append(f"Due: {_at(state.due_at)}; undecided by then, it expires.")
    elif state.outcome == "expired":
        lines.append(f"Nobody decided before {_at(state.due_at)}.")
    return lines


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
        lifecycle: Lifecycle,
        store: Store,
        policy: Callable[[], Policy],
        signing_key: bytes,
        studio_url: str,
        authorizer: Callable[[], Authority] | None = None,
        submissions: SubmissionLimit | None = None,
        audit: ChatAudit = no_audit,
        clock: Callable[[], float] = time.time,
        approvals: Approvals | None = None,
    ) -> None:
        """Build the commands; `authorizer` decides every command (without one, no team has members).

        `lifecycle` does (and decides) what happens to a request after its create: delete, extend.
        `approvals` decides approvals (default: the lifecycle's, which the composition root sets).
        """
        self.intake = intake
        self.lifecycle = lifecycle
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
        self._approvals = approvals

    @property
    def approvals(self) -> Approvals:
        """The approval gates that decide `approve`, `deny` and a click on an approval message."""
        approvals = self._approvals or self.lifecycle.approvals
        if approvals is None:
            raise ConflictError("approvals are not wired to chat here; use the REST API.", code="NotConfigured")
        return approvals

    def _unwired(self) -> Authorizer:
        return Authorizer(policy=self._policy(), membership=_NoMembership())

    # ----- the commands -------------------------------------------------------------------------

    def handle(self, *, who: Who, text: str, reply_to: ChatConversation, traceparent: str | None = None) -> Reply:
        """Answer one command; mistakes get the usage and the exact problems, never a stack trace."""
        try:
            first, tail = [*text.strip().split(None, 1), "", ""][:2]
            if first.lower() in APPROVAL_VERBS:
                # Read as words, not key=value: a reason is free text ("don't", "budget=0" and all).
                return self._decide_command(self._asking(who, first.lower()), first.lower(), tail)
            verb, args, rest = parse_command(text)
            if verb == "help":
                return Reply("Workspace Vending: what I can do", usage=True)
            if verb not in ("status", "list", "plan", "create", "delete", "extend", "approvals"):
                raise InvalidInputError([Problem("(command)", f"'{verb}' is not a command I know.")])
            asking = self._asking(who, verb)
            if verb == "approvals":
                return self._pending(asking, rest, args)
            if verb == "status":
                return self._status(asking, rest, args)
            if verb == "list":
                return self._list(asking, rest, args)
            if verb == "delete":
                return self._delete(asking, rest, args)
            if verb == "extend":
                return self._extend(asking, rest, args)
            request = self._request(asking, args, rest)
            if verb == "create" and args.get("confirm", "").lower() in YES:
                return self._submit(asking, request=request, reply_to=reply_to, traceparent=traceparent)
            return self._plan(asking, request, offer=verb == "create")
        except (InvalidInputError, ConflictError, TransientError, ForbiddenError, NotFoundError) as exc:
            return refusal(exc, usage=True)

    def confirm(self, *, who: Who, token: str, reply_to: ChatConversation, traceparent: str | None = None) -> Reply:
        """Create what a confirmed plan showed (the Slack button), if its asker may still ask for that team."""
        try:
            asking = self._asking(who, "confirm")
            request = self._open(token, asking, kind="create").get("r")
            if not isinstance(request, dict):
                raise InvalidInputError([Problem("(button)", "this confirmation is not valid; run `create` again.")])
            # Decided again now: a plan sealed while its asker was in the team creates nothing after they left.
            self._decide(asking, Act.REQUEST, str(request.get("team", ""))).enforce()
            return self._submit(asking, request=request, reply_to=reply_to, traceparent=traceparent, token=token)
        except (InvalidInputError, ConflictError, TransientError, ForbiddenError, NotFoundError) as exc:
            return refusal(exc)

    def confirm_delete(self, *, who: Who, token: str) -> Reply:
        """Tear down what a confirmed `delete` showed (the Slack button); the lifecycle decides again, now."""
        try:
            asking = self._asking(who, "confirm_delete")
            sealed = self._open(token, asking, kind="delete")
            request_id, purge = sealed.get("d"), sealed.get("purge")
            if not isinstance(request_id, str) or not isinstance(purge, bool | None):
                raise InvalidInputError([Problem("(button)", "this confirmation is not valid; run `delete` again.")])
            return self._tear_down(asking, request_id, purge=purge)
        except (InvalidInputError, ConflictError, TransientError, ForbiddenError, NotFoundError) as exc:
            return refusal(exc)

    def status(self, *, who: Who, request_id: str) -> Reply:
        """Where one request stands, if the asker may read its team's requests (else: no such request)."""
        try:
            return self._show(self._asking(who, "status"), request_id)
        except (InvalidInputError, TransientError, ForbiddenError, NotFoundError) as exc:
            return refusal(exc)

    def result(self, record: RequestRecord, steps: list[StepRecord]) -> Reply:
        """Describe how a request's run ended (or stands): made, updated, failed, cancelled, deleted; or expiring.

        This is the message posted when a run ends, and (with the drift added) what `status` answers.
        """
        if record.notification is not None and record.notification.about == "expiry":
            return self._expiring(record)
        if record.notification is not None and record.notification.about == "approval":
            return self._approval_notice(record)
        return self._state(record, steps)

    def _state(self, record: RequestRecord, steps: list[StepRecord]) -> Reply:
        steps = _current_steps(record, steps)
        status = record.status
        if status == RequestStatus.AWAITING_APPROVAL or (
            record.approval is not None
            and record.approval.operation == "create"
            and status in (RequestStatus.DENIED, RequestStatus.EXPIRED, RequestStatus.CANCELLED)
            and record.approval.outcome in ("denied", "expired", "withdrawn")
        ):
            return self._approval_notice(record)
        if status == RequestStatus.SUCCEEDED:
            return self._updated(record) if record.operation == "update" else self._ready(record, steps)
        if status == RequestStatus.DELETED:
            return self._deleted(record)
        if status == RequestStatus.CANCELLED:
            return self._cancelled(record, steps)
        if status in (RequestStatus.FAILED, RequestStatus.REJECTED):
            return self._failed(record, steps)
        return self._in_progress(record, steps)

    def _fields(self, record: RequestRecord) -> list[tuple[str, str]]:
        fields = [("team", record.team), ("environment", record.environment), ("request", record.id)]
        if record.revision > 1 or record.operation == "update":
            fields.append(("revision", str(record.revision)))
        if record.expires_at is not None and record.status != RequestStatus.DELETED:
            fields.append(("expires", _at(record.expires_at)))
        return fields

    def _studio(self, record: RequestRecord) -> tuple[str, str] | None:
        studio = str(record.outputs.get("studio_url") or "")
        return ("Open in Azure ML Studio", studio) if studio else None

    def _ready(self, record: RequestRecord, steps: list[StepRecord]) -> Reply:
        return Reply(
            f"Workspace {record.workspace_name} is ready.",
            lines=[f"All {len(steps)} steps succeeded."],
            fields=self._fields(record),
            link=self._studio(record),
            public=True,
        )

    def _updated(self, record: RequestRecord) -> Reply:
        drift = record.drift
        if drift is not None and drift.repaired_run == record.run:
            return Reply(
                f"Workspace {record.workspace_name} is repaired.",
                lines=[
                    f"What had drifted ({_count(len(drift.findings), 'finding')}) was applied again as revision "
                    f"{record.revision} asks."
                ],
                fields=self._fields(record),
                link=self._studio(record),
                public=True,
            )
        revision = _revision(record)
        return Reply(
            f"Workspace {record.workspace_name} is updated: revision {record.revision}.",
            lines=[f"Changed: {revision.summary}." if revision and revision.summary else "Applied."],
            fields=self._fields(record),
            link=self._studio(record),
            public=True,
        )

    def _failed(self, record: RequestRecord, steps: list[StepRecord]) -> Reply:
        name = record.workspace_name or ""
        failed = next((s for s in steps if s.status == StepStatus.FAILED), None)
        lines = []
        if failed is not None:
            lines.append(f"Step `{failed.step_id}` failed: {failed.error.message if failed.error else 'no detail'}")
        elif record.error is not None:
            lines.append(record.error.message)
        lines += [f"{p['field']}: {p['message']}" for p in record.problems]
        retry = f"`python -m cli retry {record.id}`"
        if record.status == RequestStatus.REJECTED:
            title = f"Workspace {name} could not be provisioned."
            lines.append("Nothing was made. Fix the request and ask again.")
        elif record.operation == "delete":
            title = f"Workspace {name} could not be torn down."
            remaining = record.teardown.remaining if record.teardown else []
            lines += [f"Still there: {r.resource_id} ({r.reason})" for r in remaining[:SHOWN]]
            lines.append(
                f"Remove the cause (a lock, say), then go on from where it stopped: {retry}; or `delete {record.id}` "
                "here again (with `purge` to free the names)."
            )
        elif record.operation == "update":
            title = f"Workspace {name} could not be updated to revision {record.revision}."
            lines.append(
                f"What exists is what revision {_last_applied(record)} made, plus what this run got to. "
                f"After fixing the cause, retry it: {retry}; or change it again."
            )
        else:
            title = f"Workspace {name} could not be provisioned."
            lines.append(
                f"After fixing the cause, retry it ({retry}: what succeeded is not made again), or ask again; "
                f"what happened: `python -m cli status {record.id}`."
            )
        return Reply(title.replace("  ", " "), lines=lines, fields=self._fields(record), ok=False, public=True)

    def _cancelled(self, record: RequestRecord, steps: list[StepRecord]) -> Reply:
        teardown = record.operation == "delete"
        steps = [s for s in steps if s.action != StepAction.KEEP]  # a revision's kept steps were not part of it
        done = [s.step_id for s in steps if s.status == StepStatus.SUCCEEDED]
        left = [s.step_id for s in steps if s.status != StepStatus.SUCCEEDED]
        what = {"create": "provisioning", "update": f"revision {record.revision}", "delete": "teardown"}
        lines = [
            f"{'Deleted' if teardown else 'Done'} before it stopped ({len(done)} of {len(steps)} steps): "
            f"{_names(done)}.",
            f"Not done: {_names(left)}.",
        ]
        if teardown and record.teardown is not None and record.teardown.remaining:
            lines.append(f"Still there: {_names([r.resource_id for r in record.teardown.remaining])}.")
        lines.append(
            f"Finish it with `python -m cli retry {record.id}`, or tear down what exists: `delete {record.id}` here."
        )
        return Reply(
            f"Workspace {record.workspace_name}: the {what[record.operation]} was cancelled.",
            lines=lines,
            fields=self._fields(record),
            ok=False,
            public=True,
        )

    def _deleted(self, record: RequestRecord) -> Reply:
        report = record.teardown
        lines: list[str] = []
        if report is not None:
            lines.append(f"{_count(len(report.deleted), 'resource')} deleted.")
            lines += [f"Kept: {k.resource_id} ({k.reason})" for k in report.kept[:SHOWN]]
            for held in report.soft_deleted[:SHOWN]:
                until = f"until {_at(held.until)}" if held.until else "for Azure's retention"
                lines.append(
                    f"`{held.name}` ({held.kind}) is held by soft-delete {until}: nobody can make it again before. "
                    f"To free it now: {held.purge}"
                )
            if not report.soft_deleted:
                lines.append("No name is held: they can be used again at once.")
        return Reply(
            f"Workspace {record.workspace_name} is deleted.", lines=lines, fields=self._fields(record), public=True
        )

    def _in_progress(self, record: RequestRecord, steps: list[StepRecord]) -> Reply:
        done = sum(1 for s in steps if s.status == StepStatus.SUCCEEDED)
        running = [s.step_id for s in steps if s.status in (StepStatus.RUNNING, StepStatus.WAITING, StepStatus.QUEUED)]
        name = record.workspace_name
        title = {
            RequestStatus.UPDATING: f"Workspace {name} is being updated to revision {record.revision}: "
            f"{done} of {len(steps)} steps done.",
            RequestStatus.DELETING: f"Workspace {name} is being torn down: {done} of {len(steps)} resources deleted.",
            RequestStatus.CANCELLING: f"Workspace {name} is being cancelled: {done} of {len(steps)} steps done; "
            "the running ones finish their current call.",
        }.get(record.status, f"Workspace {name} is being provisioned: {done} of {len(steps)} steps done.")
        return Reply(
            title,
            lines=[f"Working on: {', '.join(running)}"] if running else [],
            fields=self._fields(record),
            buttons=[Button("Refresh status", "refresh_status", record.id)],
        )

    def _expiring(self, record: RequestRecord) -> Reply:
        assert record.expires_at is not None
        now = datetime.fromtimestamp(self.clock(), UTC)
        days = (record.expires_at - now).total_seconds() / 86400
        rules = self._policy().lifecycle.expiry.get(record.environment)  # type: ignore[call-overload]
        most = f" (at most {rules.max_days:g} days from now)" if rules is not None and rules.max_days else ""
        return Reply(
            f"Workspace {record.workspace_name} expires at {_at(record.expires_at)}.",
            lines=[
                f"That is in {max(days, 0):.1f} days; then it is torn down and what it holds is deleted.",
                f"To keep it longer, send `extend {record.id} <days>` here{most}, or run "
                f"`python -m cli extend {record.id} --days <days>`.",
            ],
            fields=self._fields(record),
            public=True,
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
        if record.status == RequestStatus.AWAITING_APPROVAL and record.approval is not None:
            waits = self._approval_notice(record)
            waits.lines.insert(0, f"Request `{record.id}`.")
            waits.buttons = [Button("Refresh status", "refresh_status", record.id)]
            return waits
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
        token = self._seal(asking, kind="create", what={"r": request})
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

    def _readable(self, asking: _Asking, request_id: str) -> RequestRecord:
        """Return a request the asker may read; another team's is answered exactly as one that does not exist."""
        record = self.store.get_request(request_id)
        if record is None or not self._decide(asking, Act.READ, record.team, request_id=request_id).allowed:
            raise InvalidInputError([Problem("id", f"there is no request '{request_id}'; `list` shows recent ones.")])
        return record

    def _show(self, asking: _Asking, request_id: str) -> Reply:
        record = self._readable(asking, request_id)
        reply = self._state(record, self.store.get_steps(request_id))
        if record.expires_at is None and record.status.live:
            reply.fields.append(("expires", "never"))
        if record.status in (RequestStatus.SUCCEEDED, RequestStatus.UPDATING) or record.drift is not None:
            drift, lines = _drift(record)
            reply.fields.append(("drift", drift))
            reply.lines += lines
        return reply

    # ----- approvals: what waits for the asker, approve, deny, a click ---------------------------

    def _pending(self, asking: _Asking, rest: list[str], args: dict[str, str]) -> Reply:
        if rest or args:
            raise InvalidInputError([Problem("(command)", "`approvals` takes no arguments.")])
        waiting = self.approvals.pending(asking.caller, door=asking.who.door, limit=SHOWN + 1)
        if not waiting:
            return Reply("Nothing waits for your approval.")
        lines = []
        for record in waiting[:SHOWN]:
            state = record.approval
            assert state is not None  # pending() returns only requests that wait
            lines.append(
                f"`{record.id}`  {record.team}  {record.environment}  {record.workspace_name or ''}: "
                f"{', '.join(t.rule for t in state.rules)}; asked by {_requester(record)}; due {_at(state.due_at)}"
            )
        if len(waiting) > SHOWN:
            lines.append("and more: the REST API lists them all (GET /api/approvals).")
        lines.append("Decide with `approve <request id> [reason]` or `deny <request id> <reason>`.")
        return Reply(f"Waiting for your approval: {_count(min(len(waiting), SHOWN), 'request')}", lines=lines)

    def _decide_command(self, asking: _Asking, verb: str, tail: str) -> Reply:
        """Approve or deny from a command: `approve <id> [reason...]`, `deny <id> <reason...>`."""
        request_id, reason = [*tail.split(None, 1), "", ""][:2]
        if not request_id:
            example = "approve 01J… [reason]" if verb == "approve" else "deny 01J… <reason>"
            raise InvalidInputError([Problem("id", f"give one request id: `{example}`.")])
        reason = reason.strip()
        if verb == "deny" and not reason:
            raise InvalidInputError(
                [Problem("reason", f"say why it is denied: `deny {request_id} <reason>`; its requester is told.")]
            )
        door = asking.who.door
        if verb == "approve":
            done = self.approvals.approve(request_id, caller=asking.caller, door=door, reason=reason or None)
        else:
            done = self.approvals.deny(request_id, caller=asking.caller, door=door, reason=reason)
        record, state = done.record, done.record.approval
        name = _what(record)
        if state is None:
            return self._state(record, self.store.get_steps(record.id))
        if not done.recorded:
            title = f"You had already {'approved' if verb == 'approve' else 'denied'} {name}."
        elif done.outcome == "approved":
            title = f"Approved: {name}."
        elif done.outcome == "denied":
            title = f"Denied: {name}."
        else:
            title = f"Your approval of {name} is recorded."
        return Reply(title, lines=_approval_lines(state, record), fields=self._fields(record))

    def decide_click(
        self, *, who: Who, token: str, decision: Literal["approve", "deny"], reason: str | None = None
    ) -> Reply:
        """Decide a click on an approval message's Approve or Deny: the clicker is decided now, as any approver."""
        try:
            asking = self._asking(who, decision)
            request_id, round_ = self._open_approval(token, decision)
            record = self.store.get_request(request_id)
            if record is None or record.approval is None or record.approval.round != round_:
                raise InvalidInputError(
                    [
                        Problem(
                            "(button)",
                            "this approval message is no longer valid: the request was asked again or is gone; "
                            "`approvals` shows what waits for you.",
                        )
                    ]
                )
            text = (reason or "").strip()
            if decision == "deny" and not text:
                return Reply(
                    "Say why you deny it.",
                    lines=[
                        "Write the reason in the message's reason box, then press Deny again: its requester is told."
                    ],
                    ok=False,
                )
            door = who.door
            if decision == "approve":
                done = self.approvals.approve(request_id, caller=asking.caller, door=door, reason=text or None)
            else:
                done = self.approvals.deny(request_id, caller=asking.caller, door=door, reason=text)
            return self.approval_request(done.record)
        except (InvalidInputError, ConflictError, TransientError, ForbiddenError, NotFoundError) as exc:
            return refusal(exc)

    def approval_request(self, record: RequestRecord) -> Reply:
        """Ask the approvers: what is asked, by whom, why it waits, its cost, until when; Approve and Deny.

        A request no longer waiting is shown as settled (`approval_settled`), without buttons.
        """
        state = record.approval
        if state is None or state.outcome != "pending":
            return self.approval_settled(record)
        asked = f"revision {state.change.number} of " if state.change is not None else ""
        lines = [f"{_requester(record)} asks for {asked}{_what(record)}.", *_approval_lines(state, record)]
        if state.estimate is not None:
            currency = state.estimate.currency
            lines += [
                f"Compute {c.compute}: {c.vm_size} {c.tier.replace('_', '-')}, up to {_count(c.max_nodes, 'node')}, "
                f"{currency} {c.monthly_max:,.0f}/month at most"
                for c in state.estimate.lines[:SHOWN]
            ]
        return Reply(
            f"Approval asked: {asked}{_what(record)}",
            lines=lines,
            fields=[*self._fields(record), ("requester", _requester(record)), ("decide by", _at(state.due_at))],
            buttons=[
                Button("Approve", "approve", self._seal_approval(record, "approve"), "primary"),
                Button("Deny", "deny", self._seal_approval(record, "deny"), "danger"),
            ],
            public=True,
        )

    def approval_settled(self, record: RequestRecord) -> Reply:
        """Say how an approval ended and who decided it (the approvers' message once decided; no buttons)."""
        state = record.approval
        name = _what(record)
        if state is None:
            return Reply(f"{name} needs no approval.", fields=self._fields(record), public=True)
        title = {
            "pending": f"Approval asked: {name}",
            "approved": f"Approved: {name}",
            "denied": f"Denied: {name}",
            "expired": f"Expired: {name}",
            "withdrawn": f"Withdrawn: {name}",
        }[state.outcome]
        return Reply(title, lines=_approval_lines(state, record), fields=self._fields(record), public=True)

    def _approval_notice(self, record: RequestRecord) -> Reply:
        """Tell the requester where their request's approval stands: waiting, approved, denied, expired, withdrawn."""
        state = record.approval
        if state is None:
            return self._state(record, self.store.get_steps(record.id))
        name = _what(record)
        revision = state.change.number if state.change is not None else None
        lines = _approval_lines(state, record)
        fields = self._fields(record)
        if state.outcome == "pending":
            lines.append("Its approvers are asked now; I will post here when they decide. Until then nothing is made.")
            subject = f"Revision {revision} of {name}" if revision else f"Workspace {name}"
            return Reply(f"{subject} waits for approval.", lines=lines, fields=fields, public=True)
        if state.outcome == "approved":
            lines.append(
                f"Revision {revision} is applied now."
                if revision
                else "Provisioning starts now; I will post here when it is ready."
            )
            return Reply(f"{name} is approved by {_deciders(state)}.", lines=lines, fields=fields, public=True)
        kept = "The workspace stays as it was." if revision else "Nothing was made; its name is free to ask for again."
        if state.outcome == "denied":
            denial = state.denial
            by = (denial.name or denial.by) if denial else "an approver"
            return Reply(f"{name} was denied by {by}.", lines=[*lines, kept], fields=fields, ok=False, public=True)
        if state.outcome == "expired":
            return Reply(
                f"{name} expired: nobody decided in time.",
                lines=[*lines, kept, "Ask again, or ask its approvers to decide sooner."],
                fields=fields,
                ok=False,
                public=True,
            )
        return Reply(f"{name} was withdrawn before approval.", lines=[*lines, kept], fields=fields, public=True)

    # ----- the lifecycle: delete, extend --------------------------------------------------------

    def _one_id(self, rest: list[str], args: dict[str, str], example: str) -> tuple[str, list[str]]:
        named = [v for k, v in args.items() if k in ("id", "request")]
        ids, more = (named, rest) if named else (rest[:1], rest[1:])
        if len(ids) != 1:
            raise InvalidInputError([Problem("id", f"give one request id: `{example}`.")])
        return ids[0], more

    def _delete(self, asking: _Asking, rest: list[str], args: dict[str, str]) -> Reply:
        request_id, more = self._one_id(rest, args, "delete 01J… [purge]")
        unknown = [w for w in more if w.lower() != "purge"] + [k for k in args if k not in ("id", "request", "confirm")]
        if unknown:
            raise InvalidInputError(
                [Problem("(command)", f"'{w}' is not an argument of delete: `delete <id> [purge]`.") for w in unknown]
            )
        purge = True if any(w.lower() == "purge" for w in more) else None
        if args.get("confirm", "").lower() in YES:
            return self._tear_down(asking, request_id, purge=purge)
        record = self._readable(asking, request_id)
        # Decided here only so that nobody is offered a button they may not use; using it decides again.
        self._decide(asking, Act.CHANGE, record.team, request_id=record.id).enforce()
        name = record.workspace_name or record.id
        if record.status in (RequestStatus.DELETING, RequestStatus.DELETED):
            return self._state(record, self.store.get_steps(record.id))
        if record.status.in_flight or record.status == RequestStatus.REJECTED:
            why = "it made nothing" if record.status == RequestStatus.REJECTED else "wait for its run to end"
            return Reply(
                f"Workspace {name} cannot be torn down now.",
                lines=[f"It is {record.status.value}: {why}."],
                fields=self._fields(record),
                ok=False,
            )
        return self._offer_delete(asking, record, purge=purge)

    def _offer_delete(self, asking: _Asking, record: RequestRecord, *, purge: bool | None) -> Reply:
        assert record.plan is not None
        purging = self._policy().lifecycle.purge_on_delete if purge is None else purge
        plan, kept = self.lifecycle.teardown_preview(record, purge=purging)
        n = record.plan.names
        name = record.workspace_name or n.workspace
        lines = [
            f"This deletes {_count(len(plan.steps), 'resource')} the service made for it, in the reverse order of "
            f"creation, in resource group {n.resource_group}.",
            "Its workspace and key vault are purged: their names are free at once."
            if purging
            else f"Azure keeps its workspace and key vault soft-deleted, holding their names; add `purge` to free "
            f"them: `delete {record.id} purge`.",
        ]
        lines += [f"Kept: {s.resource_name} ({s.kind}): {why}" for s, why in kept[:SHOWN]]
        fields = self._fields(record)
        if asking.who.door == "teams":
            lines.append(f"To delete it, send `delete {record.id}{' purge' if purge else ''} confirm=yes`.")
            return Reply(f"Delete {name}?", lines=lines, fields=fields)
        token = self._seal(asking, kind="delete", what={"d": record.id, "purge": purge})
        return Reply(
            f"Delete {name}?",
            lines=lines,
            fields=fields,
            buttons=[Button("Delete it", "confirm_delete", token, "danger"), Button("Keep it", "cancel", "delete")],
        )

    def _tear_down(self, asking: _Asking, request_id: str, *, purge: bool | None) -> Reply:
        """Ask the lifecycle to tear the request down: it decides whether the asker may, now."""
        done = self.lifecycle.delete(request_id, caller=asking.caller, door=asking.who.door, purge=purge)
        record = done.record
        if not done.started:
            return self._state(record, self.store.get_steps(record.id))
        told = (
            "I will post in the conversation it was asked for in when it is done."
            if record.reply_to is not None
            else f"`status {record.id}` shows how it goes, what was kept and which names soft-delete holds."
        )
        steps = len(record.plan.steps) if record.plan else 0
        return Reply(
            f"Tearing down {record.workspace_name} has started.",
            lines=[f"Request `{record.id}`: {_count(steps, 'resource')} to delete. {told}"],
            fields=self._fields(record),
            buttons=[Button("Refresh status", "refresh_status", record.id)],
            public=True,
        )

    def _extend(self, asking: _Asking, rest: list[str], args: dict[str, str]) -> Reply:
        request_id, more = self._one_id(rest, args, "extend 01J… 30")
        given = more + [v for k, v in args.items() if k == "days"]
        usage = Problem("days", "give the number of days from now it should expire: `extend 01J… 30`.")
        if len(given) != 1 or [k for k in args if k not in ("id", "request", "days")]:
            raise InvalidInputError([usage])
        try:
            days = float(given[0])
        except ValueError:
            raise InvalidInputError([usage]) from None
        if not 0 < days <= MAX_EXTEND_DAYS:  # NaN compares false: refused too
            raise InvalidInputError(
                [Problem("days", f"give a number of days above 0 and at most {MAX_EXTEND_DAYS:g}.")]
            )
        when = datetime.fromtimestamp(self.clock(), UTC) + timedelta(days=days)
        record = self.lifecycle.extend(request_id, caller=asking.caller, door=asking.who.door, expires_at=when)
        lines = [f"That is {days:g} days from now; then it is torn down unless it is extended again."]
        rules = self._policy().lifecycle.expiry.get(record.environment)  # type: ignore[call-overload]
        if record.reply_to is not None and rules is not None:
            lines.append(f"I will remind you {rules.remind_days:g} days before, where the workspace was asked for.")
        return Reply(
            f"Workspace {record.workspace_name} now expires at {_at(when)}.", lines=lines, fields=self._fields(record)
        )

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

    # A confirmation carries what it confirms (the planned request, or the request to tear down), who
    # may confirm it (chat identity and principal) and until when, sealed with a key derived from the
    # signing secret: the button cannot be forged, used by someone else, or used for another kind of
    # act. Whether its asker may still do it is decided when it is used.
    def _seal(self, asking: _Asking, *, kind: Literal["create", "delete"], what: dict[str, Any]) -> str:
        return self._sign(
            {
                **what,
                "k": kind,
                "u": asking.who.label,
                "p": asking.caller.oid,
                "exp": int(self.clock()) + CONFIRM_TTL_S,
            }
        )

    def _sign(self, body: dict[str, Any]) -> str:
        raw = json.dumps(body, separators=(",", ":")).encode()
        mac = hmac.new(self._key, raw, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac + raw).decode()

    def _unsign(self, token: str) -> dict[str, Any] | None:
        """Return what a token seals, or None when it was not sealed with this key (forged, altered, cut)."""
        try:
            data = base64.urlsafe_b64decode(token.encode())
            mac, raw = data[:16], data[16:]
            ok = hmac.compare_digest(mac, hmac.new(self._key, raw, hashlib.sha256).digest()[:16])
            sealed = json.loads(raw) if ok else None
        except (ValueError, json.JSONDecodeError):
            sealed = None
        return sealed if isinstance(sealed, dict) else None

    # An approval button seals the request, its approval round and the decision, and no person: any
    # approver may press it, and whoever does is decided when they do. Its kind ("approve", "deny")
    # keeps it from being used as a confirmation, or the other decision.
    def _seal_approval(self, record: RequestRecord, decision: Literal["approve", "deny"]) -> str:
        assert record.approval is not None
        return self._sign(
            {"k": decision, "d": record.id, "n": record.approval.round, "exp": int(record.approval.due_at.timestamp())}
        )

    def _open_approval(self, token: str, decision: Literal["approve", "deny"]) -> tuple[str, int]:
        sealed = self._unsign(token)
        if sealed is None or sealed.get("k") != decision:
            raise InvalidInputError(
                [Problem("(button)", "this button is not valid; `approvals` shows what waits for you.")]
            )
        request_id, round_, until = sealed.get("d"), sealed.get("n"), sealed.get("exp")
        if not isinstance(request_id, str) or not isinstance(round_, int) or not isinstance(until, int):
            raise InvalidInputError(
                [Problem("(button)", "this button is not valid; `approvals` shows what waits for you.")]
            )
        if until < self.clock():
            raise InvalidInputError(
                [Problem("(button)", "this approval message is no longer valid: its request waited past its due time.")]
            )
        return request_id, round_

    def _open(self, token: str, asking: _Asking, *, kind: Literal["create", "delete"]) -> dict[str, Any]:
        sealed = self._unsign(token)
        # A create confirmation sealed before kinds were sealed names none: it is a create.
        if not isinstance(sealed, dict) or sealed.get("k", "create") != kind:
            raise InvalidInputError([Problem("(button)", f"this confirmation is not valid; run `{kind}` again.")])
        if sealed.get("u") != asking.who.label:
            raise InvalidInputError([Problem("(button)", f"only the person who asked can confirm this {kind}.")])
        if sealed.get("p") != asking.caller.oid:
            raise InvalidInputError(
                [Problem("(button)", f"who you act as has changed since this was asked; run `{kind}` again.")]
            )
        if int(sealed.get("exp", 0)) < self.clock():
            raise InvalidInputError(
                [Problem("(button)", f"this confirmation is more than 15 minutes old; run `{kind}` again.")]
            )
        return sealed
