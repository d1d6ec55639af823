"""The REST routes of a workspace's life after its create (DESIGN section 10), over `engine.lifecycle.Lifecycle`.

`PATCH` takes a JSON Merge Patch (RFC 7396) of the request; `POST .../plan` answers what one would
change. Every route decides through the one authorisation function (in `Lifecycle`), answers
problem+json as the others do, and is idempotent: repeating a call finds its work done or under way.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Annotated, Any

from fastapi import Body, FastAPI, Query, Request, Response

from composition import Container
from handlers.identity import CurrentCaller
from models.api import Changed, Extension, Links, RequestView, RevisionList, RevisionView, links
from models.errors import InvalidInputError, Problem
from models.lifecycle import DriftReport, PlanDiff
from models.records import RequestStatus

DOOR = "rest"
MERGE_PATCH = "application/merge-patch+json"
PatchBody = Annotated[
    dict[str, Any],
    Body(
        description="A JSON Merge Patch (RFC 7396) of the request as GET shows it: objects merge, null removes a "
        "field, a list (compute, datastores, owners, members) is replaced whole.",
        media_type=MERGE_PATCH,
    ),
]


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def add_lifecycle_routes(
    api: FastAPI, container: Callable[[], Container], responses: dict[int | str, Any], too_many: Callable[..., Any]
) -> None:
    """Add update, plan-of-a-change, revisions, cancel, retry, delete, extend and drift routes to the API.

    A change and its preview read ARM (confinement), so each takes from the caller's allowance as a
    submission and a plan do; `too_many` answers 429 as the other routes do.
    """

    def limited(c: Container, caller: Any, request_id: str, path: str, *, plan: bool) -> Any:
        wait = c.plans(caller) if plan else c.submissions(caller)
        if wait is None:
            return None
        record = c.store.get_request(request_id)
        team = record.team if record is not None else ""
        if plan:
            return too_many(c, caller, team, wait, path, what="plans", allowed=c.settings.plans_per_window)
        return too_many(c, caller, team, wait, path)

    @api.patch("/api/workspaces/{request_id}", status_code=202, response_model=Changed, responses=responses)
    def update_workspace(
        request_id: str, body: PatchBody, request: Request, response: Response, caller: CurrentCaller
    ) -> Any:
        """Change a workspace: add, resize or remove compute, datastores, members, tags; applied as a new revision."""
        c = container()
        if (refused := limited(c, caller, request_id, request.url.path, plan=False)) is not None:
            return refused
        done = c.lifecycle.update(request_id, body, caller=caller, door=DOOR)
        response.headers["Location"] = f"{_base(request)}/api/workspaces/{request_id}"
        if not done.started and done.record.status != RequestStatus.AWAITING_APPROVAL:
            response.status_code = 200  # nothing to run; a revision waiting for approval is accepted (202)
        return Changed.of(done.record, _base(request), started=done.started, changes=done.changes)

    @api.post("/api/workspaces/{request_id}/plan", response_model=PlanDiff, responses=responses)
    def plan_change(request_id: str, body: PatchBody, request: Request, caller: CurrentCaller) -> Any:
        """Show what a merge patch would change (create, update, delete, unchanged per resource); nothing is done."""
        c = container()
        if (refused := limited(c, caller, request_id, request.url.path, plan=True)) is not None:
            return refused
        return c.lifecycle.preview(request_id, body, caller=caller, door=DOOR)

    @api.get("/api/workspaces/{request_id}/revisions", response_model=RevisionList, responses=responses)
    def list_revisions(request_id: str, caller: CurrentCaller) -> RevisionList:
        """List the request's revisions, oldest first: what each asked for, who asked, and what became of it."""
        _, revisions = container().lifecycle.revisions(request_id, caller=caller, door=DOOR)
        return RevisionList(items=[RevisionView.of(r) for r in revisions])

    @api.post("/api/workspaces/{request_id}/cancel", status_code=202, response_model=Changed, responses=responses)
    def cancel_workspace(request_id: str, request: Request, response: Response, caller: CurrentCaller) -> Changed:
        """Stop a request in flight: no new step starts; it ends cancelled with what exists listed."""
        done = container().lifecycle.cancel(request_id, caller=caller, door=DOOR)
        if not done.started:
            response.status_code = 200
        return Changed.of(done.record, _base(request), started=done.started)

    @api.post("/api/workspaces/{request_id}/retry", status_code=202, response_model=Changed, responses=responses)
    def retry_workspace(request_id: str, request: Request, response: Response, caller: CurrentCaller) -> Changed:
        """Resume a failed or cancelled request from the steps that did not succeed."""
        done = container().lifecycle.retry(request_id, caller=caller, door=DOOR)
        if not done.started:
            response.status_code = 200
        return Changed.of(done.record, _base(request), started=done.started)

    @api.delete("/api/workspaces/{request_id}", status_code=202, response_model=Changed, responses=responses)
    def delete_workspace(
        request_id: str,
        request: Request,
        response: Response,
        caller: CurrentCaller,
        purge: Annotated[
            bool | None,
            Query(description="Purge what Azure soft-deletes (workspace, key vault); default: the policy's."),
        ] = None,
    ) -> Changed:
        """Tear the workspace down in the reverse order of creation; what the team brought is never deleted."""
        done = container().lifecycle.delete(request_id, caller=caller, door=DOOR, purge=purge)
        if not done.started:
            response.status_code = 200
        return Changed.of(done.record, _base(request), started=done.started)

    @api.post("/api/workspaces/{request_id}/extend", response_model=RequestView, responses=responses)
    def extend_workspace(request_id: str, body: Extension, request: Request, caller: CurrentCaller) -> RequestView:
        """Move the workspace's expiry, within the environment's policy."""
        c = container()
        if (body.expires_at is None) == (body.days is None):
            raise InvalidInputError([Problem("(body)", "give either expires_at or days, not both or neither.", "type")])
        if body.expires_at is not None and body.expires_at.tzinfo is None:
            raise InvalidInputError(
                [Problem("expires_at", "give a time zone (for example 2027-01-31T00:00:00Z).", "type")]
            )
        when = body.expires_at or (c.clock().astimezone(UTC) + timedelta(days=body.days or 0))
        record = c.lifecycle.extend(request_id, caller=caller, door=DOOR, expires_at=when)
        return RequestView.full(record, c.store.get_steps(request_id), _base(request))

    @api.get("/api/workspaces/{request_id}/drift", response_model=DriftReport | None, responses=responses)
    def get_drift(request_id: str, caller: CurrentCaller) -> DriftReport | None:
        """Show what the last drift check found (null before the first)."""
        record, _ = container().lifecycle.revisions(request_id, caller=caller, door=DOOR)
        return record.drift

    @api.post("/api/workspaces/{request_id}/drift", status_code=202, response_model=Links, responses=responses)
    def check_drift(request_id: str, request: Request, caller: CurrentCaller) -> Links:
        """Ask for a drift check now: the drift timer reads the cloud at its next tick; GET .../drift shows it."""
        container().lifecycle.request_drift_check(request_id, caller=caller, door=DOOR)
        return links(request_id, _base(request))
