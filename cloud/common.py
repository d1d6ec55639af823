"""Helpers every reconcile uses: reading provisioning states, and calling Azure with translated errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cloud.errors import is_not_found, translate
from models.outcomes import Retry, Wait

T = TypeVar("T")

TRANSITIONAL = {
    "creating",
    "updating",
    "accepted",
    "running",
    "provisioning",
    "resolvingdns",
    "inprogress",
    "migrating",
    "registering",
}
BROKEN = {"failed", "canceled", "cancelled", "deleting"}


@dataclass(frozen=True)
class Timing:
    """How often to look again at work in progress."""

    poll_s: float = 5.0


def state_of(resource: Any) -> str:
    """Return a resource's provisioning state, wherever the SDK model keeps it (Succeeded if none)."""
    for holder in (resource, getattr(resource, "properties", None)):
        if holder is None:
            continue
        value = (
            holder.get("provisioningState") if isinstance(holder, dict) else getattr(holder, "provisioning_state", None)
        )
        if value:
            return str(getattr(value, "value", value))  # SDK enums carry the wire value in .value
    return "Succeeded"


def progress(resource: Any, what: str, timing: Timing) -> Wait | Retry | None:
    """Return Wait while a resource is being provisioned, Retry when it is broken, None when it is ready."""
    state = state_of(resource)
    low = state.lower()
    if low == "succeeded":
        return None
    if low in BROKEN:
        return Retry(timing.poll_s, f"{what} is in state {state}; applying it again", "ResourceNotReady")
    return Wait(timing.poll_s, f"{what} is {state}")


def call(what: str, fn: Callable[[], T]) -> T:
    """Call Azure; translate any failure into our transient or permanent error."""
    try:
        return fn()
    except Exception as exc:
        raise translate(exc, what=what) from exc


def get_or_none(what: str, fn: Callable[[], T]) -> T | None:
    """Read a resource; None when it does not exist, translated errors otherwise."""
    try:
        return fn()
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise translate(exc, what=what) from exc


def tags_differ(current: dict[str, str] | None, desired: dict[str, str]) -> bool:
    """Tell whether a desired tag is missing or differs (extra tags on the resource are kept)."""
    current = current or {}
    return any(current.get(k) != v for k, v in desired.items())
