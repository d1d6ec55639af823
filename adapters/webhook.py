"""Callback delivery over HTTPS (httpx); errors translated into transient or permanent."""

from __future__ import annotations

from typing import Any

import httpx

from models.errors import PermanentError, TransientError
from models.redact import register


class HttpNotifier:
    """POST JSON to a callback URL."""

    def __init__(self, *, timeout_s: float = 10.0, client: httpx.Client | None = None) -> None:
        self.client = client or httpx.Client(timeout=timeout_s, follow_redirects=False)

    def post(self, url: str, payload: dict[str, Any]) -> None:
        """Deliver one payload."""
        register(url)  # a callback URL is a credential: masked in logs and spans from here on
        host = httpx.URL(url).host
        try:
            resp = self.client.post(url, json=payload, headers={"User-Agent": "workspace-vending/1"})
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
