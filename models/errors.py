"""One error hierarchy, split by what the caller must do."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: where (a field path) and what to change."""

    field: str
    message: str
    code: str = "invalid"

    def as_dict(self) -> dict[str, str]:
        """Return the JSON shape used in problem+json bodies and rejected records."""
        return {"field": self.field, "message": self.message, "code": self.code}


class VendingError(Exception):
    """Base of every error the service raises on purpose."""


class InvalidInputError(VendingError):
    """The input is wrong: reject it, never retry it."""

    def __init__(self, problems: list[Problem], title: str = "The request is not valid.") -> None:
        self.problems = problems
        self.title = title
        super().__init__(title + " " + " ".join(f"{p.field}: {p.message}" for p in problems))


class TransientError(VendingError):
    """A failure that may clear by itself: retry later."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, code: str = "Transient") -> None:
        self.retry_after_s = retry_after_s
        self.code = code
        super().__init__(message)


class BackPressure(TransientError):
    """The service holds its own calls back (a cooling-down subscription): no attempt was made.

    The engine waits it out instead of counting it as a failed attempt, so a throttled
    subscription slows every step down without making any of them give up early.
    """


class PermanentError(VendingError):
    """A failure that needs a person to act: stop and explain what to do."""

    def __init__(self, message: str, *, code: str = "Permanent") -> None:
        self.code = code
        super().__init__(message)


class NotFoundError(VendingError):
    """The thing asked for does not exist (or the caller may not know that it does)."""


class ForbiddenError(VendingError):
    """The caller is known but may not do this: `rule` names the rule that refused it.

    `problems` lists each thing refused by field, when there is more than one way the request reaches
    too far (confinement); `title` is the problem+json title.
    """

    title = "Forbidden"

    def __init__(self, message: str, *, rule: str, problems: list[Problem] | None = None) -> None:
        self.rule = rule
        self.problems = list(problems or [])
        super().__init__(message)


class ConflictError(VendingError):
    """A write lost a race or would break a uniqueness rule."""

    def __init__(self, message: str, *, code: str = "Conflict", existing_id: str | None = None) -> None:
        self.code = code
        self.existing_id = existing_id
        super().__init__(message)


class LimitExceededError(VendingError):
    """A request would take a team over a limit that the store counts (its vCPUs at max scale)."""

    def __init__(self, *, team: str, asked: int, in_use: int, limit: int) -> None:
        self.team = team
        self.asked = asked
        self.in_use = in_use
        self.limit = limit
        super().__init__(f"team '{team}' would use {in_use + asked} vCPUs; the limit is {limit}")


def idempotency_key_reused(existing_id: str) -> ConflictError:
    """Build the conflict for an Idempotency-Key sent again with another body."""
    return ConflictError(
        "this Idempotency-Key was used for a different request body; use a new key.",
        code="IdempotencyKeyReused",
        existing_id=existing_id,
    )


class StaleWriteError(ConflictError):
    """A conditional write found a newer version than the one it read."""

    def __init__(self, message: str = "The record changed since it was read.") -> None:
        super().__init__(message, code="StaleWrite")
