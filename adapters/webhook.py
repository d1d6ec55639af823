"""Callback delivery over HTTPS (httpx): signed, with a delivery id, errors translated into transient or permanent.

Every POST carries:
- `X-Vending-Delivery`: the same id on every attempt at one notification (`<request>:<status>`);
  receivers drop repeats by it;
- `X-Vending-Timestamp`: seconds since the epoch when this attempt was signed;
- `X-Vending-Signature`: `v1=<hex HMAC-SHA256 of "v1:<timestamp>:<body>" with the signing secret>`.
A receiver recomputes the HMAC over the raw body, compares in constant time and refuses timestamps
more than five minutes old (docs/chatops.md shows the check).

Where a callback may go is the policy's (models/callbacks.py): before each POST the guard checks the
URL and every address its host resolves to, and the POST connects to one of those checked addresses
itself (the URL's host swapped for the address, with the Host header and the TLS server name, the
httpx `sni_hostname` request extension, kept as the name, so the certificate is verified for the
name). Redirects are never followed, proxies from the environment are not used (they would resolve
the name again), and a receiver's answer is read only up to `callbacks.max_response_bytes` and
within the timeout, then dropped: only its status counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from adapters.callback_guard import CallbackGuard, Destination, Resolver, system_resolver
from models.errors import PermanentError, TransientError
from models.policy import Policy
from models.redact import register

log = logging.getLogger(__name__)


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
    """POST JSON to a callback URL, signed, to an address the policy allows."""

    def __init__(
        self,
        *,
        signing_secret: bytes,
        timeout_s: float = 10.0,
        policy: Callable[[], Policy] | None = None,
        client: httpx.Client | None = None,
        resolve: Resolver = system_resolver,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # No keep-alive: a pooled connection is keyed by address, and two names may share one.
        self.client = client or httpx.Client(
            timeout=timeout_s,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self.guard = CallbackGuard(policy, resolve=resolve)
        self.timeout_s = timeout_s
        self._secret = signing_secret
        self.clock = clock

    def post(self, url: str, payload: dict[str, Any], delivery_id: str = "") -> None:
        """Deliver one payload."""
        register(url)  # a callback URL is a credential: masked in logs and spans from here on
        destination = self.guard.destination(url)
        host = destination.host
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        timestamp = str(int(self.clock()))
        headers = {
            "Host": destination.url.netloc.decode("ascii"),
            "User-Agent": "workspace-vending/1",
            "Content-Type": "application/json",
            "X-Vending-Delivery": delivery_id,
            "X-Vending-Timestamp": timestamp,
            "X-Vending-Signature": signature(self._secret, timestamp, body),
        }
        try:
            with self._connected(destination, body, headers) as resp:
                status, retry_after = resp.status_code, resp.headers.get("Retry-After")
                with contextlib.suppress(httpx.TransportError):  # the status is in; what follows is not needed
                    self._drain(resp, limit=self.guard.rules.max_response_bytes)
        except httpx.TransportError as exc:
            raise TransientError(
                f"callback to {host} failed: {type(exc).__name__}", code="CallbackUnreachable"
            ) from exc
        if status < 300:
            return
        if status in (408, 425, 429) or status >= 500:
            wait = retry_after_s(retry_after, now=self.clock())
            raise TransientError(
                f"callback to {host} answered {status}"
                + (f"; it asks to try again in {wait:.0f} s" if wait is not None else ""),
                retry_after_s=wait,
                code="CallbackUnavailable",
            )
        redirect = "; redirects are not followed" if 300 <= status < 400 else ""
        raise PermanentError(
            f"callback to {host} answered {status}{redirect}; check callback_url", code="CallbackRefused"
        )

    @contextmanager
    def _connected(self, destination: Destination, body: bytes, headers: dict[str, str]) -> Iterator[httpx.Response]:
        """Open the POST on the first checked address that takes a connection; yield its streamed response."""
        extensions = {"sni_hostname": destination.host} if destination.by_name else {}
        last: httpx.TransportError | None = None
        for address in destination.addresses:
            direct = destination.url.copy_with(host=str(address))
            register(str(direct))  # the same credential, as dependency spans and errors will show it
            request = self.client.build_request("POST", direct, content=body, headers=headers, extensions=extensions)
            try:
                resp = self.client.send(request, stream=True, follow_redirects=False)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = exc  # this address takes no connection: the next checked one may
                continue
            try:
                yield resp
            finally:
                resp.close()
            return
        assert last is not None
        raise last

    def _drain(self, resp: httpx.Response, *, limit: int) -> None:
        """Read at most `limit` bytes of the answer (as sent, before any decoding) within the timeout, and drop them."""
        if limit <= 0:
            return
        deadline = time.monotonic() + self.timeout_s
        seen = 0
        for chunk in resp.iter_raw():
            seen += len(chunk)
            if seen >= limit or time.monotonic() > deadline:
                log.debug("callback answer from %s cut after %d bytes", resp.request.headers.get("Host"), seen)
                return
