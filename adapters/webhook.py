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
import time
from collections.abc import Callable
from typing import Any

import httpx

from models.errors import PermanentError, TransientError
from models.redact import register


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """Return the `X-Vending-Signature` value for a body signed at `timestamp`."""
    return "v1=" + hmac.new(secret, b"v1:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()


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
            retry = resp.headers.get("Retry-After")
            raise TransientError(
                f"callback to {host} answered {resp.status_code}",
                retry_after_s=float(retry) if retry and retry.isdigit() else None,
                code="CallbackUnavailable",
            )
        raise PermanentError(
            f"callback to {host} answered {resp.status_code}; check callback_url", code="CallbackRefused"
        )
