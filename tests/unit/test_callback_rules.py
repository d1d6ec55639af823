"""Where callbacks may go: the policy's rules for schemes, hosts and addresses, at intake and after resolution."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from adapters.callback_guard import CallbackGuard
from engine.policy import check, resolve
from models.callbacks import CallbackPolicy, literal_address
from models.errors import PermanentError, TransientError
from models.policy import Policy
from models.request import parse_request
from tests.conftest import example, shipped_policy

POLICY = shipped_policy()
OPEN_HOSTS = POLICY.model_copy(update={"allowed_callback_hosts": ["*"]})


def _callback_problems(url: str, policy: Policy = OPEN_HOSTS) -> list[str]:
    request = resolve(parse_request(example("cpu-small.json") | {"callback_url": url}), policy)
    return [p.message for p in check(request, policy) if p.field == "callback_url"]


def test_the_default_policy_asks_for_https_to_public_addresses_and_reads_64_kib() -> None:
    rules = POLICY.callbacks
    assert rules == CallbackPolicy()
    assert (rules.allow_http, rules.allowed_networks, rules.max_response_bytes) == (False, [], 65536)
    assert "localhost" not in POLICY.allowed_callback_hosts and "127.0.0.1" not in POLICY.allowed_callback_hosts
    assert _callback_problems("https://hooks.example.com/x", POLICY) == []


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://127.0.0.1:8080/x", "loopback"),
        ("https://[::1]/x", "loopback"),
        ("https://localhost:9000/x", "loopback"),
        ("https://api.localhost/x", "loopback"),
        ("https://169.254.169.254/metadata", "link-local"),
        ("https://[fe80::1]/x", "link-local"),
        ("https://10.1.2.3/x", "private"),
        ("https://192.168.0.10/x", "private"),
        ("https://[fd00::5]/x", "unique-local"),
        ("https://100.64.1.1/x", "shared (carrier-grade NAT)"),
        ("https://224.0.0.251/x", "multicast"),
        ("https://0.0.0.0/x", "unspecified"),
        ("https://[::ffff:127.0.0.1]/x", "loopback"),
        ("https://2130706433/x", "loopback"),  # 127.0.0.1 written as a number: the URL parser normalises it
    ],
)
def test_intake_refuses_callbacks_to_non_public_addresses_written_in_the_url(url: str, kind: str) -> None:
    [message] = _callback_problems(url)
    assert f"a {kind} address" in message and "callbacks go only to public addresses" in message
    assert "callbacks.allowed_networks" in message  # what to change


def test_intake_refuses_http_unless_the_policy_allows_it() -> None:
    [message] = _callback_problems("http://hooks.example.com/x", POLICY)
    assert "must use https" in message and "callbacks.allow_http" in message
    allowing = POLICY.model_copy(update={"callbacks": CallbackPolicy(allow_http=True)})
    assert _callback_problems("http://hooks.example.com/x", allowing) == []


def test_every_reason_is_reported_at_once() -> None:
    messages = _callback_problems("http://127.0.0.1:1/x", POLICY)
    assert len(messages) == 3, messages
    assert any("https" in m for m in messages) and any("'127.0.0.1' are not allowed" in m for m in messages)


def test_a_listed_network_opens_exactly_that_network() -> None:
    rules = CallbackPolicy(allowed_networks=[ipaddress.ip_network("10.20.0.0/16")])
    assert rules.address_refusal(ipaddress.ip_address("10.20.3.4")) is None
    assert "private" in (rules.address_refusal(ipaddress.ip_address("10.21.0.1")) or "")
    assert "link-local" in (rules.address_refusal(ipaddress.ip_address("169.254.169.254")) or "")
    assert rules.address_refusal(ipaddress.ip_address("20.50.1.2")) is None  # public needs no entry


@pytest.mark.parametrize(
    "address",
    ["::ffff:10.0.0.1", "2002:7f00:1::1", "64:ff9b::a9fe:a9fe", "2001:0:4136:e378:8000:63bf:80ff:fffe"],
)
def test_ipv4_addresses_inside_ipv6_ones_are_checked_too(address: str) -> None:
    why = CallbackPolicy().address_refusal(ipaddress.ip_address(address))
    assert why is not None and f"(inside {ipaddress.ip_address(address)})" in why


def test_the_callback_rules_refuse_unknown_keys_and_a_cap_beyond_16_mib() -> None:
    with pytest.raises(ValidationError):
        CallbackPolicy.model_validate({"allow_private_addresses": True})
    with pytest.raises(ValidationError):
        CallbackPolicy(max_response_bytes=17 * 1024 * 1024)


def test_only_ip_literals_and_localhost_names_have_an_address_without_dns() -> None:
    assert literal_address("[::1]") == ipaddress.ip_address("::1")
    assert literal_address("LOCALHOST.") == ipaddress.ip_address("127.0.0.1")
    assert literal_address("hooks.example.com") is None


# ----- at delivery: after resolution ---------------------------------------------------------------


def _guard(answers: dict[str, list[str]], policy: Policy = POLICY) -> tuple[CallbackGuard, list[str]]:
    asked: list[str] = []

    def resolve_(host: str, port: int) -> list[str]:
        asked.append(host)
        if host not in answers:
            raise OSError(-2, "Name or service not known")
        return answers[host]

    return CallbackGuard(lambda: policy, resolve=resolve_), asked


def test_a_name_that_resolves_to_a_private_address_is_refused_permanently_saying_what_to_change() -> None:
    guard, asked = _guard({"hooks.example.com": ["10.0.0.7"]})
    with pytest.raises(PermanentError) as info:
        guard.destination("https://hooks.example.com/x")
    assert info.value.code == "CallbackNotAllowed"
    assert "resolves to 10.0.0.7 is a private address" in str(info.value) and "allowed_networks" in str(info.value)
    assert asked == ["hooks.example.com"]


def test_one_non_public_address_among_public_ones_refuses_the_callback() -> None:
    guard, _ = _guard({"hooks.example.com": ["20.50.1.2", "2603:1020::1", "169.254.169.254"]})
    with pytest.raises(PermanentError, match=r"169\.254\.169\.254 is a link-local address"):
        guard.destination("https://hooks.example.com/x")


def test_public_addresses_pass_in_the_resolver_order_and_a_name_that_does_not_resolve_is_transient() -> None:
    guard, _ = _guard({"hooks.example.com": ["20.50.1.2", "2603:1020::1"]})
    destination = guard.destination("https://hooks.example.com:8443/x")
    assert [str(a) for a in destination.addresses] == ["20.50.1.2", "2603:1020::1"]
    assert destination.host == "hooks.example.com" and destination.by_name
    with pytest.raises(TransientError):
        guard.destination("https://gone.example.com/x")


def test_delivery_checks_the_scheme_and_the_hosts_again_under_the_policy_of_now() -> None:
    guard, asked = _guard(
        {"hooks.example.com": ["20.50.1.2"]}, POLICY.model_copy(update={"allowed_callback_hosts": []})
    )
    with pytest.raises(PermanentError, match="not allowed"):
        guard.destination("https://hooks.example.com/x")
    with pytest.raises(PermanentError, match="must use https"):
        CallbackGuard().destination("http://hooks.example.com/x")
    assert asked == []  # refused before any lookup
