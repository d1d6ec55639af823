"""The REST routes of approval (docs/approvals.md), over `engine.approvals.Approvals`.

Every decision is decided by the one authorisation function (`Act.APPROVE`), recorded as an event
with the approver's object id and reason, and idempotent: an approver repeating the same decision
finds it recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request

from composition import Container
from engine.approvals import Decided
from handlers.identity import CurrentCaller
from models.api import ApprovalItem, ApprovalList, DecisionBody, DecisionResult, links

DOOR = "rest"


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def result(done: Decided, base: str) -> DecisionResult:
    """Build the answer to a decision."""
    return DecisionResult(
        id=done.record.id,
        status=done.record.status,
        recorded=done.recorded,
        outcome=done.outcome,
        still_needed=dict(done.still_needed),
        links=links(done.record.id, base),
    )


def add_approval_routes(api: FastAPI, container: Callable[[], Container], responses: dict[int | str, Any]) -> None:
    """Add the approvals listing and the approve and deny routes to the API."""

    @api.get("/api/approvals", response_model=ApprovalList, responses=responses, tags=["approvals"])
    def list_approvals(request: Request, caller: CurrentCaller) -> ApprovalList:
        """List the requests waiting for approval that you may decide (never your own), soonest due first."""
        items = container().approvals.pending(caller, door=DOOR)
        return ApprovalList(items=[ApprovalItem.of_record(r, _base(request)) for r in items])

    @api.post(
        "/api/workspaces/{request_id}/approve", response_model=DecisionResult, responses=responses, tags=["approvals"]
    )
    def approve_workspace(
        request_id: str, request: Request, caller: CurrentCaller, body: DecisionBody | None = None
    ) -> DecisionResult:
        """Approve a waiting request (Workspaces.Approve, an approver group of its rules, not its requester)."""
        done = container().approvals.approve(request_id, caller=caller, door=DOOR, reason=body.reason if body else None)
        return result(done, _base(request))

    @api.post(
        "/api/workspaces/{request_id}/deny", response_model=DecisionResult, responses=responses, tags=["approvals"]
    )
    def deny_workspace(request_id: str, body: DecisionBody, request: Request, caller: CurrentCaller) -> DecisionResult:
        """Deny a waiting request, saying why: a new request ends denied; a revision is dropped."""
        done = container().approvals.deny(request_id, caller=caller, door=DOOR, reason=body.reason or "")
        return result(done, _base(request))
