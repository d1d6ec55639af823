"""Where callbacks may go: the policy's rules for a callback URL's scheme, host and addresses.

A callback is a POST the service makes, from inside its network, to a URL a requester chose. Left
unchecked, that is a way to reach what only the service can reach (the instance metadata endpoint,
loopback ports, the private network). So a callback goes only:

- over https, unless the policy's `callbacks.allow_http` says otherwise;
- to a host matching one of `allowed_callback_hosts` (fnmatch patterns);
- to addresses that are public (global unicast). Loopback, link-local (169.254.169.254 among them),
  private, unique-local, shared (100.64.0.0/10), multicast, unspecified and reserved addresses are
  refused, including IPv4 addresses embedded in IPv6 ones (::ffff:a.b.c.d, 6to4, NAT64, Teredo),
  unless they lie in one of `callbacks.allowed_networks`. There is no switch that opens every
  private address: a platform that runs a receiver on its own network lists that network.

Intake checks the URL as written (its scheme, and its host when that is an address or a name that
is loopback by definition, RFC 6761 `localhost`); delivery checks again after resolving the name,
and connects only to an address it checked (adapters/callback_guard.py).
"""

from __future__ import annotations

import fnmatch
import ipaddress

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MIB = 1024 * 1024
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix
SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598, carrier-grade NAT
LOOPBACK_NAMES = ("localhost", "*.localhost")  # RFC 6761 section 6.3: always loopback
WHAT_TO_CHANGE = "add its network to callbacks.allowed_networks in the policy, or use a receiver at a public address"


class CallbackPolicy(BaseModel):
    """How callbacks are delivered: which schemes and addresses they may use, and how much of an answer is read."""

    model_config = ConfigDict(extra="forbid")

    allow_http: bool = Field(False, description="True: http:// callback URLs too. Off in production.")
    allowed_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Non-public networks (CIDR) callbacks may reach, e.g. 10.20.0.0/16 for a receiver on the "
        "platform's own network, or 127.0.0.0/8 in tests. Public addresses need no entry.",
    )
    max_response_bytes: int = Field(
        64 * 1024, ge=0, le=16 * MIB, description="How much of a receiver's answer is read; the rest is dropped."
    )

    def scheme_refusal(self, scheme: str) -> str | None:
        """Say why a URL scheme is refused, or None when it may be used."""
        scheme = scheme.lower()
        if scheme == "https" or (scheme == "http" and self.allow_http):
            return None
        if scheme == "http":
            return "callbacks must use https; http is allowed only when the policy sets callbacks.allow_http"
        return f"callbacks must use https, not {scheme}"

    def address_refusal(self, address: Address) -> str | None:
        """Say why a callback may not connect to `address` (which rule, what to change), or None when it may."""
        for candidate in (*embedded_ipv4(address), address):  # the embedded one first: the clearer reason
            kind = non_public_kind(candidate)
            if kind is None or any(candidate in network for network in self.allowed_networks):
                continue
            shown = f"{candidate} (inside {address})" if candidate != address else str(address)
            return f"{shown} is a {kind} address and callbacks go only to public addresses; {WHAT_TO_CHANGE}"
        return None


def embedded_ipv4(address: Address) -> list[ipaddress.IPv4Address]:
    """Return the IPv4 addresses an IPv6 address carries (mapped, 6to4, NAT64, Teredo client), which routes may reach."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address in NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.teredo is not None:
        found.append(address.teredo[1])
    return found


def non_public_kind(address: Address) -> str | None:
    """Name the kind of a non-public address (loopback, private, ...), or None for a public unicast one."""
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("shared (carrier-grade NAT)", isinstance(address, ipaddress.IPv4Address) and address in SHARED),
        ("unique-local", isinstance(address, ipaddress.IPv6Address) and address in ipaddress.IPv6Network("fc00::/7")),
        ("private", address.is_private),
        ("reserved", address.is_reserved or not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def literal_address(host: str) -> Address | None:
    """Return the address a URL's host names without DNS: an IP literal, or loopback for `localhost` names."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if any(fnmatch.fnmatchcase(host, name) for name in LOOPBACK_NAMES):
        return ipaddress.IPv4Address("127.0.0.1")
    return None


def host_allowed(host: str, patterns: list[str]) -> bool:
    """Say whether a host matches one of the policy's `allowed_callback_hosts` patterns (case-insensitive)."""
    host = host.strip("[]").rstrip(".").lower()
    return any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in patterns)


def url_refusals(*, scheme: str, host: str, patterns: list[str], rules: CallbackPolicy) -> list[str]:
    """Return every reason a callback URL, as written, is refused (empty when it may be used)."""
    reasons = [r for r in (rules.scheme_refusal(scheme),) if r]
    if not host_allowed(host, patterns):
        allowed = ", ".join(patterns) or "none: callbacks are turned off"
        reasons.append(f"callbacks to host '{host}' are not allowed; allowed hosts: {allowed}")
    address = literal_address(host)
    if address is not None and (why := rules.address_refusal(address)):
        literal = host.strip("[]").lower() == str(address)
        reasons.append(why if literal else f"'{host}' always names loopback (RFC 6761): {why}")
    return reasons
