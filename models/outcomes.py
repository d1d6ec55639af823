"""What one reconcile returns: Done, Wait, Retry or Fail."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Done:
    """The resource exists as asked."""

    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Wait:
    """The cloud is still working: look again after `after_s`."""

    after_s: float
    reason: str


@dataclass(frozen=True)
class Retry:
    """A transient failure: try again, no sooner than `after_s`."""

    after_s: float
    error: str
    code: str = "Transient"


@dataclass(frozen=True)
class Fail:
    """A permanent failure; `error` says what to do."""

    error: str
    code: str = "Failed"


Outcome = Done | Wait | Retry | Fail
