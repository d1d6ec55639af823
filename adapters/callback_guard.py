"""Check a callback URL at delivery time: its scheme and host against the policy, every address its host resolves to.

The host is resolved once, here; every address is checked (one refused address refuses the
callback, so a name cannot mix a public address with a private one); the notifier then connects
to one of exactly these addresses, never resolving the name again, so a DNS answer that changes
between the check and the connection (DNS rebinding) cannot send it elsewhere.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from models.callbacks import Address, CallbackPolicy, url_refusals
from models.errors import PermanentError, TransientError
from models.policy import Policy

Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """Return every address the system resolver gives for `host` (IPv4 and IPv6), in its order, without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Destination:
    """Where one callback goes: the URL asked for, and the checked addresses to connect to (in order)."""

    url: httpx.URL
    addresses: tuple[Address, ...]

    @property
    def host(self) -> str:
        """The host as the receiver knows it (ASCII, IDNA-encoded): the Host header and the TLS server name."""
        return self.url.raw_host.decode("ascii")

    @property
    def by_name(self) -> bool:
        """True when the URL names its host (then TLS verifies the certificate for that name, not an address)."""
        try:
            ipaddress.ip_address(self.host.strip("[]"))
        except ValueError:
            return True
        return False


class CallbackGuard:
    """Decide whether a callback URL may be called now, and to which addresses."""

    def __init__(
        self,
        policy: Callable[[], Policy] | None = None,
        *,
        resolve: Resolver = system_resolver,
    ) -> None:
        self._policy = policy
        self._resolve = resolve

    @property
    def rules(self) -> CallbackPolicy:
        """The policy's callback rules now (the strict defaults when no policy is given)."""
        return self._policy().callbacks if self._policy is not None else CallbackPolicy()

    def destination(self, url: str) -> Destination:
        """Check `url` and resolve its host; raise PermanentError for a refused URL or address, TransientError for DNS."""
        target = httpx.URL(url)
        host = target.raw_host.decode("ascii")
        rules = self.rules
        if self._policy is not None:
            refusals = url_refusals(
                scheme=target.scheme, host=host, patterns=self._policy().allowed_callback_hosts, rules=rules
            )
        else:
            refusals = [r for r in (rules.scheme_refusal(target.scheme),) if r]
        if refusals:
            raise PermanentError(f"callback to {host} refused: {'; '.join(refusals)}", code="CallbackNotAllowed")
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in self._resolve(host, port)]
        except (OSError, UnicodeError) as exc:
            raise TransientError(
                f"callback to {host} failed: its name does not resolve ({type(exc).__name__})",
                code="CallbackUnreachable",
            ) from exc
        if not found:
            raise TransientError(f"callback to {host} failed: its name has no address", code="CallbackUnreachable")
        for address in found:
            why = rules.address_refusal(address)
            if why:
                raise PermanentError(f"callback to {host} refused: it resolves to {why}", code="CallbackNotAllowed")
        return Destination(url=target, addresses=tuple(found))
