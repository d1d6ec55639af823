"""Callback delivery over HTTPS (httpx): signed, with a delivery id, errors translated into transient or permanent.

Every POST carries:
- `X-Vending-Delivery`: the same id on every attempt at one notification (`<request>:<status>`);
  receivers drop repeats by it;
- `X-Vending-Timestamp`: seconds since the epoch when this attempt was signed;
- `X-Vending-Signature`: `v1=<hex HMAC-SHA256 of "v1:<timestamp>:<body>" with the signing secret>`.
A receiver recomputes the HMAC over the raw body, compares in constant time and refuses timestamps
more than five minutes old (docs/chatops.md shows the check).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from models.errors import PermanentError, TransientError
from models.redact import register


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """Return the `X-Vending-Signature` value for a body signed at `timestamp`."""
    return "v1=" + hmac.new(secret, b"v1:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()


def retry_after_s(value: str | None, *, now: float) -> float | None:
    """Return the seconds a Retry-After header asks to wait (delay-seconds or an HTTP-date), or None.

    RFC 9110 section 10.2.3: `Retry-After: 120` or `Retry-After: Fri, 31 Dec 1999 23:59:59 GMT`; a
    date in the past means now. Anything else (negative, not a number, not a date) is ignored.
    """
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class HttpNotifier:
    """POST JSON to a callback URL, signed."""

    def __init__(
        self,
        *,
        signing_secret: bytes,
        timeout_s: float = 10.0,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client or httpx.Client(timeout=timeout_s, follow_redirects=False)
        self._secret = signing_secret
        self.clock = clock

    def post(self, url: str, payload: dict[str, Any], delivery_id: str = "") -> None:
        """Deliver one payload."""
        register(url)  # a callback URL is a credential: masked in logs and spans from here on
        host = httpx.URL(url).host
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        timestamp = str(int(self.clock()))
        headers = {
            "User-Agent": "workspace-vending/1",
            "Content-Type": "application/json",
            "X-Vending-Delivery": delivery_id,
            "X-Vending-Timestamp": timestamp,
            "X-Vending-Signature": signature(self._secret, timestamp, body),
        }
        try:
            resp = self.client.post(url, content=body, headers=headers)
        except httpx.TransportError as exc:
            raise TransientError(
                f"callback to {host} failed: {type(exc).__name__}", code="CallbackUnreachable"
            ) from exc
        if resp.status_code < 300:
            return
        if resp.status_code in (408, 425, 429) or resp.status_code >= 500:
            wait = retry_after_s(resp.headers.get("Retry-After"), now=self.clock())
            raise TransientError(
                f"callback to {host} answered {resp.status_code}"
                + (f"; it asks to try again in {wait:.0f} s" if wait is not None else ""),
                retry_after_s=wait,
                code="CallbackUnavailable",
            )
        raise PermanentError(
            f"callback to {host} answered {resp.status_code}; check callback_url", code="CallbackRefused"
        )
