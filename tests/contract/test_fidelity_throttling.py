"""ARM's request throttling in the emulator, and the provider pacing itself by the remaining-budget headers.

Source of the rules: Microsoft Learn, "Understand how Azure Resource Manager throttles requests"
(token bucket per subscription or tenant, per principal, per operation type; 250/25 reads, 200/10
writes and deletes; `x-ms-ratelimit-remaining-*` headers; 429 with Retry-After).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.clients import Clients, emulator_endpoint
from cloud.common import Timing, call
from cloud.credentials import EmulatorCredential
from cloud.provider import AzureProvider
from cloud.throttle import SubscriptionThrottle, subscription_scope
from emulator.server import EmulatorServer
from emulator.state import Config
from emulator.throttling import RequestThrottle, ThrottlingConfig
from models.errors import BackPressure, TransientError
from models.outcomes import Done, Retry, Wait
from tests.conftest import example
from tests.contract.conftest import SUB, _plan, drive


@pytest.fixture(autouse=True)
def _keep_the_sessions_cloud_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # `Clients` points process-wide variables (REQUESTS_CA_BUNDLE, azure-ai-ml's cloud) at the emulator
    # it is given; this module's own emulators must not leave them pointing away from the session's.
    for name in ("REQUESTS_CA_BUNDLE", "ARM_CLOUD_METADATA_URL", "AZUREML_CURRENT_CLOUD"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)


RG = f"/subscriptions/{SUB}/resourcegroups/rg-throttle"


@pytest.fixture
def arm(tmp_path: Path) -> Iterator[EmulatorServer]:
    server = EmulatorServer(data_dir=tmp_path, config=Config(latency_s=0.05)).start()
    yield server
    server.stop()


def _http(emulator: EmulatorServer, token: str = "alice") -> httpx.Client:
    return httpx.Client(
        base_url=emulator.url.rstrip("/"),
        verify=ssl.create_default_context(cafile=str(emulator.ca_file)),
        headers={"Authorization": f"Bearer {token}"},
    )


def _configure(emulator: EmulatorServer, **buckets: dict[str, float]) -> None:
    with _http(emulator) as http:
        resp = http.put("/_emulator/config", json={"throttling": buckets})
        assert resp.status_code == 200, resp.text


def _provider(emulator: EmulatorServer, **throttle: Any) -> AzureProvider:
    clients = Clients(emulator_endpoint(emulator.url, str(emulator.ca_bundle)), EmulatorCredential())
    return AzureProvider(clients, Timing(poll_s=0.05), SubscriptionThrottle(max_concurrent=8, **throttle))


def test_every_response_says_what_is_left_per_principal_and_kind_of_operation(arm: EmulatorServer) -> None:
    with _http(arm, "alice") as alice, _http(arm, "bob") as bob:
        first = alice.get(f"/subscriptions/{SUB}/resourcegroups?api-version=2025-04-01")
        second = alice.get(f"/subscriptions/{SUB}/resourcegroups?api-version=2025-04-01")
        other = bob.get(f"/subscriptions/{SUB}/resourcegroups?api-version=2025-04-01")
        write = alice.put(f"{RG}?api-version=2025-04-01", json={"location": "westeurope"})
        delete = alice.delete(f"{RG}?api-version=2025-04-01")
        tenant = alice.get("/providers/Microsoft.Resources/operations?api-version=2025-04-01")
        config = alice.get("/_emulator/config").json()["throttling"]
    # Azure's published bucket sizes, one token per request.
    assert first.headers["x-ms-ratelimit-remaining-subscription-reads"] == "249"
    assert second.headers["x-ms-ratelimit-remaining-subscription-reads"] == "248"
    assert other.headers["x-ms-ratelimit-remaining-subscription-reads"] == "249"  # bob has his own bucket
    assert write.headers["x-ms-ratelimit-remaining-subscription-writes"] == "199"
    assert delete.headers["x-ms-ratelimit-remaining-subscription-deletes"] == "199"
    assert tenant.headers["x-ms-ratelimit-remaining-tenant-reads"] == "249"
    assert config["subscription_reads"] == {"size": 250, "refill_per_s": 25.0}
    assert config["subscription_writes"] == {"size": 200, "refill_per_s": 10.0}


def test_an_empty_bucket_answers_429_with_retry_after_before_the_resource_provider(
    arm: EmulatorServer,
) -> None:
    _configure(arm, subscription_writes={"size": 2, "refill_per_s": 0.5})
    with _http(arm) as http:
        http.delete("/_emulator/requests")
        codes = [
            http.put(f"{RG}-{i}?api-version=2025-04-01", json={"location": "westeurope"}).status_code for i in range(2)
        ]
        refused = http.put(f"{RG}-2?api-version=2025-04-01", json={"location": "westeurope"})
        logged = http.get("/_emulator/requests").json()["requests"]
        reads = http.get(f"/subscriptions/{SUB}/resourcegroups?api-version=2025-04-01")
        as_bob = _http(arm, "bob").put(f"{RG}-3?api-version=2025-04-01", json={"location": "westeurope"})
    assert codes == [201, 201]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "SubscriptionRequestsThrottled"
    assert refused.headers["Retry-After"] == "2"  # one token at 0.5 per second
    assert refused.headers["x-ms-ratelimit-remaining-subscription-writes"] == "0"
    assert [r["path"] for r in logged] == [f"{RG}-0", f"{RG}-1"]  # the throttled call never reached the RP
    assert reads.status_code == 200  # reads have their own bucket
    assert as_bob.status_code == 201  # and so has every principal


def test_a_bucket_refills_at_its_rate_up_to_its_size() -> None:
    now = [0.0]
    throttle = RequestThrottle(
        ThrottlingConfig(subscription_writes={"size": 2, "refill_per_s": 10}),  # type: ignore[arg-type]
        clock=lambda: now[0],
    )

    def take() -> int | None:
        a = throttle.admit(scope="subscription", scope_id=SUB, principal="p", operation="writes")
        assert a is not None
        return a.retry_after_s

    assert [take(), take()] == [None, None]
    assert take() == 1
    now[0] += 0.1  # one token back
    assert take() is None
    assert take() == 1
    now[0] += 60  # never more than the bucket holds
    assert [take(), take(), take()] == [None, None, 1]
    throttle.configure(ThrottlingConfig(enabled=False))
    assert throttle.admit(scope="subscription", scope_id=SUB, principal="p", operation="writes") is None


def test_the_provider_paces_itself_by_the_remaining_budget_and_is_not_throttled(arm: EmulatorServer) -> None:
    # Small buckets that refill slowly, and a provider that knows the rates (as it knows Azure's):
    # a plan sent at full speed empties them.
    _configure(
        arm,
        subscription_reads={"size": 5, "refill_per_s": 10},
        subscription_writes={"size": 3, "refill_per_s": 4},
    )
    provider = _provider(arm, refill_per_s={"reads": 10, "writes": 4, "deletes": 4})
    p = _plan(example("cpu-small.json") | {"team": "paced"})
    outputs: dict[str, dict[str, object]] = {}
    results = {s.id: drive(provider, p, s.id, outputs) for s in p.steps}
    assert all(isinstance(o, Done) for o in results.values()), results
    assert arm.throttle.throttled == 0


def test_a_429_that_reaches_the_provider_is_retried_after_its_retry_after(arm: EmulatorServer) -> None:
    # A bucket that refills more slowly than the provider expects of Azure: its pacing is not enough.
    _configure(arm, subscription_writes={"size": 1, "refill_per_s": 0.5})
    provider = _provider(arm)
    p = _plan(example("cpu-small.json") | {"team": "throttled429"})
    outputs: dict[str, dict[str, object]] = {}
    assert isinstance(drive(provider, p, "resource-group", outputs), Done)
    outcome = drive(provider, p, "storage", outputs, retry=False)
    assert isinstance(outcome, Retry | Wait), outcome
    assert outcome.after_s == pytest.approx(2, abs=0.01)  # Retry-After, not a guess
    assert arm.throttle.throttled >= 1
    sub = p.names.subscription_id
    assert provider.throttle.cooldown_left(sub, "writes") > 0  # every write in the subscription waits
    assert provider.throttle.cooldown_left(sub, "reads") == 0  # reads have a bucket of their own
    assert isinstance(drive(provider, p, "storage", outputs), Done)


def test_a_throttled_kind_of_call_is_held_before_it_is_sent_and_the_others_go_on(arm: EmulatorServer) -> None:
    # A read bucket of one token that takes 20 s to refill: the second read is ARM's 429, with Retry-After 20.
    _configure(arm, subscription_reads={"size": 1, "refill_per_s": 0.05})
    provider = _provider(arm)
    groups = provider.clients.resources(SUB).resource_groups
    with subscription_scope(provider.throttle, SUB):
        assert call("reading", lambda: groups.check_existence("rg-throttle")) is False
        with pytest.raises(TransientError) as throttled:
            call("reading", lambda: groups.check_existence("rg-throttle"))
        assert not isinstance(throttled.value, BackPressure)  # this one reached ARM, and ARM said 429
        assert 15 < provider.throttle.cooldown_left(SUB, "reads") <= 20  # ARM's Retry-After: 20 s, or a little less
        refused = arm.throttle.throttled
        # The next read stops here, before it is sent: no token spent, no 429 more, the time left said.
        with pytest.raises(BackPressure) as held:
            call("reading", lambda: groups.check_existence("rg-throttle"))
        assert held.value.code == "SubscriptionThrottled" and (held.value.retry_after_s or 0) > 15
        assert arm.throttle.throttled == refused
        # A write draws from its own bucket: it goes out at once.
        made = call("creating", lambda: groups.create_or_update("rg-throttle", {"location": "westeurope"}))
        assert made.name == "rg-throttle"
    # Another subscription's reads are not held either.
    assert provider.throttle.cooldown_left("22222222-2222-2222-2222-222222222222", "reads") == 0


def test_a_back_pressure_the_sdk_wrapped_is_still_handed_on_as_such() -> None:
    throttle = SubscriptionThrottle(max_concurrent=2)
    throttle.throttled(SUB, 3.0, "reads")

    def wrapped() -> None:
        try:
            throttle.hold(SUB, "reads")
        except BackPressure as exc:
            raise RuntimeError("an SDK's own error around ours") from exc

    with subscription_scope(throttle, SUB), pytest.raises(BackPressure, match="throttling reads"):
        call("reading", wrapped)
    assert throttle.cooldown_left(SUB, "writes") == 0 and throttle.cooldown_left(SUB) > 0


def test_a_429_to_a_raw_request_holds_its_kind_too(arm: EmulatorServer) -> None:
    # send_request does not raise on a 429: the pipeline policy records it all the same.
    from azure.core.rest import HttpRequest

    _configure(arm, subscription_reads={"size": 1, "refill_per_s": 0.05})
    provider = _provider(arm)
    client = provider.clients.resources(SUB)
    url = f"{arm.url.rstrip('/')}/subscriptions/{SUB}/resourcegroups?api-version=2025-04-01"
    with subscription_scope(provider.throttle, SUB):
        assert client.send_request(HttpRequest("GET", url)).status_code == 200
        assert client.send_request(HttpRequest("GET", url)).status_code == 429
        assert provider.throttle.cooldown_left(SUB, "reads") > 15
        with pytest.raises(BackPressure):
            client.send_request(HttpRequest("GET", url))
    assert provider.throttle.cooldown_left(SUB, "writes") == 0


def test_a_workspace_is_not_deployed_while_its_writes_are_held(arm: EmulatorServer) -> None:
    # azure-ai-ml deploys a workspace's template through a client of its own, which no hold reaches:
    # the step checks before it starts, and waits.
    provider = _provider(arm)
    p = _plan(example("cpu-small.json") | {"team": "held-writes"})
    outputs: dict[str, dict[str, object]] = {}
    for s in p.steps:
        if s.id == "workspace":
            break
        assert isinstance(drive(provider, p, s.id, outputs), Done), s.id
    provider.throttle.throttled(p.names.subscription_id, 30.0, "writes")
    writes = len(arm.state.requests)
    outcome = drive(provider, p, "workspace", outputs, retry=False)
    assert isinstance(outcome, Wait) and "throttling writes" in outcome.reason, outcome
    assert len(arm.state.requests) == writes  # nothing was written: no deployment, no workspace


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, None),
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"x-ms-retry-after-ms": "1500"}, 1.5),
        ({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, None),  # a date: ARM sends seconds
        ({"Retry-After": "-3"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "1e400"}, None),
        ({"Retry-After": "1000000000"}, 600.0),  # a broken or hostile endpoint's: at most ARM's 10 minutes
    ],
)
def test_retry_after_is_read_in_seconds_and_bounded(headers: dict[str, str], seconds: float | None) -> None:
    from cloud.errors import retry_after_s

    assert retry_after_s(headers) == seconds


@pytest.mark.parametrize("wait", [float("inf"), float("nan"), 1e9, -3.0])
def test_a_cool_down_is_never_endless_nor_negative(wait: float) -> None:
    throttle = SubscriptionThrottle(max_concurrent=1)
    throttle.throttled(SUB, wait, "reads")
    assert 0 <= throttle.cooldown_left(SUB, "reads") <= 600
