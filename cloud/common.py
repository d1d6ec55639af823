"""Helpers every reconcile uses: reading provisioning states, and calling Azure with translated errors."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

from cloud.errors import is_not_found, translate
from cloud.throttle import CURRENT
from models.arm_limits import Operation, operation_of
from models.errors import BackPressure, TransientError
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


THROTTLE_CODES = {"toomanyrequests", "subscriptionrequeststhrottled", "resourcerequeststhrottled"}


def _held_back(exc: BaseException) -> BackPressure | None:
    """Find the BackPressure this service raised under an SDK call (in its pipeline), even when the SDK wrapped it."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        if isinstance(current, BackPressure):
            return current
        seen.add(id(current))
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
    return None


def _operation_of_failure(exc: BaseException) -> Operation | None:
    """Say which kind of call an SDK error answered (its request's method), when the error says."""
    method = getattr(getattr(getattr(exc, "response", None), "request", None), "method", None)
    return operation_of(method) if isinstance(method, str) else None


def _guarded(what: str, fn: Callable[[], T], *, missing_ok: bool) -> T | None:
    scope = CURRENT.get()
    with scope.throttle.slot(scope.subscription) if scope else nullcontext():
        try:
            return fn()
        except Exception as exc:
            held = _held_back(exc)
            if held is not None:  # a request stopped before it was sent: ARM throttles its kind of call
                raise held from None
            if missing_ok and is_not_found(exc):
                return None
            error = translate(exc, what=what)
            if (
                scope
                and isinstance(error, TransientError)
                and (getattr(exc, "status_code", None) == 429 or error.code.lower() in THROTTLE_CODES)
            ):
                scope.throttle.throttled(scope.subscription, error.retry_after_s, _operation_of_failure(exc))
            raise error from exc


def hold_kinds(*operations: Operation) -> None:
    """Stop now (BackPressure) when ARM throttles any of these kinds of call in the reconcile's subscription.

    For an SDK call that sends several requests and takes a failure of one of them for an answer:
    azure-ai-ml's workspace `begin_create` reads the workspace first and takes any error for "there is
    none", so a read held in its pipeline would turn an update into a fresh deployment. Checked before it
    starts, the step waits instead.
    """
    scope = CURRENT.get()
    if scope is not None:
        for operation in operations:
            scope.throttle.hold(scope.subscription, operation)


def call(what: str, fn: Callable[[], T]) -> T:
    """Call Azure (throttled per subscription); translate any failure into our transient or permanent error."""
    return _guarded(what, fn, missing_ok=False)  # type: ignore[return-value]


def start(what: str, begin: Callable[[Callable[[Any], None]], object], timing: Timing) -> float:
    """Start a long-running operation (`begin` is given the hook for its answer); return when to look again.

    Not before its Retry-After: "Clients should wait for the Retry-After interval, if it was
    specified ... before polling again" (Azure Resource Manager RPC, v1.0/async-api-reference.md,
    "202 Accepted and Location Headers"), and never sooner than our own `poll_s`. Looking earlier
    only spends reads from the subscription's bucket of 250, refilled at 25 a second.
    """
    headers: dict[str, str] = {}

    def hook(response: Any) -> None:
        headers.update({k.lower(): v for k, v in response.http_response.headers.items()})

    call(what, lambda: begin(hook))
    return _not_before(headers.get("retry-after"), timing)


def _not_before(retry_after: str | None, timing: Timing) -> float:
    """When to look again at an operation that answered this Retry-After: never sooner than `poll_s`."""
    try:
        seconds = float(retry_after or 0)
    except ValueError:
        seconds = 0.0  # an HTTP date: ARM's RPC says seconds only; look again at our own pace
    return max(timing.poll_s, min(seconds, 600.0))  # the RPC's maximum is 10 minutes


def after_poller(poller: object, timing: Timing) -> float:
    """When to look again at an operation an SDK started with a poller of its own (azure-ai-ml's creates).

    azure-ai-ml gives no hook for the first answer, but its poller keeps it: azure-core's LROPoller
    `polling_method()`, whose `_initial_response` is that answer (azure-core's base polling). A
    workspace's poller wraps the poller of the ARM deployment that creates it (azure-ai-ml's
    CustomArmTemplateDeploymentPollingMethod, `poller`). The Retry-After is read as `start` reads one;
    a poller shaped otherwise falls back to `poll_s`. Only the first look follows it; later looks
    are at `poll_s`, as for every create.
    """
    try:
        initial = _initial_response(poller, depth=3)
        headers = getattr(getattr(initial, "http_response", None), "headers", None) or {}
        value = next((v for k, v in dict(headers).items() if str(k).lower() == "retry-after"), None)
    except Exception:  # noqa: BLE001 - the create is sent already: a poller we cannot read is our own pace
        return timing.poll_s
    return _not_before(value, timing)


def _initial_response(poller: object, *, depth: int) -> object | None:
    method = getattr(poller, "polling_method", None)
    polling = method() if callable(method) else None
    found = getattr(polling, "_initial_response", None)
    inner = getattr(polling, "poller", None)
    if found is None and inner is not None and depth > 0:
        return _initial_response(inner, depth=depth - 1)
    return found


def get_or_none(what: str, fn: Callable[[], T]) -> T | None:
    """Read a resource; None when it does not exist, translated errors otherwise."""
    return _guarded(what, fn, missing_ok=True)


def tags_differ(current: dict[str, str] | None, desired: dict[str, str]) -> bool:
    """Tell whether a desired tag is missing or differs (extra tags on the resource are kept)."""
    current = current or {}
    return any(current.get(k) != v for k, v in desired.items())
