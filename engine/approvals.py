"""Approval gates (docs/approvals.md): a request the policy's rules catch waits for named approvers.

A request (or a revision) that meets a rule is stored, planned and pre-flighted as any other, then
written `awaiting_approval` with the rules it met, who may approve for each, its estimated cost and a
due time; no step is sent, so nothing is made in the cloud. Approvers are asked in their channels
(the announcement goes through the notifications queue, so a crash never loses it) and decide from
any door; every decision is decided by the one authorisation function (`Act.APPROVE`: the
`Workspaces.Approve` role, membership of a rule's approver groups, and never the requester), is a
conditional write, and is an event with the approver's object id and reason.

- Enough approvals for every rule: a create starts (`accepted`, then its steps), a revision applies.
- One denial: a create ends `denied` and gives its name and vCPUs back; a revision is dropped and
  the workspace stays as it was.
- Past the due time: the same as a denial, ending `expired`.
- The requester may withdraw (cancel) a request that waits.

The requester is told each time through the request's own channels (callback, chat).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from engine.approval_rules import estimate, triggered
from engine.audit import Guard
from engine.authz import Act, ApprovalAsk, Decision
from engine.events import EventFanout, status_event
from engine.notify_message import notification_message
from engine.ports import ApprovalAnnouncer, OutgoingMessage, Sender, Store
from engine.steps import StepEngine, utcnow
from models.approvals import MAX_REASON, ApprovalDecision, ApprovalMessage, ApprovalState, ApproverChannels, Outcome
from models.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    Problem,
    StaleWriteError,
    TransientError,
)
from models.events import EventName
from models.identity import Caller
from models.policy import Policy
from models.records import ErrorInfo, Notification, RequestRecord, RequestStatus
from models.request import WorkspaceRequest
from models.settings import Settings

log = logging.getLogger(__name__)

SERVICE = "workspace-vending"
"""Who acts when the service itself does something (an expiry, a drift repair): named in events and revisions."""


def ask(
    request: WorkspaceRequest,
    policy: Policy,
    *,
    requested_by: str,
    now: datetime,
    operation: Literal["create", "update"],
    before: WorkspaceRequest | None = None,
    round_: int = 1,
) -> ApprovalState | None:
    """Return the approval a request needs (the rules it meets, its cost, when it expires), or None."""
    cost = estimate(request, policy)
    rules = triggered(request, policy, cost, before=before)
    if not rules:
        return None
    return ApprovalState(
        round=round_,
        operation=operation,
        requested_by=requested_by,
        requested_at=now,
        due_at=now + timedelta(hours=policy.approvals.timeout_hours),
        rules=rules,
        estimate=cost,
    )


def channels_for(policy: Policy, team: str) -> ApproverChannels:
    """Return where a team's approvers are asked: the team's own channels, else the platform's."""
    access = policy.teams.get(team)
    return access.approval_channels if access and access.approval_channels else policy.approvals.channels


def announcement(record: RequestRecord, *, kind: Literal["announce", "settle"]) -> OutgoingMessage:
    """Build the message that asks the approvers (announce) or tells them the outcome (settle)."""
    assert record.approval is not None
    round_ = record.approval.round
    tail = "announce" if kind == "announce" else f"settle/{record.approval.outcome}"
    return OutgoingMessage(
        message_id=f"{record.id}/approval/{round_}/{tail}",
        body=json.dumps({"request_id": record.id, "approval": round_, "kind": kind}).encode(),
        correlation_id=record.id,
        application_properties={
            "request_id": record.id,
            **({"traceparent": record.traceparent} if record.traceparent else {}),
        },
    )


def notice(record: RequestRecord) -> dict[str, Any]:
    """Return the record fields that tell the requester of an approval, when it has a channel to tell."""
    wanted = record.callback_url or record.reply_to
    return {"notification": Notification(about="approval")} if wanted else {}


def describe(state: ApprovalState) -> str:
    """Say in one line why a request waits and for whom."""
    parts = [f"{t.rule} ({'; '.join(t.reasons)})" for t in state.rules]
    cost = f"; {state.estimate.summary()}" if state.estimate else ""
    return f"waits for approval: {', '.join(parts)}{cost}"


