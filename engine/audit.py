"""Audit (DESIGN section 9): every authorisation decision and every operator action, as a status event.

Each event carries the caller's object id (`caller`), the door it came through, what it asked (`act`),
the team, the rule that decided and a sentence saying why. They go to every sink: the events file and
Azure Monitor keep them all; the store keeps the refusals and operator actions that concern a request
in that request's timeline (a read that was allowed is not written into the timeline it reads).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from engine.authz import Act, ApprovalAsk, Authority, Decision
from engine.events import EventFanout
from models.events import EventName, StatusEvent
from models.identity import Caller
from models.redact import redact_optional


class Audit:
    """Record decisions and operator actions as status events."""

    def __init__(self, events: EventFanout, *, clock: Callable[[], datetime]) -> None:
        self.events = events
        self.clock = clock

    def decided(
        self,
        *,
        caller: Caller,
        decision: Decision,
        act: Act | str,
        team: str | None,
        door: str,
        command: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Record one authorisation decision."""
        self._emit(
            StatusEvent(
                name=EventName.ACCESS_ALLOWED if decision.allowed else EventName.ACCESS_REFUSED,
                time=self.clock(),
                request_id=request_id or "",
                team=team or "",
                status="allowed" if decision.allowed else "refused",
                caller=caller.oid,
                act=str(act.value if isinstance(act, Act) else act) + (f":{command}" if command else ""),
                rule=decision.rule,
                door=door,
                message=redact_optional(None if decision.allowed else decision.reason),
            )
        )

    def operator(
        self,
        *,
        caller: Caller,
        action: str,
        door: str,
        outcome: str,
        request_id: str | None = None,
        team: str | None = None,
        subject: str | None = None,
    ) -> None:
        """Record one operator action (a dead letter replayed or recorded, a sweep) and what came of it."""
        self._emit(
            StatusEvent(
                name=EventName.OPERATOR_ACTION,
                time=self.clock(),
                request_id=request_id or "",
                team=team or "",
                status="done",
                caller=caller.oid,
                act=action,
                rule="OperatorRole",
                door=door,
                message=redact_optional((f"{subject}: {outcome}" if subject else outcome)[:1000]),
            )
        )

    def _emit(self, event: StatusEvent) -> None:
        # The fan-out already keeps a failing sink from turning a decision around.
        self.events.emit(event)


class Guard:
    """Decide with the one authorisation function, record the decision, and refuse when it says so."""

    def __init__(self, authorizer: Callable[[], Authority], audit: Audit) -> None:
        self._authorizer = authorizer
        self.audit = audit

    @property
    def authorizer(self) -> Authority:
        """The authorisation function."""
        return self._authorizer()

    def decide(
        self,
        caller: Caller,
        act: Act,
        *,
        team: str | None,
        door: str,
        request_id: str | None = None,
        approval: ApprovalAsk | None = None,
    ) -> Decision:
        """Decide one act and record it; the caller acts on the decision."""
        decision = (
            self.authorizer.authorize(caller, act, team=team, approval=approval)
            if approval is not None
            else self.authorizer.authorize(caller, act, team=team)
        )
        self.audit.decided(caller=caller, decision=decision, act=act, team=team, door=door, request_id=request_id)
        return decision

    def require(self, caller: Caller, act: Act, *, team: str | None, door: str, request_id: str | None = None) -> None:
        """Decide one act, record it, and raise `ForbiddenError` or `NotFoundError` when it is refused."""
        self.decide(caller, act, team=team, door=door, request_id=request_id).enforce()
