"""When a workspace expires: as its request asks, within its environment's policy, or the policy's default."""

from __future__ import annotations

from datetime import datetime, timedelta

from engine.policy import POLICY_REFUSAL
from models.errors import InvalidInputError, Problem
from models.policy import Policy
from models.request import WorkspaceRequest


def expiry_problems(expires_at: datetime | None, policy: Policy, environment: str, *, now: datetime) -> list[Problem]:
    """Say what is wrong with an asked-for expiry under the environment's policy (nothing when it is fine)."""
    if expires_at is None:
        return []
    rules = policy.lifecycle.expiry.get(environment)  # type: ignore[call-overload]
    if expires_at <= now:
        return [Problem("expires_at", f"{expires_at.isoformat()} has passed; give a time in the future.", "policy")]
    if rules is not None and rules.max_days is not None and expires_at > now + timedelta(days=rules.max_days):
        latest = now + timedelta(days=rules.max_days)
        return [
            Problem(
                "expires_at",
                f"{environment} workspaces may be kept at most {rules.max_days:g} days from now (until "
                f"{latest:%Y-%m-%d %H:%M} UTC); ask for an earlier time, or extend it again later.",
                "policy",
            )
        ]
    return []


def expiry_of(request: WorkspaceRequest, policy: Policy, *, now: datetime) -> datetime | None:
    """Return when a request's workspace expires: as it asks (checked), else the environment's default, else never."""
    problems = expiry_problems(request.expires_at, policy, request.environment.value, now=now)
    if problems:
        raise InvalidInputError(problems, title=POLICY_REFUSAL)
    if request.expires_at is not None:
        return request.expires_at
    rules = policy.lifecycle.expiry.get(request.environment)
    return now + timedelta(days=rules.default_days) if rules and rules.default_days else None
