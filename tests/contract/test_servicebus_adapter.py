"""The Service Bus adapter at the SDK boundary: the real ServiceBusMessage objects it hands the SDK.

No Service Bus emulator runs here (the official one needs Docker), so the client is a small fake
that records what the SDK's sender would send; the messages themselves are the SDK's own type.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import (
    MessagingEntityNotFoundError,
    ServiceBusConnectionError,
    ServiceBusServerBusyError,
)

from adapters.servicebus_bus import ServiceBusBus
from engine.steps import encode_step_message
from models.errors import PermanentError, TransientError
from models.messages import StepMessage


class FakeSender:
    def __init__(self, queue: str, failures: list[Exception]) -> None:
        self.queue = queue
        self.sent: list[ServiceBusMessage] = []
        self.failures = failures
        self.closed = False

    def send_messages(self, message: ServiceBusMessage, **_: Any) -> None:
        if self.failures:
            raise self.failures.pop(0)
        assert isinstance(message, ServiceBusMessage)
        self.sent.append(message)

    def close(self) -> None:
        self.closed = True


class FakeClient:
    def __init__(self) -> None:
        self.senders: list[FakeSender] = []
        self.failures: list[Exception] = []

    def get_queue_sender(self, queue_name: str) -> FakeSender:
        sender = FakeSender(queue_name, self.failures)
        self.senders.append(sender)
        return sender

    def close(self) -> None:
        pass


def test_step_messages_carry_ids_schedule_correlation_and_trace() -> None:
    client = FakeClient()
    bus = ServiceBusBus(client=client)
    due = datetime(2026, 11, 28, 12, 0, tzinfo=UTC) + timedelta(seconds=30)
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    msg = StepMessage(request_id="01REQ", step_id="storage", attempt=3, traceparent=trace)
    bus.send("steps", encode_step_message(msg, at=due))
    bus.send("steps", encode_step_message(msg.model_copy(update={"attempt": 4})))
    [sender] = client.senders  # reused across sends
    first, second = sender.sent
    assert first.message_id == "01REQ/storage/3" and second.message_id == "01REQ/storage/4"
    assert first.correlation_id == "01REQ"
    assert first.scheduled_enqueue_time_utc == due and second.scheduled_enqueue_time_utc is None
    assert first.content_type == "application/json"
    props = {k.decode() if isinstance(k, bytes) else k: v for k, v in first.application_properties.items()}
    assert props == {"request_id": "01REQ", "step_id": "storage", "attempt": "3", "traceparent": trace}
    assert StepMessage.model_validate_json(b"".join(first.body)) == msg


def test_transient_errors_drop_the_sender_and_permanent_ones_say_what_to_do() -> None:
    client = FakeClient()
    bus = ServiceBusBus(client=client)
    message = encode_step_message(StepMessage(request_id="r", step_id="s", attempt=1))
    client.failures.extend([ServiceBusConnectionError(message="gone"), ServiceBusServerBusyError(message="busy")])
    with pytest.raises(TransientError):
        bus.send("steps", message)
    with pytest.raises(TransientError):
        bus.send("steps", message)
    bus.send("steps", message)
    assert [s.closed for s in client.senders] == [True, True, False]  # a broken sender is not reused
    client.failures.append(MessagingEntityNotFoundError(message="no such queue"))
    with pytest.raises(PermanentError, match="queue does not exist"):
        bus.send("steps", message)


def test_configuration_errors_are_clear() -> None:
    with pytest.raises(PermanentError, match="fullyQualifiedNamespace"):
        ServiceBusBus()


def test_what_goes_over_the_wire_to_an_amqp_peer() -> None:
    """The real SDK, our adapter, a real AMQP 1.0 connection on loopback: what the broker would receive."""
    import json
    import subprocess
    import sys
    import time

    from emulator.server import free_port
    from tests.conftest import ROOT

    port = free_port()
    peer = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "amqp_peer.py"), f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert peer.stdout is not None
        assert "listening" in peer.stdout.readline()
        bus = ServiceBusBus(
            connection_string=(
                f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=RootManageSharedAccessKey;"
                "SharedAccessKey=not-a-real-key;UseDevelopmentEmulator=true"
            )
        )
        trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=30)
        msg = StepMessage(request_id="01REQ", step_id="storage", attempt=3, traceparent=trace)
        bus.send("steps", encode_step_message(msg, at=due))
        bus.send("steps", encode_step_message(msg.model_copy(update={"attempt": 4})))
        bus.close()
        deadline = time.monotonic() + 20
        seen = []
        while len(seen) < 2 and time.monotonic() < deadline:
            line = peer.stdout.readline()
            if line:
                seen.append(json.loads(line))
    finally:
        peer.kill()
        peer.wait(5)
    first, second = seen
    assert first["to"].endswith("/steps")
    assert (first["message_id"], first["correlation_id"], first["content_type"]) == (
        "01REQ/storage/3",
        "01REQ",
        "application/json",
    )
    assert first["properties"] == {"request_id": "01REQ", "step_id": "storage", "attempt": "3", "traceparent": trace}
    assert first["annotations"]["x-opt-scheduled-enqueue-time"] == f"timestamp({int(due.timestamp() * 1000)})"
    assert json.loads(first["body"]) == msg.model_dump()
    assert second["message_id"] == "01REQ/storage/4" and "x-opt-scheduled-enqueue-time" not in second["annotations"]


class FakeReceived:
    def __init__(self, n: int) -> None:
        self.message_id = f"m{n}"
        self.body = [b'{"a": 1}']
        self.correlation_id = "r"
        self.application_properties = {b"request_id": b"r"}
        self.delivery_count = 2
        self.lock_token = f"lock-{n}"
        self.locked_until_utc = datetime.now(UTC)
        self.enqueued_time_utc = datetime.now(UTC)
        self.sequence_number = 100 + n  # ServiceBusReceivedMessage.sequence_number: the broker's own
        self.dead_letter_reason = "MaxDeliveryCountExceeded"
        self.dead_letter_error_description = "too many"


class FakeReceiver:
    def __init__(self, client: ReceivingClient, dead_letters: bool) -> None:
        self.client = client
        self.dead_letters = dead_letters

    def receive_messages(self, max_message_count: int, max_wait_time: float | None = None) -> list[FakeReceived]:
        if self.dead_letters:
            return list(self.client.dead[:max_message_count])
        batch, self.client.waiting = self.client.waiting[:max_message_count], self.client.waiting[max_message_count:]
        return batch

    def peek_messages(self, max_message_count: int) -> list[FakeReceived]:
        return list(self.client.dead)

    def complete_message(self, m: FakeReceived) -> None:
        self.client.settled.append(("complete", m.message_id))
        if m in self.client.dead:
            self.client.dead.remove(m)

    def abandon_message(self, m: FakeReceived) -> None:
        self.client.settled.append(("abandon", m.message_id))

    def dead_letter_message(self, m: FakeReceived, reason: str, error_description: str) -> None:
        self.client.settled.append(("dead-letter", m.message_id, reason, error_description))

    def close(self) -> None:
        pass


class ReceivingClient(FakeClient):
    def __init__(self) -> None:
        super().__init__()
        self.waiting = [FakeReceived(1), FakeReceived(2), FakeReceived(3)]
        self.dead = [FakeReceived(9)]
        self.settled: list[tuple[str, ...]] = []
        self.receivers: list[Any] = []

    def get_queue_receiver(self, queue_name: str, **kw: Any) -> FakeReceiver:
        self.receivers.append((queue_name, kw.get("sub_queue")))
        return FakeReceiver(self, dead_letters=kw.get("sub_queue") is not None)


def test_receiving_settling_and_dead_letters() -> None:
    client = ReceivingClient()
    bus = ServiceBusBus(client=client, max_wait_s=0.1)
    first = bus.receive("steps", max_messages=1)
    rest = bus.receive("steps", max_messages=5)
    assert [m.message_id for m in first + rest] == ["m1", "m2", "m3"]
    assert first[0].body == b'{"a": 1}' and first[0].application_properties == {"request_id": "r"}
    assert first[0].delivery_count == 2
    assert len(client.receivers) == 1  # one receiver per queue, reused
    bus.complete(first[0])
    bus.abandon(rest[0])
    bus.dead_letter(rest[1], reason="InvalidMessage", description="not a step message")
    assert client.settled == [
        ("complete", "m1"),
        ("abandon", "m2"),
        ("dead-letter", "m3", "InvalidMessage", "not a step message"),
    ]
    with pytest.raises(TransientError):
        bus.complete(first[0])  # already settled here
    [dead] = bus.dead_letters("steps")
    assert (dead.message_id, dead.reason, dead.description) == ("m9", "MaxDeliveryCountExceeded", "too many")
    assert dead.sequence == 109 and dead.enqueued_at is not None
    assert not bus.remove_dead_letter("steps", "m9", sequence=1) and len(client.dead) == 1  # another letter's number
    assert bus.remove_dead_letter("steps", "m9", sequence=109) and client.dead == []
    assert ("steps", "deadletter") in [(q, str(s.value) if s else None) for q, s in client.receivers]


def test_a_retry_copy_is_scheduled_under_an_id_of_its_own_and_keeps_the_original() -> None:
    from engine.ports import ReceivedMessage
    from engine.redelivery import RetryPolicy, redeliver

    client = FakeClient()
    bus = ServiceBusBus(client=client)
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    received = ReceivedMessage(
        queue="onboarding",
        message_id="hr-7",
        body=b'{"team": "churn"}',
        correlation_id="hr-7",
        application_properties={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        delivery_count=1,
        lock_token="t",
        locked_until=now,
        enqueued_at=now,
    )
    policy = RetryPolicy(max_attempts=5, base_s=1.0, cap_s=60.0, max_wait_s=600.0)
    decision = redeliver(received, TransientError("busy", retry_after_s=30.0), policy, now=now)
    assert decision.copy is not None
    bus.send("onboarding", decision.copy)
    [sent] = client.senders[0].sent
    # Duplicate detection keys on the id: a copy under "hr-7" would be dropped silently inside the window.
    assert sent.message_id == "hr-7/retry-1" and sent.correlation_id == "hr-7"
    assert sent.scheduled_enqueue_time_utc == now + timedelta(seconds=30)  # the Retry-After, longer than the backoff
    props = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in sent.application_properties.items()
    }
    assert props == {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "original_message_id": "hr-7",
        "delivery_attempt": "2",
        "first_attempt_at": now.isoformat(),
    }
    assert b"".join(sent.body) == b'{"team": "churn"}'
