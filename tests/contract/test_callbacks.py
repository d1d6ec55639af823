"""Callbacks: a finished request is posted to its callback_url, retried when the receiver is down, and recorded."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.webhook import HttpNotifier, signature
from composition import Container
from devhost.workers import QueueWorkers
from models.errors import InvalidInputError, PermanentError, TransientError
from models.outcomes import Fail
from models.request import parse_request
from tests.callers import PLATFORM
from tests.capture import capture_server
from tests.conftest import example, poll, shipped_policy
from tests.fakes import FakeCloud, receiver
from tests.loopback import loopback_callbacks, loopback_callbacks_for

LOOPBACK_POLICY = loopback_callbacks(shipped_policy())


@pytest.fixture
def callbacks(service: tuple[Container, QueueWorkers]) -> Iterator[tuple[Container, QueueWorkers]]:
    """The service, its callbacks allowed to reach the capture endpoints on loopback over http."""
    with loopback_callbacks_for(service[0]):
        yield service


def _notifier(**options: object) -> HttpNotifier:
    return HttpNotifier(signing_secret=b"k", timeout_s=2, policy=lambda: LOOPBACK_POLICY, **options)  # type: ignore[arg-type]


def _notified(container: Container, rid: str) -> dict[str, Any] | None:
    record = container.store.get_request(rid)
    note = record.notification if record else None
    return note.model_dump(exclude_none=True) if note and note.done else None


def test_the_callback_gets_the_result_once(callbacks: tuple[Container, QueueWorkers]) -> None:
    container, _ = callbacks
    with capture_server() as cap:
        body = example("cpu-small.json") | {"callback_url": f"{cap.url}/hooks/ws"}
        rid = container.intake.submit(request=parse_request(body), caller=PLATFORM, source="test").record.id
        note = poll(lambda: _notified(container, rid), what="the callback to be delivered")
        assert note["status"] == "delivered"
        [call] = cap.received
    assert call["path"] == "/hooks/ws"
    assert call["json"]["id"] == rid and call["json"]["status"] == "succeeded"
    assert call["json"]["outputs"]["config_json"]["workspace_name"] == "mlw-fraud-detection-dev"
    assert {s["status"] for s in call["json"]["steps"]} == {"succeeded"}


def test_a_failed_request_is_announced_too_and_a_down_receiver_is_retried(
    callbacks: tuple[Container, QueueWorkers], fake_cloud: FakeCloud
) -> None:
    container, _ = callbacks
    fake_cloud.fail["storage"] = Fail("quota exceeded; ask the platform team", "QuotaExceeded")
    with capture_server() as cap:
        cap.statuses = [503, 503]
        body = example("cpu-small.json") | {"callback_url": f"{cap.url}/hook"}
        rid = container.intake.submit(request=parse_request(body), caller=PLATFORM, source="test").record.id
        poll(lambda: _notified(container, rid), what="the callback to be delivered")
        assert [c["status"] for c in cap.received] == [503, 503, 200]
        assert cap.received[-1]["json"]["status"] == "failed"
        assert "QuotaExceeded" in cap.received[-1]["json"]["error"]["code"]


def test_a_refusing_receiver_is_recorded_not_retried(callbacks: tuple[Container, QueueWorkers]) -> None:
    container, _ = callbacks
    with capture_server() as cap:
        cap.statuses = [404]
        body = example("cpu-small.json") | {"callback_url": f"{cap.url}/gone"}
        rid = container.intake.submit(request=parse_request(body), caller=PLATFORM, source="test").record.id
        note = poll(lambda: _notified(container, rid), what="the callback outcome")
        assert note["status"] == "failed" and "answered 404" in note["error"]
        assert len(cap.received) == 1


def test_notifier_translates_answers() -> None:
    notifier = _notifier()
    with capture_server() as cap:
        cap.statuses = [429, 400]
        with pytest.raises(TransientError):
            notifier.post(cap.url, {"a": 1})
        with pytest.raises(PermanentError):
            notifier.post(cap.url, {"a": 1})
        notifier.post(cap.url, {"a": 1})
        url = cap.url
    with pytest.raises(TransientError):
        notifier.post(url, {"a": 1})  # nobody listens any more


def test_callbacks_are_signed_with_a_timestamp_and_carry_one_delivery_id(
    callbacks: tuple[Container, QueueWorkers],
) -> None:
    container, _ = callbacks
    with capture_server() as cap:
        cap.statuses = [503]
        body = example("cpu-small.json") | {"callback_url": f"{cap.url}/hook"}
        rid = container.intake.submit(request=parse_request(body), caller=PLATFORM, source="test").record.id
        poll(lambda: len(cap.received) == 2, what="the callback and its retry")
    first, second = cap.received
    secret = container.callback_secret
    for delivery in (first, second):
        headers = {k.lower(): v for k, v in delivery["headers"].items()}
        assert headers["x-vending-delivery"] == f"{rid}:succeeded"
        raw = json.dumps(delivery["json"], separators=(",", ":"), sort_keys=True).encode()
        expected = hmac.new(secret, b"v1:" + headers["x-vending-timestamp"].encode() + b":" + raw, hashlib.sha256)
        assert hmac.compare_digest(headers["x-vending-signature"], "v1=" + expected.hexdigest())
        assert abs(time.time() - int(headers["x-vending-timestamp"])) < 60
    assert signature(b"other", "1", b"{}") != signature(secret, "1", b"{}")


def test_callbacks_only_to_allowed_hosts(service: tuple[Container, QueueWorkers]) -> None:
    container, _ = service
    body = example("cpu-small.json") | {"callback_url": "https://attacker.invalid/x"}
    with pytest.raises(InvalidInputError) as info:
        container.intake.submit(request=parse_request(body), caller=PLATFORM, source="test")
    [problem] = info.value.problems
    assert problem.field == "callback_url" and "'attacker.invalid' are not allowed" in problem.message


def test_retry_after_in_seconds_or_as_an_http_date_becomes_retry_after_s() -> None:
    from email.utils import formatdate

    now = time.time()
    answers = [
        (503, {"Retry-After": "7"}),
        (429, {"Retry-After": formatdate(now + 120, usegmt=True)}),
        (503, {"Retry-After": "soon"}),
        (503, {}),
    ]
    notifier = _notifier(clock=lambda: now)
    errors = []
    with receiver(answers) as (url, _):
        for _ in range(4):
            with pytest.raises(TransientError) as info:
                notifier.post(url, {"a": 1})
            errors.append(info.value)
    waits = [e.retry_after_s for e in errors]
    assert waits[0] == 7.0 and str(errors[0]).endswith("answered 503; it asks to try again in 7 s")
    assert waits[1] is not None and 119 <= waits[1] <= 120  # an HTTP-date has whole seconds
    assert waits[2:] == [None, None]


def test_retry_after_parses_as_rfc_9110_says() -> None:
    from adapters.webhook import retry_after_s

    assert retry_after_s("120", now=0) == 120.0
    assert retry_after_s(" 2 ", now=0) == 2.0
    assert retry_after_s("Thu, 01 Jan 1970 00:02:00 GMT", now=0) == 120.0
    assert retry_after_s("Thu, 01 Jan 1970 00:02:00 GMT", now=500) == 0.0  # a date in the past: now
    for junk in (None, "", "-1", "nan", "inf", "later", "Mon, 99 Foo"):
        assert retry_after_s(junk, now=0) is None, junk