@dataclass(frozen=True)
class Decided:
    """The request after a decision: what this call did (approve, deny, or nothing), and the outcome now."""

    record: RequestRecord
    recorded: bool
    outcome: Outcome
    still_needed: list[tuple[str, int]]


class Approvals:
    """Decide, list, expire and announce approvals; every decision goes through the one authorisation function."""

    def __init__(
        self,
        *,
        store: Store,
        engine: StepEngine,
        policy: Policy,
        events: EventFanout,
        guard: Guard,
        bus: Sender,
        settings: Settings,
        apply_revision: Callable[[RequestRecord, str], RequestRecord],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """`apply_revision(record, by)` writes the run of the revision an approval was waiting for (the lifecycle's)."""
        self.store = store
        self.engine = engine
        self.policy = policy
        self.events = events
        self.guard = guard
        self.bus = bus
        self.settings = settings
        self.apply_revision = apply_revision
        self.clock = clock

    # ----- who may decide -----------------------------------------------------------------------

    @staticmethod
    def question(record: RequestRecord) -> ApprovalAsk:
        """Return what the authorisation function is asked about a waiting request."""
        assert record.approval is not None
        return ApprovalAsk(
            requester=record.approval.requested_by,
            rules={t.rule: tuple(t.groups) for t in record.approval.rules},
            others=(record.requester,),  # a revision's approver is neither who asked for it nor who made the request
        )

    def _decide(self, record: RequestRecord, caller: Caller, *, door: str) -> Decision:
        return self.guard.decide(
            caller, Act.APPROVE, team=record.team, door=door, request_id=record.id, approval=self.question(record)
        )

    def _waiting(self, request_id: str, caller: Caller, *, door: str) -> tuple[RequestRecord, Decision]:
        """Return a request the caller may see, and the decision on whether it may approve it."""
        record = self.store.get_request(request_id)
        missing = f"there is no workspace request with id '{request_id}'."
        if record is None:
            raise NotFoundError(missing)
        readable = self.guard.decide(caller, Act.READ, team=record.team, door=door, request_id=record.id).allowed
        if record.approval is None:
            if not readable:
                raise NotFoundError(missing)
            raise ConflictError(f"request {record.id} needs no approval.", code="NoApprovalNeeded")
        decision = self._decide(record, caller, door=door)
        if not readable and not decision.allowed:
            raise NotFoundError(missing)
        return record, decision

    def pending(self, caller: Caller, *, door: str, limit: int = 200) -> list[RequestRecord]:
        """Return the requests waiting for approval that the caller may decide, oldest due first."""
        authority = self.guard.authorizer
        found: list[RequestRecord] = []
        cursor: str | None = None
        while len(found) < limit:
            page = self.store.list_requests(status=RequestStatus.AWAITING_APPROVAL, limit=200, cursor=cursor)
            for record in page.items:
                if record.approval is None or record.approval.outcome != "pending":
                    continue
                decision = authority.authorize(caller, Act.APPROVE, team=record.team, approval=self.question(record))
                if decision.allowed and not any(d.by == caller.oid for d in record.approval.decisions):
                    found.append(record)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return sorted(found, key=lambda r: r.approval.due_at if r.approval else r.created_at)[:limit]

    # ----- decisions ----------------------------------------------------------------------------

    def approve(self, request_id: str, *, caller: Caller, door: str, reason: str | None = None) -> Decided:
        """Record the caller's yes; once every rule has its approvals, start the run it was waiting for."""
        return self._record(request_id, caller=caller, door=door, decision="approve", reason=reason)

    def deny(self, request_id: str, *, caller: Caller, door: str, reason: str) -> Decided:
        """Record the caller's no, with a reason: a create ends denied, a revision is dropped."""
        text = (reason or "").strip()
        if not text:
            raise InvalidInputError(
                [Problem("reason", "say why the request is denied: the requester is told the reason.", "missing")]
            )
        return self._record(request_id, caller=caller, door=door, decision="deny", reason=text)

    def _record(
        self, request_id: str, *, caller: Caller, door: str, decision: Literal["approve", "deny"], reason: str | None
    ) -> Decided:
        if reason is not None and len(reason) > MAX_REASON:
            raise InvalidInputError(
                [Problem("reason", f"keep the reason to {MAX_REASON} characters ({len(reason)} sent).", "too_long")]
            )
        for _ in range(5):
            record, allowed = self._waiting(request_id, caller, door=door)
            state = record.approval
            assert state is not None
            if state.outcome != "pending" or record.status != RequestStatus.AWAITING_APPROVAL:
                mine = next((d for d in state.decisions if d.by == caller.oid), None)
                if mine is not None and mine.decision == decision:
                    return Decided(record, False, state.outcome, [])  # a repeat of this caller's own decision
                raise ConflictError(
                    f"request {record.id} is no longer waiting for approval: it was {state.outcome}{self._by(state)}.",
                    code="ApprovalSettled",
                )
            allowed.enforce()
            if self.clock() >= state.due_at:
                # Past its due time the request is expired, whether or not the timer has come by yet.
                try:
                    self._end(record, state, "expired", by=SERVICE, reason=f"not decided by {state.due_at.isoformat()}")
                except StaleWriteError:
                    continue
                raise ConflictError(
                    f"request {record.id} waited past {state.due_at.isoformat()} and expired; ask again.",
                    code="ApprovalSettled",
                )
            earlier = next((d for d in state.decisions if d.by == caller.oid), None)
            if earlier is not None:
                if earlier.decision == decision:
                    return Decided(record, False, state.outcome, [(t.rule, n) for t, n in state.missing()])
                raise ConflictError(
                    f"you already approved request {record.id}; a decision is not taken back. Ask another approver "
                    "to deny it, or its requester to withdraw it.",
                    code="AlreadyDecided",
                )
            now = self.clock()
            entry = ApprovalDecision(
                by=caller.oid,
                name=caller.name,
                decision=decision,
                reason=reason,
                at=now,
                door=door,
                rules=list(allowed.rules),
            )
            state = state.model_copy(update={"decisions": [*state.decisions, entry]})
            try:
                if decision == "deny":
                    return self._end(record, state, "denied", by=caller.oid, reason=reason)
                if state.satisfied:
                    return self._approved(record, state, by=caller.oid, reason=reason)
                written = self._write(record, approval=state)
            except StaleWriteError:
                continue  # another decision landed meanwhile: decide again on what it wrote
            except ConflictError as exc:
                if exc.code != "RequestChanged":
                    raise
                continue  # the same, through the lifecycle's write of a revision
            missing = [(t.rule, n) for t, n in state.missing()]
            self._emit(
                written,
                EventName.APPROVAL_GIVEN,
                caller=caller.oid,
                message=_with_reason(f"approved; still needed: {_needed(missing)}", reason),
            )
            return Decided(written, True, "pending", missing)
        raise ConflictError(
            f"request {request_id} kept changing while your decision was recorded; look at it again and repeat it.",
            code="RequestChanged",
        )

    @staticmethod
    def _by(state: ApprovalState) -> str:
        deciding = state.denial or (state.decisions[-1] if state.decisions else None)
        return f" by {deciding.name or deciding.by}" if deciding and state.outcome in ("approved", "denied") else ""

    def _write(self, record: RequestRecord, **update: Any) -> RequestRecord:
        return self.store.update_request(record.model_copy(update={**update, "updated_at": self.clock()}))

    def _approved(self, record: RequestRecord, state: ApprovalState, *, by: str, reason: str | None) -> Decided:
        now = self.clock()
        state = state.model_copy(update={"outcome": "approved", "decided_at": now})
        if state.operation == "update":
            assert state.change is not None
            # The lifecycle writes the revision's run (a conditional write of the record as read here); it starts below.
            written = self.apply_revision(record.model_copy(update={"approval": state, **notice(record)}), by)
        else:
            revisions = [
                r.model_copy(update={"status": "applying"}) if r.status == "awaiting_approval" else r
                for r in record.revisions
            ]
            written = self._write(
                record, status=RequestStatus.ACCEPTED, approval=state, revisions=revisions, **notice(record)
            )
        self._emit(written, EventName.APPROVED, caller=by, message=_with_reason("approved: the run starts", reason))
        self._tell(written)
        try:
            if state.operation == "create":
                self.engine.dispatch_ready(written)
            else:
                self.engine.start_run(written)
        except TransientError as exc:
            # Written and announced: the sweeper opens the run and sends its steps once the queue answers.
            log.warning("approved %s; its run starts with the sweeper: %s", written.id, exc)
        return Decided(self.store.get_request(written.id) or written, True, "approved", [])

    def _end(
        self,
        record: RequestRecord,
        state: ApprovalState,
        outcome: Literal["denied", "expired", "withdrawn"],
        *,
        by: str,
        reason: str | None,
    ) -> Decided:
        """End the wait without a run: a create ends (its name and vCPUs are given back), a revision is dropped."""
        now = self.clock()
        state = state.model_copy(update={"outcome": outcome, "decided_at": now})
        mark = {"denied": "denied", "expired": "expired", "withdrawn": "withdrawn"}[outcome]
        revisions = [
            r.model_copy(update={"status": mark}) if r.status == "awaiting_approval" else r for r in record.revisions
        ]
        if state.operation == "update":
            assert state.change is not None
            status = RequestStatus(state.change.resume)
            written = self._write(record, status=status, approval=state, revisions=revisions, **notice(record))
        else:
            status = {
                "denied": RequestStatus.DENIED,
                "expired": RequestStatus.EXPIRED,
                "withdrawn": RequestStatus.CANCELLED,
            }[outcome]
            error = {
                "denied": ("ApprovalDenied", f"denied by an approver: {reason}"),
                "expired": (
                    "ApprovalExpired",
                    f"nobody decided before {state.due_at.isoformat()}; ask again, or ask the approvers to decide "
                    "sooner.",
                ),
                "withdrawn": ("ApprovalWithdrawn", "withdrawn by its requester before approval; nothing was made."),
            }[outcome]
            written = self._write(
                record,
                status=status,
                approval=state,
                revisions=revisions,
                error=ErrorInfo(code=error[0], message=error[1]),
                expires_at=None,  # nothing was made: nothing to tear down when the expiry would have come
                **notice(record),
            )
        name = {
            "denied": EventName.DENIED,
            "expired": EventName.APPROVAL_EXPIRED,
            "withdrawn": EventName.APPROVAL_WITHDRAWN,
        }[outcome]
        self._emit(written, name, caller=by, message=reason)
        self._tell(written)
        return Decided(written, True, outcome, [])

    def withdraw(self, record: RequestRecord, *, caller: Caller) -> RequestRecord:
        """End a waiting request at its requester's (or a changer's) wish: the `cancel` of a request that waits."""
        assert record.approval is not None
        return self._end(record, record.approval, "withdrawn", by=caller.oid, reason="withdrawn").record

    # ----- waiting, telling -----------------------------------------------------------------------

    def waiting(self, record: RequestRecord, *, caller: str) -> None:
        """Announce a request that has just started waiting: the event, the approvers' message, the requester's notice."""
        assert record.approval is not None
        self._emit(record, EventName.APPROVAL_REQUESTED, caller=caller, message=describe(record.approval))
        self._tell(record)

    def _tell(self, record: RequestRecord) -> None:
        """Send what the record's approval now asks for: the approvers' messages, and the requester's notice."""
        state = record.approval
        if state is None:
            return
        try:
            if state.outcome == "pending":
                self.bus.send(self.settings.notifications_queue, announcement(record, kind="announce"))
            elif state.messages:
                self.bus.send(self.settings.notifications_queue, announcement(record, kind="settle"))
            if record.notification is not None and record.notification.about == "approval":
                self.bus.send(self.settings.notifications_queue, notification_message(record))
        except Exception as exc:  # noqa: BLE001 - the sweeper resends a pending notice; the announcement is logged
            log.warning("approval messages of %s not sent now: %s", record.id, exc)

    def announce(self, request_id: str, round_: int, *, announcer: ApprovalAnnouncer | None) -> str:
        """Post a waiting request's approval message to its approvers' channels, once per round; record what was posted."""
        record = self.store.get_request(request_id)
        if record is None or record.approval is None or record.approval.round != round_:
            return "nothing to announce"
        state = record.approval
        if state.announced:
            return "already announced"
        if state.outcome != "pending":
            return f"already {state.outcome}"
        channels = channels_for(self.policy, record.team)
        posted: list[ApprovalMessage] = []
        if announcer is not None and (channels.slack_channel or channels.teams_conversation):
            posted = announcer.announce(record, channels, f"{record.id}:approval:{round_}")
        for _ in range(5):
            try:
                written = self._write(
                    record,
                    approval=state.model_copy(update={"messages": [*state.messages, *posted], "announced": True}),
                )
            except StaleWriteError:
                fresh = self.store.get_request(request_id)
                if fresh is None or fresh.approval is None or fresh.approval.round != round_:
                    return "moved on"
                record, state = fresh, fresh.approval
                continue
            if posted and written.approval is not None and written.approval.outcome != "pending":
                # Decided while the messages were being posted: the decision found none to update, so do it now.
                self.settle(request_id, round_, announcer=announcer)
                return f"announced in {len(posted)} channels, and settled: {written.approval.outcome}"
            return f"announced in {len(posted)} channels"
        return "announced; not recorded"

    def settle(self, request_id: str, round_: int, *, announcer: ApprovalAnnouncer | None) -> str:
        """Update the approvers' messages of a decided round to say the outcome and who decided."""
        record = self.store.get_request(request_id)
        if record is None or record.approval is None or record.approval.round != round_:
            return "nothing to settle"
        if record.approval.outcome == "pending" or announcer is None:
            return "nothing to settle"
        errors = []
        for message in record.approval.messages:
            try:
                announcer.settle(record, message)
            except PermanentError as exc:
                errors.append(f"{message.platform}: {exc}")
        return "; ".join(errors) or f"settled {len(record.approval.messages)} messages"

    # ----- timeout ------------------------------------------------------------------------------

    def expire_due(self, *, limit: int = 100, announce_grace_s: float = 60.0) -> int:
        """End the requests that waited past their due time (`expired`); return how many.

        A waiting request whose approvers were not told within `announce_grace_s` (the process died
        between its write and the announcement's send) is announced again: the announcement's id is
        the round's, so one that was sent after all is dropped as a duplicate by the bus.
        """
        now = self.clock()
        ended = 0
        cursor: str | None = None
        while ended < limit:
            page = self.store.list_requests(status=RequestStatus.AWAITING_APPROVAL, limit=200, cursor=cursor)
            for record in page.items:
                state = record.approval
                if state is None or state.outcome != "pending":
                    continue
                silent = not state.announced and state.announce_error is None
                if silent and (now - state.requested_at).total_seconds() >= announce_grace_s and state.due_at > now:
                    try:
                        self.bus.send(self.settings.notifications_queue, announcement(record, kind="announce"))
                    except Exception as exc:  # noqa: BLE001 - the next tick tries again
                        log.warning("approval announcement of %s not sent now: %s", record.id, exc)
                if ended >= limit or state.due_at > now:
                    continue
                try:
                    self._end(record, state, "expired", by=SERVICE, reason=f"not decided by {state.due_at.isoformat()}")
                    ended += 1
                except StaleWriteError:
                    pass  # decided meanwhile: the next tick looks again
                except Exception as exc:  # noqa: BLE001 - one request must not stop the rest
                    log.warning("approval expiry of %s deferred: %s", record.id, exc)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return ended

    def _emit(self, record: RequestRecord, name: EventName, *, caller: str, message: str | None = None) -> None:
        event = status_event(record, name, time=self.clock(), status=record.status.value, message=message)
        self.events.emit(event.model_copy(update={"caller": caller, "act": "approve"}))


def _needed(missing: list[tuple[str, int]]) -> str:
    return ", ".join(f"{n} more for {rule}" for rule, n in missing) or "none"


def _with_reason(text: str, reason: str | None) -> str:
    return f"{text}: {reason}" if reason else text


__all__ = ["Approvals", "Decided", "announcement", "ask", "channels_for", "describe", "notice"]
