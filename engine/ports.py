"""The small interfaces the core needs; adapters implement them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from models.approvals import ApprovalMessage, ApproverChannels
from models.errors import Problem
from models.events import StatusEvent
from models.lifecycle import DriftFinding
from models.outcomes import Outcome
from models.plan import Plan, ResourceNames, Step
from models.policy import Policy
from models.records import ChatConversation, RequestRecord, RequestStatus, StepRecord
from models.request import WorkspaceRequest


@dataclass(frozen=True)
class Page:
    """One page of a listing; `next_cursor` is None on the last page."""

    items: list[RequestRecord]
    next_cursor: str | None


@dataclass(frozen=True)
class VcpuLimit:
    """The team limit a create must fit under: the record's `vcpus` are claimed against it atomically."""

    limit: int


class Store(Protocol):
    """Request and step records with conditional (versioned) writes."""

    def create_request(
        self, record: RequestRecord, steps: list[StepRecord], *, vcpu_limit: VcpuLimit | None = None
    ) -> tuple[RequestRecord, bool]:
        """Insert a request and its steps atomically; return (record, created).

        With an idempotency key already used for the same body, return that record and False; for
        another body raise `ConflictError(code="IdempotencyKeyReused")`. A workspace key held by a
        live request raises `ConflictError(code="WorkspaceNameTaken")`. With `vcpu_limit`, the
        record's `vcpus` are added to its team's stored figure in the same atomic act, or
        `LimitExceededError` is raised and nothing is created: concurrent creates of one team can
        never take it over the limit together.
        """
        ...

    def team_vcpus(self, team: str) -> int:
        """Return the vCPUs the team's live requests hold, from the stored figure."""
        ...

    def get_request(self, request_id: str) -> RequestRecord | None:
        """Return one request, or None."""
        ...

    def find_by_idempotency_key(self, key: str) -> RequestRecord | None:
        """Return the request made with this idempotency key, or None."""
        ...

    def workspace_owner(self, workspace_key: str) -> str | None:
        """Return the team of the first request ever recorded with this workspace key, or None.

        The key is compared lowercased (subscription/resource group/workspace). The first request
        counts whatever became of it later (failed, succeeded): the first owner stays the owner for
        good, so another team can never adopt a workspace this service made for a team, even after
        that team's request ended and its name claim was released. Rejected records name no
        workspace and never count. Confinement asks it (`engine.confinement.WorkspaceHistory`).
        """
        ...

    def list_requests(
        self,
        *,
        team: str | None = None,
        status: RequestStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """List requests newest first."""
        ...

    def live_requests(self, *, team: str) -> list[RequestRecord]:
        """Return the team's requests that hold resources (accepted, provisioning, succeeded)."""
        ...

    def update_request(self, record: RequestRecord) -> RequestRecord:
        """Write `record` if its version is still current; return it with the next version.

        A request that stops being live (failed, rejected) gives its vCPUs back to its team in the
        same write; one that becomes live again (an operator resumed it) holds them again.
        """
        ...

    def get_steps(self, request_id: str) -> list[StepRecord]:
        """Return every step of a request, in plan order."""
        ...

    def get_step(self, request_id: str, step_id: str) -> StepRecord | None:
        """Return one step, or None."""
        ...

    def update_step(self, step: StepRecord) -> StepRecord:
        """Write `step` if its version is still current (else `StaleWriteError`)."""
        ...

    def add_steps(self, request_id: str, steps: list[StepRecord]) -> None:
        """Add step records to an existing request (a revision's new steps), after its others in plan order.

        A step that already has a record is left as it is: adding is idempotent, so a run opened again
        after a crash adds only what is still missing.
        """
        ...

    def stalled_steps(self, *, before: datetime, limit: int = 500) -> list[StepRecord]:
        """Return the queued, waiting or running steps of unfinished requests due (or leased) before `before`.

        Steps of a finished request are left alone: the sweeper would not touch them anyway.
        """
        ...

    def unfinished_requests(self, *, before: datetime, limit: int = 500) -> list[RequestRecord]:
        """Return requests with a run in flight (`RequestStatus.in_flight`) last changed before `before`."""
        ...

    def pending_notifications(self, *, before: datetime, limit: int = 500) -> list[RequestRecord]:
        """Return finished requests, last changed before `before`, whose callback is still pending."""
        ...

    def append_event(self, event: StatusEvent) -> None:
        """Keep an event for the request's timeline."""
        ...

    def list_events(self, request_id: str) -> list[StatusEvent]:
        """Return a request's events, oldest first."""
        ...

    def remember_once(self, scope: str, key: str, *, now: datetime, until: datetime) -> bool:
        """Remember `key` in `scope` until `until`; True the first time, False while it is remembered.

        The replay guard of the chat doors: every instance shares it and it survives restarts. An
        entry whose `until` is not after `now` counts as never seen (it is taken over, and expired
        entries are purged lazily). Exactly one of concurrent callers with the same key gets True.
        """
        ...

    def take(self, bucket: str, *, now: datetime, limit: int, window_s: float) -> float | None:
        """Take one from `bucket`'s allowance of `limit` per `window_s` seconds (a sliding window).

        Return None when allowed (the taking is recorded), else the seconds until one is free again
        (Retry-After), and nothing is recorded. At most `limit` takes are allowed in any `window_s`
        seconds, across every instance; `limit` is 1 to 1000.
        """
        ...


@runtime_checkable
class Probe(Protocol):
    """A part that can check itself with one cheap read and write (the health check asks it)."""

    def probe(self) -> None:
        """Read and write once, now; raise `TransientError` (or `PermanentError`) saying what is wrong."""
        ...


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to send; `message_id` is what duplicate detection keys on."""

    message_id: str
    body: bytes
    correlation_id: str | None = None
    application_properties: dict[str, str] = field(default_factory=dict)
    scheduled_at: datetime | None = None


@dataclass
class ReceivedMessage:
    """A message under a peek-lock."""

    queue: str
    message_id: str
    body: bytes
    correlation_id: str | None
    application_properties: dict[str, str]
    delivery_count: int
    lock_token: str
    locked_until: datetime
    enqueued_at: datetime


@dataclass(frozen=True)
class DeadLetter:
    """A message moved aside, with why."""

    queue: str
    message_id: str
    body: bytes
    reason: str
    description: str
    delivery_count: int
    dead_lettered_at: datetime
    application_properties: dict[str, str] = field(default_factory=dict)
    enqueued_at: datetime | None = None  # when the bus took the message in (its sender's token was checked then)
    sequence: int | None = None  # the bus's own number for this message: tells apart letters with one message id


class Sender(Protocol):
    """What the core needs of a bus: send a message, perhaps for later."""

    def send(self, queue: str, message: OutgoingMessage) -> None:
        """Send one message (dropped silently by the bus if its id was seen in the duplicate window)."""
        ...


class Bus(Sender, Protocol):
    """A queueing bus with peek-lock semantics (what workers need)."""

    def receive(self, queue: str, *, max_messages: int = 1) -> list[ReceivedMessage]:
        """Lock and return up to `max_messages` available messages."""
        ...

    def complete(self, message: ReceivedMessage) -> None:
        """Remove a locked message for good."""
        ...

    def abandon(self, message: ReceivedMessage) -> None:
        """Release the lock so the message is delivered again."""
        ...

    def dead_letter(self, message: ReceivedMessage, *, reason: str, description: str) -> None:
        """Move a locked message to the dead-letter queue with a reason."""
        ...

    def dead_letters(self, queue: str) -> list[DeadLetter]:
        """Return the queue's dead-lettered messages."""
        ...

    def remove_dead_letter(self, queue: str, message_id: str, *, sequence: int | None = None) -> bool:
        """Remove one dead letter (after it was replayed or dealt with); False when there is none.

        With `sequence`, exactly that letter: message ids are the sender's and may repeat.
        """
        ...


class Membership(Protocol):
    """Group membership, for callers whose token could not list their groups (overage) and for role targets."""

    def member_groups(self, *, principal: str, groups: list[str]) -> frozenset[str]:
        """Return which of `groups` the principal belongs to, transitively (Graph `checkMemberGroups`)."""
        ...


class Notifier(Protocol):
    """Where finished requests are announced (a requester's callback URL)."""

    def post(self, url: str, payload: dict[str, Any], delivery_id: str = "") -> None:
        """Deliver one payload; raise `TransientError` to be retried, `PermanentError` to give up.

        `delivery_id` is the same for every attempt at one notification: receivers deduplicate on it.
        """
        ...


class ChatPoster(Protocol):
    """Where a chat-made request's result is posted (the Slack or Teams conversation it came from)."""

    def post(self, reply_to: ChatConversation, reply: Any, delivery_id: str) -> None:
        """Post one reply; raise `TransientError` to be retried, `PermanentError` to give up."""
        ...


class ApprovalAnnouncer(Protocol):
    """Where approvers are asked: the approvers' Slack channel and Teams channel (docs/approvals.md)."""

    def announce(self, record: RequestRecord, channels: ApproverChannels, delivery_id: str) -> list[ApprovalMessage]:
        """Post the approval message of a waiting request to each channel named; return what was posted.

        Raise `TransientError` to be tried again (nothing is recorded until every channel took it: a
        retry may post again, carrying the same `delivery_id`), `PermanentError` to give up.
        """
        ...

    def settle(self, record: RequestRecord, message: ApprovalMessage) -> None:
        """Update a posted approval message to show the outcome and who decided."""
        ...


class EventSink(Protocol):
    """Where status events go (log file, store, Azure Monitor)."""

    def emit(self, event: StatusEvent) -> None:
        """Record one event; may raise, the caller keeps going."""
        ...


@dataclass(frozen=True)
class StepContext:
    """What a reconcile knows besides its step: the names and its prerequisites' outputs."""

    request_id: str
    names: ResourceNames
    attempt: int  # the step's attempt within the current run: 1 the first time this run works on it
    step_started_at: datetime | None = None
    # An earlier claim of this same attempt ended without recording its outcome (a worker died, or its lease
    # ran out), so it may have acted on the cloud: the step was found running, not queued or waiting.
    resumed: bool = False
    # The step's record ran in an earlier run of the request (a revision, a retry, a repair): what it made then
    # may be there now, made by this service.
    ran_before: bool = False
    dependency_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class PreflightReport:
    """What the pre-flight checks found: problems, notes worth telling, and checks that could not run."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class Preflight(Protocol):
    """Quick checks against the cloud that tell whether a plan can succeed."""

    def check(self, *, plan: Plan, request: WorkspaceRequest, policy: Policy) -> PreflightReport:
        """Check the plan; never take longer than the policy's pre-flight timeout."""
        ...


class Cloud(Protocol):
    """The cloud: one reconcile per step kind, and a read-only look for drift."""

    def reconcile(self, step: Step, ctx: StepContext) -> Outcome:
        """Bring the step's resource towards its desired state and say where it stands.

        A step whose `action` is `delete` is brought towards gone: `Wait` while Azure deletes,
        `Done` with a `models.lifecycle.DeleteResult` (as JSON) once it is gone, soft-deleted or
        kept on purpose, `Fail` naming what blocks it (a `CanNotDelete` lock: code `ScopeLocked`).
        """
        ...

    def inspect(self, step: Step, ctx: StepContext) -> list[DriftFinding]:
        """Read the step's resource and say how it differs from the step's spec; change nothing.

        `ctx.dependency_outputs` holds the outputs of the step's own record (key: the step's id)
        and of its prerequisites. Raises `TransientError` when the cloud cannot be read now.
        """
        ...
