"""ARM's request throttling: a token bucket per scope, principal and kind of operation.

Source: Microsoft Learn, "Understand how Azure Resource Manager throttles requests"
(articles/azure-resource-manager/management/request-limits-and-throttling.md, the 2024 regional
throttling section). Azure uses a token bucket: the bucket size is how many requests can be sent at
once, the refill rate how fast tokens come back. The published figures are

    subscription reads 250 / 25 per s, deletes 200 / 10 per s, writes 200 / 10 per s
    tenant       reads 250 / 25 per s, deletes 200 / 10 per s, writes 200 / 10 per s

and subscription limits apply per subscription, per security principal and per operation type;
requests that name a subscription are subscription requests, the others tenant requests. Each
response carries `x-ms-ratelimit-remaining-{subscription|tenant}-{reads|writes|deletes}`; an empty
bucket answers `429` with `Retry-After`, the seconds to wait.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from emulator.arm_errors import ArmError
from models.arm_limits import Operation

Scope = Literal["subscription", "tenant"]


class BucketLimit(BaseModel):
    """One bucket: how many tokens it holds and how many come back per second."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(ge=0)
    refill_per_s: float = Field(ge=0)


class ThrottlingConfig(BaseModel):
    """The buckets the emulator enforces; the defaults are Azure's published figures (see the module)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    subscription_reads: BucketLimit = BucketLimit(size=250, refill_per_s=25)
    subscription_writes: BucketLimit = BucketLimit(size=200, refill_per_s=10)
    subscription_deletes: BucketLimit = BucketLimit(size=200, refill_per_s=10)
    tenant_reads: BucketLimit = BucketLimit(size=250, refill_per_s=25)
    tenant_writes: BucketLimit = BucketLimit(size=200, refill_per_s=10)
    tenant_deletes: BucketLimit = BucketLimit(size=200, refill_per_s=10)

    def limit(self, scope: Scope, operation: Operation) -> BucketLimit:
        """Return the bucket limit for a scope and kind of operation."""
        limit: BucketLimit = getattr(self, f"{scope}_{operation}")
        return limit


def principal_of(authorization: str) -> str:
    """Name the caller of a bearer token: its `oid` (or `sub`) claim when it is a JWT, else a digest of it."""
    token = authorization.split(" ", 1)[-1].strip()
    parts = token.split(".")
    if len(parts) == 3:
        try:
            padded = parts[1] + "=" * (-len(parts[1]) % 4)
            claims = json.loads(base64.urlsafe_b64decode(padded))
            if isinstance(claims, dict) and (oid := claims.get("oid") or claims.get("sub")):
                return str(oid)
        except (ValueError, UnicodeDecodeError):
            pass
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass(frozen=True)
class Admission:
    """What the throttle decided for one request: the header to send, and the wait when refused."""

    header: str
    remaining: int
    retry_after_s: int | None = None  # set when the request is throttled


class RequestThrottle:
    """Token buckets keyed by (scope, scope id, principal, operation), refilled lazily on each request."""

    def __init__(self, config: ThrottlingConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or ThrottlingConfig()
        self._clock = clock
        self._buckets: dict[tuple[str, str, str, str], _Bucket] = {}
        self._lock = threading.Lock()
        self.throttled = 0  # requests answered 429, for tests and stats

    def configure(self, config: ThrottlingConfig) -> None:
        """Use new limits from now on; buckets start full again."""
        with self._lock:
            self.config = config
            self._buckets.clear()

    def admit(self, *, scope: Scope, scope_id: str, principal: str, operation: Operation) -> Admission | None:
        """Take a token for one request; None when throttling is off."""
        if not self.config.enabled:
            return None
        limit = self.config.limit(scope, operation)
        header = f"x-ms-ratelimit-remaining-{scope}-{operation}"
        key = (scope, scope_id.lower(), principal, operation)
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(limit.size), now)
            bucket.tokens = min(float(limit.size), bucket.tokens + (now - bucket.at) * limit.refill_per_s)
            bucket.at = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return Admission(header, int(bucket.tokens))
            self.throttled += 1
            missing = 1 - bucket.tokens
            wait = math.ceil(missing / limit.refill_per_s) if limit.refill_per_s > 0 else 3600
            return Admission(header, 0, max(wait, 1))


def throttled_error(
    admission: Admission, *, scope: Scope, scope_id: str, principal: str, operation: Operation
) -> ArmError:
    """Build the 429 for an empty bucket (the wording is the emulator's; the status and Retry-After are ARM's)."""
    code = "SubscriptionRequestsThrottled" if scope == "subscription" else "TenantRequestsThrottled"
    return ArmError(
        429,
        code,
        f"The {operation} of principal '{principal}' in {scope} '{scope_id}' are being throttled; "
        f"try again after {admission.retry_after_s} seconds.",
        {"Retry-After": str(admission.retry_after_s), admission.header: "0"},
    )
