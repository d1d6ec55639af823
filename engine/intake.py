"""The one way in: every door turns its input into a `WorkspaceRequest` and calls `submit`."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError
from ulid import ULID

from engine.approval_rules import estimate
from engine.approvals import ask
from engine.audit import Guard
from engine.authz import Act
from engine.confinement import Confinement, ConfinementError, confine
from engine.events import EventFanout, status_event
from engine.expiry import expiry_of
from engine.planner import plan as make_plan
from engine.policy import POLICY_REFUSAL, admit, team_vcpus, vcpu_limit_problem
from engine.ports import Preflight, Store, VcpuLimit
from engine.steps import StepEngine, utcnow
from models.approvals import ApprovalState, CostEstimate
from models.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    Problem,
    idempotency_key_reused,
)
from models.events import EventName
from models.identity import AuthenticationError, Caller
from models.lifecycle import Revision
from models.plan import Plan
from models.policy import Policy
from models.records import ChatConversation, Notification, RequestRecord, RequestStatus, StepRecord
from models.redact import redact
from models.request import TeamOnboarding, WorkspaceRequest, parse_request, problems_from

log = logging.getLogger(__name__)


def rest_key(caller: str, key: str) -> str:
    """Scope a REST caller's Idempotency-Key to its door and to that caller.

    The caller's name is length-prefixed, so no (caller, key) pair can spell another's, and no REST
    key can ever equal a key the queue or a chat door uses.
    """
    return f"rest:{len(caller)}:{caller}:{key}"


def queue_key(message_id: str, environment: str | None = None, *, sender: str) -> str:
    """Return the idempotency key of an onboarding message from `sender` (or of one environment it asks for).

    Scoped to the sender (its oid) as REST keys are to their caller: a message id is the sender's
    own, so nobody can take, or answer for, the key another sender's message will use. Both parts
    are length-prefixed, so no (sender, id) pair can spell another's.
    """
    base = f"queue:{len(sender)}:{sender}:{len(message_id)}:{message_id}"
    return f"{base}:{environment}" if environment else base


def unproven_sender(body: bytes) -> str:
    """Name the sender of a message whose token proves nobody: by its body, so two such messages never share a key."""
    return f"unproven:{hashlib.sha256(body).hexdigest()[:32]}"


def body_hash(request: WorkspaceRequest) -> str:
    """Hash the validated request, so formatting differences do not matter."""
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()


@dataclass(frozen=True)
class Review:
    """What a request would get: its plan, its estimated monthly cost, and the approval it would wait for."""

    plan: Plan
    estimate: CostEstimate | None
    approval: ApprovalState | None
    preflight: list[Problem]


class WaitHook(Protocol):
    """Told when a new request starts waiting for approval (engine.approvals.Approvals.waiting)."""

    def __call__(self, record: RequestRecord, *, caller: str) -> None:
        """Announce the wait."""
        ...


@dataclass(frozen=True)
class Submitted:
    """The result of a submission: the record, and whether this call created it."""

    record: RequestRecord
    created: bool


class Intake:
    """Validate, check policy, plan, record and start requests."""

    def __init__(
        self,
        *,
        store: Store,
        engine: StepEngine,
        policy: Policy,
        events: EventFanout,
        guard: Guard,
        confinement: Confinement,
        preflight: Preflight | None = None,
        clock: Callable[[], datetime] = utcnow,
        new_id: Callable[[], str] = lambda: str(ULID()),
        waiting: WaitHook | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.policy = policy
        self.events = events
        self.guard = guard
        self.confinement = confinement
        self.preflight = preflight
        self.clock = clock
        self.new_id = new_id
        self.waiting = waiting

    def plan(self, *, request: WorkspaceRequest, caller: Caller, source: str) -> Plan:
        """Return the plan a request would get, if the caller may ask for it; nothing is created."""
        return self.review(request=request, caller=caller, source=source, checks=False).plan

    def review(self, *, request: WorkspaceRequest, caller: Caller, source: str, checks: bool = True) -> Review:
        """Return the plan, the estimated cost, the approval and (with `checks`) the pre-flight findings; nothing is created."""
        self.guard.require(caller, Act.REQUEST, team=request.team, door=source)
        resolved = admit(request, self.policy, team_vcpus_in_use=self.store.team_vcpus(request.team))
        now = self.clock()
        expiry_of(resolved, self.policy, now=now)
        plan = make_plan(resolved, self.policy)
        self._confine(resolved, plan, caller=caller, source=source)
        approval = ask(resolved, self.policy, requested_by=caller.oid, now=now, operation="create")
        findings = self._findings(plan, resolved) if checks else []
        return Review(plan=plan, estimate=estimate(resolved, self.policy), approval=approval, preflight=findings)

    def _findings(self, plan: Plan, request: WorkspaceRequest) -> list[Problem]:
        """Return what the pre-flight checks find, without refusing: a review shows them before the request is sent."""
        if self.preflight is None or not self.policy.preflight.enabled:
            return []
        report = self.preflight.check(plan=plan, request=request, policy=self.policy)
        unchecked = [Problem("(preflight)", f"not checked: {s}", "PreflightSkipped") for s in report.skipped]
        return [*report.problems, *report.notes, *unchecked]

    def validate(self, *, data: Any, caller: Caller) -> tuple[list[Problem], Review | None]:
        """Check a request as `submit` would, without a cloud call: every problem, by field (the portal's as-you-type check).

        The caller's right to ask for the team is the one authorisation function's (not audited:
        this runs on every keystroke); a refusal is reported at `team`.
        """
        try:
            request = parse_request(data)
        except InvalidInputError as exc:
            return exc.problems, None
        decision = self.guard.authorizer.authorize(caller, Act.REQUEST, team=request.team)
        problems = [] if decision.allowed else [Problem("team", decision.reason, decision.rule)]
        try:
            resolved = admit(request, self.policy, team_vcpus_in_use=self.store.team_vcpus(request.team))
            expiry_of(resolved, self.policy, now=self.clock())
        except InvalidInputError as exc:
            return [*problems, *exc.problems], None
        if problems:
            return problems, None
        now = self.clock()
        approval = ask(resolved, self.policy, requested_by=caller.oid, now=now, operation="create")
        plan = make_plan(resolved, self.policy)
        return [], Review(plan=plan, estimate=estimate(resolved, self.policy), approval=approval, preflight=[])

    def submit(
        self,
        *,
        request: WorkspaceRequest,
        caller: Caller,
        source: str,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
        reply_to: ChatConversation | None = None,
        preflight_budget_s: float | None = None,
    ) -> Submitted:
        """Authorise, admit, plan, record and start a request.

        Raises `ForbiddenError` or `NotFoundError` (the caller may not ask for this), `InvalidInputError`
        or `ConflictError`. The caller is decided first, by the one authorisation function, so that
        nothing about a team's requests is learnt by someone who may not act for it. Idempotency next: a key already used with the same body returns its request
        before policy, planning or pre-flight run (a replay must not be judged against a team that
        now includes the original), and with another body raises `IdempotencyKeyReused`. Keys are
        the door's own (`rest_key`, `queue_key`, chat's), so one door cannot take another's.
        `reply_to` is a chat conversation to tell at the end; `preflight_budget_s` bounds the
        pre-flight checks below the policy's timeout (chat doors must answer within seconds).
        """
        self.guard.require(caller, Act.REQUEST, team=request.team, door=source)
        digest = body_hash(request)
        if idempotency_key:
            existing = self.store.find_by_idempotency_key(idempotency_key)
            if existing is not None:
                if existing.body_hash != digest:
                    raise idempotency_key_reused(existing.id)
                return Submitted(existing, False)
        resolved = admit(request, self.policy, team_vcpus_in_use=self.store.team_vcpus(request.team))
        plan = make_plan(resolved, self.policy)
        self._confine(resolved, plan, caller=caller, source=source, budget_s=preflight_budget_s)
        warnings = self._preflight(plan, resolved, budget_s=preflight_budget_s)
        now = self.clock()
        expires_at = expiry_of(resolved, self.policy, now=now)
        # A request an approval rule catches is stored, planned and pre-flighted like any other, then waits:
        # no step is sent until enough approvers say yes (engine/approvals.py).
        approval = ask(resolved, self.policy, requested_by=caller.oid, now=now, operation="create")
        told = approval is not None and bool(resolved.callback_url or reply_to)
        n = plan.names
        record = RequestRecord(
            id=self.new_id(),
            status=RequestStatus.AWAITING_APPROVAL if approval else RequestStatus.ACCEPTED,
            approval=approval,
            estimate=approval.estimate if approval else estimate(resolved, self.policy),
            notification=Notification(about="approval") if told else None,
            team=request.team,
            environment=request.environment.value,
            workspace_name=n.workspace,
            workspace_key=f"{n.subscription_id}/{n.resource_group}/{n.workspace}".lower(),
            requester=caller.oid,
            requester_name=caller.name,
            source=source,
            request=resolved,
            plan=plan,
            idempotency_key=idempotency_key,
            body_hash=digest,
            traceparent=traceparent,
            reply_to=reply_to,
            warnings=[w.as_dict() for w in warnings],
            vcpus=team_vcpus(resolved, self.policy),
            expires_at=expires_at,
            revisions=[
                Revision(
                    number=1,
                    request=resolved,
                    by=caller.oid,
                    at=now,
                    run=1,
                    summary="created",
                    status="awaiting_approval" if approval else "applying",
                )
            ],
            created_at=now,
            updated_at=now,
        )
        steps = [
            StepRecord(request_id=record.id, step_id=s.id, kind=s.kind, depends_on=s.depends_on, updated_at=now)
            for s in plan.steps
        ]
        if approval is None:
            steps = self.engine.claimed_at_creation(steps)  # the first steps start in the write below
        try:
            # The team's figure is claimed in the same atomic write that creates the request: two
            # submissions racing past the check above cannot both take the team over its limit.
            record, created = self.store.create_request(record, steps, vcpu_limit=VcpuLimit(self.policy.max_team_vcpus))
        except LimitExceededError as exc:
            problem = vcpu_limit_problem(team=exc.team, asked=exc.asked, in_use=exc.in_use, limit=exc.limit)
            raise InvalidInputError([problem], title=POLICY_REFUSAL) from exc
        if created:
            self._emit(record, EventName.ACCEPTED, record.status.value)
            if record.status == RequestStatus.AWAITING_APPROVAL:
                if self.waiting is not None:
                    self.waiting(record, caller=caller.oid)
            else:
                self.engine.send_claimed(record, steps)
        return Submitted(record, created)

    def _confine(
        self, request: WorkspaceRequest, plan: Plan, *, caller: Caller, source: str, budget_s: float | None = None
    ) -> None:
        """Hold a resolved request to its team's scopes (DESIGN section 9), and record a refusal as a decision.

        A request that names another team's resource group is refused without a call to ARM; what
        ARM says of brought resources and of the workspace comes next, and every refusal is reported
        at once. Runs whatever the pre-flight settings say.
        """
        confine(
            self.confinement,
            self.guard,
            plan=plan,
            request=request,
            caller=caller,
            act=Act.REQUEST,
            door=source,
            budget_s=budget_s,
        )

    def _preflight(self, plan: Plan, request: WorkspaceRequest, *, budget_s: float | None = None) -> list[Problem]:
        """Check the plan against the cloud; refuse or warn as policy says."""
        settings = self.policy.preflight
        if self.preflight is None or not settings.enabled:
            return []
        policy = self.policy
        if budget_s is not None and budget_s < settings.timeout_s:
            policy = policy.model_copy(update={"preflight": settings.model_copy(update={"timeout_s": budget_s})})
        report = self.preflight.check(plan=plan, request=request, policy=policy)
        for what in report.skipped:
            log.warning("pre-flight check skipped: %s", what)
        if report.problems and settings.on_failure == "refuse":
            raise InvalidInputError(
                report.problems, title="The request cannot succeed in Azure as it stands (pre-flight checks)."
            )
        unchecked = [Problem("(preflight)", f"not checked: {s}", "PreflightSkipped") for s in report.skipped]
        return [*report.problems, *report.notes, *unchecked]

    def reject(
        self,
        *,
        raw: Any,
        problems: list[Problem],
        requester: str,
        source: str,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
        digest: str | None = None,
        under_team: bool = True,
    ) -> RequestRecord:
        """Record input that cannot be served as a `rejected` request, with every reason (secrets masked).

        `digest` is the body hash to keep (a parsed request's `body_hash`, so that a redelivery of the
        same input can be told from other input under the same key); by default the raw text's.
        `under_team=False` records it under no team: input from someone who may not act for the team
        it names is not put in that team's listing (only readers of every team see it).
        """
        now = self.clock()
        fields = raw if isinstance(raw, dict) else {}
        team = fields.get("team") if isinstance(fields.get("team"), str) and under_team else ""
        env = fields.get("environment") if isinstance(fields.get("environment"), str) else ""
        text = raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True, default=str)
        record = RequestRecord(
            id=self.new_id(),
            status=RequestStatus.REJECTED,
            team=str(team)[:64],
            environment=str(env)[:16],
            requester=requester,
            source=source,
            raw=redact(text[:32768]),
            problems=[{k: redact(v) for k, v in p.as_dict().items()} for p in problems],
            idempotency_key=idempotency_key,
            body_hash=digest or hashlib.sha256(text.encode()).hexdigest(),
            traceparent=traceparent,
            created_at=now,
            updated_at=now,
        )
        record, created = self.store.create_request(record, [])
        if created:
            self._emit(record, EventName.REJECTED, "rejected", message="; ".join(p.message for p in problems)[:1000])
        return record

    def onboard(
        self,
        *,
        body: bytes,
        message_id: str,
        sender: Caller | AuthenticationError,
        source: str = "queue",
        traceparent: str | None = None,
    ) -> list[RequestRecord]:
        """Handle one onboarding message from `sender`: a `WorkspaceRequest` or a `TeamOnboarding`.

        `sender` is who the message's token proves sent it (or why it proves nobody): a message
        without a valid sender, like one a sender may not send, is recorded as `rejected` with the
        reason, never retried and never lost. Each resulting request uses an idempotency key built
        from the message id (`queue_key`), so a redelivered message finds the requests it made the
        first time, whatever became of them, and counts as handled instead of making new ones.
        """
        who = sender.oid if isinstance(sender, Caller) else unproven_sender(body)
        key = queue_key(message_id, sender=who)
        data, parsed = _decode_onboarding(body)
        if isinstance(sender, AuthenticationError):
            problem = Problem(
                "(message)",
                f"the message does not say who sent it: {sender.reason}. Send it with the sender's access token "
                "for this API in the Authorization application property ('Bearer <token>').",
                "Unauthenticated",
            )
            return [self._reject_once(data, [problem], key=key, source=source, traceparent=traceparent)]
        if isinstance(parsed, InvalidInputError):
            return [
                self.reject(
                    raw=data,
                    problems=parsed.problems,
                    requester=sender.oid,
                    source=source,
                    idempotency_key=key,
                    traceparent=traceparent,
                )
            ]
        out = []
        for req in parsed:
            env_key = queue_key(message_id, req.environment.value, sender=sender.oid)
            # A redelivered message finds what its first delivery made, accepted or rejected: success.
            existing = self.store.find_by_idempotency_key(env_key)
            if existing is not None and existing.body_hash == body_hash(req):
                out.append(existing)
                continue
            if existing is not None:
                # The message id was used before for other input: not a redelivery, and not to be lost.
                problem = Problem(
                    "(message)",
                    f"message id '{message_id}' was already used for a different {req.environment.value} request "
                    f"({existing.id}); send this one with a new message id.",
                    "IdempotencyKeyReused",
                )
                out.append(
                    self.reject(
                        raw=req.model_dump(mode="json"),
                        problems=[problem],
                        requester=sender.oid,
                        source=source,
                        traceparent=traceparent,
                    )
                )
                continue
            try:
                submitted = self.submit(
                    request=req, caller=sender, source=source, idempotency_key=env_key, traceparent=traceparent
                )
                out.append(submitted.record)
            except (InvalidInputError, ConflictError, ForbiddenError, NotFoundError) as exc:
                # Refused by the authorisation function: the sender may not act for the team it names.
                not_its_team = isinstance(exc, NotFoundError | ForbiddenError) and not isinstance(exc, ConfinementError)
                out.append(
                    self.reject(
                        raw=req.model_dump(mode="json"),
                        problems=_problems_of(exc),
                        requester=sender.oid,
                        source=source,
                        idempotency_key=env_key,
                        traceparent=traceparent,
                        digest=body_hash(req),
                        under_team=not not_its_team,
                    )
                )
        return out

    def _reject_once(
        self, data: Any, problems: list[Problem], *, key: str, source: str, traceparent: str | None
    ) -> RequestRecord:
        """Reject a whole message under its own key: a redelivery finds the first rejection."""
        existing = self.store.find_by_idempotency_key(key)
        if existing is not None:
            return existing
        return self.reject(
            raw=data,
            problems=problems,
            requester="unknown",
            source=source,
            idempotency_key=key,
            traceparent=traceparent,
            under_team=False,  # nobody proven may fill a team's listing
        )

    def _emit(self, record: RequestRecord, name: EventName, status: str, message: str | None = None) -> None:
        self.events.emit(status_event(record, name, time=self.clock(), status=status, message=message))


def _problems_of(exc: InvalidInputError | ConflictError | ForbiddenError | NotFoundError) -> list[Problem]:
    """Say why a submission was refused, as the problems a rejected record keeps."""
    if isinstance(exc, InvalidInputError):
        return exc.problems
    if isinstance(exc, ConflictError):
        return [Problem("workspace_name", str(exc), exc.code)]
    if isinstance(exc, ForbiddenError):
        return exc.problems or [Problem("(caller)", str(exc), exc.rule)]
    return [Problem("(caller)", str(exc), "NotFound")]


def _decode_onboarding(body: bytes) -> tuple[Any, list[WorkspaceRequest] | InvalidInputError]:
    """Parse an onboarding message into requests; return the raw data, and requests or problems.

    `requested_by`, which older senders put in the body, is dropped: who sent a message is what its
    token proves, never what its body says.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = Problem("(body)", f"the message body is not JSON ({exc}); send a JSON object.", "json")
        return body.decode("utf-8", errors="replace"), InvalidInputError([problem])
    if not isinstance(data, dict):
        return data, InvalidInputError([Problem("(body)", "the message body must be a JSON object.", "type")])
    data.pop("requested_by", None)
    try:
        if data.get("kind") == "TeamOnboarding" or "environments" in data:
            return data, TeamOnboarding.model_validate(data).requests()
        return data, [parse_request(data)]
    except ValidationError as exc:
        return data, InvalidInputError(problems_from(exc))
    except InvalidInputError as exc:
        return data, exc
