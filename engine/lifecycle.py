"""A workspace's life after its create (DESIGN section 10): revise, cancel, retry, extend, tear down, expire, drift.

Every act is decided by the one authorisation function (`Act.CHANGE` on the request's team; a
request of a team the caller cannot read is "not found"), written as a conditional update of the
request's record, and run by the step engine as a plan. Each is idempotent: asking twice for the
same thing finds it done or under way and answers with the request as it stands.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from engine import revise
from engine.approval_rules import estimate
from engine.approvals import SERVICE, ask
from engine.audit import Guard
from engine.authz import Act
from engine.confinement import Confinement, confine
from engine.events import EventFanout, status_event
from engine.expiry import expiry_of, expiry_problems
from engine.notify_message import notification_message
from engine.planner import plan as make_plan
from engine.policy import POLICY_REFUSAL, admit, team_vcpus, vcpu_limit_problem
from engine.ports import Cloud, Sender, StepContext, Store
from engine.steps import StepEngine, utcnow
from models.approvals import ApprovalState, PendingRevision
from models.errors import ConflictError, InvalidInputError, NotFoundError, Problem, StaleWriteError
from models.events import EventName
from models.identity import Caller
from models.lifecycle import DriftFinding, DriftReport, PlanDiff, Remaining, Revision, TeardownReport
from models.plan import Plan, Step
from models.policy import Policy
from models.records import Notification, RequestRecord, RequestStatus
from models.request import WorkspaceRequest, parse_request
from models.settings import Settings

if TYPE_CHECKING:
    from engine.approvals import Approvals

log = logging.getLogger(__name__)


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7396 JSON Merge Patch: objects merge key by key, null removes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass(frozen=True)
class Revised:
    """What a merge patch would do: the new request, its plan, and the change per resource."""

    request: WorkspaceRequest
    plan: Plan
    base: Plan
    changes: PlanDiff
    expires_at: datetime | None


@dataclass(frozen=True)
class Changed:
    """The request after an act, and whether the act started a run (False: nothing to do, or already done)."""

    record: RequestRecord
    started: bool
    changes: PlanDiff | None = None


class Lifecycle:
    """Revise, cancel, retry, extend and tear down requests; expire them and look for drift on timers."""

    def __init__(
        self,
        *,
        store: Store,
        engine: StepEngine,
        policy: Policy,
        events: EventFanout,
        guard: Guard,
        confinement: Confinement,
        cloud: Callable[[], Cloud],
        bus: Sender,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.engine = engine
        self.policy = policy
        self.events = events
        self.guard = guard
        self.confinement = confinement
        self._cloud = cloud
        self.bus = bus
        self.settings = settings
        self.clock = clock
        self.approvals: Approvals | None = None  # set once both are built (composition.py): approvals start runs here

    # ----- whose request ------------------------------------------------------------------------

    def _own(self, request_id: str, caller: Caller, *, door: str) -> RequestRecord:
        """Return a request the caller may change: another team's is 'not found', a forbidden change 403."""
        record = self.store.get_request(request_id)
        missing = f"there is no workspace request with id '{request_id}'."
        if record is None:
            raise NotFoundError(missing)
        if not self.guard.decide(caller, Act.READ, team=record.team, door=door, request_id=record.id).allowed:
            raise NotFoundError(missing)
        self.guard.require(caller, Act.CHANGE, team=record.team, door=door, request_id=record.id)
        if record.status == RequestStatus.REJECTED:
            raise ConflictError(
                f"request {record.id} was rejected and made nothing; submit a new request instead.",
                code="RequestRejected",
            )
        if _never_approved(record):
            # Never approved, nothing made: a retry or a revision must not provision it past its approvers.
            raise ConflictError(
                f"request {record.id} was {record.approval.outcome if record.approval else 'ended'} before approval "
                "and made nothing; submit a new request instead.",
                code="RequestNotApproved",
            )
        return record

    def _write(self, record: RequestRecord, **update: Any) -> RequestRecord:
        try:
            return self.store.update_request(record.model_copy(update={**update, "updated_at": self.clock()}))
        except StaleWriteError as exc:
            raise ConflictError(
                f"request {record.id} changed while this was being done; look at it again and repeat the call.",
                code="RequestChanged",
            ) from exc

    def _emit(
        self, record: RequestRecord, name: EventName, status: str, *, caller: str, message: str | None = None
    ) -> None:
        event = status_event(record, name, time=self.clock(), status=status, message=message)
        self.events.emit(event.model_copy(update={"caller": caller}))

    # ----- revisions ----------------------------------------------------------------------------

    def revise(self, record: RequestRecord, patch: Mapping[str, Any], *, caller: Caller) -> Revised:
        """Apply a merge patch to the request, check it like a new one, and say what would change; nothing is done."""
        if not isinstance(patch, Mapping):
            raise InvalidInputError(
                [Problem("(body)", "send a JSON object: a merge patch (RFC 7396) of the request.", "type")]
            )
        # The profile was expanded when the request was accepted: its compute and datastores are in the
        # request now, so a patch can remove them (a patch that names a profile again adds its presets).
        url = patch.get("callback_url")
        if isinstance(url, str) and url.rstrip("/").endswith("/***"):
            raise InvalidInputError(
                [
                    Problem(
                        "callback_url",
                        "this is the masked URL GET shows, not the callback itself: send the full URL, or leave "
                        "callback_url out of the patch to keep the one the request has.",
                        "MaskedValue",
                    )
                ]
            )
        assert record.request is not None  # rejected requests are refused before (`_own`)
        base_request = {k: v for k, v in record.request.model_dump(mode="json").items() if k != "profile"}
        merged = merge_patch(base_request, patch)
        new = parse_request(merged)
        old = record.request
        in_use = self.store.team_vcpus(record.team) - (record.vcpus if record.status.live else 0)
        resolved = admit(new, self.policy, team_vcpus_in_use=max(0, in_use))
        desired = make_plan(resolved, self.policy)
        assert record.plan is not None
        base = record.applied or revise.desired_of(record.plan)
        problems = revise.fixed_field_problems(old, resolved, base, desired)
        if problems:
            raise InvalidInputError(problems, title="Azure cannot make these changes in place.")
        now = self.clock()
        expires_at = record.expires_at
        if "expires_at" in patch:
            # A removed expiry falls back to the environment's default: never further than policy allows.
            expires_at = expiry_of(resolved, self.policy, now=now)
        confine(
            self.confinement,
            self.guard,
            plan=desired,
            request=resolved,
            caller=caller,
            act=Act.CHANGE,
            door="rest",
            request_id=record.id,
        )
        records = {s.step_id: s for s in self.store.get_steps(record.id)}
        changes = revise.diff(base, desired, records).model_copy(update={"revision": record.revision + 1})
        return Revised(request=resolved, plan=desired, base=base, changes=changes, expires_at=expires_at)

    def _reclaim(self, record: RequestRecord, vcpus: int) -> None:
        """Refuse to make a failed or cancelled request live again over another's name, or over the team's limit.

        A request that is not live has given its workspace name and vCPUs back; while it was not,
        another request may have taken the name. Checked here before the write (not atomically with it).
        """
        if record.status.live:
            return
        holder = next(
            (
                r
                for r in self.store.live_requests(team=record.team)
                if r.id != record.id and r.workspace_key == record.workspace_key
            ),
            None,
        )
        if holder is not None:
            raise ConflictError(
                f"workspace '{record.workspace_name}' is now held by request {holder.id}; this request cannot "
                "take it back. Delete this one (DELETE removes what it made), or change that one.",
                code="WorkspaceNameTaken",
                existing_id=holder.id,
            )
        in_use = self.store.team_vcpus(record.team)
        if vcpus and in_use + vcpus > self.policy.max_team_vcpus:
            problem = vcpu_limit_problem(team=record.team, asked=vcpus, in_use=in_use, limit=self.policy.max_team_vcpus)
            raise InvalidInputError([problem], title=POLICY_REFUSAL)

    def preview(self, request_id: str, patch: Mapping[str, Any], *, caller: Caller, door: str) -> PlanDiff:
        """Say what a merge patch would change, resource by resource; nothing is created, changed or deleted."""
        record = self._own(request_id, caller, door=door)
        self._revisable(record)
        revised = self.revise(record, patch, caller=caller)
        if revised.changes.empty:
            return revised.changes
        wait = ask(
            revised.request,
            self.policy,
            requested_by=caller.oid,
            now=self.clock(),
            operation="update",
            before=record.request,
        )
        rules = [f"{t.rule}: {'; '.join(t.reasons)}" for t in wait.rules] if wait else []
        return revised.changes.model_copy(update={"approval": rules})

    def _revisable(self, record: RequestRecord) -> None:
        if record.status == RequestStatus.AWAITING_APPROVAL:
            raise ConflictError(
                f"request {record.id} is waiting for approval: wait for the decision, or withdraw it "
                f"(POST /api/workspaces/{record.id}/cancel), then send the change again.",
                code="AwaitingApproval",
            )
        if record.status.in_flight:
            raise ConflictError(
                f"request {record.id} is {record.status.value}: wait for it to end, or cancel it "
                f"(POST /api/workspaces/{record.id}/cancel), then send the change again.",
                code="RequestInFlight",
            )
        if record.operation == "delete" or record.status == RequestStatus.DELETED:
            raise ConflictError(
                f"request {record.id} is being torn down or was ({record.status.value}); a torn-down workspace "
                "cannot be changed. Ask for a new one.",
                code="RequestDeleted",
            )

    def update(self, request_id: str, patch: Mapping[str, Any], *, caller: Caller, door: str) -> Changed:
        """Apply a merge patch as a new revision: re-plan, refuse what Azure cannot change, run the rest."""
        record = self._own(request_id, caller, door=door)
        self._revisable(record)
        revised = self.revise(record, patch, caller=caller)
        request = revised.request
        if revised.changes.empty and request == record.request and revised.expires_at == record.expires_at:
            return Changed(record, False, revised.changes)
        if revised.changes.empty:
            # Nothing in Azure changes (the expiry, the callback URL): written without a run.
            written = self._write(
                record,
                request=request,
                expires_at=revised.expires_at,
                **({"reminded_at": None} if revised.expires_at != record.expires_at else {}),
            )
            if revised.expires_at != record.expires_at:
                when = revised.expires_at.isoformat() if revised.expires_at else "never"
                self._emit(written, EventName.EXPIRY_EXTENDED, written.status.value, caller=caller.oid, message=when)
            return Changed(written, False, revised.changes)
        vcpus = team_vcpus(revised.request, self.policy)
        self._reclaim(record, vcpus)
        now = self.clock()
        number = record.revision + 1
        change = PendingRevision(
            number=number,
            request=revised.request,
            plan=revise.revision_plan(revised.base, revised.plan, revised.changes),
            base=revised.base,
            changes=revised.changes,
            expires_at=revised.expires_at,
            sets_expiry=revised.expires_at != record.expires_at,
            vcpus=vcpus,
            summary=revised.changes.summary(),
            resume=record.status.value,  # type: ignore[arg-type]  # _revisable: succeeded, failed or cancelled
        )
        # A revision that raises what an approval rule measures waits, as a new request would (docs/approvals.md).
        approval = ask(
            revised.request,
            self.policy,
            requested_by=caller.oid,
            now=now,
            operation="update",
            before=record.request,
            round_=record.approval.round + 1 if record.approval else 1,
        )
        if approval is not None:
            return Changed(
                self._wait(record, approval.model_copy(update={"change": change}), caller=caller),
                False,
                revised.changes,
            )
        written = self._apply(record, change, by=caller.oid, author=caller.oid)
        return Changed(self.engine.start_run(written), True, revised.changes)

    def _wait(self, record: RequestRecord, approval: ApprovalState, *, caller: Caller) -> RequestRecord:
        """Write a revision that waits for approval: the workspace stays as it is until approvers say yes."""
        assert approval.change is not None
        change = approval.change
        revision = Revision(
            number=change.number,
            request=change.request,
            by=caller.oid,
            at=approval.requested_at,
            run=record.run + 1,
            summary=change.summary,
            status="awaiting_approval",
        )
        told = bool(record.callback_url or record.reply_to)
        written = self._write(
            record,
            status=RequestStatus.AWAITING_APPROVAL,
            approval=approval,
            revisions=[*record.revisions, revision],
            **({"notification": Notification(about="approval")} if told else {}),
        )
        self._emit(
            written,
            EventName.UPDATE_REQUESTED,
            written.status.value,
            caller=caller.oid,
            message=f"revision {change.number}: {change.summary}; waits for approval",
        )
        if self.approvals is not None:
            self.approvals.waiting(written, caller=caller.oid)
        return written

    def apply_pending(self, record: RequestRecord, by: str) -> RequestRecord:
        """Write the run of the revision an approval waited for (the record carries the approval, now approved).

        The team's vCPU limit is checked again: other requests may have taken vCPUs while it waited.
        The caller starts the run (`StepEngine.start_run`).
        """
        assert record.approval is not None
        change = record.approval.change
        assert change is not None
        in_use = self.store.team_vcpus(record.team) - (record.vcpus if record.status.live else 0)
        if change.vcpus > record.vcpus and in_use + change.vcpus > self.policy.max_team_vcpus:
            limit = self.policy.max_team_vcpus
            problem = vcpu_limit_problem(team=record.team, asked=change.vcpus, in_use=in_use, limit=limit)
            raise InvalidInputError([problem], title=POLICY_REFUSAL)
        return self._apply(record, change, by=by, author=record.approval.requested_by)

    def _apply(self, record: RequestRecord, change: PendingRevision, *, by: str, author: str) -> RequestRecord:
        """Write a revision's run on the request (its run starts next): `author` asked for it, `by` starts it."""
        now = self.clock()
        expires_at = change.expires_at if change.sets_expiry else record.expires_at
        run = record.run + 1
        revision = Revision(
            number=change.number,
            request=change.request,
            by=author,
            at=now,
            run=run,
            summary=change.summary,
        )
        earlier = [
            r.model_copy(update={"status": "superseded"}) if r.status == "applying" else r
            for r in record.revisions
            if r.status != "awaiting_approval"
        ]
        written = self._write(
            record,
            status=RequestStatus.UPDATING,
            operation="update",
            run=run,
            revision=change.number,
            revisions=[*earlier, revision],
            request=change.request,
            plan=change.plan,
            applied=change.base,
            vcpus=change.vcpus,
            estimate=estimate(change.request, self.policy),
            # An extension made while the revision waited stands, unless the revision itself set the expiry.
            expires_at=expires_at,
            **({"reminded_at": None} if expires_at != record.expires_at else {}),
            error=None,
            **(
                {}
                if record.notification is not None and record.notification.about == "approval"
                else {"notification": None}
            ),
        )
        self._emit(
            written,
            EventName.UPDATE_REQUESTED,
            "updating",
            caller=by,
            message=f"revision {change.number}: {change.summary}",
        )
        return written

    def revisions(self, request_id: str, *, caller: Caller, door: str) -> tuple[RequestRecord, list[Revision]]:
        """Return the request's revisions, oldest first (readable by whoever may read the request)."""
        record = self.store.get_request(request_id)
        if (
            record is None
            or not self.guard.decide(caller, Act.READ, team=record.team, door=door, request_id=request_id).allowed
        ):
            raise NotFoundError(f"there is no workspace request with id '{request_id}'.")
        return record, record.revisions

    # ----- cancel and retry ---------------------------------------------------------------------

    def cancel(self, request_id: str, *, caller: Caller, door: str) -> Changed:
        """Stop a run in flight: nothing new starts, running steps finish their current call, then it is cancelled."""
        record = self._own(request_id, caller, door=door)
        if record.status == RequestStatus.AWAITING_APPROVAL and self.approvals is not None:
            # Withdrawn before approval: a create ends cancelled having made nothing; a revision is dropped.
            return Changed(self.approvals.withdraw(record, caller=caller), False)
        if record.status in (RequestStatus.CANCELLING, RequestStatus.CANCELLED):
            return Changed(record, False)
        if not record.status.in_flight:
            raise ConflictError(
                f"request {record.id} is {record.status.value}: nothing is in flight to cancel.", code="NothingToCancel"
            )
        self._emit(record, EventName.CANCEL_REQUESTED, "cancelling", caller=caller.oid)
        return Changed(self.engine.cancel(record), True)

    def retry(self, request_id: str, *, caller: Caller, door: str) -> Changed:
        """Resume a failed or cancelled request from the steps that did not succeed (succeeded ones stay)."""
        record = self._own(request_id, caller, door=door)
        if record.status.in_flight:
            return Changed(record, False)
        if record.status not in (RequestStatus.FAILED, RequestStatus.CANCELLED):
            raise ConflictError(
                f"request {record.id} is {record.status.value}: only a failed or cancelled request is retried.",
                code="NothingToRetry",
            )
        self._reclaim(record, record.vcpus)
        self._emit(
            record, EventName.RETRY_REQUESTED, "retrying", caller=caller.oid, message=f"run {record.run} resumed"
        )
        return Changed(self.engine.retry(record), True)

    # ----- teardown -----------------------------------------------------------------------------

    def delete(self, request_id: str, *, caller: Caller, door: str, purge: bool | None = None) -> Changed:
        """Tear the workspace down in the reverse order of creation; what the team brought is never deleted."""
        record = self._own(request_id, caller, door=door)
        return self._teardown(record, by=caller.oid, purge=purge)

    def _shared(self, record: RequestRecord) -> dict[str, str]:
        """Return the resources (lowercased ids) the team's other live requests use, with which request."""
        found: dict[str, str] = {}
        for other in self.store.live_requests(team=record.team):
            if other.id == record.id:
                continue
            for plan in (other.applied, other.plan):
                for rid in revise.resource_ids(plan) if plan else set():
                    found.setdefault(rid, other.id)
        return found

    def teardown_preview(self, record: RequestRecord, *, purge: bool) -> tuple[Plan, list[tuple[Step, str]]]:
        """Return the plan a teardown of the request would run now, and what it would keep and why."""
        assert record.plan is not None
        return revise.teardown_plan(record.applied, record.plan, purge=purge, shared=self._shared(record))

    def _teardown(self, record: RequestRecord, *, by: str, purge: bool | None, reason: str | None = None) -> Changed:
        if record.status in (RequestStatus.DELETING, RequestStatus.DELETED):
            return Changed(record, False)
        if record.status == RequestStatus.AWAITING_APPROVAL:
            raise ConflictError(
                f"request {record.id} is waiting for approval: withdraw it first "
                f"(POST /api/workspaces/{record.id}/cancel), then DELETE it if it made anything.",
                code="AwaitingApproval",
            )
        if record.status.in_flight:
            raise ConflictError(
                f"request {record.id} is {record.status.value}: cancel it first "
                f"(POST /api/workspaces/{record.id}/cancel), then DELETE it.",
                code="RequestInFlight",
            )
        assert record.plan is not None
        purge = self.policy.lifecycle.purge_on_delete if purge is None else purge
        plan, kept = self.teardown_preview(record, purge=purge)
        report = TeardownReport(
            purge=purge,
            kept=[Remaining(step_id=s.id, kind=s.kind, resource_id=s.resource_id, reason=why) for s, why in kept],
        )
        applied = record.applied or (revise.desired_of(record.plan) if record.operation != "delete" else None)
        written = self._write(
            record,
            status=RequestStatus.DELETING,
            operation="delete",
            run=record.run + 1,
            plan=plan,
            applied=applied,
            teardown=report,
            error=None,
            notification=None,
        )
        self._emit(
            written,
            EventName.DELETE_REQUESTED,
            "deleting",
            caller=by,
            message=reason or f"teardown of {len(plan.steps)} resources ({'purging' if purge else 'soft-deleting'})",
        )
        return Changed(self.engine.start_run(written), True)

    # ----- expiry -------------------------------------------------------------------------------

    def extend(self, request_id: str, *, caller: Caller, door: str, expires_at: datetime) -> RequestRecord:
        """Move a workspace's expiry, within the environment's policy."""
        record = self._own(request_id, caller, door=door)
        if record.operation == "delete" or record.status == RequestStatus.DELETED:
            raise ConflictError(f"request {record.id} is torn down or being torn down.", code="RequestDeleted")
        problems = expiry_problems(expires_at, self.policy, record.environment, now=self.clock())
        if problems:
            raise InvalidInputError(problems, title=POLICY_REFUSAL)
        if record.expires_at == expires_at:
            return record
        return self._extended(record, expires_at, caller=caller.oid)

    def _extended(self, record: RequestRecord, expires_at: datetime | None, *, caller: str) -> RequestRecord:
        written = self._write(record, expires_at=expires_at, reminded_at=None)
        when = expires_at.isoformat() if expires_at else "never"
        self._emit(written, EventName.EXPIRY_EXTENDED, written.status.value, caller=caller, message=f"expires {when}")
        return written

    def expire_due(self, *, limit: int = 100) -> int:
        """Remind requesters of coming expiries and tear down what has expired; return how many were acted on."""
        now = self.clock()
        acted = 0
        for record in self._settled_with_expiry():
            if acted >= limit:
                break
            assert record.expires_at is not None
            try:
                if record.expires_at <= now:
                    self._teardown(record, by=SERVICE, purge=None, reason=f"expired at {record.expires_at.isoformat()}")
                    self._emit(record, EventName.EXPIRED, "deleting", caller=SERVICE)
                    acted += 1
                elif record.reminded_at is None:
                    rules = self.policy.lifecycle.expiry.get(record.environment)  # type: ignore[call-overload]
                    ahead = timedelta(days=rules.remind_days if rules else 3.0)
                    pending = record.notification is not None and not record.notification.done
                    if record.expires_at - ahead <= now and not pending:  # a result not yet told goes first
                        self._remind(record, now=now)
                        acted += 1
            except Exception as exc:  # noqa: BLE001 - one request that cannot be acted on must not stop the rest
                log.warning("expiry of %s deferred: %s", record.id, exc)
        return acted

    def _settled_with_expiry(self) -> list[RequestRecord]:
        found: list[RequestRecord] = []
        for status in (RequestStatus.SUCCEEDED, RequestStatus.FAILED, RequestStatus.CANCELLED):
            cursor: str | None = None
            while True:
                page = self.store.list_requests(status=status, limit=200, cursor=cursor)
                found += [
                    r
                    for r in page.items
                    if r.expires_at is not None and r.operation != "delete" and not _never_approved(r)
                ]
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
        return sorted(found, key=lambda r: r.expires_at or self.clock())

    def _remind(self, record: RequestRecord, *, now: datetime) -> None:
        wanted = record.callback_url or record.reply_to
        written = self._write(
            record, reminded_at=now, **({"notification": Notification(about="expiry")} if wanted else {})
        )
        assert written.expires_at is not None
        days = (written.expires_at - now).total_seconds() / 86400
        self._emit(
            written,
            EventName.EXPIRY_REMINDED,
            written.status.value,
            caller=SERVICE,
            message=f"expires {written.expires_at.isoformat()} (in {days:.1f} days); extend it with "
            f"POST /api/workspaces/{written.id}/extend",
        )
        if wanted:
            self.bus.send(self.settings.notifications_queue, notification_message(written))

    # ----- drift --------------------------------------------------------------------------------

    def request_drift_check(self, request_id: str, *, caller: Caller, door: str) -> RequestRecord:
        """Ask for the request's drift check at the next tick of the drift timer (it reads the cloud, not HTTP)."""
        record = self._own(request_id, caller, door=door)
        if record.status != RequestStatus.SUCCEEDED:
            raise ConflictError(
                f"request {record.id} is {record.status.value}: drift is checked on succeeded workspaces only.",
                code="NotSucceeded",
            )
        report = record.drift or DriftReport(checked_at=record.updated_at)
        return self._write(record, drift=report.model_copy(update={"requested": True}))

    def check_drift(self, *, limit: int = 20) -> int:
        """Compare succeeded workspaces that are due with the cloud (read-only); record, announce and repair drift."""
        interval = self.policy.lifecycle.drift_interval_s
        now = self.clock()
        checked = 0
        cursor: str | None = None
        while checked < limit:
            page = self.store.list_requests(status=RequestStatus.SUCCEEDED, limit=200, cursor=cursor)
            for record in page.items:
                if checked >= limit:
                    break
                last = record.drift.checked_at if record.drift else record.updated_at
                forced = record.drift is not None and record.drift.requested
                if not forced and (interval <= 0 or (now - last).total_seconds() < interval):
                    continue
                try:
                    self.check_one(record)
                except Exception as exc:  # noqa: BLE001 - one request that cannot be checked must not stop the rest
                    log.warning("drift check of %s failed: %s", record.id, exc)
                checked += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return checked

    def check_one(self, record: RequestRecord) -> DriftReport:
        """Read every resource of one succeeded request and record what differs; repair it when policy says so."""
        plan = record.applied or (revise.desired_of(record.plan) if record.plan else None)
        if plan is None:
            return DriftReport(checked_at=self.clock())
        steps = {s.step_id: s for s in self.store.get_steps(record.id)}
        findings: list[DriftFinding] = []
        error = None
        cloud = self._cloud()
        for step in plan.steps:
            own = steps.get(step.id)
            ctx = StepContext(
                request_id=record.id,
                names=plan.names,
                attempt=own.attempt if own else 0,
                dependency_outputs={
                    step.id: own.outputs if own else {},
                    **{d: steps[d].outputs for d in step.depends_on if d in steps},
                },
            )
            try:
                findings += cloud.inspect(step, ctx)
            except Exception as exc:  # noqa: BLE001 - one resource that cannot be read does not stop the others
                error = f"{step.id}: {type(exc).__name__}: {str(exc)[:300]}"
        report = DriftReport(checked_at=self.clock(), findings=findings, error=error)
        had = bool(record.drift and record.drift.findings)
        repair = self.policy.lifecycle.repair_drift and bool(findings)
        written = self._record_drift(record, plan, report, repair=repair)
        if written is None:
            return report  # the request moved on meanwhile (a new run): the next tick looks again
        report = written.drift or report
        if findings:
            text = "; ".join(f.message for f in findings[:10])
            self._emit(written, EventName.DRIFT_DETECTED, written.status.value, caller=SERVICE, message=text[:1000])
        elif had:
            self._emit(written, EventName.DRIFT_CLEARED, written.status.value, caller=SERVICE)
        if repair:
            self.engine.start_run(written)
        return report

    def _record_drift(
        self, record: RequestRecord, plan: Plan, report: DriftReport, *, repair: bool
    ) -> RequestRecord | None:
        """Write what the check found on the request (as it now is), starting the repair run when asked."""
        for _ in range(5):
            update: dict[str, Any] = {"drift": report}
            if repair:
                update = {
                    "status": RequestStatus.UPDATING,
                    "operation": "update",
                    "run": record.run + 1,
                    "plan": revise.repair_plan(plan, {f.step_id for f in report.findings}),
                    "applied": plan,
                    "drift": report.model_copy(update={"repaired_run": record.run + 1}),
                    "notification": None,
                }
            try:
                return self.store.update_request(record.model_copy(update={**update, "updated_at": self.clock()}))
            except StaleWriteError:
                fresh = self.store.get_request(record.id)
                if fresh is None or fresh.status != RequestStatus.SUCCEEDED or fresh.run != record.run:
                    return None
                record = fresh
        return None


def _never_approved(record: RequestRecord) -> bool:
    """Say whether a request's create was denied, expired or withdrawn before approval: it made nothing."""
    ended = record.approval
    return ended is not None and ended.operation == "create" and ended.outcome in ("denied", "expired", "withdrawn")


__all__ = ["SERVICE", "Changed", "Lifecycle", "Revised", "merge_patch"]
