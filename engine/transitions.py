"""Pure state transitions of a step record: each returns the next record, nothing is written."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from models.messages import StepMessage
from models.outcomes import Fail, Outcome, Retry, Wait
from models.records import ErrorInfo, StepRecord, StepStatus
from models.settings import Settings


def claim_refusal(step: StepRecord | None, message: StepMessage, *, now: datetime) -> str | None:
    """Say why a step message must not take its step, or None when it may claim it."""
    if step is None:
        return "dropped: no such step"
    if step.status.terminal:
        return f"dropped: step already {step.status.value}"
    if message.attempt != step.attempt:
        return f"dropped: stale attempt {message.attempt}, step is at {step.attempt}"
    if step.status == StepStatus.RUNNING and step.lease_until and step.lease_until > now:
        return "dropped: another worker holds the step"
    if step.status not in (StepStatus.QUEUED, StepStatus.WAITING, StepStatus.RUNNING):
        return f"dropped: step is {step.status.value}"
    return None


def claimed(step: StepRecord, *, now: datetime, lease: timedelta) -> StepRecord:
    """Return the step running under a lease that ends `lease` from now."""
    return step.model_copy(
        update={
            "status": StepStatus.RUNNING,
            "status_reason": None,
            "lease_until": now + lease,
            "started_at": step.started_at or now,
            "updated_at": now,
        }
    )


def next_attempt(step: StepRecord, *, status: StepStatus, now: datetime, due: datetime, **update: Any) -> StepRecord:
    """Return the step at its next attempt, due at `due`, its lease released."""
    return step.model_copy(
        update={
            **update,
            "status": status,
            "attempt": step.attempt + 1,
            "due_at": due,
            "lease_until": None,
            "updated_at": now,
        }
    )


def succeeded(step: StepRecord, *, outputs: dict[str, Any], now: datetime) -> StepRecord:
    """Return the step succeeded with its outputs."""
    return step.model_copy(
        update={
            "status": StepStatus.SUCCEEDED,
            "outputs": outputs,
            "finished_at": now,
            "updated_at": now,
            "lease_until": None,
            "due_at": None,
            "error": None,
            "status_reason": None,
        }
    )


def failed(step: StepRecord, *, error: ErrorInfo, now: datetime, **update: Any) -> StepRecord:
    """Return the step failed with `error`."""
    return step.model_copy(
        update={
            **update,
            "status": StepStatus.FAILED,
            "error": error,
            "finished_at": now,
            "updated_at": now,
            "lease_until": None,
            "due_at": None,
        }
    )


def skipped(step: StepRecord, *, reason: str, now: datetime) -> StepRecord:
    """Return the step skipped for `reason`."""
    return step.model_copy(update={"status": StepStatus.SKIPPED, "status_reason": reason, "updated_at": now})


def reopened(step: StepRecord, *, now: datetime) -> StepRecord:
    """Return a skipped step pending again."""
    return step.model_copy(update={"status": StepStatus.PENDING, "status_reason": None, "updated_at": now})


def cancelled(step: StepRecord, *, reason: str, now: datetime) -> StepRecord:
    """Return the step cancelled before it could start (or start again)."""
    return step.model_copy(
        update={
            "status": StepStatus.CANCELLED,
            "status_reason": reason,
            "finished_at": now,
            "updated_at": now,
            "lease_until": None,
            "due_at": None,
        }
    )


def retried(step: StepRecord, *, now: datetime) -> StepRecord:
    """Return a failed, skipped or cancelled step pending again with fresh limits (a retry of its run)."""
    return step.model_copy(
        update={
            "status": StepStatus.PENDING,
            "status_reason": None,
            "retries": 0,
            "waited_s": 0.0,
            "handling_failures": 0,
            "error": None,
            "finished_at": None,
            "due_at": None,
            "lease_until": None,
            "updated_at": now,
        }
    )


def handling_failure_counted(step: StepRecord, *, failures: int, reason: str, now: datetime) -> StepRecord:
    """Return the step with one more failed handling counted and its lease released."""
    return step.model_copy(
        update={"handling_failures": failures, "lease_until": None, "status_reason": reason, "updated_at": now}
    )


def within_limits(outcome: Outcome, step: StepRecord, settings: Settings) -> Outcome:
    """Turn a wait or a retry past the step's limits into a failure; pass any other outcome on."""
    if isinstance(outcome, Wait):
        waited = step.waited_s + outcome.after_s
        if waited > settings.step_max_wait_s:
            return Fail(
                f"gave up waiting after {waited:.0f} s (limit {settings.step_max_wait_s:.0f} s): {outcome.reason}. "
                "Check the resource in the Azure portal; submit again to resume.",
                "StepTimedOut",
            )
    if isinstance(outcome, Retry) and step.retries + 1 > settings.step_max_retries:
        return Fail(f"gave up after {step.retries} retries; last error: {outcome.error}", outcome.code)
    return outcome
